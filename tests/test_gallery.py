"""Gallery backends behind one protocol: filters (cameras, time window), retention (delete), stable ids, Milvus.

References are brute force: the distances of every gallery item to the query, the items a filter keeps picked by a
Python loop, sorted by (distance, position)."""

import math

import numpy as np
import pytest
import torch

from reidkit.distances import pairwise_distance
from reidkit.retrieval import GalleryIndex, recall_at_k
from reidkit.retrieval.filters import SearchFilter, format_time, parse_time
from reidkit.retrieval.gallery import NewItems, open_gallery

NUM_ITEMS, DIM, CAMERAS = 400, 24, 6


@pytest.fixture(scope="module")
def data():
    """Random features with cameras, timestamps (some unknown) and track ids; and queries."""
    rng = np.random.default_rng(7)
    features = rng.standard_normal((NUM_ITEMS, DIM)).astype(np.float32)
    camids = rng.integers(0, CAMERAS, NUM_ITEMS)
    timestamps = rng.uniform(1_700_000_000, 1_700_086_400, NUM_ITEMS)
    timestamps[::37] = np.nan
    queries = rng.standard_normal((12, DIM)).astype(np.float32)
    return features, camids, timestamps, queries


def build(data, backend="exact", metric="cosine", **params):
    features, camids, timestamps, _ = data
    return GalleryIndex(features, np.arange(NUM_ITEMS) % 50, camids, [f"/g/{i}.jpg" for i in range(NUM_ITEMS)],
                        metric, backend, timestamps=timestamps, track_ids=np.arange(NUM_ITEMS) // 3, **params)


def brute_force(data, query, where: SearchFilter, k: int, metric: str, alive=None):
    """(ids, distances) of the k nearest kept items by a loop over every item."""
    features, camids, timestamps, _ = data
    distances = pairwise_distance(torch.from_numpy(query[None]), torch.from_numpy(features), metric)[0].numpy()
    kept = [i for i in range(NUM_ITEMS)
            if (where.camids is None or camids[i] in where.camids)
            and (where.after is None or timestamps[i] >= where.after)
            and (where.before is None or timestamps[i] < where.before)
            and (alive is None or i in alive)]
    ranked = sorted(kept, key=lambda i: (distances[i], i))[:k]
    return np.array(ranked, dtype=np.int64), distances[ranked]


FILTERS = [SearchFilter(camids=(2, 4)),
           SearchFilter(after=1_700_020_000.0, before=1_700_050_000.0),
           SearchFilter(camids=(0,), after=1_700_040_000.0),
           SearchFilter(camids=(5,), before=1_700_001_000.0)]  # keeps fewer than k items


@pytest.mark.numerics
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("where", FILTERS, ids=["cameras", "window", "camera-after", "few"])
def test_exact_search_with_a_filter_misses_no_match_inside_it(data, metric, where):
    index = build(data, metric=metric)
    result = index.search(data[3], k=10, where=where)
    for row, query in enumerate(data[3]):
        ids, distances = brute_force(data, query, where, 10, metric)
        assert result.ids[row].tolist() == ids.tolist()  # same items, same order (ties by position)
        np.testing.assert_allclose(result.distances[row], distances, rtol=0, atol=2e-6)  # float32 rounding of d ≤ 2
    if where is FILTERS[-1]:
        assert result.ids.shape[1] < 10  # fewer items pass than k: the width says so


def test_unknown_times_never_pass_a_time_condition(data):
    index = build(data)
    unknown = set(np.flatnonzero(np.isnan(data[2])).tolist())
    for where in (SearchFilter(after=0.0), SearchFilter(before=4e9)):
        found = set(index.search(data[3], k=NUM_ITEMS, where=where).ids.ravel().tolist())
        assert not found & unknown and len(found) == NUM_ITEMS - len(unknown)


@pytest.mark.parametrize("backend", ["faiss-flat", "faiss-ivf", "faiss-hnsw"])
def test_faiss_backends_search_inside_the_filter(data, backend):
    pytest.importorskip("faiss")
    index, exact = build(data, backend), build(data)
    where = FILTERS[0]
    result, truth = index.search(data[3], k=10, where=where), exact.search(data[3], k=10, where=where)
    found = result.ids[result.ids >= 0]
    assert np.isin(data[1][found], where.camids).all()  # only items of the filter's cameras
    recall = recall_at_k(result, truth, 10)
    assert recall == 1.0 if backend == "faiss-flat" else recall >= 0.5  # flat: exact; others approximate


def test_deleted_items_are_never_returned_and_ids_are_not_reused(data, tmp_path):
    index = build(data)
    by_id = index.delete(ids=[0, 5, 399])
    by_camera_and_age = index.delete(where=SearchFilter(camids=(3,), before=1_700_043_200.0))
    assert by_id == [0, 5, 399] and by_camera_and_age and index.count() == NUM_ITEMS - 3 - len(by_camera_and_age)
    gone = set(by_id + by_camera_and_age)
    assert index.items([0, 1])[0] is None and index.items([1])[0].path == "/g/1.jpg"
    alive = set(range(NUM_ITEMS)) - gone
    result = index.search(data[3], k=NUM_ITEMS)
    assert not set(result.ids.ravel().tolist()) & gone
    ids, _ = brute_force(data, data[3][0], SearchFilter(), 10, "cosine", alive)
    assert result.ids[0, :10].tolist() == ids.tolist()
    index.save(tmp_path / "g.safetensors")
    reopened = open_gallery(tmp_path / "g.safetensors")
    added = reopened.add(data[0][:2], NewItems([1, 2], [0, 1], [1.0, 2.0], [7, 8], ["/n/a.jpg", "/n/b.jpg"]))
    assert added == [NUM_ITEMS, NUM_ITEMS + 1]  # after the largest id ever given, never a deleted one
    item = reopened.items([NUM_ITEMS])[0]
    assert (item.camid, item.timestamp, item.track_id, item.path) == (0, 1.0, 7, "/n/a.jpg")
    assert reopened.search(data[0][:1], k=1).ids[0, 0] == NUM_ITEMS  # the copy of item 0 is its own nearest
    with pytest.raises(ValueError, match="say what to delete"):
        reopened.delete()


def test_deleting_every_item_of_a_file_index_is_refused(data):
    from reidkit.errors import ReidkitError

    index = build(data)
    with pytest.raises(ReidkitError, match="would leave the gallery empty"):
        index.delete(where=SearchFilter(camids=tuple(range(CAMERAS))))
    assert index.count() == NUM_ITEMS


def test_times_are_parsed_as_utc_unless_an_offset_is_given():
    assert parse_time("1970-01-02") == 86400.0
    assert parse_time("1970-01-01T01:00+01:00") == 0.0
    assert parse_time("1700000000") == 1_700_000_000.0 and parse_time("12.5") == 12.5
    assert format_time(86400.0) == "1970-01-02T00:00:00Z" and format_time(math.nan) == "unknown"
    for text in ("yesterday", "١٢", "-5", "1e9"):
        with pytest.raises(ValueError, match="is not a time"):
            parse_time(text)
    with pytest.raises(ValueError, match="time window is empty"):
        SearchFilter(after=10.0, before=10.0)


def test_reidkit_delete_command(data, tmp_path, capsys):
    from reidkit.cli import main

    path = tmp_path / "g.safetensors"
    build(data).save(path)
    command = ["delete", "--index", str(path)]
    assert main([*command, "--cameras", "1", "--before", "2023-11-15"]) == 0
    expected = int(((data[1] == 0) & (data[2] < parse_time("2023-11-15"))).sum())
    assert expected > 0 and capsys.readouterr().out.startswith(f"deleted {expected} items")
    assert open_gallery(path).count() == NUM_ITEMS - expected
    assert main(command) == 2
    assert capsys.readouterr().err.startswith("reidkit: error: say what to delete")
    assert main([*command, "--older-than", "1", "--before", "2023-11-15"]) == 2
    assert "give one" in capsys.readouterr().err


def needs_milvus() -> None:
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")


@pytest.mark.numerics
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_milvus_flat_equals_the_exact_backend(data, tmp_path, metric):
    needs_milvus()
    from reidkit.retrieval.milvus_backend import MilvusGallery

    features, camids, timestamps, queries = data
    gallery = MilvusGallery.create(tmp_path / "g.db", DIM, metric, "milvus-flat")
    paths = [f"/g/{i}.jpg" for i in range(NUM_ITEMS)]
    ids = gallery.add(features, NewItems((np.arange(NUM_ITEMS) % 50).tolist(), camids.tolist(), timestamps.tolist(),
                                         (np.arange(NUM_ITEMS) // 3).tolist(), paths))
    exact = build(data, metric=metric)
    assert ids == list(range(NUM_ITEMS)) and gallery.count() == NUM_ITEMS
    for where in (None, *FILTERS):
        mine, theirs = gallery.search(queries, k=10, where=where), exact.search(queries, k=10, where=where)
        width = theirs.ids.shape[1]
        assert mine.ids[:, :width].tolist() == theirs.ids.tolist()  # random data: no near-ties to reorder
        # Milvus computes in float32 (1 − cos, or √ of a squared L2 of norms ≈ 5): a few float32 ulps.
        np.testing.assert_allclose(mine.distances[:, :width], theirs.distances, rtol=0, atol=5e-6)
        assert (mine.ids[:, width:] == -1).all()
    removed = gallery.delete(ids=[1, 2, 3], where=SearchFilter(camids=(int(camids[2]),)))
    assert removed == exact.delete(ids=[1, 2, 3], where=SearchFilter(camids=(int(camids[2]),)))
    aged = SearchFilter(before=1_700_010_000.0)
    assert gallery.delete(where=aged) == exact.delete(where=aged)
    gallery.save()
    reopened = open_gallery(str(tmp_path / "g.db"))
    assert reopened.count() == exact.count() and reopened.metric == metric
    assert reopened.search(queries, k=10).ids.tolist() == exact.search(queries, k=10).ids.tolist()
    assert reopened.items([2, 4])[0] is None and reopened.items([4])[0].path == "/g/4.jpg"
    assert reopened.add(features[:1], NewItems([0], [0], [math.nan], [-1], ["/x.jpg"])) == [NUM_ITEMS]


@pytest.mark.parametrize("backend, floor", [("milvus-ivf", 0.8), ("milvus-hnsw", 0.9)])
def test_milvus_approximate_backends_by_recall(data, tmp_path, backend, floor):
    needs_milvus()
    from reidkit.retrieval.milvus_backend import MilvusGallery

    features, camids, timestamps, queries = data
    params = {"nlist": 16, "nprobe": 4} if backend == "milvus-ivf" else {}
    gallery = MilvusGallery.create(tmp_path / "a.db", DIM, "cosine", backend, params=params)
    gallery.add(features, NewItems([0] * NUM_ITEMS, camids.tolist(), timestamps.tolist(), [-1] * NUM_ITEMS,
                                   ["/p"] * NUM_ITEMS))
    recall = recall_at_k(gallery.search(queries, k=10), build(data).search(queries, k=10), 10)
    assert floor <= recall <= 1.0, recall


def test_a_milvus_location_that_is_not_a_gallery_is_one_clear_error(tmp_path):
    from reidkit.errors import ReidkitError

    with pytest.raises(ReidkitError, match="Milvus gallery not found"):
        open_gallery(tmp_path / "missing.db")

"""Tests of reidkit.retrieval: exact search against brute force, faiss backends against exact search,
save/load round trips, file errors and recall@k. faiss tests are skipped when faiss is not installed."""

import importlib
import json
import sys

import numpy as np
import pytest
import torch

from _exact_data import exact_rows
from reidkit.distances import pairwise_distance
from reidkit.errors import ReidkitError
from reidkit.retrieval import BACKENDS, GalleryIndex, SearchResult, recall_at_k

pytestmark = pytest.mark.numerics  # exact vs faiss distances and tie order

METRICS = ("cosine", "euclidean")
FAISS_BACKENDS = ("faiss-flat", "faiss-ivf", "faiss-hnsw")


@pytest.fixture
def faiss():
    return pytest.importorskip("faiss")


def brute_force(queries, gallery, metric, k):
    """Top-k by `pairwise_distance` and a stable argsort of every row: ties in gallery index order."""
    distances = pairwise_distance(torch.as_tensor(queries, dtype=torch.float32),
                                  torch.as_tensor(gallery, dtype=torch.float32), metric).numpy()
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(distances, order, axis=1)


def make_index(features, metric="cosine", backend="exact", **params):
    num_items = len(features)
    return GalleryIndex(features, np.arange(num_items) // 3, np.arange(num_items) % 2,
                        [f"img_{i:04d}.jpg" for i in range(num_items)], metric, backend, **params)


def tied_data(seed, dim=16):
    """Queries and gallery of `exact_rows` (distances exact in float32 whatever the summation order), with many
    exact ties: duplicate and scaled gallery rows, queries equal to gallery rows."""
    generator = np.random.default_rng(seed)

    def rows(count):
        return exact_rows(generator, count, dim)

    gallery, queries = rows(60), rows(25)
    gallery[40:50] = gallery[0:10]
    gallery[50:60] = 2 * gallery[10:20]
    queries[:5] = gallery[:5]
    return queries, gallery


def clustered_data(seed, num_items=3000, num_queries=200, dim=32, num_clusters=60):
    generator = np.random.default_rng(seed)
    centres = generator.normal(size=(num_clusters, dim)).astype(np.float32)
    gallery = centres[generator.integers(num_clusters, size=num_items)] + 0.3 * generator.normal(
        size=(num_items, dim)).astype(np.float32)
    queries = centres[generator.integers(num_clusters, size=num_queries)] + 0.3 * generator.normal(
        size=(num_queries, dim)).astype(np.float32)
    return queries.astype(np.float32), gallery.astype(np.float32)


# ---------------------------------------------------------------- exact backend


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("as_torch", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 7, 1024])
@pytest.mark.parametrize("k", [1, 5, 13, 60])
def test_exact_equals_brute_force_with_ties(metric, as_torch, chunk_size, k):
    queries, gallery = tied_data(seed=k)
    if as_torch:
        queries, gallery = torch.from_numpy(queries), torch.from_numpy(gallery)
    result = make_index(gallery, metric).search(queries, k=k, chunk_size=chunk_size)
    expected_indices, expected_distances = brute_force(queries, gallery, metric, k)
    assert result.indices.dtype == np.int64 and result.distances.dtype == np.float32
    np.testing.assert_array_equal(result.indices, expected_indices)
    np.testing.assert_array_equal(result.distances, expected_distances)


def test_exact_tie_past_the_candidates_takes_lowest_indices():
    # 1-D gallery: 30 items at distance 1 from the query, in scattered positions; k cuts the tie.
    gallery = np.full((40, 1), 5.0, dtype=np.float32)
    tied = np.random.default_rng(0).permutation(40)[:30]
    gallery[tied] = 1.0
    gallery[3] = 0.0  # the nearest
    result = make_index(gallery, "euclidean").search(np.zeros((1, 1), dtype=np.float32), k=4)
    assert result.indices[0, 0] == 3
    np.testing.assert_array_equal(result.indices[0, 1:], np.sort(np.setdiff1d(tied, [3]))[:3])
    np.testing.assert_array_equal(result.distances[0], [0.0, 1.0, 1.0, 1.0])


def test_k_larger_than_gallery_is_clamped():
    queries, gallery = tied_data(seed=1)
    result = make_index(gallery[:8], "euclidean").search(queries, k=100)
    assert result.indices.shape == (len(queries), 8)
    np.testing.assert_array_equal(result.indices, brute_force(queries, gallery[:8], "euclidean", 8)[0])


def test_no_queries_gives_empty_result():
    result = make_index(np.eye(5, dtype=np.float32)).search(np.zeros((0, 5), dtype=np.float32), k=3)
    assert result.indices.shape == (0, 3) and result.distances.shape == (0, 3)


def test_distances_are_true_l2_and_one_minus_cos():
    gallery = np.array([[3.0, 4.0], [0.0, 2.0], [-1.0, 0.0]], dtype=np.float32)
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    euclidean = make_index(gallery, "euclidean").search(query, k=3)
    np.testing.assert_array_equal(euclidean.indices, [[2, 1, 0]])
    np.testing.assert_allclose(euclidean.distances, [[2.0, np.sqrt(5.0), np.sqrt(20.0)]], rtol=1e-6)
    cosine = make_index(gallery, "cosine").search(query, k=3)
    np.testing.assert_array_equal(cosine.indices, [[0, 1, 2]])
    np.testing.assert_allclose(cosine.distances, [[0.4, 1.0, 2.0]], atol=1e-6)


def test_gallery_is_copied():
    gallery = np.eye(3, dtype=np.float32)
    index = make_index(gallery, "euclidean")
    gallery[:] = 100.0
    assert index.search(np.eye(3, dtype=np.float32), k=1).indices.ravel().tolist() == [0, 1, 2]


# ---------------------------------------------------------------- validation


def test_validation_errors():
    gallery = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match=r"metric must be one of \('euclidean', 'cosine'\)"):
        make_index(gallery, metric="manhattan")
    with pytest.raises(ValueError, match="backend must be one of.*exact.*faiss-flat.*faiss-ivf.*faiss-hnsw"):
        make_index(gallery, backend="annoy")
    with pytest.raises(ValueError, match="backend 'exact' takes no nlist"):
        make_index(gallery, nlist=4)
    with pytest.raises(ValueError, match="expected 4 paths"):
        GalleryIndex(gallery, [0] * 4, [0] * 4, ["a"] * 3)
    with pytest.raises(ValueError, match=r"pids must have shape \(4,\)"):
        GalleryIndex(gallery, [0] * 5, [0] * 4, ["a"] * 4)
    with pytest.raises(ValueError, match="NaN or infinite"):
        make_index(np.array([[np.nan, 0.0]], dtype=np.float32))
    with pytest.raises(ValueError, match="empty"):
        make_index(np.zeros((0, 4), dtype=np.float32))
    index = make_index(gallery)
    with pytest.raises(ValueError, match="queries have dimension 3 but the index has dimension 4"):
        index.search(np.zeros((2, 3), dtype=np.float32))
    for bad_k in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="k must be a positive int"):
            index.search(gallery, k=bad_k)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        index.search(gallery, chunk_size=0)


def test_ivf_and_hnsw_parameter_ranges():
    # Checked before faiss is needed, so this runs without faiss too.
    gallery = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"nlist must be an int in 1..100"):
        make_index(gallery, backend="faiss-ivf", nlist=101)
    with pytest.raises(ValueError, match=r"nprobe must be an int in 1..2"):
        make_index(gallery, backend="faiss-ivf", nlist=2, nprobe=3)
    with pytest.raises(ValueError, match="hnsw_m must be an int"):
        make_index(gallery, backend="faiss-hnsw", hnsw_m=1)
    with pytest.raises(ValueError, match="backend 'faiss-hnsw' takes no nprobe"):
        make_index(gallery, backend="faiss-hnsw", nprobe=2)


def test_missing_faiss_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    with pytest.raises(ReidkitError, match=r'faiss is not installed: pip install "reidkit\[search\]"'):
        make_index(np.eye(4, dtype=np.float32), backend="faiss-flat")


def test_import_does_not_need_faiss(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    for name in [name for name in sys.modules if name.startswith("reidkit.retrieval")]:
        monkeypatch.delitem(sys.modules, name)  # restored after the test
    module = importlib.import_module("reidkit.retrieval")
    assert module.GalleryIndex(np.eye(2), [0, 1], [0, 0], ["a", "b"]).search(np.eye(2), k=1).indices.shape == (2, 1)


# ---------------------------------------------------------------- recall@k


def test_recall_at_k_by_hand():
    exact = SearchResult(indices=np.array([[0, 2, 9], [6, 7, 8]]), distances=np.zeros((2, 3), np.float32))
    approximate = SearchResult(indices=np.array([[0, 1, 2], [3, 4, 5]]), distances=np.zeros((2, 3), np.float32))
    assert recall_at_k(approximate, exact, k=3) == pytest.approx((2 / 3 + 0) / 2)
    assert recall_at_k(approximate, exact, k=1) == pytest.approx(0.5)
    assert recall_at_k(exact, exact, k=3) == 1.0
    not_found = SearchResult(indices=np.array([[0, -1, -1], [6, 8, -1]]), distances=np.zeros((2, 3), np.float32))
    assert recall_at_k(not_found, exact, k=3) == pytest.approx((1 / 3 + 2 / 3) / 2)
    with pytest.raises(ValueError, match=r"k must be an int in 1..3"):
        recall_at_k(approximate, exact, k=4)
    with pytest.raises(ValueError, match="same, non-zero number of queries"):
        recall_at_k(SearchResult(exact.indices[:1], exact.distances[:1]), exact, k=1)


# ---------------------------------------------------------------- save / load / feature files


def test_exact_save_load_round_trip(tmp_path):
    queries, gallery = tied_data(seed=3)
    index = make_index(gallery, "euclidean")
    index.save(tmp_path / "gallery.safetensors")
    loaded = GalleryIndex.load(tmp_path / "gallery.safetensors")
    assert (loaded.metric, loaded.backend, loaded.paths) == (index.metric, index.backend, index.paths)
    assert torch.equal(loaded.pids, index.pids) and torch.equal(loaded.camids, index.camids)
    expected, result = index.search(queries, k=7), loaded.search(queries, k=7)
    np.testing.assert_array_equal(result.indices, expected.indices)
    np.testing.assert_array_equal(result.distances, expected.distances)


def test_load_errors(tmp_path):
    with pytest.raises(ReidkitError, match="gallery index not found"):
        GalleryIndex.load(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(ReidkitError, match="cannot read gallery index"):
        GalleryIndex.load(garbage)
    make_index(np.eye(64, dtype=np.float32)).save(tmp_path / "good.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes((tmp_path / "good.safetensors").read_bytes()[:-100])
    with pytest.raises(ReidkitError, match="cannot read gallery index"):
        GalleryIndex.load(truncated)


def write_feature_file(path, features):
    """A feature file in the layout of `reidkit.engine.extraction.extract_split`."""
    from safetensors.torch import save_file

    num_items = len(features)
    save_file({"features": torch.as_tensor(features), "pids": torch.arange(num_items) // 2,
               "camids": torch.arange(num_items) % 3},
              str(path), metadata={"paths": json.dumps([f"p{i}.jpg" for i in range(num_items)])})


def test_from_feature_file(tmp_path):
    queries, gallery = tied_data(seed=4)
    write_feature_file(tmp_path / "gallery_features.safetensors", gallery)
    index = GalleryIndex.from_feature_file(tmp_path / "gallery_features.safetensors", metric="euclidean")
    assert index.paths[5] == "p5.jpg" and index.pids[5] == 2 and index.camids[5] == 2
    np.testing.assert_array_equal(index.search(queries, k=5).indices,
                                  brute_force(queries, gallery, "euclidean", 5)[0])
    with pytest.raises(ReidkitError, match="not a reidkit gallery index.*from_feature_file"):
        GalleryIndex.load(tmp_path / "gallery_features.safetensors")
    with pytest.raises(ReidkitError, match="does not exist; write one with `reidkit extract"):
        GalleryIndex.from_feature_file(tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    with pytest.raises(ReidkitError, match="is not a feature file written by `reidkit extract`"):
        GalleryIndex.from_feature_file(tmp_path / "bad.safetensors")


# ---------------------------------------------------------------- faiss backends


@pytest.mark.parametrize("metric", METRICS)
def test_faiss_flat_equals_exact(faiss, metric):
    generator = np.random.default_rng(5)
    gallery = generator.normal(size=(500, 24)).astype(np.float32)
    queries = generator.normal(size=(40, 24)).astype(np.float32)
    exact = make_index(gallery, metric).search(queries, k=20)
    flat = make_index(gallery, metric, "faiss-flat").search(queries, k=20, chunk_size=16)
    np.testing.assert_allclose(flat.distances, exact.distances, rtol=1e-5, atol=1e-5)
    # Indices agree wherever the exact ranking has no near-tie with a neighbour (or at rank k + 1).
    full = brute_force(queries, gallery, metric, 21)[1]
    gaps = np.diff(full, axis=1)
    clear = np.ones_like(exact.indices, dtype=bool)
    clear[:, 1:] &= gaps[:, :-1] > 1e-4
    clear &= gaps > 1e-4
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(flat.indices[clear], exact.indices[clear])


def test_faiss_flat_orders_ties_by_index(faiss):
    queries, gallery = tied_data(seed=6)
    exact = make_index(gallery, "euclidean").search(queries, k=10)
    flat = make_index(gallery, "euclidean", "faiss-flat").search(queries, k=10)
    # Squared distances are exact integers in both; the square roots may differ by one ulp (torch's CPU sqrt is
    # not always correctly rounded: √34 → 5.8309522 against faiss's 5.8309517 on an AVX2 CPU). Equal squared
    # distances give equal roots within each library, so the ties are the same in both.
    np.testing.assert_allclose(flat.distances, exact.distances, rtol=2.0 ** -23, atol=0)
    np.testing.assert_array_equal(np.round(flat.distances.astype(np.float64) ** 2),
                                  np.round(exact.distances.astype(np.float64) ** 2))
    # At the k boundary faiss may keep other members of a tie; below it the order is (distance, index).
    inner = exact.distances < exact.distances[:, -1:]
    np.testing.assert_array_equal(flat.indices[inner], exact.indices[inner])


@pytest.mark.parametrize("backend", ["faiss-ivf", "faiss-hnsw"])
@pytest.mark.parametrize("metric", METRICS)
def test_approximate_recall_at_10(faiss, backend, metric):
    queries, gallery = clustered_data(seed=7)
    exact = make_index(gallery, metric).search(queries, k=10)
    index = make_index(gallery, metric, backend)
    approximate = index.search(queries, k=10)
    assert np.all(np.diff(approximate.distances, axis=1) >= 0)
    assert recall_at_k(approximate, exact, k=10) >= 0.9
    found = approximate.indices >= 0
    recomputed = pairwise_distance(torch.from_numpy(queries), torch.from_numpy(gallery), metric).numpy()
    rows = np.nonzero(found)[0]
    np.testing.assert_allclose(approximate.distances[found], recomputed[rows, approximate.indices[found]],
                               rtol=1e-4, atol=1e-4)


def test_recall_detects_a_coarse_search(faiss):
    # Unclustered data, many cells, one probed: IVF misses true neighbours and recall@10 says so.
    generator = np.random.default_rng(11)
    gallery = generator.normal(size=(2000, 16)).astype(np.float32)
    queries = generator.normal(size=(100, 16)).astype(np.float32)
    exact = make_index(gallery, "euclidean").search(queries, k=10)
    coarse = make_index(gallery, "euclidean", "faiss-ivf", nlist=50, nprobe=1).search(queries, k=10)
    assert 0.1 < recall_at_k(coarse, exact, k=10) < 0.9


def test_sampled_recall_of_an_index_against_exact_search(faiss):
    from reidkit.engine.indexing import sampled_recall

    gallery = np.random.default_rng(12).normal(size=(2000, 16)).astype(np.float32)
    assert sampled_recall(make_index(gallery, "euclidean")) == 1.0
    assert sampled_recall(make_index(gallery, "euclidean", "faiss-flat")) == 1.0
    coarse = make_index(gallery, "euclidean", "faiss-ivf", nlist=50, nprobe=1)
    chosen = torch.randperm(2000, generator=torch.Generator().manual_seed(0))[:256].numpy()
    by_hand = recall_at_k(coarse.search(gallery[chosen], k=10), make_index(gallery, "euclidean").search(
        gallery[chosen], k=10), k=10)
    assert sampled_recall(coarse) == pytest.approx(by_hand) and by_hand < 0.9


def test_default_parameters(faiss):
    gallery = clustered_data(seed=8, num_items=1000)[1]
    assert make_index(gallery, backend="faiss-ivf").params == {"nlist": 25, "nprobe": 8}  # 1000 // 39
    assert make_index(gallery[:50], backend="faiss-ivf").params == {"nlist": 1, "nprobe": 1}
    assert make_index(gallery, backend="faiss-hnsw").params == {"hnsw_m": 32, "ef_search": 64}
    assert make_index(gallery, backend="faiss-ivf", nlist=10, nprobe=3).params == {"nlist": 10, "nprobe": 3}


@pytest.mark.parametrize("backend", FAISS_BACKENDS)
@pytest.mark.parametrize("metric", METRICS)
def test_faiss_save_load_round_trip(faiss, tmp_path, backend, metric):
    queries, gallery = clustered_data(seed=9, num_items=1200, num_queries=50)
    index = make_index(gallery, metric, backend)
    index.save(tmp_path / "index.safetensors")
    loaded = GalleryIndex.load(tmp_path / "index.safetensors")
    assert (loaded.backend, loaded.metric, loaded.params) == (backend, metric, index.params)
    expected, result = index.search(queries, k=10), loaded.search(queries, k=10)
    np.testing.assert_array_equal(result.indices, expected.indices)
    np.testing.assert_array_equal(result.distances, expected.distances)


def test_corrupt_faiss_blob(faiss, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    make_index(clustered_data(seed=10, num_items=400)[1], backend="faiss-hnsw").save(tmp_path / "index.safetensors")
    with safe_open(str(tmp_path / "index.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(tmp_path / "index.safetensors"))
    tensors["faiss_index"] = torch.zeros(64, dtype=torch.uint8)
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=metadata)
    with pytest.raises(ReidkitError, match="stored faiss index cannot be read"):
        GalleryIndex.load(tmp_path / "bad.safetensors")
    del tensors["faiss_index"]
    save_file(tensors, str(tmp_path / "missing.safetensors"), metadata=metadata)
    with pytest.raises(ReidkitError, match="faiss-hnsw index is missing"):
        GalleryIndex.load(tmp_path / "missing.safetensors")


def test_every_backend_is_tested():
    assert set(BACKENDS) == {"exact", *FAISS_BACKENDS}


def test_extended_index_equals_one_built_on_all_items(tmp_path):
    generator = torch.Generator().manual_seed(0)
    features, extra = torch.randn(30, 6, generator=generator), torch.randn(4, 6, generator=generator)
    index = GalleryIndex(features, list(range(30)), [0] * 30, [f"g/{i}.jpg" for i in range(30)], "euclidean",
                         run_dir="run", model_digest="d" * 64, image_roots=["/data/g"])
    extended = index.extended(extra, [7, 8, 9, 10], [1, 1, 1, 1], [f"a/{i}.jpg" for i in range(4)], "/data/a")
    whole = GalleryIndex(torch.cat([features, extra]), list(range(30)) + [7, 8, 9, 10], [0] * 30 + [1] * 4,
                         index.paths + [f"a/{i}.jpg" for i in range(4)], "euclidean")
    queries = torch.randn(5, 6, generator=generator)
    assert np.array_equal(extended.search(queries, 8).indices, whole.search(queries, 8).indices)
    assert len(index) == 30 and extended.paths[-1] == "a/3.jpg"  # the original is unchanged
    extended.save(tmp_path / "x.safetensors")
    loaded = GalleryIndex.load(tmp_path / "x.safetensors")
    assert (loaded.image_roots, loaded.model_digest, loaded.run_dir) == (["/data/g", "/data/a"], "d" * 64, "run")


# --- issue 23: what the index records of its images and of the model (items 3, 6, 7) ----------------------------

def test_file_identities_tell_the_indexed_file_from_a_swapped_one(tmp_path):
    import os

    from reidkit.retrieval.file_identity import UNKNOWN, file_identities, is_recorded_file

    image, other = tmp_path / "a.jpg", tmp_path / "secret"
    image.write_bytes(b"jpeg")
    other.write_bytes(b"root")
    recorded = file_identities([str(image), str(tmp_path / "missing.jpg"), "a\0.jpg"])
    info = os.stat(image)
    assert recorded[0].tolist() == [info.st_ino, 4, info.st_mtime_ns, 1]
    assert recorded[1:].eq(UNKNOWN).all()
    assert is_recorded_file(recorded[0].tolist(), os.stat(image))
    os.link(image, tmp_path / "b.jpg")  # the indexed file gains a second name: not what was indexed
    assert not is_recorded_file(recorded[0].tolist(), os.stat(image))
    assert is_recorded_file(file_identities([str(image)])[0].tolist(), os.stat(image))  # indexed with 2 links
    assert not is_recorded_file(recorded[0].tolist(), os.stat(other))  # another inode
    assert is_recorded_file([UNKNOWN] * 4, os.stat(other)) and not is_recorded_file([UNKNOWN] * 4, os.stat(image))


def test_file_identities_and_the_model_digest_are_saved_and_carried(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from reidkit.retrieval.feature_files import save_feature_file

    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(name.encode())
    samples = [(str(tmp_path / "a.jpg"), 1, 0), (str(tmp_path / "b.jpg"), 2, 1)]
    save_feature_file(tmp_path / "f.safetensors", torch.eye(2), samples, {"model_digest": "d" * 64})
    index = GalleryIndex.from_feature_file(tmp_path / "f.safetensors", image_roots=[str(tmp_path)])
    assert index.model_digest == "d" * 64 and index.file_ids[:, 1].tolist() == [5, 5]
    extended = index.extended(torch.ones(1, 2), [3], [0], ["c.jpg"], str(tmp_path))
    assert extended.file_ids[:2].equal(index.file_ids) and extended.file_ids[2].eq(-1).all()
    extended.save(tmp_path / "index.safetensors")
    assert GalleryIndex.load(tmp_path / "index.safetensors").file_ids.equal(extended.file_ids)
    with safe_open(str(tmp_path / "index.safetensors"), "pt") as handle:  # an index from before file identities
        tensors = {key: handle.get_tensor(key) for key in handle.keys() if key != "file_ids"}
        metadata = handle.metadata()
    save_file(tensors, str(tmp_path / "older.safetensors"), metadata=metadata)
    assert GalleryIndex.load(tmp_path / "older.safetensors").file_ids.eq(-1).all()
    with pytest.raises(ValueError, match=r"file_ids must have shape \(2, 4\)"):
        GalleryIndex(torch.eye(2), [1, 2], [0, 0], ["a", "b"], file_ids=torch.zeros(3, 4))


def test_feature_files_store_absolute_paths(tmp_path, monkeypatch):
    from reidkit.retrieval.feature_files import load_feature_file, save_feature_file

    monkeypatch.chdir(tmp_path)
    save_feature_file("f.safetensors", torch.eye(2), [("query/a.jpg", 1, 0), ("../b.jpg", 2, 1)], {})
    assert load_feature_file(tmp_path / "f.safetensors")[3] == [str(tmp_path / "query" / "a.jpg"),
                                                                 str(tmp_path.parent / "b.jpg")]

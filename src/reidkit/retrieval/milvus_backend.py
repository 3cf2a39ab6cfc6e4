"""A gallery in Milvus (`pip install "reidkit[milvus]"`): Milvus Lite in a local `.db` file, or a Milvus server or
cluster by URI (`http://host:19530`), for galleries past one machine. Wang et al., "Milvus: A Purpose-Built
Vector Data Management System" (SIGMOD 2021).

One collection (default `reidkit_gallery`; `LOCATION#name` picks another) holds each item as a row: `id` (primary
key, the stable item id), `vector`, and the metadata `pid`, `camid`, `timestamp` (seconds since the epoch, NaN
unknown), `track_id`, `path`, the file identity (`inode`, `size`, `mtime_ns`, `links`) and `model_digest`. The
gallery's own settings (metric, backend, parameters, run, model digest, image folders, next id) are a JSON
collection property, `reidkit`. Backends: milvus-flat (exact), milvus-ivf (IVF_FLAT), milvus-hnsw (HNSW). Filters
become Milvus boolean expressions, which Milvus applies before the vector search (pre-filtering). Distances are
converted to `pairwise_distance` units: Milvus's L2 is squared, its COSINE a similarity.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch

from reidkit.errors import ReidkitError
from reidkit.retrieval.file_identity import FIELDS
from reidkit.retrieval.filters import SearchFilter
from reidkit.retrieval.gallery import GalleryItem, NewItems

MILVUS_BACKENDS = ("milvus-flat", "milvus-ivf", "milvus-hnsw")
DEFAULT_COLLECTION = "reidkit_gallery"
PROPERTY = "reidkit"
PATH_LENGTH = 4096  # longest stored path (VARCHAR max_length)
INSERT_BATCH = 10_000  # rows per insert call
ITERATOR_BATCH = 10_000  # rows per page when listing the ids a deletion matches
METRIC_TYPES = {"cosine": "COSINE", "euclidean": "L2"}
DEFAULT_PARAMS = {"milvus-flat": {}, "milvus-ivf": {"nlist": 1024, "nprobe": 16},
                  "milvus-hnsw": {"hnsw_m": 32, "ef_construction": 200, "ef_search": 64}}
ITEM_FIELDS = ["pid", "camid", "timestamp", "track_id", "path", *FIELDS, "model_digest"]


def import_milvus():
    """The `pymilvus` module, or a ReidkitError naming the extra that installs it."""
    try:
        import pymilvus
    except ImportError as error:
        raise ReidkitError('pymilvus is not installed; a Milvus gallery needs it: pip install "reidkit[milvus]"') \
            from error
    return pymilvus


def _split_location(location: str | Path) -> tuple[str, str]:
    """(URI, collection) of `URI[#collection]`."""
    uri, _, collection = str(location).partition("#")
    return uri, collection or DEFAULT_COLLECTION


class MilvusGallery:
    """A gallery in a Milvus collection; the methods of `reidkit.retrieval.gallery.Gallery`. Build one with
    `create`, reopen it with `open`."""

    def __init__(self, client, collection: str, settings: dict) -> None:
        self.client, self.collection, self._settings = client, collection, settings
        self.metric, self.backend = settings["metric"], settings["backend"]
        self.params, self.run_dir = settings["params"], settings["run_dir"]
        self.model_digest, self.image_roots = settings["model_digest"], settings["image_roots"]

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return self._settings["dim"]

    def __repr__(self) -> str:
        return f"MilvusGallery({self.collection!r}, D={self.dim}, metric={self.metric!r}, backend={self.backend!r})"

    @classmethod
    def create(cls, location: str | Path, dim: int, metric: str = "cosine", backend: str = "milvus-flat", *,
               params: dict | None = None, run_dir: str = "", model_digest: str = "",
               image_roots: list[str] | None = None, replace: bool = False) -> MilvusGallery:
        """A new, empty gallery collection at `location` (`file.db`, or a server URI; `#name` picks the
        collection).

        Args:
            dim: feature dimension.
            metric: "cosine" or "euclidean".
            backend: milvus-flat, milvus-ivf (params nlist, nprobe) or milvus-hnsw (hnsw_m, ef_construction,
                ef_search).
            params: overrides of `DEFAULT_PARAMS[backend]`.
            run_dir, model_digest, image_roots: as `GalleryIndex`.
            replace: drop a collection of that name first; otherwise one already there is refused.

        Raises:
            ValueError: unknown metric, backend or parameter.
            ReidkitError: pymilvus missing, the location unreachable, or the collection exists.
        """
        if metric not in METRIC_TYPES:
            raise ValueError(f"metric must be one of {tuple(METRIC_TYPES)}, got {metric!r}")
        if backend not in MILVUS_BACKENDS:
            raise ValueError(f"backend must be one of {MILVUS_BACKENDS}, got {backend!r}")
        unknown = set(params or {}) - set(DEFAULT_PARAMS[backend])
        if unknown:
            raise ValueError(f"backend {backend!r} takes no {', '.join(sorted(unknown))} "
                             f"(it takes {', '.join(DEFAULT_PARAMS[backend]) or 'no parameters'})")
        pymilvus = import_milvus()
        uri, collection = _split_location(location)
        client = _connect(uri)
        if client.has_collection(collection):
            if not replace:
                raise ReidkitError(f"{location} already holds a collection {collection!r}; give another --out or "
                                   "delete it first")
            client.drop_collection(collection)
        settings = {"format": "reidkit.milvus_gallery", "dim": int(dim), "metric": metric, "backend": backend,
                    "params": {**DEFAULT_PARAMS[backend], **(params or {})}, "run_dir": str(run_dir),
                    "model_digest": model_digest, "image_roots": list(image_roots or []), "next_id": 0}
        client.create_collection(collection, schema=_schema(pymilvus, dim),
                                 index_params=_index_params(client, metric, backend, settings["params"]))
        gallery = cls(client, collection, settings)
        gallery._store_settings()
        return gallery

    @classmethod
    def open(cls, location: str | Path) -> MilvusGallery:
        """The gallery at `location`.

        Raises:
            ReidkitError: pymilvus missing, nothing there, or a collection not made by reidkit.
        """
        uri, collection = _split_location(location)
        if not uri.startswith(("http://", "https://", "tcp://", "unix:")) and not Path(uri).exists():
            raise ReidkitError(f"Milvus gallery not found: {uri}; build one with `reidkit index --backend "
                               "milvus-flat --out FILE.db ...`")
        client = _connect(uri)
        if not client.has_collection(collection):
            raise ReidkitError(f"{uri} holds no collection {collection!r}; build one with `reidkit index --backend "
                               "milvus-flat --out ...`")
        text = client.describe_collection(collection).get("properties", {}).get(PROPERTY)
        try:
            settings = json.loads(text)
            if settings.get("format") != "reidkit.milvus_gallery":
                raise ValueError("not a reidkit gallery")
        except (TypeError, ValueError) as error:
            raise ReidkitError(f"the collection {collection!r} of {uri} is not a reidkit gallery ({error})") from error
        return cls(client, collection, settings)

    def _store_settings(self) -> None:
        self.client.alter_collection_properties(self.collection, properties={PROPERTY: json.dumps(self._settings)})

    def count(self) -> int:
        """Number of items."""
        rows = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def __len__(self) -> int:
        return self.count()

    def search(self, queries, k: int = 10, chunk_size: int = 1024, where: SearchFilter | None = None):
        """The k nearest items of each query among those `where` keeps, as a `SearchResult` whose `indices` and
        `ids` are item ids (-1 and +inf where fewer than min(k, count) were found), sorted by (distance, id).

        Raises:
            ValueError: `k` or `chunk_size` not a positive int, queries not `[Q, D]` finite floats.
        """
        from reidkit.retrieval.index import SearchResult, _as_float_matrix

        queries = _as_float_matrix(queries, "queries", copy=False)
        if queries.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {queries.shape[1]} but the gallery has dimension {self.dim}")
        for name, value in (("k", k), ("chunk_size", chunk_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        width = min(int(k), self.count())
        ids = np.full((len(queries), width), -1, dtype=np.int64)
        distances = np.full((len(queries), width), np.inf, dtype=np.float32)
        expression = "" if where is None else where.milvus_expression()
        for start in range(0, len(queries) if width else 0, chunk_size):
            hits = self.client.search(self.collection, data=queries[start:start + chunk_size].numpy(), limit=width,
                                      filter=expression, output_fields=[], search_params=self._search_params())
            for row, found in enumerate(hits, start=start):
                pairs = sorted((self._distance(hit["distance"]), int(hit["id"])) for hit in found)[:width]
                for column, (distance, item) in enumerate(pairs):
                    ids[row, column], distances[row, column] = item, distance
        return SearchResult(indices=ids, distances=distances, ids=ids)

    def _search_params(self) -> dict:
        params = {"milvus-ivf": {"nprobe": self.params.get("nprobe")},
                  "milvus-hnsw": {"ef": self.params.get("ef_search")}}.get(self.backend, {})
        return {"metric_type": METRIC_TYPES[self.metric], "params": params}

    def _distance(self, score: float) -> float:
        """A Milvus score in `pairwise_distance` units: 1 − cosine similarity, or √(squared L2)."""
        if self.metric == "cosine":
            return min(max(1.0 - score, 0.0), 2.0)
        return math.sqrt(max(score, 0.0))

    def items(self, ids: list[int]) -> list[GalleryItem | None]:
        """The metadata of the items `ids` (None for an id not in the gallery, e.g. deleted)."""
        ids = [int(item) for item in ids]
        rows = {int(row["id"]): row for row in self.client.query(self.collection, ids=ids, output_fields=ITEM_FIELDS)} \
            if ids else {}
        return [_item(rows[item]) if item in rows else None for item in ids]

    def add(self, features, items: NewItems, image_root: str | None = None) -> list[int]:
        """Insert M items (`[M, D]` features and their metadata) with ids from the stored next id on; `image_root`:
        a folder their images lie in, recorded for the service. Returns their ids."""
        from reidkit.retrieval.index import _as_float_matrix

        features = _as_float_matrix(features, "features", copy=False)
        if features.shape[1] != self.dim:
            raise ValueError(f"features have dimension {features.shape[1]} but the gallery has dimension {self.dim}")
        if not len(features) == len(items.pids) == len(items.camids) == len(items.paths) == len(items.timestamps) \
                == len(items.track_ids):
            raise ValueError(f"expected metadata for {len(features)} items")
        file_ids = np.full((len(features), len(FIELDS)), -1, dtype=np.int64) if items.file_ids is None \
            else np.asarray(items.file_ids, dtype=np.int64)
        first = self._settings["next_id"]
        vectors = features.numpy()
        rows = [{"id": first + i, "vector": vectors[i], "pid": int(items.pids[i]), "camid": int(items.camids[i]),
                 "timestamp": float(items.timestamps[i]), "track_id": int(items.track_ids[i]),
                 "path": str(items.paths[i]), "model_digest": self.model_digest,
                 **{name: int(value) for name, value in zip(FIELDS, file_ids[i])}} for i in range(len(features))]
        too_long = [row["path"] for row in rows if len(row["path"].encode()) > PATH_LENGTH]
        if too_long:
            raise ReidkitError(f"an image path is longer than {PATH_LENGTH} bytes: {too_long[0][:80]}…")
        for start in range(0, len(rows), INSERT_BATCH):
            self.client.insert(self.collection, rows[start:start + INSERT_BATCH])
        self._settings["next_id"] = first + len(rows)
        if image_root and image_root not in self.image_roots:
            self.image_roots.append(image_root)
        self._store_settings()
        return list(range(first, first + len(rows)))

    def delete(self, ids: list[int] | None = None, where: SearchFilter | None = None) -> list[int]:
        """Remove the items that are in `ids` (when given) and pass `where` (when given). Returns the ids removed
        (ascending).

        Raises:
            ValueError: neither `ids` nor a non-empty `where` given.
        """
        terms = [] if where is None or where.is_empty else [where.milvus_expression()]
        if ids is not None:
            terms.append(f"id in [{', '.join(str(int(item)) for item in ids)}]")
        if not terms:
            raise ValueError("say what to delete: item ids, cameras or a time window")
        matched = []
        with _quiet("pymilvus.client.iterator.query_iterator"):  # a warning on every Milvus Lite iterator
            iterator = self.client.query_iterator(self.collection, batch_size=ITERATOR_BATCH, output_fields=["id"],
                                                  filter=" and ".join(f"({term})" for term in terms))
            while page := iterator.next():
                matched.extend(int(row["id"]) for row in page)
            iterator.close()
        matched.sort()
        for start in range(0, len(matched), ITERATOR_BATCH):
            self.client.delete(self.collection, ids=matched[start:start + ITERATOR_BATCH])
        return matched

    def save(self, path: str | Path | None = None) -> None:
        """Make every change durable (`flush`); the collection is the storage, so `path` is not used."""
        self.client.flush(self.collection)

    def vectors(self, ids: list[int]) -> torch.Tensor:
        """The stored features `[len(ids), D]` of the items `ids` (all present)."""
        rows = {int(row["id"]): row["vector"] for row in self.client.query(self.collection, ids=list(ids),
                                                                          output_fields=["vector"])}
        return torch.tensor(np.array([rows[int(item)] for item in ids], dtype=np.float32))


@contextlib.contextmanager
def _quiet(logger: str):
    """Only errors of `logger` inside the block."""
    handle = logging.getLogger(logger)
    level = handle.level
    handle.setLevel(logging.ERROR)
    try:
        yield
    finally:
        handle.setLevel(level)


def _connect(uri: str):
    pymilvus = import_milvus()
    try:
        return pymilvus.MilvusClient(uri)
    except Exception as error:  # pymilvus raises its own and gRPC error types for an unreachable or bad URI
        raise ReidkitError(f"cannot open the Milvus gallery {uri}: {type(error).__name__}: {error}") from error


def _schema(pymilvus, dim: int):
    data_type = pymilvus.DataType
    schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", data_type.INT64, is_primary=True)
    schema.add_field("vector", data_type.FLOAT_VECTOR, dim=int(dim))
    for name in ("pid", "camid", "track_id", *FIELDS):
        schema.add_field(name, data_type.INT64)
    schema.add_field("timestamp", data_type.DOUBLE)
    schema.add_field("path", data_type.VARCHAR, max_length=PATH_LENGTH)
    schema.add_field("model_digest", data_type.VARCHAR, max_length=64)
    return schema


def _index_params(client, metric: str, backend: str, params: dict):
    index_params = client.prepare_index_params()
    index_type, build = {"milvus-flat": ("FLAT", {}),
                         "milvus-ivf": ("IVF_FLAT", {"nlist": params.get("nlist")}),
                         "milvus-hnsw": ("HNSW", {"M": params.get("hnsw_m"),
                                                  "efConstruction": params.get("ef_construction")})}[backend]
    index_params.add_index(field_name="vector", index_type=index_type, metric_type=METRIC_TYPES[metric], params=build)
    index_params.add_index(field_name="camid", index_type="INVERTED")
    return index_params


def _item(row: dict) -> GalleryItem:
    return GalleryItem(int(row["id"]), int(row["pid"]), int(row["camid"]), float(row["timestamp"]),
                       int(row["track_id"]), row["path"], tuple(int(row[name]) for name in FIELDS),
                       row["model_digest"])

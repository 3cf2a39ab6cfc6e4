"""Gallery index: the k nearest gallery items of each query, by exact torch search or a faiss index.

Exact search is brute force over `reidkit.distances.pairwise_distance`, one chunk of queries at a
time. The faiss backends (`reidkit.retrieval.faiss_backend`) are flat (exact), IVF and HNSW (approximate);
every backend reports distances in `pairwise_distance` units (true L2, or 1 − cos). `recall_at_k` measures
an approximate search against the exact one, as in the ANN benchmarks of Aumüller et al.,
"ANN-Benchmarks" (Information Systems, 2020).

Each item has a stable id (`item_ids`, ascending; a deleted id is never reused) and metadata: pid, camera,
timestamp, track id, path, file identity (`reidkit.retrieval.gallery.GalleryItem`). A search may be restricted by a
`SearchFilter` (cameras, time window): exact search (and faiss-flat) **pre-filters**, searching exactly the items
that pass, so no match inside the filter is missed; faiss-ivf / faiss-hnsw pass the items that pass to faiss as
an `IDSelector`, which skips the others while it visits cells / the graph (approximate, as without a filter).
`add` and `delete` build the new state first and swap it in under a lock, so a search running meanwhile sees
the gallery before or after, never half of it.

On-disk format (one `.safetensors` file): tensors `features` [N, D] float32, `pids` [N] and `camids` [N]
int64, `file_ids` [N, 4] int64 (each image's inode, size, mtime in ns and link count when indexed, -1 when
not recorded; absent in older files), `item_ids` [N] int64, `timestamps` [N] float64 (seconds since the epoch,
NaN unknown) and `track_ids` [N] int64 (-1 unknown) (the last three absent in format 1: ids 0..N−1, unknown),
and for faiss-ivf / faiss-hnsw `faiss_index` [B] uint8
(`faiss.serialize_index`), so a loaded approximate index is the very index that was saved (HNSW construction is multi-threaded and not
reproducible); the exact and faiss-flat backends are rebuilt from `features`, which is deterministic.
Metadata: `format` = "reidkit.gallery_index", `format_version`, `paths` (JSON), `metric`, `backend`,
`params` (JSON), `run_dir`, `model_digest`, `image_roots` (JSON; absent in older files), `next_id` (format 2). The approximate
backends store the gallery twice (features and faiss index).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from reidkit.distances import METRICS, pairwise_distance
from reidkit.errors import ReidkitError
from reidkit.outputs import write_file
from reidkit.retrieval import faiss_backend
from reidkit.retrieval.feature_files import feature_file_metadata, load_feature_file
from reidkit.retrieval.file_identity import FIELDS, file_identities, unknown_identities
from reidkit.retrieval.filters import SearchFilter
from reidkit.retrieval.gallery import GalleryItem, NewItems

BACKENDS = ("exact",) + faiss_backend.FAISS_BACKENDS
FILE_FORMAT = "reidkit.gallery_index"
FILE_FORMAT_VERSION = "2"  # 2 added item_ids, timestamps, track_ids, next_id
# Exact search takes k + this many candidates per query before ordering ties by gallery index; rows whose
# ties at rank k may reach past the candidates are re-ranked by a full stable sort.
_TIE_MARGIN = 8


@dataclass
class SearchResult:
    """The k nearest gallery items of Q queries, nearest first, ties in gallery index order.

    Attributes:
        indices: Row positions `[Q, k]` int64 in the in-memory gallery (-1 where an approximate index or a
            filter found fewer than k items); a Milvus gallery has no rows and answers its item ids here too.
        distances: Distances `[Q, k]` float32 in `pairwise_distance` units (+inf where the index is -1).
        ids: Stable item ids `[Q, k]` int64 (-1 where the index is -1): what every backend answers.
    """

    indices: np.ndarray
    distances: np.ndarray
    ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.ids is None:
            self.ids = self.indices


class GalleryIndex:
    """A searchable gallery: features with their pids, camids and image paths.

    Args:
        features: Gallery features `[N, D]` (torch or numpy, any float dtype; stored as a float32 copy).
        pids: Person ids `[N]`.
        camids: Camera ids `[N]`.
        paths: Image paths, N strings.
        metric: "cosine" (1 − cos) or "euclidean" (true L2).
        backend: "exact" (torch brute force), "faiss-flat" (faiss brute force), "faiss-ivf" (inverted file,
            approximate) or "faiss-hnsw" (graph, approximate). faiss backends need `reidkit[search]`.
        nlist: faiss-ivf cells, default round(4·√N) capped at N / 39; k-means seed fixed.
        nprobe: faiss-ivf cells visited per query, default min(8, nlist).
        hnsw_m: faiss-hnsw neighbours per node, default 32.
        ef_search: faiss-hnsw search list length, default 64 (raised to k by faiss when smaller).
        run_dir: the run whose model made the features (saved with the index, so a search can embed
            new query images with the same model).
        model_digest: SHA-256 of that model's weights file, so a search can tell when it changed.
        image_roots: the folders (resolved) that hold the gallery images, recorded at index time: the search
            service serves images from these folders only.
        file_ids: `[N, 4]` int64 identities of the image files when indexed
            (`reidkit.retrieval.file_identity.file_identities`); default: not recorded (rows of -1).
        item_ids: `[N]` ascending stable item ids; default 0..N−1.
        timestamps: `[N]` seconds since the epoch (NaN unknown); default unknown.
        track_ids: `[N]` track ids (-1 unknown); default unknown.
        next_id: the id the next added item gets; default max(item_ids) + 1.

    Raises:
        ValueError: Unknown metric or backend (the message lists the allowed values), mismatched lengths,
            non-finite features, or a backend parameter out of range or given to a backend without it.
        ReidkitError: A faiss backend without faiss installed.
    """

    def __init__(self, features, pids, camids, paths: list[str], metric: str = "cosine", backend: str = "exact",
                 *, nlist: int | None = None, nprobe: int | None = None, hnsw_m: int | None = None,
                 ef_search: int | None = None, run_dir: str = "", model_digest: str = "",
                 image_roots: list[str] | None = None, file_ids=None, item_ids=None, timestamps=None,
                 track_ids=None, next_id: int | None = None) -> None:
        self._set_gallery(features, pids, camids, paths, metric, backend, file_ids, item_ids, timestamps, track_ids,
                          next_id)
        self.run_dir, self.model_digest, self.image_roots = str(run_dir), model_digest, list(image_roots or [])
        self.params = faiss_backend.resolve_params(backend, len(self), nlist, nprobe, hnsw_m, ef_search)
        self._faiss_index = None
        if backend in faiss_backend.FAISS_BACKENDS:
            self._faiss_index = faiss_backend.build_index(self._faiss_input(self.features), metric, backend,
                                                          self.params)

    def _set_gallery(self, features, pids, camids, paths: list[str], metric: str, backend: str, file_ids,
                     item_ids=None, timestamps=None, track_ids=None, next_id: int | None = None) -> None:
        self._lock = threading.Lock()
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.features = _as_float_matrix(features, "features", copy=True)
        num_items = len(self.features)
        if num_items == 0:
            raise ValueError("the gallery is empty")
        self.pids = _as_labels(pids, "pids", num_items)
        self.camids = _as_labels(camids, "camids", num_items)
        self.paths = [str(path) for path in paths]
        if len(self.paths) != num_items:
            raise ValueError(f"expected {num_items} paths, got {len(self.paths)}")
        self.file_ids = unknown_identities(num_items) if file_ids is None else \
            torch.as_tensor(file_ids).detach().to("cpu", torch.int64, copy=True)
        if self.file_ids.shape != (num_items, len(FIELDS)):
            raise ValueError(f"file_ids must have shape ({num_items}, {len(FIELDS)}), got {tuple(self.file_ids.shape)}")
        self.item_ids = torch.arange(num_items) if item_ids is None else _as_labels(item_ids, "item_ids", num_items)
        if num_items > 1 and not bool((self.item_ids[1:] > self.item_ids[:-1]).all()) or int(self.item_ids[0]) < 0:
            raise ValueError("item_ids must be ascending, distinct and >= 0")
        self.timestamps = torch.full((num_items,), float("nan"), dtype=torch.float64) if timestamps is None else \
            torch.as_tensor(timestamps).detach().to("cpu", torch.float64, copy=True)
        if self.timestamps.shape != (num_items,):
            raise ValueError(f"timestamps must have shape ({num_items},), got {tuple(self.timestamps.shape)}")
        self.track_ids = torch.full((num_items,), -1) if track_ids is None else \
            _as_labels(track_ids, "track_ids", num_items)
        self.next_id = int(self.item_ids[-1]) + 1 if next_id is None else int(next_id)
        if self.next_id <= int(self.item_ids[-1]):
            raise ValueError(f"next_id {self.next_id} is not above the largest item id {int(self.item_ids[-1])}")
        self.metric, self.backend = metric, backend

    def __len__(self) -> int:
        return self.features.shape[0]

    def count(self) -> int:
        """Number of items N."""
        return len(self)

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return self.features.shape[1]

    def __repr__(self) -> str:
        return (f"GalleryIndex(N={len(self)}, D={self.dim}, metric={self.metric!r}, backend={self.backend!r}, "
                f"params={self.params})")

    def search(self, queries, k: int = 10, chunk_size: int = 1024, where: SearchFilter | None = None) -> SearchResult:
        """The k nearest gallery items of each query (among those `where` keeps).

        k larger than the gallery (or the items kept) is clamped: the result then has that many columns. The
        exact backend holds one `[chunk_size, N]` distance block (plus its temporaries) at a time; ties are
        ordered by gallery index exactly, including ties straddling rank k. Queries are searched as float32.
        Each exact chunk re-normalises (cosine) or re-squares (Euclidean) the gallery inside
        `pairwise_distance`, a fixed cost per chunk that dominates when queries are searched one at a time:
        batch them. With `where`, exact and faiss-flat search exactly the items kept (pre-filtering);
        faiss-ivf / faiss-hnsw skip the others inside faiss (`IDSelectorBatch`).

        Args:
            queries: Query features `[Q, D]` (torch or numpy).
            k: Neighbours per query, ≥ 1.
            chunk_size: Queries per block, ≥ 1.
            where: Cameras and time window of the items searched; None: all.

        Returns:
            `SearchResult` with `indices`, `ids` and `distances` `[Q, min(k, kept)]`, sorted by (distance, index).

        Raises:
            ValueError: If `k` or `chunk_size` is not a positive int, queries are not finite, or the query
                dimension differs from the index dimension.
        """
        queries = _as_float_matrix(queries, "queries", copy=False)
        if queries.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {queries.shape[1]} but the index has dimension {self.dim}")
        for name, value in (("k", k), ("chunk_size", chunk_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        with self._lock:  # one consistent state, even while `add` or `delete` swaps in another
            features, faiss_index, item_ids = self.features, self._faiss_index, self.item_ids
            rows = None if where is None or where.is_empty else where.mask(self.camids, self.timestamps).nonzero()[:, 0]
        searched = features if rows is None or self.backend != "exact" else features[rows]
        k = min(int(k), len(features) if rows is None else len(rows))
        selector = None if rows is None or faiss_index is None else faiss_backend.selector(rows.numpy())
        all_distances, all_indices = [torch.empty(0, k)], [torch.empty(0, k, dtype=torch.int64)]
        for start in range(0, len(queries) if k else 0, chunk_size):
            chunk = queries[start:start + chunk_size]
            if faiss_index is None:
                distances, indices = _exact_topk(pairwise_distance(chunk, searched, self.metric), k)
                if rows is not None:
                    indices = rows[indices]  # ascending rows: the order of ties is kept
            else:
                distances, indices = faiss_backend.search(faiss_index, self._faiss_input(chunk), k, self.metric,
                                                          self.backend, self.params, selector)
                distances, indices = _sort_by_distance_then_index(torch.from_numpy(distances),
                                                                  torch.from_numpy(indices))
            all_distances.append(distances)
            all_indices.append(indices)
        indices = torch.cat(all_indices)
        if len(indices) < len(queries):  # nothing kept: empty rows
            indices, all_distances = torch.empty(len(queries), 0, dtype=torch.int64), [torch.empty(len(queries), 0)]
        ids = torch.where(indices >= 0, item_ids[indices.clamp(min=0)], -1)
        return SearchResult(indices=indices.numpy().astype(np.int64, copy=False),
                            distances=torch.cat(all_distances).numpy().astype(np.float32, copy=False),
                            ids=ids.numpy().astype(np.int64, copy=False))

    def items(self, ids: list[int]) -> list[GalleryItem | None]:
        """The metadata of the items `ids` (None for an id not in the gallery, e.g. deleted)."""
        with self._lock:
            item_ids, pids, camids, timestamps = self.item_ids, self.pids, self.camids, self.timestamps
            track_ids, paths, file_ids = self.track_ids, self.paths, self.file_ids
        wanted = torch.as_tensor(list(ids), dtype=torch.int64)
        rows = torch.searchsorted(item_ids, wanted).clamp(max=len(item_ids) - 1)
        found = []
        for item, row in zip(wanted.tolist(), rows.tolist()):
            found.append(GalleryItem(item, int(pids[row]), int(camids[row]), float(timestamps[row]),
                                     int(track_ids[row]), paths[row], tuple(file_ids[row].tolist()),
                                     self.model_digest) if int(item_ids[row]) == item else None)
        return found

    def add(self, features, items: NewItems, image_root: str | None = None) -> list[int]:
        """Append M items (`[M, D]` features and their metadata); `image_root`: a folder their images lie in,
        recorded for the service. The faiss indexes are rebuilt as in `extended`. Returns their new ids."""
        extended = self.extended(features, items.pids, items.camids, items.paths, image_root, items.file_ids,
                                 timestamps=items.timestamps, track_ids=items.track_ids)
        self._swap(extended)
        return extended.item_ids[len(extended) - len(items.paths):].tolist()

    def delete(self, ids: list[int] | None = None, where: SearchFilter | None = None) -> list[int]:
        """Remove the items that are in `ids` (when given) and pass `where` (when given); faiss indexes are rebuilt
        over the items left. Returns the ids removed (ascending).

        Raises:
            ValueError: neither `ids` nor a non-empty `where` given (that would delete everything by mistake).
            ReidkitError: the deletion would leave the gallery empty (delete the index file instead).
        """
        if ids is None and (where is None or where.is_empty):
            raise ValueError("say what to delete: item ids, cameras or a time window")
        with self._lock:
            doomed = torch.ones(len(self), dtype=torch.bool) if ids is None else \
                torch.isin(self.item_ids, torch.as_tensor(list(ids), dtype=torch.int64))
            if where is not None and not where.is_empty:
                doomed &= where.mask(self.camids, self.timestamps)
        if not bool(doomed.any()):
            return []
        kept = (~doomed).nonzero()[:, 0]
        if len(kept) == 0:
            raise ReidkitError(f"deleting these {len(self)} items would leave the gallery empty; delete the index "
                               "file instead, or build a new one with `reidkit index`")
        removed = self.item_ids[doomed].tolist()
        self._swap(GalleryIndex(self.features[kept], self.pids[kept], self.camids[kept],
                                [self.paths[row] for row in kept.tolist()], self.metric, self.backend,
                                **self._build_params(len(kept)), run_dir=self.run_dir,
                                model_digest=self.model_digest, image_roots=self.image_roots,
                                file_ids=self.file_ids[kept], item_ids=self.item_ids[kept],
                                timestamps=self.timestamps[kept], track_ids=self.track_ids[kept],
                                next_id=self.next_id))
        return removed

    def _build_params(self, num_items: int) -> dict[str, int]:
        """This index's backend parameters for a gallery of `num_items` (nlist capped by the new size)."""
        params = dict(self.params)
        if "nlist" in params:
            params["nlist"] = min(params["nlist"], num_items)
            params["nprobe"] = min(params["nprobe"], params["nlist"])
        return params

    def _swap(self, other: GalleryIndex) -> None:
        """Take the state of `other` at once (under the lock searches read it with)."""
        with self._lock:
            self.__dict__.update({key: value for key, value in other.__dict__.items() if key != "_lock"})

    def _faiss_input(self, features: Tensor) -> np.ndarray:
        """float32 C-contiguous numpy vectors for faiss: L2-normalised (as `pairwise_distance`) for cosine."""
        if self.metric == "cosine":
            features = F.normalize(features, dim=1)
        return np.ascontiguousarray(features.numpy(), dtype=np.float32)

    def save(self, path: str | Path) -> None:
        """Write the index to one `.safetensors` file (format in the module docstring) with
        `reidkit.outputs.write_file` (atomic; a ReidkitError naming the file and the fix on failure)."""
        from safetensors.torch import save_file

        with self._lock:  # one consistent state; the (slow) write goes on without the lock
            tensors = {"features": self.features, "pids": self.pids, "camids": self.camids,
                       "file_ids": self.file_ids, "item_ids": self.item_ids, "timestamps": self.timestamps,
                       "track_ids": self.track_ids}
            if self.backend in faiss_backend.APPROXIMATE_BACKENDS:
                tensors["faiss_index"] = torch.from_numpy(faiss_backend.serialize(self._faiss_index))
            metadata = {"format": FILE_FORMAT, "format_version": FILE_FORMAT_VERSION,
                        "paths": json.dumps(self.paths), "metric": self.metric, "backend": self.backend,
                        "params": json.dumps(self.params), "run_dir": self.run_dir, "model_digest": self.model_digest,
                        "image_roots": json.dumps(self.image_roots), "next_id": str(self.next_id)}
        write_file(path, lambda temporary: save_file(tensors, str(temporary), metadata=metadata))

    @classmethod
    def load(cls, path: str | Path) -> GalleryIndex:
        """Read an index written by `save`.

        Raises:
            ReidkitError: If the file is missing, corrupt, not a gallery index, or needs faiss and faiss is
                not installed.
        """
        tensors, metadata = _read_index_file(path)
        if metadata.get("format") != FILE_FORMAT:
            raise ReidkitError(f"{path} is not a reidkit gallery index (a feature file? use "
                               "GalleryIndex.from_feature_file)")
        try:
            index = cls.__new__(cls)
            index._set_gallery(tensors["features"], tensors["pids"], tensors["camids"],
                               json.loads(metadata["paths"]), metadata["metric"], metadata["backend"],
                               tensors.get("file_ids"), tensors.get("item_ids"), tensors.get("timestamps"),
                               tensors.get("track_ids"), int(metadata["next_id"]) if "next_id" in metadata else None)
            params = json.loads(metadata["params"])
            index.run_dir, index.model_digest = metadata.get("run_dir", ""), metadata.get("model_digest", "")
            index.image_roots = [str(root) for root in json.loads(metadata.get("image_roots", "[]"))]
            index.params = faiss_backend.resolve_params(index.backend, len(index), **params)
        except (KeyError, TypeError, ValueError) as error:
            raise ReidkitError(f"corrupt gallery index {path}: {type(error).__name__}: {error}") from error
        index._faiss_index = None
        if index.backend == "faiss-flat":
            index._faiss_index = faiss_backend.build_index(index._faiss_input(index.features), index.metric,
                                                           index.backend, index.params)
        elif index.backend in faiss_backend.APPROXIMATE_BACKENDS:
            if "faiss_index" not in tensors:
                raise ReidkitError(f"corrupt gallery index {path}: the {index.backend} index is missing")
            index._faiss_index = faiss_backend.deserialize(tensors["faiss_index"].numpy())
            if (index._faiss_index.ntotal, index._faiss_index.d) != tuple(index.features.shape):
                raise ReidkitError(f"corrupt gallery index {path}: the faiss index does not match the features")
            faiss_backend.configure(index._faiss_index, index.backend, index.params)
        return index

    def extended(self, features, pids, camids, paths: list[str], image_root: str | None = None,
                 file_ids=None, timestamps=None, track_ids=None) -> GalleryIndex:
        """A new index: this gallery followed by the given items (`[M, D]` features, M pids, camids, paths,
        `[M, 4]` file identities or None, M timestamps and track ids or None: unknown) with ids from `next_id`
        on, the same metric, backend parameters, run, model digest and image roots (plus `image_root`).
        The exact and faiss-flat backends are rebuilt from the features; faiss-ivf and faiss-hnsw are built
        anew over all items (k-means / graph construction: slow for large galleries)."""
        added = _as_float_matrix(features, "features", copy=False)
        roots = self.image_roots + ([image_root] if image_root and image_root not in self.image_roots else [])
        pids, camids = _as_labels(pids, "pids", len(added)), _as_labels(camids, "camids", len(added))
        added_ids = unknown_identities(len(added)) if file_ids is None else torch.as_tensor(file_ids)
        times = torch.full((len(added),), float("nan"), dtype=torch.float64) if timestamps is None else \
            torch.as_tensor(timestamps, dtype=torch.float64)
        tracks = torch.full((len(added),), -1) if track_ids is None else _as_labels(track_ids, "track_ids", len(added))
        new_ids = torch.arange(self.next_id, self.next_id + len(added))
        return GalleryIndex(torch.cat([self.features, added]), torch.cat([self.pids, pids]),
                            torch.cat([self.camids, camids]), self.paths + list(paths),
                            self.metric, self.backend, **self.params, run_dir=self.run_dir,
                            model_digest=self.model_digest, image_roots=roots,
                            file_ids=torch.cat([self.file_ids, added_ids.to(torch.int64)]),
                            item_ids=torch.cat([self.item_ids, new_ids]),
                            timestamps=torch.cat([self.timestamps, times]), track_ids=torch.cat([self.track_ids, tracks]))

    @classmethod
    def from_feature_file(cls, path: str | Path, metric: str = "cosine", backend: str = "exact", *,
                          nlist: int | None = None, nprobe: int | None = None, hnsw_m: int | None = None,
                          ef_search: int | None = None, image_roots: list[str] | None = None) -> GalleryIndex:
        """An index over a feature file written by `reidkit.engine.extraction.extract_split`, recording the
        file's model digest, and with `image_roots` the identities of its image files now.

        Args: as `GalleryIndex`, with `path` the feature file.

        Raises:
            ReidkitError: If the file is missing or is not a feature file.
        """
        features, pids, camids, paths = load_feature_file(path)
        return cls(features, pids, camids, paths, metric, backend, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m,
                   ef_search=ef_search, model_digest=feature_file_metadata(path).get("model_digest", ""),
                   image_roots=image_roots, file_ids=file_identities(paths) if image_roots else None)


def recall_at_k(approximate: SearchResult, exact: SearchResult, k: int) -> float:
    """Mean over queries of |top-k approximate ∩ top-k exact| / k.

    When the exact ranking has ties at rank k, a correct approximate search may pick other items of the
    tie and score below 1. Index -1 (an item not found) never counts.

    Args:
        approximate: Result of the search under test, `[Q, ≥k]`.
        exact: Result of exact search on the same queries, `[Q, ≥k]`.
        k: Cut-off, 1..the number of columns of both results.

    Returns:
        Recall@k in [0, 1].

    Raises:
        ValueError: If the results have different numbers of queries or none, or `k` is out of range.
    """
    approx_indices, exact_indices = approximate.indices, exact.indices
    if approx_indices.shape[0] != exact_indices.shape[0] or approx_indices.shape[0] == 0:
        raise ValueError(f"expected results for the same, non-zero number of queries, got "
                         f"{approx_indices.shape[0]} and {exact_indices.shape[0]}")
    width = min(approx_indices.shape[1], exact_indices.shape[1])
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= width:
        raise ValueError(f"k must be an int in 1..{width} (the columns of both results), got {k!r}")
    hits = 0
    for start in range(0, len(approx_indices), 1024):
        found = approx_indices[start:start + 1024, :k]
        truth = exact_indices[start:start + 1024, :k]
        hits += int(((found[:, :, None] == truth[:, None, :]).any(axis=2) & (found >= 0)).sum())
    return hits / (len(approx_indices) * k)


def _exact_topk(distances: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k smallest of each row of `distances` [C, N], sorted by (distance, column index)."""
    num_items = distances.shape[1]
    num_candidates = min(num_items, k + _TIE_MARGIN)
    values, indices = torch.topk(distances, num_candidates, dim=1, largest=False, sorted=False)
    values, indices = _sort_by_distance_then_index(values, indices)
    if num_candidates < num_items:
        # topk picks an arbitrary subset of a tie; when the tie at rank k may continue past the candidates,
        # the lowest gallery indices of that tie can be missing: order those rows by a full stable sort.
        unsure = (values[:, -1] <= values[:, k - 1]).nonzero().squeeze(1)
        if len(unsure):
            full_values, full_indices = torch.sort(distances[unsure], dim=1, stable=True)
            values[unsure], indices[unsure] = full_values[:, :num_candidates], full_indices[:, :num_candidates]
    return values[:, :k], indices[:, :k]


def _sort_by_distance_then_index(values: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    """Reorder each row of `values`, `indices` [C, k] by (value, index)."""
    by_index = indices.argsort(dim=1)
    values, indices = values.gather(1, by_index), indices.gather(1, by_index)
    by_value = values.argsort(dim=1, stable=True)
    return values.gather(1, by_value), indices.gather(1, by_value)


def _as_float_matrix(array, name: str, copy: bool) -> Tensor:
    """`array` as a finite float32 CPU tensor [N, D] (a private copy when `copy`)."""
    tensor = torch.as_tensor(array).detach()
    if tensor.dim() != 2 or not tensor.is_floating_point():
        raise ValueError(f"{name} must be a float matrix [N, D], got {tuple(tensor.shape)} {tensor.dtype}")
    tensor = tensor.to("cpu", torch.float32, copy=copy).contiguous()
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return tensor


def _as_labels(array, name: str, num_items: int) -> Tensor:
    """`array` as an int64 CPU tensor [num_items]."""
    tensor = torch.as_tensor(array).detach().to("cpu", torch.int64, copy=True)
    if tensor.shape != (num_items,):
        raise ValueError(f"{name} must have shape ({num_items},), got {tuple(tensor.shape)}")
    return tensor


def _read_index_file(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """All tensors and the metadata of a `.safetensors` file, or a ReidkitError saying what is wrong."""
    from safetensors import safe_open

    if not Path(path).is_file():
        raise ReidkitError(f"gallery index not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # safetensors raises its own error types for a bad header or short data
        raise ReidkitError(f"cannot read gallery index {path} (corrupt or not a .safetensors file): {error}") from error
    return tensors, metadata

"""faiss backends of the gallery index: flat (exact), IVF and HNSW (approximate).

faiss (Johnson, Douze and Jégou, "Billion-scale similarity search with GPUs", 2017) is an optional extra,
imported inside the functions that need it. IVF is the inverted file of Jégou et al. (TPAMI 2011) with
k-means coarse cells; HNSW is the graph of Malkov and Yashunin, "Efficient and robust approximate nearest
neighbor search using Hierarchical Navigable Small World graphs" (TPAMI 2018).

Vectors reach this module already prepared: L2-normalised for the cosine metric, which faiss then searches
by inner product; raw for the Euclidean metric, searched by squared L2. `search` converts faiss scores to
the units of `reidkit.distances.pairwise_distance`: true L2 distance, or 1 − cos.
"""

from __future__ import annotations

import math

import numpy as np

from reidkit.distances import SQUARED_EPS
from reidkit.errors import ReidkitError

FAISS_BACKENDS = ("faiss-flat", "faiss-ivf", "faiss-hnsw")
APPROXIMATE_BACKENDS = ("faiss-ivf", "faiss-hnsw")

# Seed of the k-means that trains the IVF coarse cells (faiss's own default, set explicitly).
TRAIN_SEED = 1234
# faiss k-means asks for at least this many training points per cell.
MIN_POINTS_PER_CELL = 39
DEFAULT_NPROBE = 8
DEFAULT_HNSW_M = 32
DEFAULT_EF_SEARCH = 64


def import_faiss():
    """The `faiss` module.

    Raises:
        ReidkitError: If faiss is not installed, naming the extra that installs it.
    """
    try:
        import faiss
    except ImportError as error:
        raise ReidkitError('faiss is not installed: pip install "reidkit[search]"') from error
    return faiss


def default_nlist(num_items: int) -> int:
    """IVF cell count for `num_items` gallery vectors: round(4·√N), at most N / 39 (the k-means minimum of
    39 training points per cell), at least 1."""
    return max(1, min(round(4 * math.sqrt(num_items)), num_items // MIN_POINTS_PER_CELL))


def resolve_params(backend: str, num_items: int, nlist: int | None = None, nprobe: int | None = None,
                   hnsw_m: int | None = None, ef_search: int | None = None) -> dict[str, int]:
    """The backend parameters with defaults filled in; only those of `backend` are returned.

    Args:
        backend: A validated backend name.
        num_items: Gallery size N.
        nlist: IVF cells (faiss-ivf), default `default_nlist(N)`, 1..N.
        nprobe: IVF cells visited per query (faiss-ivf), default min(8, nlist), 1..nlist.
        hnsw_m: HNSW neighbours per node (faiss-hnsw), default 32, ≥ 2.
        ef_search: HNSW candidate list length at search time (faiss-hnsw), default 64, ≥ 1.

    Returns:
        `{"nlist", "nprobe"}` for faiss-ivf, `{"hnsw_m", "ef_search"}` for faiss-hnsw, `{}` otherwise.

    Raises:
        ValueError: If a parameter is given for a backend that does not use it, or is out of range.
    """
    given = {"nlist": nlist, "nprobe": nprobe, "hnsw_m": hnsw_m, "ef_search": ef_search}
    used = {"faiss-ivf": ("nlist", "nprobe"), "faiss-hnsw": ("hnsw_m", "ef_search")}.get(backend, ())
    unused = [name for name, value in given.items() if value is not None and name not in used]
    if unused:
        raise ValueError(f"backend {backend!r} takes no {', '.join(unused)} "
                         "(nlist, nprobe: faiss-ivf; hnsw_m, ef_search: faiss-hnsw)")
    if backend == "faiss-ivf":
        nlist = default_nlist(num_items) if nlist is None else nlist
        _check_range("nlist", nlist, 1, num_items)
        nprobe = min(DEFAULT_NPROBE, nlist) if nprobe is None else nprobe
        _check_range("nprobe", nprobe, 1, nlist)
        return {"nlist": nlist, "nprobe": nprobe}
    if backend == "faiss-hnsw":
        hnsw_m = DEFAULT_HNSW_M if hnsw_m is None else hnsw_m
        _check_range("hnsw_m", hnsw_m, 2, None)
        ef_search = DEFAULT_EF_SEARCH if ef_search is None else ef_search
        _check_range("ef_search", ef_search, 1, None)
        return {"hnsw_m": hnsw_m, "ef_search": ef_search}
    return {}


def _check_range(name: str, value: int, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f"≥ {low}"
        raise ValueError(f"{name} must be an int in {bound}, got {value!r}")


def build_index(vectors: np.ndarray, metric: str, backend: str, params: dict[str, int]):
    """A faiss index over prepared gallery vectors.

    Args:
        vectors: Gallery `[N, D]` float32, C-contiguous (normalised for "cosine").
        metric: "cosine" (inner product) or "euclidean" (L2).
        backend: "faiss-flat", "faiss-ivf" (trained on `vectors`, seed `TRAIN_SEED`) or "faiss-hnsw".
        params: The output of `resolve_params`.

    Returns:
        The faiss index holding all N vectors, configured for search.
    """
    faiss = import_faiss()
    dim = vectors.shape[1]
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    if backend == "faiss-flat":
        index = faiss.IndexFlat(dim, faiss_metric)
    elif backend == "faiss-ivf":
        quantizer = faiss.IndexFlat(dim, faiss_metric)
        index = faiss.IndexIVFFlat(quantizer, dim, params["nlist"], faiss_metric)
        index.cp.seed = TRAIN_SEED
        index.train(vectors)
    elif backend == "faiss-hnsw":
        index = faiss.IndexHNSWFlat(dim, params["hnsw_m"], faiss_metric)
    else:
        raise ValueError(f"backend must be one of {FAISS_BACKENDS}, got {backend!r}")
    index.add(vectors)
    configure(index, backend, params)
    return index


def configure(index, backend: str, params: dict[str, int]) -> None:
    """Set the search-time parameters (nprobe, efSearch) of `index`."""
    if backend == "faiss-ivf":
        index.nprobe = params["nprobe"]
    elif backend == "faiss-hnsw":
        index.hnsw.efSearch = params["ef_search"]


def selector(rows: np.ndarray):
    """A faiss `IDSelectorBatch` keeping the gallery rows `rows` `[M]` (the items a filter keeps)."""
    faiss = import_faiss()
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    return faiss.IDSelectorBatch(len(rows), faiss.swig_ptr(rows))


def search(index, queries: np.ndarray, k: int, metric: str, backend: str = "faiss-flat",
           params: dict[str, int] | None = None, kept=None) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest gallery items of each query, in `pairwise_distance` units.

    Args:
        index: A faiss index from `build_index` or `deserialize`.
        queries: Prepared queries `[Q, D]` float32, C-contiguous.
        k: Neighbours per query, 1..N.
        metric: "cosine" or "euclidean", as the index was built.
        backend: the index's backend, and `params` its `resolve_params` (the search-time ones travel with
            `kept`, which replaces the index's own settings for the call).
        kept: a `selector` of the rows searched; None: all rows.

    Returns:
        `(distances [Q, k] float32, indices [Q, k] int64)`, not yet ordered among ties. Where an approximate
        index finds fewer than k items (IVF cells holding fewer than k vectors), the rest are index -1 at
        distance +inf.
    """
    if kept is not None:
        faiss = import_faiss()
        if backend == "faiss-ivf":
            settings = faiss.SearchParametersIVF(sel=kept, nprobe=params["nprobe"])
        elif backend == "faiss-hnsw":
            settings = faiss.SearchParametersHNSW(sel=kept, efSearch=params["ef_search"])
        else:
            settings = faiss.SearchParameters(sel=kept)
        scores, indices = index.search(queries, k, params=settings)
    else:
        scores, indices = index.search(queries, k)
    if metric == "cosine":
        distances = np.clip(1.0 - scores, 0.0, 2.0)
    else:
        squared = np.maximum(scores, 0.0)
        distances = np.where(squared <= SQUARED_EPS, 0.0, np.sqrt(squared))
    distances = np.where(indices < 0, np.inf, distances)
    return distances.astype(np.float32), indices.astype(np.int64)


def serialize(index) -> np.ndarray:
    """The bytes of `index` (`faiss.serialize_index`) as a uint8 array `[B]`."""
    return import_faiss().serialize_index(index)


def deserialize(data: np.ndarray):
    """The faiss index stored by `serialize`.

    Raises:
        ReidkitError: If faiss is missing or the bytes are not a faiss index.
    """
    faiss = import_faiss()
    try:
        return faiss.deserialize_index(np.ascontiguousarray(data, dtype=np.uint8))
    except RuntimeError as error:
        raise ReidkitError(f"the stored faiss index cannot be read: {str(error).splitlines()[0]}") from error

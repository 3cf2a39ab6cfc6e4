"""The gallery protocol: what the CLI and the search service need from any backend, and `open_gallery`.

Backends: `GalleryIndex` (one `.safetensors` file; exact torch search or faiss) and `MilvusGallery` (a Milvus
Lite file `*.db`, or the URI of a Milvus server). Each item carries a stable id (never reused after deletion)
and its metadata (`GalleryItem`); a search takes an optional `SearchFilter` and answers item ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from reidkit.retrieval.filters import SearchFilter

MILVUS_SUFFIX = ".db"  # a Milvus Lite gallery is a file with this suffix
MILVUS_SCHEMES = ("http://", "https://", "tcp://", "unix:")  # a Milvus server


@dataclass(frozen=True)
class GalleryItem:
    """One gallery item's metadata.

    Attributes:
        id: stable item id.
        pid: person id (-1 unknown).
        camid: 0-based camera id (-1 unknown).
        timestamp: seconds since the epoch (NaN unknown).
        track_id: tracker's track id (-1 unknown).
        path: absolute image path.
        file_id: (inode, size, mtime in ns, links) of the image file when indexed (-1s when not recorded).
        model_digest: SHA-256 of the weights that embedded it.
    """

    id: int
    pid: int
    camid: int
    timestamp: float
    track_id: int
    path: str
    file_id: tuple[int, int, int, int]
    model_digest: str


@dataclass
class NewItems:
    """Metadata of M items to add: `pids`, `camids`, `track_ids` (ints), `timestamps` (seconds, NaN unknown),
    `paths`, and `file_ids` `[M, 4]` (None: not recorded)."""

    pids: list[int]
    camids: list[int]
    timestamps: list[float]
    track_ids: list[int]
    paths: list[str]
    file_ids: np.ndarray | None = None


class Gallery(Protocol):
    """Add, search with an optional filter, delete, count, save; the run, model digest and image folders it
    belongs to."""

    metric: str
    backend: str
    run_dir: str
    model_digest: str
    image_roots: list[str]

    @property
    def dim(self) -> int: ...

    def count(self) -> int: ...

    def search(self, queries, k: int = 10, chunk_size: int = 1024, where: SearchFilter | None = None): ...

    def items(self, ids: list[int]) -> list[GalleryItem | None]: ...

    def add(self, features, items: NewItems, image_root: str | None = None) -> list[int]: ...

    def delete(self, ids: list[int] | None = None, where: SearchFilter | None = None) -> list[int]: ...

    def save(self, path: str | Path) -> None: ...


def is_milvus_location(location: str | Path) -> bool:
    """Whether `location` names a Milvus gallery (a `.db` file or a server URI) rather than an index file."""
    text = str(location)
    return text.endswith(MILVUS_SUFFIX) or text.startswith(MILVUS_SCHEMES)


def open_gallery(location: str | Path) -> Gallery:
    """The gallery at `location`: a Milvus Lite file (`*.db`) or server URI, else a `reidkit index` file.

    Raises:
        ReidkitError: missing, unreadable or not a reidkit gallery; pymilvus missing for a Milvus location.
    """
    if is_milvus_location(location):
        from reidkit.retrieval.milvus_backend import MilvusGallery

        return MilvusGallery.open(location)
    from reidkit.retrieval.index import GalleryIndex

    return GalleryIndex.load(location)

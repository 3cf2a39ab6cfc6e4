"""Gallery search with a trained run: embed a folder of images into a `GalleryIndex`, then embed query
images with the same run's model and search."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import torch

from reidkit.config import Config
from reidkit.data.datasets import IMAGE_EXTENSIONS, MARKET_PATTERN
from reidkit.devices import resolve_device
from reidkit.engine.extraction import image_outputs
from reidkit.engine.saved_runs import load_run_config, load_run_model
from reidkit.engine.tracklet_extraction import tracklet_outputs
from reidkit.errors import DatasetError, ReidkitError
from reidkit.retrieval import GalleryIndex, SearchResult, recall_at_k
from reidkit.retrieval.file_identity import file_identities
from reidkit.retrieval.filters import SearchFilter
from reidkit.retrieval.gallery import Gallery, NewItems

TRUST_FEATURES = "--trust-features"  # the option that accepts features recording no model digest


def labels_of(path: Path) -> tuple[int, int]:
    """(pid, camid 0-based) from a Market/Duke-style name, else (-1, -1)."""
    match = MARKET_PATTERN.match(path.name)
    return (int(match.group(1)), int(match.group(2)) - 1) if match else (-1, -1)


def embed_images(run_dir: str | Path, paths: list[str], progress: bool = False,
                 config: Config | None = None) -> torch.Tensor:
    """Retrieval features [N, D] of image files with the run's model and `eval` settings (`config`:
    the run's config when already loaded)."""
    config = config or load_run_config(run_dir)
    device = resolve_device(config.train.device)
    model = load_run_model(run_dir, config).to(device)
    key = config.eval.feature
    return image_outputs(model, paths, config, device, (key,), progress=progress)[key]


def build_gallery_index(run_dir: str | Path, gallery_dir: str | Path, backend: str = "exact",
                        metric: str | None = None, progress: bool = True, out: str | Path | None = None,
                        faiss_params: dict[str, int] | None = None) -> Gallery:
    """Embed every image under `gallery_dir` (sorted) with the run's model into a GalleryIndex, or with a
    milvus-* backend into a new Milvus gallery at `out` (a `.db` file or a server URI; the collection must
    not exist yet). `faiss_params`: nlist / nprobe (faiss-ivf), hnsw_m / ef_search (faiss-hnsw).

    pid and camera come from Market/Duke-style file names, else −1; an item's timestamp is its file's
    modification time. The metric defaults to the run's `eval.metric`. Paths are stored absolute (under the
    resolved folder), with each file's identity (`reidkit.retrieval.file_identity`), so the index serves its
    images from any working folder and only while they are the files indexed.

    Raises:
        DatasetError: the folder is missing or holds no image.
        ReidkitError: a Milvus location without pymilvus, unreachable, or already holding the collection.
    """
    used = {"faiss-ivf": {"nlist", "nprobe"}, "faiss-hnsw": {"hnsw_m", "ef_search"}}.get(backend, set())
    unused = sorted(set(faiss_params or {}) - used)
    if unused:
        raise ReidkitError(f"{', '.join('--' + name.replace('_', '-') for name in unused)}: not a setting of the "
                           f"{backend} backend (--nlist, --nprobe: faiss-ivf; --hnsw-m, --ef-search: faiss-hnsw)")
    gallery_dir = Path(gallery_dir)
    if not gallery_dir.is_dir():
        problem = "is a file; give the folder that holds the gallery images" if gallery_dir.exists() \
            else "does not exist"
        raise DatasetError(f"gallery folder {gallery_dir} {problem}")
    root = gallery_dir.resolve()
    paths = sorted(str(p) for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise DatasetError(f"no {', '.join(IMAGE_EXTENSIONS)} images under {gallery_dir}")
    identities = file_identities(paths)  # before reading them: a file changed meanwhile is not served
    config = load_run_config(run_dir)
    features = embed_images(run_dir, paths, progress, config)
    labels = [labels_of(Path(p)) for p in paths]
    times = (identities[:, 2].double() / 1e9).where(identities[:, 2] >= 0, float("nan"))  # mtime_ns
    settings = {"run_dir": str(Path(run_dir).resolve()),  # searchable from any working folder
                "model_digest": model_digest(run_dir), "image_roots": [str(root)]}
    if backend.startswith("milvus"):
        from reidkit.retrieval.milvus_backend import MilvusGallery

        gallery = MilvusGallery.create(out, features.shape[1], metric or config.eval.metric, backend, **settings)
        gallery.add(features, NewItems([pid for pid, _ in labels], [cam for _, cam in labels], times.tolist(),
                                       [-1] * len(paths), paths, identities.numpy()))
        gallery.save()
        return gallery
    try:
        return GalleryIndex(features, [pid for pid, _ in labels], [cam for _, cam in labels], paths,
                            metric=metric or config.eval.metric, backend=backend, file_ids=identities,
                            timestamps=times, **settings, **(faiss_params or {}))
    except ValueError as error:  # a setting out of range for this gallery, e.g. nlist > its images
        raise ReidkitError(f"{error} ({len(paths)} gallery images)") from error


def model_digest(run_dir: str | Path) -> str:
    """SHA-256 of the run's final weights file `model.safetensors` ("" when there is none)."""
    return weights_digest(Path(run_dir) / "model.safetensors")


def weights_digest(path: str | Path) -> str:
    """SHA-256 of a weights file ("" when there is none)."""
    if not Path(path).is_file():
        return ""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def check_recorded_digest(features: str, recorded: str, reference: str, expected: str, fix: str,
                          trust: bool = False) -> None:
    """Refuse to compare `features` with `reference` (features or a model) unless both record the SHA-256 of the
    weights that made them and the two are equal. A missing digest (an older or edited file, features of an
    exported model) is refused like another one unless `trust`; a different digest always is.

    Raises:
        DatasetError: naming the side without a digest, or the two digests, and `fix`.
    """
    if not (recorded and expected):
        if trust:
            return
        raise DatasetError(f"no model digest is recorded for {features if not recorded else reference} (written "
                           f"before digests were recorded, by an exported model, or edited), so nothing shows that "
                           f"{features} and {reference} come from one model; {fix}, or pass {TRUST_FEATURES} to "
                           f"skip this check")
    if recorded != expected:
        raise DatasetError(f"{features} and {reference} come from different models (weights SHA-256 "
                           f"{recorded[:12]}… and {expected[:12]}…), so their distances mean nothing; {fix}")


def check_same_model(index: Gallery, run_dir: str | Path, trust: bool = False) -> None:
    """Refuse to embed queries for `index` with the model of `run_dir` unless it is the model that embedded
    the gallery: same weights file digest (`check_recorded_digest`; `trust` accepts an index without one)."""
    check_recorded_digest("the gallery index", index.model_digest, f"the model of {run_dir}", model_digest(run_dir),
                          f"the run's model changed after this index was built, or is another: rebuild the index "
                          f"with `reidkit index --run {run_dir} --gallery DIR`", trust)


def embed_tracklet(run_dir: str | Path, paths: list[str], config: Config | None = None) -> torch.Tensor:
    """The retrieval feature [1, D] of image files taken as the frames of one tracklet: the run's model
    aggregates their frame features (`model.temporal`), every frame used."""
    config = config or load_run_config(run_dir)
    device = resolve_device(config.train.device)
    model = load_run_model(run_dir, config).to(device)
    every_frame = dataclasses.replace(config.eval, frame_sampling="all")
    return tracklet_outputs(model, [(tuple(paths), -1, -1)], (config.eval.feature,), every_frame, config.data.height,
                            config.data.width, 0, device, progress=False,
                            interpolation=config.data.interpolation)[config.eval.feature].cpu()


def search_images(index: Gallery, image_paths: list[str], topk: int = 10, trust_features: bool = False,
                  where: SearchFilter | None = None, tracklet: bool = False) -> SearchResult:
    """Embed `image_paths` with the model of the run that built `index` and search it: one query per image,
    or with `tracklet` one query for all of them (`embed_tracklet`); `trust_features` accepts an index recording
    no model digest; `where`: only items of these cameras and time window.

    Raises:
        DatasetError: the index names no run, the run's model is not the one that built the index (another
            weights digest or feature dimension), or a query image is missing.
    """
    if not index.run_dir:
        raise DatasetError("this index does not name the run that built it; rebuild it with `reidkit index`")
    check_same_model(index, index.run_dir, trust_features)
    for path in image_paths:
        if not Path(path).is_file():
            problem = "is a folder; give image files" if Path(path).is_dir() else "does not exist"
            raise DatasetError(f"query image {path} {problem}")
    queries = embed_tracklet(index.run_dir, list(image_paths)) if tracklet else \
        embed_images(index.run_dir, list(image_paths))
    if queries.shape[1] != index.dim:
        raise DatasetError(f"the model of {index.run_dir} gives {queries.shape[1]}-d features but this index holds "
                           f"{index.dim}-d ones, so another model built it; rebuild it with `reidkit index --run "
                           f"{index.run_dir} --gallery DIR`")
    return index.search(queries, k=topk, where=where)


def sampled_recall(index: GalleryIndex, k: int = 10, num_queries: int = 256, seed: int = 0) -> float:
    """Recall@k of `index`'s search against exact search, with up to `num_queries` of its own gallery
    items (drawn with `seed`) as queries: how much an approximate backend loses (1.0 for "exact")."""
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(index), generator=generator)[:num_queries]
    queries = index.features[chosen]
    exact = GalleryIndex(index.features, index.pids, index.camids, index.paths, metric=index.metric)
    k = min(k, len(index))
    return recall_at_k(index.search(queries, k), exact.search(queries, k), k)

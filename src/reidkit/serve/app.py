"""A person-search web service over a gallery index: upload a picture (or pick a query) → top-k gallery images.

Endpoints of `create_app`:
    GET  /                      the search page (`page.html`: inline CSS and JS, no external assets).
    GET  /info                  {"gallery_size", "dim", "metric", "backend", "topk", "num_queries", "uploads"}.
    GET  /queries               {"queries": [{"index", "image_url", "pid", "camid"}, ...]} of the query set.
    POST /search                multipart/form-data with one JPEG/PNG file (any field name, "image" in the
                                page), or JSON {"query_index": i}; answers {"query": {...}, "results":
                                [{"rank", "index", "path", "image_url", "pid", "camid", "distance"}, ...]}.
    GET  /image/{split}/{i}     image i of the gallery or query set; nothing else on disk is reachable.

An uploaded image is embedded with the run's model exactly as `reidkit extract` embeds images (the test
transform, `eval.feature`, `eval.flip`). Uploads never touch the disk: the request body is read into memory
under a size limit (413), the declared type must be image/jpeg or image/png (415), the bytes must be a JPEG
or PNG (400), its pixel count is read from the header and checked before decoding (413), and a failed
decode answers 400. Errors are JSON ``{"detail": message}``.

The query set (optional) is the images a user can pick on the page: the features file of the query split
(`reidkit extract --split query`), or, given only the run, the run's query split embedded at start-up.
Searches return the raw nearest neighbours: no same-camera filtering as in evaluation.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations (fastapi.Request), which
# are imported inside create_app, so they must be evaluated where the endpoints are defined.
import importlib
import io
import json
import re
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from reidkit.data.images import to_rgb
from reidkit.errors import ReidkitError

IMAGE_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}  # accepted upload content type → PIL format
MULTIPART_OVERHEAD = 64 * 1024  # bytes of multipart framing accepted beyond max_upload_bytes
JSON_BODY_LIMIT = 4096  # bytes of a JSON search request
SPLITS = ("gallery", "query")


class UploadError(ReidkitError):
    """A request the service refuses; `status` is the HTTP status code of the answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _require(module: str):
    """Import a module of the `serve` extra, or raise a ReidkitError naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ReidkitError(f'{module} is not installed; the search service needs it: pip install "reidkit[serve]"') \
            from error


def decode_upload(data: bytes, content_type: str | None, max_upload_bytes: int, max_pixels: int) -> Image.Image:
    """Check and decode an uploaded image held in memory.

    Args:
        data: the uploaded file's bytes.
        content_type: its declared media type (parameters after ";" are ignored).
        max_upload_bytes: largest accepted file in bytes.
        max_pixels: largest accepted width·height, checked on the header before decoding.

    Returns:
        The decoded RGB image, turned upright as its EXIF orientation says.

    Raises:
        UploadError: 413 too large (bytes or pixels), 415 not image/jpeg or image/png, 400 empty, not a
            JPEG/PNG, or corrupt.
    """
    if len(data) > max_upload_bytes:
        raise UploadError(413, f"the upload is {len(data)} bytes; the limit is {max_upload_bytes} bytes")
    media = (content_type or "").split(";")[0].strip().lower()
    if media not in IMAGE_TYPES:
        raise UploadError(415, f"content type {media or '(none)'} is not accepted; upload a JPEG or PNG image "
                               f"({', '.join(IMAGE_TYPES)})")
    if not data:
        raise UploadError(400, "the upload is empty")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # max_pixels is checked below
        try:
            image = Image.open(io.BytesIO(data), formats=list(IMAGE_TYPES.values()))
        except Image.DecompressionBombError as error:
            raise UploadError(413, f"the image has too many pixels ({error})") from error
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
            raise UploadError(400, "the upload is not a readable JPEG or PNG image") from error
        width, height = image.size
        if width * height > max_pixels:
            raise UploadError(413, f"the image is {width}×{height} = {width * height} pixels; the limit is "
                                   f"{max_pixels} pixels")
        try:
            return to_rgb(ImageOps.exif_transpose(image))  # phone pictures: apply the EXIF rotation
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            raise UploadError(400, f"the image is corrupt or truncated ({error})") from error


@dataclass
class QuerySet:
    """The pickable queries: features [Q, D] (torch, float32) and their paths, pids and camids."""

    features: Any
    paths: list[str]
    pids: list[int]
    camids: list[int]


class Embedder:
    """The run's model as `reidkit extract` uses it: image → retrieval feature [1, D]."""

    def __init__(self, run_dir: str | Path) -> None:
        from reidkit.data.transforms import build_test_transform
        from reidkit.engine.runs import load_run_config, load_run_model
        from reidkit.engine.trainer import resolve_device

        self.config = load_run_config(run_dir)
        self.device = resolve_device(self.config.train.device)
        self.model = load_run_model(run_dir, self.config).to(self.device)
        self.transform = build_test_transform(self.config.data.height, self.config.data.width)

    def __call__(self, image: Image.Image):
        from reidkit.engine.evaluator import extract_outputs, uses_amp

        key, config = self.config.eval.feature, self.config
        batches = [{"images": self.transform(image).unsqueeze(0)}]
        return extract_outputs(self.model, batches, (key,), flip=config.eval.flip, device=self.device,
                               amp=uses_amp(config.train, self.device), progress=False)[key]

    def query_set(self) -> QuerySet:
        """The run's query split, embedded now (one pass of the model over every query image)."""
        from reidkit.data.build import build_dataset
        from reidkit.engine.features import image_outputs

        samples = build_dataset(self.config.data, progress=False).query
        key = self.config.eval.feature
        features = image_outputs(self.model, [s[0] for s in samples], self.config, self.device, (key,))[key]
        return QuerySet(features, [s[0] for s in samples], [s[1] for s in samples], [s[2] for s in samples])


def load_query_set(path: str | Path) -> QuerySet:
    """A QuerySet from a feature file written by `extract_split` (`reidkit extract --split query`)."""
    from reidkit.engine.features import load_feature_file

    features, pids, camids, paths = load_feature_file(path)
    return QuerySet(features.float(), paths, pids.tolist(), camids.tolist())


async def _read_body(request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds `limit` bytes (Content-Length first)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise UploadError(413, f"the request is {declared} bytes; the limit is {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise UploadError(413, f"the request is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _uploaded_file(headers, body: bytes) -> tuple[bytes, str | None]:
    """(bytes, content type) of the one file of a multipart body, parsed in memory."""
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def once() -> AsyncIterator[bytes]:
        yield body

    parser = MultiPartParser(headers, once(), max_files=1, max_fields=8)
    parser.spool_max_size = len(body) + 1  # the body is already in memory and bounded: never spill to disk
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise UploadError(400, f"bad multipart request: {error.message}") from error
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    if not files:
        raise UploadError(400, "the multipart request holds no file; send the image as a file field")
    return await files[0].read(), files[0].content_type


def _results(index, indices, distances) -> list[dict]:
    """JSON records of one query's ranked gallery items (index −1, not found, left out)."""
    records = []
    for item, distance in zip(indices.tolist(), distances.tolist()):
        if item >= 0:
            records.append({"rank": len(records) + 1, "index": item, "path": index.paths[item],
                            "image_url": f"/image/gallery/{item}", "pid": int(index.pids[item]),
                            "camid": int(index.camids[item]), "distance": float(distance)})
    return records


def create_app(index_path: str | Path, run_dir: str | Path | None = None, max_upload_bytes: int = 5_000_000,
               max_pixels: int = 4096 * 4096, topk: int = 10, query_features: str | Path | None = None):
    """The FastAPI app of the search service (endpoints in the module docstring).

    Args:
        index_path: a gallery index written by `GalleryIndex.save` (`reidkit index`).
        run_dir: the run whose model made the index; needed to search by uploaded image, and for the
            query set when `query_features` is not given. Default: the run the index names (`reidkit
            index` records it); with neither, uploads answer 501.
        max_upload_bytes: largest accepted image file in bytes.
        max_pixels: largest accepted image width·height.
        topk: gallery images returned per search.
        query_features: feature file of the query split; default: the run's query split, embedded at
            start-up; no query set when neither is given.

    Raises:
        ReidkitError: fastapi missing, an unreadable index, run or feature file, or features whose
            dimension differs from the index's.
    """
    fastapi = _require("fastapi")
    _require("python_multipart")
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

    from reidkit.engine.indexing import check_same_model
    from reidkit.retrieval import GalleryIndex

    if topk < 1 or max_upload_bytes < 1 or max_pixels < 1:
        raise ValueError(f"topk, max_upload_bytes and max_pixels must be >= 1, got {topk}, {max_upload_bytes}, "
                         f"{max_pixels}")
    index = GalleryIndex.load(index_path)
    run_dir = run_dir if run_dir is not None else (index.run_dir or None)
    if run_dir is not None:
        check_same_model(index, run_dir)
    embedder = Embedder(run_dir) if run_dir is not None else None
    queries = load_query_set(query_features) if query_features is not None else \
        embedder.query_set() if embedder is not None else None
    if embedder is not None:
        probe = embedder(Image.new("RGB", (embedder.config.data.width, embedder.config.data.height)))
        _check_dim(probe.shape[1], index.dim, f"the model of {run_dir}")
    if queries is not None:
        _check_dim(queries.features.shape[1], index.dim, "the query features")
    page = resources.files("reidkit.serve").joinpath("page.html").read_text(encoding="utf-8")
    images = {"gallery": index.paths, "query": queries.paths if queries is not None else []}

    app = fastapi.FastAPI(title="reidkit search", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(UploadError)
    async def refused(request, error: UploadError):
        return JSONResponse({"detail": str(error)}, status_code=error.status)

    @app.get("/", response_class=HTMLResponse)
    def home() -> str:
        return page

    @app.get("/info")
    def info() -> dict:
        return {"gallery_size": len(index), "dim": index.dim, "metric": index.metric, "backend": index.backend,
                "topk": topk, "num_queries": len(images["query"]), "uploads": embedder is not None}

    @app.get("/queries")
    def list_queries() -> dict:
        if queries is None:
            return {"queries": []}
        return {"queries": [{"index": i, "image_url": f"/image/query/{i}", "pid": pid, "camid": camid}
                            for i, (pid, camid) in enumerate(zip(queries.pids, queries.camids))]}

    @app.post("/search")
    async def search(request: fastapi.Request) -> dict:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media == "application/json":
            number = _query_index(await _read_body(request, JSON_BODY_LIMIT), len(images["query"]))
            features = queries.features[number:number + 1]
            query = {"index": number, "image_url": f"/image/query/{number}", "path": queries.paths[number],
                     "pid": queries.pids[number], "camid": queries.camids[number]}
        elif media == "multipart/form-data":
            if embedder is None:
                raise UploadError(501, "searching by uploaded image needs the run's model; start the service "
                                       "with the run folder")
            data, content_type = await _uploaded_file(request.headers,
                                                      await _read_body(request, max_upload_bytes + MULTIPART_OVERHEAD))
            image = decode_upload(data, content_type, max_upload_bytes, max_pixels)
            features = await run_in_threadpool(embedder, image)
            query = {"upload": True, "width": image.width, "height": image.height}
        else:
            raise UploadError(415, "send multipart/form-data with a JPEG or PNG file, or application/json "
                                   '{"query_index": <int>}')
        result = await run_in_threadpool(index.search, features, topk)
        return {"query": query, "results": _results(index, result.indices[0], result.distances[0])}

    @app.get("/image/{split}/{number}")
    def image(split: str, number: str) -> FileResponse:
        paths = images.get(split)
        if paths is None or not re.fullmatch(r"[0-9]{1,9}", number) or int(number) >= len(paths) \
                or not Path(paths[int(number)]).is_file():
            raise fastapi.HTTPException(404, f"no image {split}/{number}")
        return FileResponse(paths[int(number)])

    return app


def _query_index(body: bytes, num_queries: int) -> int:
    """The `query_index` of a JSON search body, checked: 400 malformed, 404 out of range or no query set."""
    try:
        payload = json.loads(body)
    except ValueError as error:
        raise UploadError(400, "the body is not valid JSON; send {\"query_index\": <int>}") from error
    number = payload.get("query_index") if isinstance(payload, dict) else None
    if isinstance(number, bool) or not isinstance(number, int):
        raise UploadError(400, 'send {"query_index": <int>}')
    if num_queries == 0:
        raise UploadError(404, "the service has no query set; start it with a query feature file or a run")
    if not 0 <= number < num_queries:
        raise UploadError(404, f"query_index {number} is out of range [0, {num_queries})")
    return number


def _check_dim(dim: int, index_dim: int, what: str) -> None:
    if dim != index_dim:
        raise ReidkitError(f"{what}: dimension {dim}, but the gallery index has dimension {index_dim}; "
                           "build the index with features of the same run")


def serve(index_path: str | Path, run_dir: str | Path | None = None, host: str = "127.0.0.1", port: int = 8000,
          query_features: str | Path | None = None, max_upload_bytes: int = 5_000_000,
          max_pixels: int = 4096 * 4096, topk: int = 10) -> None:
    """Run the search service with uvicorn until interrupted (arguments as `create_app`)."""
    uvicorn = _require("uvicorn")
    app = create_app(index_path, run_dir, max_upload_bytes=max_upload_bytes, max_pixels=max_pixels, topk=topk,
                     query_features=query_features)
    uvicorn.run(app, host=host, port=port)

"""A person-search web service over a gallery index: upload pictures (or pick a query) → top-k gallery images
and a same-person decision.

Endpoints of `create_app`:
    GET  /                      the search page (`page.html`: inline CSS and JS, no external assets).
    GET  /health                {"status": "ok", "gallery_size", "uploads_in_progress", "uploads_waiting",
                                "model_digest"}.
    GET  /info                  {"gallery_size", "dim", "metric", "backend", "topk", "num_queries", "uploads",
                                "threshold", "threshold_source", "max_batch", "can_add"}.
    GET  /queries               {"queries": [{"index", "image_url", "pid", "camid"}, ...]} of the query set.
    POST /search                multipart/form-data with one JPEG/PNG file (any field name, "image" in the
                                page), or JSON {"query_index": i}; answers {"query": {...}, "decision": {...},
                                "results": [{"rank", "index", "path", "image_url", "pid", "camid", "distance",
                                "same_person"}, ...]}.
    POST /search/batch          multipart/form-data with 1..max_batch files, embedded in one pass; answers
                                {"answers": [one /search answer per file, in order]}.
    POST /gallery               (with `allow_add`) multipart/form-data with 1..max_batch files added to the
                                gallery: stored under `added_images`, embedded, appended to the index, and the
                                index file replaced atomically; answers {"added": [...], "gallery_size"}.
    GET  /image/{split}/{i}     image i of the gallery or query set, read only from inside the folders recorded
                                with the index (the query files' own folders) and only while it is the file
                                recorded at indexing (at start-up for the query set): same inode, size and
                                mtime; nothing else on disk is reachable. An index that records no folders (an
                                older one) serves no image: 404 saying how to re-index.

Searches take `?threshold=T` to override the decision threshold: "same person" when a gallery item's distance
is below it; T is a plain decimal number (ASCII digits, an optional fraction) from 0 to 2 for cosine distance,
to 10⁶ for Euclidean, else 400. The default is the run's open-set threshold (metrics.json, `eval.open_set_fpr`)
for the index's metric; with none, decisions are null.

An uploaded image is embedded with the run's model as `reidkit extract` embeds images (the test transform,
`eval.feature`, `eval.flip`), after being decoded at no less than twice the model's input size
(`reidkit.serve.uploads`). Uploads never touch the disk except when added to the gallery: the body is read
into memory under a size limit (413) and a deadline (408), the declared type must be image/jpeg or image/png
(415), the bytes must be a JPEG or PNG (400), its pixel count is checked on the header before decoding (413),
and a failed decode answers 400. Uploads beyond `max_uploads` wait for a slot before their body is read;
beyond `max_waiting` waiting, or after `body_timeout` seconds of waiting, they answer 503 with Retry-After.
Errors are JSON ``{"detail": message}`` and never name server paths.

The query set (optional) is the images a user can pick on the page: the features file of the query split
(`reidkit extract --split query`, refused when made by another model than the index's), or, given only the
run, the run's query split embedded at start-up. Searches return the raw nearest neighbours: no same-camera
filtering as in evaluation.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations (fastapi.Request), which
# are imported inside create_app, so they must be evaluated where the endpoints are defined.
import asyncio
import importlib
import json
import math
import re
from importlib import resources
from pathlib import Path

from reidkit.errors import ReidkitError
from reidkit.serve.images import ImageFiles, folders_of, store_image
from reidkit.serve.model import Embedder, load_query_set
from reidkit.serve.uploads import (
    MULTIPART_OVERHEAD,
    UploadError,
    UploadGate,
    decode_upload,
    log,
    read_body,
    uploaded_files,
)

JSON_BODY_LIMIT = 4096  # bytes of a JSON search request
SPLITS = ("gallery", "query")
SUFFIXES = {"image/jpeg": ".jpg", "image/png": ".png"}  # of images added to the gallery
PLAIN_DECIMAL = re.compile(r"[0-9]{1,10}(?:\.[0-9]{1,10})?|\.[0-9]{1,10}")  # ASCII digits only
THRESHOLD_CEILINGS = {"cosine": 2.0, "euclidean": 1e6}  # largest ?threshold= per metric (1 − cos ≤ 2)
NO_IMAGE_FOLDERS = ("this gallery index records no image folders (made by an older reidkit), so its images are not "
                    "served; searching works. Re-index to serve them: `reidkit index --run RUN --gallery DIR`")


def _require(module: str):
    """Import a module of the `serve` extra, or raise a ReidkitError naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ReidkitError(f'{module} is not installed; the search service needs it: pip install "reidkit[serve]"') \
            from error


def _results(index, indices, distances, threshold: float | None) -> list[dict]:
    """JSON records of one query's ranked gallery items (index −1, not found, left out)."""
    records = []
    for item, distance in zip(indices.tolist(), distances.tolist()):
        if item >= 0:
            records.append({"rank": len(records) + 1, "index": item, "path": index.paths[item],
                            "image_url": f"/image/gallery/{item}", "pid": int(index.pids[item]),
                            "camid": int(index.camids[item]), "distance": float(distance),
                            "same_person": None if threshold is None else bool(distance < threshold)})
    return records


def _answer(query: dict, index, indices, distances, threshold: float | None, source: str) -> dict:
    """One search answer: the query, the decision on its nearest gallery item, and the ranked results."""
    results = _results(index, indices, distances, threshold)
    decision = None
    if threshold is not None and results:
        decision = {"same_person": results[0]["same_person"], "threshold": threshold, "source": source,
                    "nearest_distance": results[0]["distance"]}
    return {"query": query, "decision": decision, "results": results}


def create_app(index_path: str | Path, run_dir: str | Path | None = None, max_upload_bytes: int = 5_000_000,
               max_pixels: int = 4096 * 4096, topk: int = 10, query_features: str | Path | None = None,
               max_uploads: int = 16, max_waiting: int = 256, max_decodes: int = 2, max_batch: int = 8,
               body_timeout: float = 30.0, allow_add: bool = False, added_images: str | Path | None = None,
               trust_features: bool = False):
    """The FastAPI app of the search service (endpoints in the module docstring).

    Args:
        index_path: a gallery index written by `GalleryIndex.save` (`reidkit index`); rewritten when
            images are added.
        run_dir: the run whose model made the index; needed to search by uploaded image, and for the
            query set when `query_features` is not given. Default: the run the index names (`reidkit
            index` records it); with neither, uploads answer 501.
        max_upload_bytes: largest accepted image file in bytes.
        max_pixels: largest accepted image width·height.
        topk: gallery images returned per search.
        query_features: feature file of the query split; default: the run's query split, embedded at
            start-up; no query set when neither is given.
        max_uploads: uploads held at once (a batch counts as `max_batch`); the next ones wait for a slot.
        max_waiting: uploads waiting for a slot (each for at most `body_timeout`); more answer 503 + Retry-After.
        max_decodes: images decoded at once (in as many threads of their own).
        max_batch: files per batch search or gallery addition.
        body_timeout: seconds a request body may take to arrive (408 after).
        allow_add: enable POST /gallery.
        added_images: folder for added images; default `<index file name>_images` beside the index.
        trust_features: accept an index or query feature file that records no model digest (older files, features
            of an exported model) instead of refusing it; one recording another model is refused all the same.

    Raises:
        ValueError: a count below 1 or a body timeout that is not a positive number.
        ReidkitError: fastapi missing, an unreadable index, run or feature file, an index or query features not
            shown to come from the same model (`check_recorded_digest`), features whose dimension differs from
            the index's, or max_batch over max_uploads.
    """
    fastapi = _require("fastapi")
    _require("python_multipart")
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    from reidkit.engine.indexing import check_same_model, labels_of
    from reidkit.engine.saved_runs import run_threshold
    from reidkit.retrieval import GalleryIndex
    from reidkit.retrieval.file_identity import file_identities

    for name, value in (("topk", topk), ("max_upload_bytes", max_upload_bytes), ("max_pixels", max_pixels),
                        ("max_uploads", max_uploads), ("max_decodes", max_decodes), ("max_batch", max_batch),
                        ("max_waiting + 1", max_waiting + 1)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not 0 < body_timeout < math.inf:
        raise ValueError(f"body_timeout must be a positive number of seconds, got {body_timeout}")
    if max_batch > max_uploads:
        raise ReidkitError(f"--max-batch {max_batch} is over --max-uploads {max_uploads}: a batch holds max-batch "
                           "upload slots, so it could never start; raise --max-uploads or lower --max-batch")
    index_path = Path(index_path)
    index = GalleryIndex.load(index_path)
    run_dir = run_dir if run_dir is not None else (index.run_dir or None)
    if run_dir is not None:
        check_same_model(index, run_dir, trust_features)
    embedder = Embedder(run_dir) if run_dir is not None else None
    queries = load_query_set(query_features, index.model_digest, trust_features) if query_features is not None \
        else embedder.query_set() if embedder is not None else None
    if embedder is not None:
        from PIL import Image

        height, width = embedder.input_size
        _check_dim(embedder([Image.new("RGB", (width, height))]).shape[1], index.dim, f"the model of {run_dir}")
    if queries is not None:
        _check_dim(queries.features.shape[1], index.dim, "the query features")
    threshold, source = None, "no threshold: the run has no open-set figures"
    if run_dir is not None:
        try:
            threshold, source = run_threshold(run_dir, index.metric)
        except ReidkitError as error:
            source = f"no threshold: {error}"
    if allow_add and embedder is None:
        raise ReidkitError("adding images to the gallery needs the run's model; start the service with the run folder")
    added_folder = Path(added_images) if added_images else index_path.with_name(index_path.stem + "_images")
    added_folder = added_folder.resolve()  # paths stored in the index are absolute, valid from any folder
    page = resources.files("reidkit.serve").joinpath("page.html").read_text(encoding="utf-8")
    gate, adding = UploadGate(max_uploads, max_waiting, max_decodes, body_timeout), asyncio.Lock()
    if not index.image_roots:
        log.warning("%s: %s", index_path, NO_IMAGE_FOLDERS)
    live = {"index": index,  # replaced by a new index when images are added: a search keeps the one it took
            "gallery": ImageFiles(index.paths, index.image_roots, index.file_ids),
            "query": ImageFiles(queries.paths, folders_of(queries.paths), file_identities(queries.paths))
            if queries is not None else None}  # the query files as they are at start-up

    app = fastapi.FastAPI(title="reidkit search", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(UploadError)
    async def refused(request, error: UploadError):
        return JSONResponse({"detail": str(error)}, status_code=error.status, headers=error.headers)

    @app.get("/", response_class=HTMLResponse)
    def home() -> str:
        return page

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "gallery_size": len(live["index"]), "uploads_in_progress": gate.held,
                "uploads_waiting": gate.waiting, "model_digest": index.model_digest}

    @app.get("/info")
    def info() -> dict:
        current = live["index"]
        return {"gallery_size": len(current), "dim": current.dim, "metric": current.metric,
                "backend": current.backend, "topk": topk, "num_queries": len(queries.paths) if queries else 0,
                "uploads": embedder is not None, "threshold": threshold, "threshold_source": source,
                "max_batch": max_batch, "can_add": allow_add}

    @app.get("/queries")
    def list_queries() -> dict:
        if queries is None:
            return {"queries": []}
        return {"queries": [{"index": i, "image_url": f"/image/query/{i}", "pid": pid, "camid": camid}
                            for i, (pid, camid) in enumerate(zip(queries.pids, queries.camids))]}

    def decision_threshold(request) -> tuple[float | None, str]:
        value = _number_parameter(request, "threshold", THRESHOLD_CEILINGS[live["index"].metric])
        return (threshold, source) if value is None else (value, "given threshold")

    async def read_files(request, max_files: int) -> list[tuple[str, bytes, str | None]]:
        """(name, bytes, content type) of the files of a multipart request; the caller holds the slots."""
        if embedder is None:
            raise UploadError(501, "searching by uploaded image needs the run's model; start the service with "
                                   "the run folder")
        body = await read_body(request, max_files * max_upload_bytes + MULTIPART_OVERHEAD, body_timeout)
        return await uploaded_files(request.headers, body, max_files)

    async def embed_files(files: list[tuple[str, bytes, str | None]]) -> tuple[list[dict], object]:
        """(query records, features [N, D]) of uploaded files, decoded `max_decodes` at a time in threads."""
        images = []
        for number, (_, data, content_type) in enumerate(files):
            try:
                images.append(await gate.decode(decode_upload, data, content_type, max_upload_bytes, max_pixels,
                                                embedder.input_size))
            except UploadError as error:
                if len(files) == 1:
                    raise
                raise UploadError(error.status, f"file {number + 1} of {len(files)}: {error}") from error
        records = [{"upload": True, "name": Path(name).name, "width": image.width, "height": image.height}
                   for (name, _, _), image in zip(files, images)]
        return records, await run_in_threadpool(embedder, images)

    @app.post("/search")
    async def search(request: fastapi.Request) -> dict:
        media = _media(request.headers.get("content-type"))
        limit, source_of = decision_threshold(request)
        current = live["index"]
        if media == "application/json":
            body = await read_body(request, JSON_BODY_LIMIT, body_timeout)
            number = _query_index(body, len(queries.paths) if queries else 0)
            features = queries.features[number:number + 1]
            query = {"index": number, "image_url": f"/image/query/{number}", "path": queries.paths[number],
                     "pid": queries.pids[number], "camid": queries.camids[number]}
        elif media == "multipart/form-data":
            async with gate.admit():
                records, features = await embed_files(await read_files(request, 1))
            query = records[0]
        else:
            raise UploadError(415, "send multipart/form-data with a JPEG or PNG file, or application/json "
                                   '{"query_index": <int>}')
        result = await run_in_threadpool(current.search, features, topk)
        return _answer(query, current, result.indices[0], result.distances[0], limit, source_of)

    @app.post("/search/batch")
    async def search_batch(request: fastapi.Request) -> dict:
        _require_multipart(request)
        limit, source_of = decision_threshold(request)
        current = live["index"]
        async with gate.admit(max_batch):
            records, features = await embed_files(await read_files(request, max_batch))
        result = await run_in_threadpool(current.search, features, topk)
        return {"answers": [_answer(query, current, result.indices[i], result.distances[i], limit, source_of)
                            for i, query in enumerate(records)]}

    @app.post("/gallery")
    async def add_to_gallery(request: fastapi.Request) -> dict:
        if not allow_add:
            raise UploadError(403, "adding images is disabled; start the service with --allow-add")
        _require_multipart(request)
        async with gate.admit(max_batch):
            files = await read_files(request, max_batch)
            _, features = await embed_files(files)
        async with adding:  # one addition at a time; searches go on with the index they took
            try:
                await run_in_threadpool(check_same_model, live["index"], run_dir, trust_features)
            except ReidkitError as error:
                raise UploadError(409, "the run's model changed since this index was built; rebuild the index "
                                       "with `reidkit index` and restart the service") from error
            labels = [labels_of(Path(name)) for name, _, _ in files]
            try:  # the images first, then the index replaced atomically (a temporary file, then a rename)
                paths = [str(await run_in_threadpool(store_image, added_folder, data, SUFFIXES[_media(content_type)]))
                         for _, data, content_type in files]
                extended = live["index"].extended(features, [pid for pid, _ in labels], [cam for _, cam in labels],
                                                  paths, str(added_folder), file_identities(paths))
                await run_in_threadpool(extended.save, index_path)
            except ReidkitError as error:  # write_file's: a full disk, a read-only folder
                log.error("could not save the index %s with the added images: %s", index_path, error)
                raise UploadError(507, "the index could not be saved with the added images (see the server "
                                       "log); the gallery is unchanged") from error
            live["index"] = extended
            live["gallery"] = ImageFiles(extended.paths, extended.image_roots, extended.file_ids)
        first = len(extended) - len(paths)
        return {"added": [{"index": first + i, "image_url": f"/image/gallery/{first + i}", "pid": pid,
                           "camid": camid} for i, (pid, camid) in enumerate(labels)],
                "gallery_size": len(extended)}

    @app.get("/image/{split}/{number}")
    def image(split: str, number: str) -> Response:
        files = live[split] if split in SPLITS else None
        found = None
        if files is not None and re.fullmatch(r"[0-9]{1,9}", number) and int(number) < len(files.paths):
            if not files.roots:
                raise fastapi.HTTPException(404, NO_IMAGE_FOLDERS)
            found = files.read(int(number))
        if found is None:
            raise fastapi.HTTPException(404, f"no image {split[:20]}/{number[:20]}")
        return Response(found[0], media_type=found[1])

    return app


def _number_parameter(request, name: str, ceiling: float) -> float | None:
    """The query parameter `name` (None when absent) read as a plain ASCII decimal number from 0 to `ceiling`:
    digits with an optional fraction, at most 10 of each; no sign, exponent, `_`, space or non-ASCII digit.

    Raises:
        UploadError: 400 for any other text, a value above `ceiling`, or the parameter given twice.
    """
    values = request.query_params.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise UploadError(400, f"give {name} once, got {len(values)} values")
    text = values[0]
    if not PLAIN_DECIMAL.fullmatch(text) or float(text) > ceiling:
        raise UploadError(400, f"{name}={text[:40]!r} is not a plain decimal number from 0 to {ceiling:.0f} "
                               f"(digits and an optional fraction, e.g. 0.35)")
    return float(text)


def _media(content_type: str | None) -> str:
    """The media type of a Content-Type value, lower case, without parameters."""
    return (content_type or "").split(";")[0].strip().lower()


def _require_multipart(request) -> None:
    if _media(request.headers.get("content-type")) != "multipart/form-data":
        raise UploadError(415, "send multipart/form-data with JPEG or PNG files")


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
          **options) -> None:
    """Run the search service with uvicorn until interrupted (`options`: the keyword arguments of
    `create_app`)."""
    uvicorn = _require("uvicorn")
    app = create_app(index_path, run_dir, **options)
    uvicorn.run(app, host=host, port=port)

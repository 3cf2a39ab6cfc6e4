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
    POST /search/tracklet       multipart/form-data with 1..max_batch files taken as the frames of one person
                                (a tracklet): one query, embedded as `reidkit search --tracklet` embeds it;
                                answers as /search, "query" holding {"tracklet": true, "frames": [...]}.
    POST /gallery               (with `allow_add`) multipart/form-data with 1..max_batch files added to the
                                gallery: stored under `added_images`, embedded, appended to the index, and the
                                index file replaced atomically; answers {"added": [...], "gallery_size"}.
    POST /gallery/delete        (with `allow_delete`) JSON {"ids": [...], "cameras": [...], "after": T, "before": T}
                                (every criterion given must hold; at least one): retention; answers {"deleted":
                                [ids], "gallery_size"}. Deleted items are never returned or served again.
    GET  /image/{split}/{i}     image i of the query set, or gallery item id i, read only from inside the folders recorded
                                with the index (the query files' own folders) and only while it is the file
                                recorded at indexing (at start-up for the query set): same inode, size and
                                mtime; nothing else on disk is reachable. An index that records no folders (an
                                older one) serves no image: 404 saying how to re-index.

Gallery results name items by their stable id (`index`, and `/image/gallery/<id>`). Searches take filters
`?cameras=3,4` (camera numbers from 1, as the page shows them), `?after=T` and `?before=T` (ISO 8601, UTC unless
an offset is given, or seconds since the epoch), applied by the gallery backend, and `?threshold=T` to override
the decision threshold: "same person" when a gallery item's distance
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

Security (`reidkit.serve.security`): every route depends on one guard (`ROUTE_SCOPES` names the scope of each; a
route missing there is refused): with a tokens file, a request must carry `Authorization: Bearer <token>` of an
unexpired token holding the route's scope (401 / 403); the page itself (`GET /`) is public and asks for the
token. Requests are rate-limited per token id (per client address without tokens; failed authentications per
client address too): 429 with Retry-After. A request whose `Origin` is not the service's own is refused (403;
no CORS headers are ever sent). Every request, refused or not, is one JSON line of the audit log. Every answer
carries the security headers (CSP with the page's script and style hashes, nosniff, no framing, no-store).

The query set (optional) is the images a user can pick on the page: the features file of the query split
(`reidkit extract --split query`, refused when made by another model than the index's), or, given only the
run, the run's query split embedded at start-up. Searches return the raw nearest neighbours: no same-camera
filtering as in evaluation.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations (fastapi.Request), which
# are imported inside create_app, so they must be evaluated where the endpoints are defined.
import asyncio
import hashlib
import importlib
import json
import math
import re
import time
from importlib import resources
from pathlib import Path

from reidkit.errors import ReidkitError
from reidkit.serve.images import ImageFiles, folders_of, read_recorded, store_image
from reidkit.serve.model import Embedder, load_query_set
from reidkit.serve.security import AuditTrail, security_headers
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
# The scope each route needs (None: public). The guard refuses a route missing here, so a new route cannot slip
# past authentication; tests/test_security.py walks the route table against this.
ROUTE_SCOPES = {("GET", "/"): None, ("GET", "/health"): "search", ("GET", "/info"): "search",
                ("GET", "/queries"): "search", ("POST", "/search"): "search", ("POST", "/search/batch"): "search",
                ("POST", "/search/tracklet"): "search", ("GET", "/image/{split}/{number}"): "search",
                ("POST", "/gallery"): "write", ("POST", "/gallery/delete"): "write"}
CAMERA_LIST = re.compile(r"[0-9]{1,6}(?:,[0-9]{1,6}){0,63}")
NO_IMAGE_FOLDERS = ("this gallery index records no image folders (made by an older reidkit), so its images are not "
                    "served; searching works. Re-index to serve them: `reidkit index --run RUN --gallery DIR`")


def _require(module: str):
    """Import a module of the `serve` extra, or raise a ReidkitError naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ReidkitError(f'{module} is not installed; the search service needs it: pip install "reidkit[serve]"') \
            from error


def _results(gallery, ids, distances, threshold: float | None) -> list[dict]:
    """JSON records of one query's ranked gallery items (id −1, not found, and items deleted since, left out)."""
    found = ids >= 0
    records = []
    for item, distance in zip(gallery.items(ids[found].tolist()), distances[found].tolist()):
        if item is not None:
            records.append({"rank": len(records) + 1, "index": item.id, "path": item.path,
                            "image_url": f"/image/gallery/{item.id}", "pid": item.pid, "camid": item.camid,
                            "distance": float(distance),
                            "same_person": None if threshold is None else bool(distance < threshold)})
    return records


def _answer(query: dict, gallery, ids, distances, threshold: float | None, source: str) -> dict:
    """One search answer: the query, the decision on its nearest gallery item, and the ranked results."""
    results = _results(gallery, ids, distances, threshold)
    decision = None
    if threshold is not None and results:
        decision = {"same_person": results[0]["same_person"], "threshold": threshold, "source": source,
                    "nearest_distance": results[0]["distance"]}
    return {"query": query, "decision": decision, "results": results}


def create_app(index_path: str | Path, run_dir: str | Path | None = None, max_upload_bytes: int = 5_000_000,
               max_pixels: int = 4096 * 4096, topk: int = 10, query_features: str | Path | None = None,
               max_uploads: int = 16, max_waiting: int = 256, max_decodes: int = 2, max_batch: int = 8,
               body_timeout: float = 30.0, allow_add: bool = False, added_images: str | Path | None = None,
               trust_features: bool = False, tokens: str | Path | None = None, audit_log: str | Path | None = None,
               rate_limit: float = 50.0, allow_delete: bool = False):
    """The FastAPI app of the search service (endpoints in the module docstring).

    Args:
        index_path: a gallery written by `reidkit index`: an index file (rewritten when items are added or
            deleted) or a Milvus gallery (`.db` file or server URI).
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
        tokens: tokens file (`reidkit token add`); None: no authentication (refused off loopback by `serve`).
        audit_log: JSON-lines audit log; default `<index file name>_audit.jsonl` beside a local index, else
            `reidkit_audit.jsonl` in the working folder.
        rate_limit: requests per second per token id (per client address without tokens), bursts of 5× that
            (at least 1).
        allow_delete: enable POST /gallery/delete (retention).

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
    from reidkit.retrieval.file_identity import file_identities
    from reidkit.retrieval.gallery import NewItems, open_gallery
    from reidkit.serve.security import FAILURE_BURST, FAILURES_PER_SECOND, AuditLog, RateLimiter, TokenFile

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
    local = not str(index_path).startswith(("http://", "https://", "tcp://", "unix:"))
    index_path = Path(index_path) if local else str(index_path)
    index = open_gallery(index_path)
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
    if not local and not added_images and allow_add:
        raise ReidkitError("a Milvus server gallery needs --added-images FOLDER for the images added at run time")
    added_folder = Path(added_images) if added_images else Path(index_path).with_name(Path(index_path).stem + "_images")
    added_folder = added_folder.resolve()  # paths stored in the index are absolute, valid from any folder
    page = resources.files("reidkit.serve").joinpath("page.html").read_text(encoding="utf-8")
    gate, adding = UploadGate(max_uploads, max_waiting, max_decodes, body_timeout), asyncio.Lock()
    if not index.image_roots:
        log.warning("%s: %s", index_path, NO_IMAGE_FOLDERS)
    query_files = ImageFiles(queries.paths, folders_of(queries.paths), file_identities(queries.paths)) \
        if queries is not None else None  # the query files as they are at start-up
    token_file = TokenFile(tokens) if tokens is not None else None
    limiter = RateLimiter(rate_limit, max(1.0, 5 * rate_limit))
    failures = RateLimiter(FAILURES_PER_SECOND, FAILURE_BURST)
    audit = AuditLog(audit_log or (Path(index_path).with_name(Path(index_path).stem + "_audit.jsonl") if local
                                   else Path("reidkit_audit.jsonl")))

    async def guard(request: fastapi.Request) -> None:
        """Authentication, scope, origin and rate limit of every route (the app's one dependency)."""
        route = request.scope.get("route")
        key = (request.method, getattr(route, "path", ""))
        record = request.state.audit
        if key not in ROUTE_SCOPES:
            raise UploadError(403, "this route has no scope declared; refused")
        host = request.headers.get("host", "")
        origin = request.headers.get("origin")
        if origin is not None and origin not in (f"http://{host}", f"https://{host}"):
            raise UploadError(403, "cross-origin requests are refused")
        client = request.client.host if request.client else "unknown"
        identity, scope = f"address {client}", ROUTE_SCOPES[key]
        if token_file is not None and scope is not None:
            header = request.headers.get("authorization", "")
            secret = header[7:].strip() if header[:7].lower() == "bearer " else ""
            token = token_file.lookup(secret) if secret else None
            if token is None:
                wait = failures.retry_after(client) if secret else 0  # a wrong token counts as a guess
                if wait:
                    raise UploadError(429, f"too many failed authentications; retry in {math.ceil(wait)} s",
                                      {"Retry-After": str(math.ceil(wait))})
                raise UploadError(401, "a valid token is needed: send Authorization: Bearer <token>" if secret else
                                  "this service needs a token: send Authorization: Bearer <token>",
                                  {"WWW-Authenticate": "Bearer"})
            identity = record["token"] = token.id
            if scope not in token.scopes:
                raise UploadError(403, f"token {token.id!r} lacks the {scope!r} scope this needs")
        wait = limiter.retry_after(identity)
        if wait:
            raise UploadError(429, f"rate limit of {rate_limit:g} requests per second reached; retry in "
                                   f"{math.ceil(wait)} s", {"Retry-After": str(math.ceil(wait))})

    app = fastapi.FastAPI(title="reidkit search", docs_url=None, redoc_url=None, openapi_url=None,
                          dependencies=[fastapi.Depends(guard)])
    app.add_middleware(AuditTrail, audit=audit, headers=security_headers(page))

    @app.exception_handler(UploadError)
    async def refused(request, error: UploadError):
        return JSONResponse({"detail": str(error)}, status_code=error.status, headers=error.headers)

    @app.get("/", response_class=HTMLResponse)
    def home() -> str:
        return page

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "gallery_size": index.count(), "uploads_in_progress": gate.held,
                "uploads_waiting": gate.waiting, "model_digest": index.model_digest}

    @app.get("/info")
    def info() -> dict:
        return {"gallery_size": index.count(), "dim": index.dim, "metric": index.metric,
                "backend": index.backend, "topk": topk, "num_queries": len(queries.paths) if queries else 0,
                "uploads": embedder is not None, "threshold": threshold, "threshold_source": source,
                "max_batch": max_batch, "can_add": allow_add, "can_delete": allow_delete,
                "authentication": token_file is not None}

    @app.get("/queries")
    def list_queries() -> dict:
        if queries is None:
            return {"queries": []}
        return {"queries": [{"index": i, "image_url": f"/image/query/{i}", "pid": pid, "camid": camid}
                            for i, (pid, camid) in enumerate(zip(queries.pids, queries.camids))]}

    def decision_threshold(request) -> tuple[float | None, str]:
        value = _number_parameter(request, "threshold", THRESHOLD_CEILINGS[index.metric])
        return (threshold, source) if value is None else (value, "given threshold")

    async def read_files(request, max_files: int) -> list[tuple[str, bytes, str | None]]:
        """(name, bytes, content type) of the files of a multipart request; the caller holds the slots."""
        if embedder is None:
            raise UploadError(501, "searching by uploaded image needs the run's model; start the service with "
                                   "the run folder")
        body = await read_body(request, max_files * max_upload_bytes + MULTIPART_OVERHEAD, body_timeout)
        return await uploaded_files(request.headers, body, max_files)

    async def embed_files(files: list[tuple[str, bytes, str | None]], embed=None) -> tuple[list[dict], object]:
        """(query records, features) of uploaded files, decoded `max_decodes` at a time in threads: `embed`
        (default the embedder: [N, D], one per file; `embedder.tracklet`: [1, D]) of the decoded images."""
        images = []
        for number, (_, data, content_type) in enumerate(files):
            try:
                images.append(await gate.decode(decode_upload, data, content_type, max_upload_bytes, max_pixels,
                                                embedder.input_size))
            except UploadError as error:
                if len(files) == 1:
                    raise
                raise UploadError(error.status, f"file {number + 1} of {len(files)}: {error}") from error
        records = [{"upload": True, "name": Path(name).name, "width": image.width, "height": image.height,
                    "sha256": hashlib.sha256(data).hexdigest()} for (name, data, _), image in zip(files, images)]
        return records, await run_in_threadpool(embed or embedder, images)

    @app.post("/search")
    async def search(request: fastapi.Request) -> dict:
        media = _media(request.headers.get("content-type"))
        limit, source_of = decision_threshold(request)
        where = _search_filter(request)
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
        result = await run_in_threadpool(index.search, features, topk, 1024, where)
        answer = _answer(query, index, result.ids[0], result.distances[0], limit, source_of)
        request.state.audit.update(query={key: query[key] for key in ("sha256", "index") if key in query},
                                   returned=[record["index"] for record in answer["results"]])
        return answer

    @app.post("/search/batch")
    async def search_batch(request: fastapi.Request) -> dict:
        _require_multipart(request)
        limit, source_of = decision_threshold(request)
        where = _search_filter(request)
        async with gate.admit(max_batch):
            records, features = await embed_files(await read_files(request, max_batch))
        result = await run_in_threadpool(index.search, features, topk, 1024, where)
        answers = [_answer(query, index, result.ids[i], result.distances[i], limit, source_of)
                   for i, query in enumerate(records)]
        request.state.audit.update(query=[{"sha256": query["sha256"]} for query in records],
                                   returned=[[record["index"] for record in answer["results"]] for answer in answers])
        return {"answers": answers}

    @app.post("/search/tracklet")
    async def search_tracklet(request: fastapi.Request) -> dict:
        _require_multipart(request)
        limit, source_of = decision_threshold(request)
        where = _search_filter(request)
        async with gate.admit(max_batch):
            records, features = await embed_files(await read_files(request, max_batch), embedder.tracklet)
        query = {"tracklet": True, "frames": records}
        result = await run_in_threadpool(index.search, features, topk, 1024, where)
        answer = _answer(query, index, result.ids[0], result.distances[0], limit, source_of)
        request.state.audit.update(query=[{"sha256": record["sha256"]} for record in records],
                                   returned=[record["index"] for record in answer["results"]])
        return answer

    @app.post("/gallery")
    async def add_to_gallery(request: fastapi.Request) -> dict:
        if not allow_add:
            raise UploadError(403, "adding images is disabled; start the service with --allow-add")
        _require_multipart(request)
        async with gate.admit(max_batch):
            files = await read_files(request, max_batch)
            _, features = await embed_files(files)
        async with adding:  # one change at a time; searches go on with the gallery as it was or as it is
            try:
                await run_in_threadpool(check_same_model, index, run_dir, trust_features)
            except ReidkitError as error:
                raise UploadError(409, "the run's model changed since this index was built; rebuild the index "
                                       "with `reidkit index` and restart the service") from error
            labels = [labels_of(Path(name)) for name, _, _ in files]
            added = []
            try:  # the images first, then the items, then the index file replaced atomically
                paths = [str(await run_in_threadpool(store_image, added_folder, data, SUFFIXES[_media(content_type)]))
                         for _, data, content_type in files]
                items = NewItems([pid for pid, _ in labels], [cam for _, cam in labels], [time.time()] * len(paths),
                                 [-1] * len(paths), paths, file_identities(paths).numpy())
                added = await run_in_threadpool(index.add, features, items, str(added_folder))
                await run_in_threadpool(index.save, index_path)
            except ReidkitError as error:  # write_file's: a full disk, a read-only folder
                log.error("could not save the index %s with the added images: %s", index_path, error)
                if added:
                    await run_in_threadpool(index.delete, added)
                raise UploadError(507, "the index could not be saved with the added images (see the server "
                                       "log); the gallery is unchanged") from error
        request.state.audit.update(query=[{"sha256": hashlib.sha256(data).hexdigest()} for _, data, _ in files],
                                   added=added)
        return {"added": [{"index": item, "image_url": f"/image/gallery/{item}", "pid": pid, "camid": camid}
                          for item, (pid, camid) in zip(added, labels)],
                "gallery_size": index.count()}

    @app.post("/gallery/delete")
    async def delete_from_gallery(request: fastapi.Request) -> dict:
        if not allow_delete:
            raise UploadError(403, "deleting items is disabled; start the service with --allow-delete")
        if _media(request.headers.get("content-type")) != "application/json":
            raise UploadError(415, 'send application/json {"ids": [...], "cameras": [...], "after": T, "before": T}')
        ids, where = _deletion(await read_body(request, JSON_BODY_LIMIT * 64, body_timeout))
        async with adding:
            deleted = await run_in_threadpool(index.delete, ids, where)
            request.state.audit.update(deleted=deleted)
            try:
                await run_in_threadpool(index.save, index_path)
            except ReidkitError as error:
                log.error("could not save the index %s after deleting %d items: %s", index_path, len(deleted), error)
                raise UploadError(507, f"{len(deleted)} items are deleted from the running service but the index "
                                       "could not be saved (see the server log): fix the disk and repeat the "
                                       "deletion, or they return at the next start") from error
        return {"deleted": deleted, "gallery_size": index.count()}

    @app.get("/image/{split}/{number}")
    def image(request: fastapi.Request, split: str, number: str) -> Response:
        found = None
        if split == "query" and query_files is not None and re.fullmatch(r"[0-9]{1,9}", number) \
                and int(number) < len(query_files.paths):
            found = query_files.read(int(number))
        elif split == "gallery" and re.fullmatch(r"[0-9]{1,18}", number):
            if not index.image_roots:
                raise fastapi.HTTPException(404, NO_IMAGE_FOLDERS)
            item = index.items([int(number)])[0]  # None once deleted: never served again
            roots = [Path(root).resolve() for root in index.image_roots]
            found = None if item is None else read_recorded(item.path, list(item.file_id), roots)
            request.state.audit.update(item=int(number))
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


def _search_filter(request):
    """The SearchFilter of `?cameras=3,4&after=T&before=T` (camera numbers from 1), or None without them.

    Raises:
        UploadError: 400 for a malformed list or time, a parameter given twice, or an empty window.
    """
    from reidkit.retrieval.filters import SearchFilter, parse_time

    values = {}
    for name in ("cameras", "after", "before"):
        given = request.query_params.getlist(name)
        if len(given) > 1:
            raise UploadError(400, f"give {name} once, got {len(given)} values")
        values[name] = given[0] if given else None
    if all(value is None for value in values.values()):
        return None
    if values["cameras"] is not None and (not CAMERA_LIST.fullmatch(values["cameras"])
                                          or "0" in values["cameras"].split(",")):
        raise UploadError(400, f"cameras={values['cameras'][:40]!r} is not a list of camera numbers from 1, "
                               "e.g. cameras=3,4,5")
    try:
        return SearchFilter(camids=None if values["cameras"] is None else
                            tuple(int(camera) - 1 for camera in values["cameras"].split(",")),
                            after=None if values["after"] is None else parse_time(values["after"]),
                            before=None if values["before"] is None else parse_time(values["before"]))
    except ValueError as error:
        raise UploadError(400, str(error)) from error


def _deletion(body: bytes):
    """(ids or None, SearchFilter or None) of a JSON deletion request; 400 when malformed or empty."""
    from reidkit.retrieval.filters import SearchFilter, parse_time

    usage = 'send {"ids": [ints], "cameras": [numbers from 1], "after": T, "before": T} (at least one)'
    try:
        payload = json.loads(body)
    except ValueError as error:
        raise UploadError(400, f"the body is not valid JSON; {usage}") from error
    if not isinstance(payload, dict) or not payload or set(payload) - {"ids", "cameras", "after", "before"}:
        raise UploadError(400, usage)
    ids, cameras = payload.get("ids"), payload.get("cameras")
    for name, values in (("ids", ids), ("cameras", cameras)):
        if values is not None and not (isinstance(values, list) and values and all(
                isinstance(value, int) and not isinstance(value, bool) and value >= (name == "cameras")
                for value in values)):
            raise UploadError(400, f"{name} must be a non-empty list of ints{' from 1' if name == 'cameras' else ''}")
    try:
        times = {name: None if payload.get(name) is None else parse_time(str(payload[name]))
                 for name in ("after", "before")}
        where = SearchFilter(camids=None if cameras is None else tuple(camera - 1 for camera in cameras), **times)
    except ValueError as error:
        raise UploadError(400, str(error)) from error
    return ids, None if where.is_empty else where


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


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any address
        return False


def _check_dim(dim: int, index_dim: int, what: str) -> None:
    if dim != index_dim:
        raise ReidkitError(f"{what}: dimension {dim}, but the gallery index has dimension {index_dim}; "
                           "build the index with features of the same run")


def serve(index_path: str | Path, run_dir: str | Path | None = None, host: str = "127.0.0.1", port: int = 8000,
          **options) -> None:
    """Run the search service with uvicorn until interrupted (`options`: the keyword arguments of
    `create_app`, and `insecure_no_auth`: allow a non-loopback `host` without tokens).

    Raises:
        ReidkitError: a non-loopback `host` without `tokens` unless `insecure_no_auth`.
    """
    if not options.pop("insecure_no_auth", False) and options.get("tokens") is None and not _is_loopback(host):
        raise ReidkitError(f"--host {host} is reachable from other machines, and without --tokens anyone there could "
                           "search and read the gallery: give --tokens FILE (`reidkit token add`), bind 127.0.0.1, "
                           "or pass --insecure-no-auth to accept that")
    uvicorn = _require("uvicorn")
    app = create_app(index_path, run_dir, **options)
    uvicorn.run(app, host=host, port=port)

"""Uploads of the search service, in bounded memory: admission, body reading with a deadline, multipart
parsing in memory, and decoding shrunk to the model's input size off the event loop.

Memory bound: at most `max_uploads` requests hold an upload (body, decoded image, embedding) at once — a
batch request counts as `max_batch`; up to `max_waiting` more wait for a slot before their body is read (the
server stops reading their sockets), and beyond that, or after waiting too long, a request is answered 503
with Retry-After; at most `max_decodes` images are decoded at once, in as many threads of their own. A JPEG is decoded
straight at a reduced scale (libjpeg DCT scaling, `Image.draft`) and any image is reduced by an integer
factor (`Image.reduce`) to no less than twice the model's input size before the colour conversion, so
apart from the `max_decodes` full-size PNG decodes every held image is small.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import warnings
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from PIL import Image, ImageOps, UnidentifiedImageError

from reidkit.data.images import to_rgb
from reidkit.errors import ReidkitError

IMAGE_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}  # accepted upload content type → PIL format
MULTIPART_OVERHEAD = 64 * 1024  # bytes of multipart framing accepted beyond the files' limit
RETRY_AFTER_SECONDS = 1
log = logging.getLogger("reidkit.serve")


class UploadError(ReidkitError):
    """A request the service refuses; `status` is the HTTP status code of the answer, `headers` its headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or {}


class UploadGate:
    """Admission of uploads: at most `max_uploads` slots held at once; a request that finds them taken waits,
    before its body is read, with at most `max_waiting` others and for at most `max_wait` seconds, else it is
    answered 503 with Retry-After. `decode` runs a function in one of `max_decodes` threads of its own (few
    threads: few malloc arenas keep freed full-size decodes). Used from the event loop only, so the counters
    need no lock."""

    def __init__(self, max_uploads: int, max_waiting: int, max_decodes: int, max_wait: float) -> None:
        self.max_uploads, self.max_waiting, self.max_wait = max_uploads, max_waiting, max_wait
        self.held, self.waiting = 0, 0
        self.changed = asyncio.Condition()
        self.decoder = ThreadPoolExecutor(max_decodes, thread_name_prefix="reidkit-decode")

    async def decode(self, function, *args):
        """`function(*args)` in a decoding thread, awaited."""
        return await asyncio.get_running_loop().run_in_executor(self.decoder, function, *args)

    @contextlib.asynccontextmanager
    async def admit(self, slots: int = 1) -> AsyncIterator[None]:
        """Hold `slots` upload slots for the block (waiting for them when needed), or raise a 503 UploadError."""
        busy = UploadError(503, f"the service is busy ({self.held} uploads in progress, {self.waiting} waiting); "
                                f"retry in {RETRY_AFTER_SECONDS} s", {"Retry-After": str(RETRY_AFTER_SECONDS)})
        if self.held + slots > self.max_uploads and self.waiting >= self.max_waiting:
            raise busy
        self.waiting += 1
        try:
            async with asyncio.timeout(self.max_wait), self.changed:
                await self.changed.wait_for(lambda: self.held + slots <= self.max_uploads)
                self.held += slots
        except TimeoutError as error:
            raise busy from error
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            async with self.changed:
                self.held -= slots
                self.changed.notify_all()


def decode_upload(data: bytes, content_type: str | None, max_upload_bytes: int, max_pixels: int,
                  min_size: tuple[int, int] | None = None) -> Image.Image:
    """Check and decode an uploaded image held in memory.

    Args:
        data: the uploaded file's bytes.
        content_type: its declared media type (parameters after ";" are ignored).
        max_upload_bytes: largest accepted file in bytes.
        max_pixels: largest accepted width·height, checked on the header before decoding.
        min_size: (height, width) of the model's input: the image is decoded/reduced by the largest integer
            factor that keeps both sides at least twice max(height, width) (either orientation); None: full size.

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
            if min_size is not None:
                image = _shrink(image, 2 * max(min_size))
            return to_rgb(ImageOps.exif_transpose(image))  # phone pictures: apply the EXIF rotation
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            raise UploadError(400, f"the image is corrupt or truncated ({error})") from error


def _shrink(image: Image.Image, side: int) -> Image.Image:
    """`image` decoded and reduced by the largest integer factor keeping both sides >= `side` (a JPEG at a
    DCT scale of 1/2, 1/4 or 1/8 first)."""
    if image.format == "JPEG":
        image.draft(image.mode, (side, side))  # a scale whose sides are all >= side
    factor = min(image.size) // side
    return image.reduce(factor) if factor >= 2 else image


async def read_body(request, limit: int, timeout: float) -> bytes:
    """The request body, refused with 413 as soon as it exceeds `limit` bytes (Content-Length first) and
    with 408 when it is not all received within `timeout` seconds; a client that disconnects mid-body is
    logged in one line and answered 400 (it will not read the answer)."""
    from starlette.requests import ClientDisconnect

    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:  # "²".isdigit(), yet int("²") fails
        raise UploadError(413, f"the request is {declared} bytes; the limit is {limit} bytes")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise UploadError(413, f"the request is over the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError as error:
        log.warning("request body from %s not received within %g s (%d bytes read); answered 408",
                    _client(request), timeout, size)
        raise UploadError(408, f"the request body was not received within {timeout:g} s") from error
    except ClientDisconnect as error:
        log.warning("client %s disconnected before sending the whole body (%d of %s bytes)", _client(request), size,
                    declared or "?")
        raise UploadError(400, "the client disconnected before sending the whole body") from error
    return b"".join(chunks)


def _client(request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "(unknown)"


async def uploaded_files(headers, body: bytes, max_files: int) -> list[tuple[str, bytes, str | None]]:
    """(file name, bytes, content type) of each file of a multipart body (at most `max_files`), parsed in memory.

    Raises:
        UploadError: 400 malformed, no file, or more than `max_files` files.
    """
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def once() -> AsyncIterator[bytes]:
        yield body

    parser = MultiPartParser(headers, once(), max_files=max_files, max_fields=8)
    parser.spool_max_size = len(body) + 1  # the body is already in memory and bounded: never spill to disk
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise UploadError(400, f"bad multipart request: {error.message}") from error
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    if not files:
        raise UploadError(400, "the multipart request holds no file; send the image as a file field")
    return [(file.filename or "", await file.read(), file.content_type) for file in files]

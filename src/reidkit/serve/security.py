"""Who may use the search service: API tokens with scopes, per-token rate limits, the audit log, security headers.

Tokens file (JSON, written by `reidkit token add`): ``{"format": "reidkit.tokens", "tokens": [{"id", "sha256",
"scopes", "expires"}]}``. A token is 32 random bytes (`secrets.token_urlsafe`), shown once; the file keeps only
its SHA-256 — a fast hash is enough for a secret of 256 random bits (there is no dictionary to try), and a stolen
file grants nothing. Scopes: `search` (search, list, read images, info) and `write` (add and delete items). The
service re-reads the file when it changes, so a removed or expired token is refused from its next request.

Rate limits are token buckets (the single-rate meter of RFC 2697): each token id (or client address, without
authentication) may send `rate` requests per second on average with bursts of `burst`; over it the answer is 429
with Retry-After. Failed authentications (a wrong token; a request without one is no guess) are metered per client
address the same way, 10 per minute in bursts of 10, so guessing tokens hits 429 quickly.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from reidkit.errors import ReidkitError
from reidkit.outputs import append_line, write_file

SCOPES = ("search", "write")
TOKENS_FORMAT = "reidkit.tokens"
TOKEN_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
FAILURE_BURST, FAILURES_PER_SECOND = 10, 10 / 60  # failed authentications per client address


@dataclass(frozen=True)
class Token:
    """A token's entry: its id (named in the audit log), SHA-256 of the secret, scopes and expiry (epoch s)."""

    id: str
    sha256: str
    scopes: frozenset[str]
    expires: float | None = None


def token_digest(secret: str) -> str:
    """Hex SHA-256 of a token's text."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def read_tokens(path: str | Path) -> list[Token]:
    """The entries of a tokens file (an absent file: none).

    Raises:
        ReidkitError: unreadable, not a tokens file, or an entry with a bad id, digest or scope.
    """
    path = Path(path)
    if not path.exists():
        return []
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        if payload.get("format") != TOKENS_FORMAT:
            raise ValueError(f"format is not {TOKENS_FORMAT!r}")
        tokens = []
        for entry in payload["tokens"]:
            scopes = frozenset(entry["scopes"])
            if not TOKEN_ID.fullmatch(entry["id"]) or not re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]) \
                    or not scopes <= set(SCOPES):
                raise ValueError(f"bad entry {entry.get('id')!r} (id, sha256 or scopes {sorted(scopes)})")
            expires = entry.get("expires")
            tokens.append(Token(entry["id"], entry["sha256"], scopes, None if expires is None else float(expires)))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ReidkitError(f"{path} is not a reidkit tokens file ({type(error).__name__}: {error}); write it with "
                           "`reidkit token add --tokens FILE --id NAME --scopes search`") from error
    return tokens


def _write_tokens(path: Path, tokens: list[Token]) -> None:
    entries = [{"id": t.id, "sha256": t.sha256, "scopes": sorted(t.scopes), "expires": t.expires} for t in tokens]
    text = json.dumps({"format": TOKENS_FORMAT, "tokens": entries}, indent=1)
    write_file(path, lambda temporary: (temporary.write_text(text, encoding="utf-8"), os.chmod(temporary, 0o600)))


def add_token(path: str | Path, token_id: str, scopes: list[str], days: float | None = None) -> str:
    """Create a token `token_id` with `scopes` (valid `days` days, or forever), store its digest in `path` and
    return the secret (shown once).

    Raises:
        ReidkitError: a bad id or scope, or the id already in the file.
    """
    if not TOKEN_ID.fullmatch(token_id):
        raise ReidkitError(f"token id {token_id[:40]!r}: use 1 to 64 letters, digits, '_', '.' or '-'")
    if not scopes or not set(scopes) <= set(SCOPES):
        raise ReidkitError(f"scopes must be some of {', '.join(SCOPES)}, got {' '.join(scopes) or 'none'}")
    tokens = read_tokens(path)
    if any(token.id == token_id for token in tokens):
        raise ReidkitError(f"{path} already has a token {token_id!r}; remove it first or choose another id")
    secret = "rk_" + secrets.token_urlsafe(32)
    expires = None if days is None else time.time() + days * 86400
    _write_tokens(Path(path), [*tokens, Token(token_id, token_digest(secret), frozenset(scopes), expires)])
    return secret


def remove_token(path: str | Path, token_id: str) -> None:
    """Remove the token `token_id` from `path`.

    Raises:
        ReidkitError: no such token.
    """
    tokens = read_tokens(path)
    if not any(token.id == token_id for token in tokens):
        raise ReidkitError(f"{path} has no token {token_id!r}")
    _write_tokens(Path(path), [token for token in tokens if token.id != token_id])


class TokenFile:
    """The tokens of a file, re-read whenever it changes (inode, size or mtime), so removals apply at once. A file
    that turns unreadable or malformed refuses every token until it is fixed (fail closed)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock, self._seen, self._by_digest = threading.Lock(), None, {}
        if not self.path.is_file():
            raise ReidkitError(f"tokens file {self.path} not found; create it with `reidkit token add --tokens "
                               f"{self.path} --id NAME --scopes search`")
        self._reload()

    def _reload(self) -> None:
        try:
            info = os.stat(self.path)
            seen = (info.st_ino, info.st_size, info.st_mtime_ns)
        except OSError:
            seen = None
        with self._lock:
            if seen == self._seen:
                return
            try:
                tokens = read_tokens(self.path) if seen else []
            except ReidkitError:
                tokens = []
            self._by_digest, self._seen = {token.sha256: token for token in tokens}, seen

    def lookup(self, secret: str) -> Token | None:
        """The unexpired token whose secret is `secret`, else None."""
        self._reload()
        digest = token_digest(secret)
        token = self._by_digest.get(digest)
        if token is None or not hmac.compare_digest(token.sha256, digest):
            return None
        return None if token.expires is not None and time.time() >= token.expires else token


class RateLimiter:
    """Token buckets per key: `rate` requests per second on average, bursts of `burst`."""

    def __init__(self, rate: float, burst: float) -> None:
        if not (0 < rate < math.inf and burst >= 1):
            raise ValueError(f"rate must be > 0 and burst >= 1, got {rate}, {burst}")
        self.rate, self.burst = rate, burst
        self._lock, self._buckets = threading.Lock(), {}

    def retry_after(self, key: str) -> float:
        """Take one request from `key`'s bucket: 0 when allowed, else the seconds until one is."""
        now = time.monotonic()
        with self._lock:
            level, then = self._buckets.get(key, (self.burst, now))
            level = min(self.burst, level + (now - then) * self.rate)
            if level >= 1:
                self._buckets[key] = (level - 1, now)
                return 0.0
            self._buckets[key] = (level, now)
            return (1 - level) / self.rate


class AuditLog:
    """The one writer of the audit log: a JSON object per line, each appended whole (`append_line`) under a
    lock, so concurrent requests never interleave. Records name the token id, never the secret; query images
    appear as SHA-256 digests, never as bytes."""

    def __init__(self, path: str | Path) -> None:
        self.path, self._lock = Path(path), threading.Lock()
        append_line(self.path, json.dumps({"time": _now(), "event": "start"}))  # fails now if it cannot write

    def write(self, record: dict) -> None:
        line = json.dumps({"time": _now(), **record}, separators=(",", ":"), default=str)
        with self._lock:
            append_line(self.path, line)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"


def content_security_policy(page: str) -> str:
    """A CSP for `page` allowing exactly its inline `<script>` and `<style>` (by SHA-256), images from the service
    and blob: URLs, fetches to the service only, and no framing."""
    def hashes(tag: str) -> str:
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.S)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()}'"
                        for body in bodies)

    return (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
            "img-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def security_headers(page: str) -> list[tuple[bytes, bytes]]:
    """Headers of every answer: CSP, no MIME sniffing, no framing, no referrer, no caching."""
    return [(b"content-security-policy", content_security_policy(page).encode()),
            (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"), (b"cache-control", b"no-store")]


class AuditTrail:
    """ASGI middleware around the app: one audit record per HTTP request (method, path, status, client, and what
    the guard and the endpoint put in `request.state.audit`: token id, query digests, returned / added / deleted
    ids), written when the answer starts — so an answer whose record cannot be written is not sent (the server
    answers 500 instead) — or after a failure that sent none; and the security headers added to every answer."""

    def __init__(self, app, audit: AuditLog, headers: list[tuple[bytes, bytes]]) -> None:
        self.app, self.audit, self.headers = app, audit, headers

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = {"token": None}
        scope.setdefault("state", {})["audit"] = record
        written = []

        def write(status: int) -> None:
            written.append(status)
            client = scope.get("client")
            self.audit.write({"client": client[0] if client else None, "method": scope["method"],
                              "path": scope["path"][:200], "params": scope.get("query_string", b"")[:200].decode(
                                  "latin-1"), "status": status, **record})

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                write(message["status"])
                message = {**message, "headers": [*message.get("headers", []), *self.headers]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            if not written:
                write(500)

"""API keys: bearer tokens compared by SHA-256 digest (the server never holds the keys)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable


def hash_key(key: str) -> str:
    """The SHA-256 hex digest of `key`: what :class:`ServeConfig` takes."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyCheck:
    """Does a request's ``Authorization: Bearer <key>`` carry an accepted key?"""

    def __init__(self, hashes: Iterable[str]) -> None:
        self.hashes = tuple(hashes)

    def bearer(self, header: str | None) -> str | None:
        if not header:
            return None
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        return token

    def accepts(self, header: str | None) -> bool:
        token = self.bearer(header)
        if token is None:
            return False
        digest = hash_key(token)
        ok = False
        for known in self.hashes:  # compare with every hash, in constant time each
            ok |= hmac.compare_digest(digest, known)
        return ok


def is_write(method: str, path: str) -> bool:
    """Write and admin endpoints: promote, delete, and anything under /v1/admin."""
    method = method.upper()
    if path.startswith("/v1/admin"):
        return True
    if path.startswith("/v1/models/"):
        if method == "DELETE":
            return True
        if method == "POST" and path.rstrip("/").endswith("/promote"):
            return True
    return False


def is_open(path: str) -> bool:
    """Paths the bearer-key check leaves alone: probes, the API docs, and the web UI
    (which checks its login cookie itself, for writes and, when reads need a key, for
    every page but the login page)."""
    if path == "/" or path == "/ui" or path.startswith("/ui/"):
        return True
    return path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/redoc")

"""The UI's login: the API key is entered once on /ui/login and checked against the
server's key hashes; the browser then keeps a signed, expiring token (never the key) in an
HTTP-only, SameSite=Strict cookie. Write actions need either that cookie or an
``Authorization: Bearer <key>`` header.

The token is ``<expiry>.<hmac>`` with the HMAC (SHA-256) of the accepted key's hash and the
expiry under a secret kept in ``<TSLOOM_HOME>/ui-secret`` (made on first use, mode 0600),
so a login survives a restart, and removing a key's hash from the server's configuration
logs its sessions out.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

from fastapi import Request

from tsloom.serve.auth import KeyCheck, hash_key

COOKIE = "tsloom_ui"
LIFETIME_S = 12 * 3600
_LOOPBACK = ("127.", "localhost", "::1", "[::1]")


def _secret(home: Path) -> bytes:
    path = Path(home) / "ui-secret"
    if path.is_file() and len(data := path.read_bytes()) >= 32:
        return data
    path.parent.mkdir(parents=True, exist_ok=True)
    data = secrets.token_bytes(32)
    tmp = path.with_name(f".ui-secret.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    return path.read_bytes()


class UiAuth:
    """Issues and checks login tokens for the keys a :class:`KeyCheck` accepts."""

    def __init__(self, keys: KeyCheck, home: Path) -> None:
        self.keys = keys
        self.home = Path(home)
        self._key: bytes | None = None

    @property
    def enabled(self) -> bool:
        """False when the server has no API key at all: every write is refused."""
        return bool(self.keys.hashes)

    def _mac(self, key_hash: str, expiry: int) -> str:
        if self._key is None:
            self._key = _secret(self.home)
        return hmac.new(self._key, f"{key_hash}|{expiry}".encode(), hashlib.sha256).hexdigest()

    def login(self, key: str) -> str | None:
        """A token for `key`, or None when the key is not accepted."""
        key = key.strip()
        if not key or not self.keys.accepts(f"Bearer {key}"):
            return None
        expiry = int(time.time()) + LIFETIME_S
        return f"{expiry}.{self._mac(hash_key(key), expiry)}"

    def token_ok(self, token: str | None) -> bool:
        if not token or "." not in token:
            return False
        raw_expiry, _, mac = token.partition(".")
        if not raw_expiry.isdigit() or int(raw_expiry) < time.time():
            return False
        ok = False
        for known in self.keys.hashes:
            ok |= hmac.compare_digest(self._mac(known, int(raw_expiry)), mac)
        return ok

    def authorized(self, request: Request) -> bool:
        """Does the request carry a valid login cookie or an accepted bearer key?"""
        if self.keys.accepts(request.headers.get("authorization")):
            return True
        return self.token_ok(request.cookies.get(COOKIE))


def cookie_secure(request: Request) -> bool:
    """Secure cookies need HTTPS, which browsers grant to loopback addresses too; a plain
    HTTP request from elsewhere gets a non-secure cookie (the login page warns)."""
    if request.url.scheme == "https":
        return True
    host = request.url.hostname or ""
    return host.startswith(_LOOPBACK)

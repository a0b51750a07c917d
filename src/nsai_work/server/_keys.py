"""API keys: who calls the HTTP API, for which tenant, and how often.

A key is a token ``nsw_<id>_<secret>`` shown once, when it is created. The server keeps only
its id, its tenant (or ``admin``), and the SHA-256 of its secret: a token is 32 random bytes,
so a fast hash is as safe as a slow one and checking a request costs a microsecond (GitHub's
tokens work the same way). A ``KeyRing`` is kept in a JSON file (written whole, atomically, by
``nsai-work keys create|revoke``), which every server process reading it notices at its next
request (one ``stat``): several servers on one machine share their keys, and a revoked key is
refused at once. ``KeyRing()`` without a path keeps keys in memory (tests, examples).

Each key may carry a request rate (``rate`` per second, ``burst``): a token bucket, the core's
own (``core._limits.LimitState``, the buckets of tool rates), checked before anything else.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import secrets
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import msgspec
from msgspec import Struct

from .._errors import ConfigurationError, NotFoundError, RateLimitedError, ValidationError
from .._validate import check_identifier
from ..core._limits import LimitState
from ._keys_db import RELOAD_S, KeyTable, is_database_url

__all__ = ["ApiKey", "KeyRing"]

_TOKEN: Final = re.compile(r"nsw_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


class ApiKey(Struct, kw_only=True, omit_defaults=True):
    """A key as the server keeps it (never its secret): ``tenant_id`` for a tenant's key, or
    ``admin=True`` for full rights over every tenant; an optional request ``rate`` per second
    with its ``burst``; when it was created and, once revoked, when."""

    id: str
    secret_sha256: str
    created_at: datetime
    tenant_id: str | None = None
    admin: bool = False
    name: str | None = None
    rate: float | None = None
    burst: int | None = None
    revoked_at: datetime | None = None

    @property
    def who(self) -> str:
        """How the key is named in messages and audit records: ``key <id> (tenant acme)``."""
        return f"key {self.id} ({'admin' if self.admin else f'tenant {self.tenant_id}'})"


class _File(Struct):
    keys: list[ApiKey] = []


_file_decoder = msgspec.json.Decoder(_File)


class KeyRing:
    """The API keys of a server: in a JSON file (``path``), in a table of the store's database
    (``path`` is its URL: ``sqlite:///...`` or ``postgresql://...``, see ``_keys_db.py``), or in
    memory (``path=None``).

    ``create`` returns the key and its token (the only time the token exists); ``list``,
    ``revoke`` and ``authenticate`` do what they say. Safe to use from several threads, and
    several processes share a file (writes are atomic; readers reload when it changes) or a
    database (readers reload at most a second later)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._table: KeyTable | None = None
        self._read_at = -math.inf
        if is_database_url(path):
            assert isinstance(path, str)
            self._table = KeyTable(path)
            path = None
        self.path = None if path is None else Path(path)
        self._lock = threading.Lock()
        self._keys: dict[str, ApiKey] = {}
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of the file last read
        self._buckets: dict[str, LimitState] = {}
        if self.path is not None:
            if not self.path.parent.is_dir():
                raise ConfigurationError(
                    f"the keys file {self.path} is in a directory that does not exist"
                )
            self._reload()

    def __repr__(self) -> str:
        if self._table is not None:
            return f"KeyRing({self._table.url!r})"
        return f"KeyRing({str(self.path) if self.path else None!r})"

    @property
    def where(self) -> str:
        """Where the keys are: the file, the database (its URL without a password), or
        ``memory``."""
        if self._table is not None:
            return self._table.url
        return "memory" if self.path is None else str(self.path)

    # ---- the file -----------------------------------------------------------------------------

    def _reload(self) -> None:
        """Read the file again if it changed since it was last read (the table: if it was read
        more than ``RELOAD_S`` ago)."""
        if self._table is not None:
            now = time.monotonic()
            if now - self._read_at >= RELOAD_S:
                self._keys = self._table.load(ApiKey)
                self._read_at = now
            return
        if self.path is None:
            return
        try:
            info = self.path.stat()
        except FileNotFoundError:
            self._keys, self._seen = {}, None
            return
        seen = (info.st_mtime_ns, info.st_size)
        if seen == self._seen:
            return
        try:
            keys = _file_decoder.decode(self.path.read_bytes()).keys
        except (msgspec.DecodeError, OSError) as exc:
            raise ConfigurationError(f"the keys file {self.path} cannot be read: {exc}") from None
        self._keys = {key.id: key for key in keys}
        self._seen = seen

    def _save(self) -> None:
        if self.path is None:
            return
        data = msgspec.json.format(msgspec.json.encode(_File(list(self._keys.values()))))
        fd, temporary = tempfile.mkstemp(prefix=".keys-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data + b"\n")
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self._seen = None
        self._reload()

    # ---- keys ---------------------------------------------------------------------------------

    def create(
        self,
        *,
        tenant_id: str | None = None,
        admin: bool = False,
        name: str | None = None,
        rate: float | None = None,
        burst: int | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key for ``tenant_id`` (or ``admin=True``, for every tenant) and its token,
        which is shown this once: keep it."""
        if admin == (tenant_id is not None):
            raise ValidationError(
                "a key is either a tenant's (tenant_id=...) or an admin key (admin=True)",
                path="$.tenant_id",
            )
        if tenant_id is not None:
            check_identifier(tenant_id, "$.tenant_id", what="a tenant id")
        if rate is not None and not (
            isinstance(rate, int | float) and not isinstance(rate, bool) and 1e-6 <= rate <= 1e6
        ):
            raise ValidationError(
                f"rate is requests per second, 1e-6 to 1e6; got {rate!r}", path="$.rate"
            )
        if burst is not None and not (isinstance(burst, int) and 1 <= burst <= 1_000_000):
            raise ValidationError(
                f"burst is an int from 1 to 1000000, got {burst!r}", path="$.burst"
            )
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        key = ApiKey(
            id=key_id,
            secret_sha256=_sha256(secret),
            created_at=datetime.now(UTC),
            tenant_id=tenant_id,
            admin=admin,
            name=name,
            rate=None if rate is None else float(rate),
            burst=burst,
        )
        with self._lock:
            if self._table is not None:
                self._table.put(key)
                self._read_at = -math.inf
            self._reload()
            self._keys[key_id] = key
            self._save()
        return key, f"nsw_{key_id}_{secret}"

    def list(self) -> list[ApiKey]:
        """Every key (revoked ones too), oldest first."""
        with self._lock:
            self._reload()
            return sorted(self._keys.values(), key=lambda key: key.created_at)

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key: it is refused from the next request on (``NotFoundError`` if unknown)."""
        with self._lock:
            self._reload()
            key = self._keys.get(key_id)
            if key is None:
                raise NotFoundError(f"no API key {key_id!r}")
            if key.revoked_at is None:
                key = msgspec.structs.replace(key, revoked_at=datetime.now(UTC))
                if self._table is not None:
                    self._table.put(key)
                self._keys[key_id] = key
                self._save()
            return key

    def authenticate(self, token: str) -> ApiKey | None:
        """The live key of a token, or None (unknown, malformed, or revoked)."""
        match = _TOKEN.fullmatch(token)
        if match is None:
            return None
        key_id, secret = match.groups()
        with self._lock:
            self._reload()
            key = self._keys.get(key_id)
        if key is None or key.revoked_at is not None:
            return None
        if not hmac.compare_digest(key.secret_sha256, _sha256(secret)):
            return None
        return key

    def charge(self, key: ApiKey) -> None:
        """Take one request from the key's token bucket (``RateLimitedError`` with the time to
        wait when it is empty); keys without a rate pass."""
        if key.rate is None:
            return
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(key.id)
            if bucket is None:
                bucket = self._buckets[key.id] = LimitState(("key", key.id), None)
            bucket.set_rate(key.rate, key.burst, now)
            bucket.refill(now)
            if bucket.tokens < 1.0 - 1e-9:
                wait_s = bucket.next_token_at(now) - now
                raise RateLimitedError(
                    f"{key.who} is over its rate of {key.rate} requests/s (burst {bucket.burst}); "
                    f"retry after {wait_s:.3f} s",
                    retry_after_s=wait_s,
                )
            bucket.tokens -= 1.0


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()

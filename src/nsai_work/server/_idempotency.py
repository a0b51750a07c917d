"""``Idempotency-Key``: a POST sent again with the same key gets the first answer.

A client that lost an answer (a timeout, a dropped connection) cannot know whether its submit
was admitted; sent again with the same ``Idempotency-Key`` header, the request is answered with
what the first one answered (marked ``Idempotent-Replayed: true``) and does nothing twice. Keys
are per API key (two tenants may use the same one), kept ``ttl_s`` (a day) and at most
``max_entries`` of them (the oldest go first), in this server process's memory. A request with a
key that is still in flight waits for the first one's answer. The same key with another request
(another path or body) is a 422 naming the header. Answers worth trying again (429, 5xx) are
not kept, so trying again really tries.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Final

from .._errors import ValidationError

__all__ = ["Answer", "IdempotencyCache"]

#: The header's value: 1 to 255 printable ASCII characters.
_MAX_KEY: Final = 255


class Answer:
    """An answer as it is sent (and kept): status, body, media type, extra headers."""

    __slots__ = ("body", "headers", "media_type", "status")

    def __init__(
        self, status: int, body: bytes, media_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.status = status
        self.body = body
        self.media_type = media_type
        self.headers = headers or {}


class _Entry:
    __slots__ = ("answer", "at", "fingerprint", "ready")

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint
        self.ready: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.answer: Answer | None = None
        self.at = time.monotonic()


class IdempotencyCache:
    """The answers of requests that carried an ``Idempotency-Key``, by (API key id, key)."""

    def __init__(self, *, ttl_s: float = 86_400.0, max_entries: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def run(
        self,
        owner: str,
        key: str,
        request: bytes,
        answer: Callable[[], Awaitable[Answer]],
    ) -> Answer:
        """The answer to a request with ``Idempotency-Key: key``: the first one's, or
        ``answer()``'s if this is the first (``request`` tells two requests apart)."""
        if not 1 <= len(key) <= _MAX_KEY or not key.isascii() or not key.isprintable():
            raise ValidationError(
                f"the Idempotency-Key header is 1 to {_MAX_KEY} printable ASCII characters, got "
                f"{key[:40]!r}",
                path="$.headers.Idempotency-Key",
            )
        self._expire()
        fingerprint = hashlib.sha256(request).hexdigest()
        slot = (owner, key)
        entry = self._entries.get(slot)
        if entry is not None:
            if entry.fingerprint != fingerprint:
                raise ValidationError(
                    f"the Idempotency-Key {key!r} was used for another request (another path or "
                    f"body); use a new key for a new request",
                    path="$.headers.Idempotency-Key",
                )
            first = await asyncio.shield(entry.ready)
            replay = Answer(first.status, first.body, first.media_type, dict(first.headers))
            replay.headers["Idempotent-Replayed"] = "true"
            return replay
        entry = self._entries[slot] = _Entry(fingerprint)
        try:
            result = await answer()
        except BaseException as exc:
            self._entries.pop(slot, None)
            entry.ready.set_exception(exc)
            entry.ready.exception()  # (retrieved: no "never retrieved" warning)
            raise
        entry.ready.set_result(result)
        if result.status == 429 or result.status >= 500:
            self._entries.pop(slot, None)  # worth trying again: let the next try try
        return result

    def _expire(self) -> None:
        entries = self._entries
        horizon = time.monotonic() - self.ttl_s
        while entries:
            slot, oldest = next(iter(entries.items()))
            if oldest.at >= horizon and len(entries) < self.max_entries:
                break
            if not oldest.ready.done():  # in flight: keep it, stop here
                break
            del entries[slot]

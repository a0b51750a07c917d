"""The server-sent-events stream of job events: a hub on the scheduler's telemetry bus that fans
events out to the open streams, each with a bounded buffer.

The hub is a handler on the bus only while a stream is open (so a server nobody streams from
pays nothing per event). An event is encoded once, when a stream wants it, and the same bytes
go to every stream that does: a stream keeps the events of one tenant (its key's, or any for an
admin key), of some job ids if it asked. Each stream buffers at most ``buffer`` events; a
consumer too slow to keep up loses the newest events while its buffer is full, and when it
catches up it first gets what was buffered, then one ``gap`` event saying how many it lost and
their sequence numbers (then it may re-read the jobs it cares about with ``GET /v1/jobs``).
The handler runs on the engine's loop (the server's) and only appends to a deque: the engine
never waits for a network.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import threading
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import msgspec

from ..telemetry import EXPORTABLE_METADATA, Telemetry
from ..telemetry.events import (
    JOB_CANCELED,
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_QUEUED,
    JOB_RETRY,
    JOB_STARTED,
    JOB_SUBMITTED,
)

__all__ = ["STREAMED_EVENTS", "EventHub", "Subscription"]

#: The events a stream carries (the job's own; the queue and scheduler events repeat them).
STREAMED_EVENTS: Final = (
    JOB_SUBMITTED,
    JOB_QUEUED,
    JOB_STARTED,
    JOB_RETRY,
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_CANCELED,
)
_NAMES: Final[dict[tuple[str, ...], bytes]] = {e: ".".join(e).encode() for e in STREAMED_EVENTS}
_encode = msgspec.json.Encoder().encode
#: Seconds between keep-alive comments on an idle stream (so proxies keep it open).
HEARTBEAT_S: Final = 15.0


class Subscription:
    """One open stream: what it keeps, its buffer, and what it lost."""

    __slots__ = ("buffer", "dropped", "first_dropped", "job_ids", "last_dropped", "size", "wake")

    def __init__(self, job_ids: frozenset[tuple[str, str]] | None, size: int) -> None:
        self.job_ids = job_ids  # (tenant id, job id) pairs, or None for every job
        self.buffer: collections.deque[bytes] = collections.deque()
        self.size = size
        self.dropped = 0
        self.first_dropped = 0
        self.last_dropped = 0
        self.wake = asyncio.Event()

    def push(self, seq: int, chunk: bytes) -> None:
        """Buffer an event, or count it lost when the buffer is full."""
        if len(self.buffer) < self.size:
            self.buffer.append(chunk)
        else:
            if not self.dropped:
                self.first_dropped = seq
            self.dropped += 1
            self.last_dropped = seq
        self.wake.set()

    def take(self) -> bytes:
        """What is buffered, then a ``gap`` event if events were lost; the buffer empties."""
        parts = list(self.buffer)
        self.buffer.clear()
        if self.dropped:
            gap = {
                "dropped": self.dropped,
                "first_seq": self.first_dropped,
                "last_seq": self.last_dropped,
            }
            parts.append(b"event: gap\ndata: " + _encode(gap) + b"\n\n")
            self.dropped = 0
        return b"".join(parts)


class EventHub:
    """Job events of one scheduler's bus, to the open streams (see the module docstring)."""

    def __init__(self, *, buffer: int = 10_000) -> None:
        if buffer < 1:
            raise ValueError(f"a stream's buffer holds at least 1 event, got {buffer}")
        self.buffer = buffer
        self._bus: Telemetry | None = None
        self._thread = 0
        self._by_tenant: dict[str, set[Subscription]] = {}
        self._everyone: set[Subscription] = set()
        self._count = 0
        self.ending = False
        self._seq = itertools.count(1)
        self._handler_id = f"nsai-work-event-stream-{id(self):x}"

    def bind(self, bus: Telemetry) -> None:
        """Serve the events of ``bus`` that the scheduler on this thread's loop (the server's)
        emits: the process-wide bus may carry other schedulers' events too, which are left
        out."""
        self._bus = bus
        self._thread = threading.get_ident()

    @property
    def streams(self) -> int:
        """How many streams are open."""
        return self._count

    def subscribe(
        self, tenant_id: str | None, job_ids: frozenset[tuple[str, str]] | None
    ) -> Subscription:
        """Open a stream of one tenant's events (None: every tenant's), of ``job_ids`` only
        when given."""
        sub = Subscription(job_ids, self.buffer)
        if tenant_id is None:
            self._everyone.add(sub)
        else:
            self._by_tenant.setdefault(tenant_id, set()).add(sub)
        self._count += 1
        if self._count == 1 and self._bus is not None:
            self._bus.attach_many(self._handler_id, STREAMED_EVENTS, self._on_event)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Close a stream."""
        if sub in self._everyone:
            self._everyone.discard(sub)
        else:
            for tenant_id, subs in list(self._by_tenant.items()):
                if sub in subs:
                    subs.discard(sub)
                    if not subs:
                        del self._by_tenant[tenant_id]
                    break
            else:
                return
        self._count -= 1
        if self._count == 0 and self._bus is not None:
            self._bus.detach(self._handler_id)

    def end_streams(self) -> None:
        """End every open stream (the server shuts down): each sends what it buffered, then
        ends, so a graceful shutdown does not wait for clients that never leave."""
        self.ending = True
        for subs in (self._everyone, *self._by_tenant.values()):
            for sub in subs:
                sub.wake.set()

    def close(self) -> None:
        """Detach from the bus (the server stops)."""
        if self._bus is not None and self._count:
            self._bus.detach(self._handler_id)
        self._bus = None

    def _on_event(
        self,
        event: tuple[str, ...],
        measurements: Mapping[str, float],
        metadata: Mapping[str, Any],
        config: Any,
    ) -> None:
        if threading.get_ident() == self._thread:  # not another scheduler's, on a shared bus
            self._fan_out(event, measurements, metadata)

    def _fan_out(
        self, event: tuple[str, ...], measurements: Mapping[str, float], metadata: Mapping[str, Any]
    ) -> None:
        tenant_id = metadata.get("tenant_id")
        tenant_subs = self._by_tenant.get(tenant_id) if isinstance(tenant_id, str) else None
        if not tenant_subs and not self._everyone:
            return
        key = (tenant_id, metadata.get("job_id"))
        chunk = b""
        seq = 0
        for subs in (tenant_subs, self._everyone):
            if not subs:
                continue
            for sub in subs:
                if sub.job_ids is not None and key not in sub.job_ids:
                    continue
                if not chunk:
                    seq = next(self._seq)
                    chunk = _chunk(seq, event, measurements, metadata)
                sub.push(seq, chunk)


def _chunk(
    seq: int, event: tuple[str, ...], measurements: Mapping[str, float], metadata: Mapping[str, Any]
) -> bytes:
    """One event in the ``text/event-stream`` format: ids and labels, never payloads."""
    data: dict[str, Any] = {"seq": seq, "event": ".".join(event), "at": time.time()}
    for name in EXPORTABLE_METADATA:
        value = metadata.get(name)
        if value is not None:
            data[name] = value
    if measurements:
        data["measurements"] = dict(measurements)
    label = _NAMES.get(event) or ".".join(event).encode()
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, label, _encode(data))


async def stream(
    hub: EventHub,
    tenant_id: str | None,
    job_ids: frozenset[tuple[str, str]] | None,
    timeout: float | None,
) -> AsyncIterator[bytes]:
    """The bytes of one stream until the client leaves (or ``timeout`` seconds pass). It
    subscribes before its first bytes (a comment), and unsubscribes when it ends."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    sub = hub.subscribe(tenant_id, job_ids)
    try:
        yield b"retry: 3000\n: nsai-work job events\n\n"
        while not hub.ending or sub.buffer or sub.dropped:
            if not sub.buffer and not sub.dropped:
                sub.wake.clear()
                wait = HEARTBEAT_S
                if deadline is not None:
                    wait = min(wait, deadline - loop.time())
                    if wait <= 0:
                        return
                try:
                    async with asyncio.timeout(wait):
                        await sub.wake.wait()
                except TimeoutError:
                    if deadline is None or loop.time() < deadline:
                        yield b": keep-alive\n\n"
                    continue
            yield sub.take()
    finally:
        hub.unsubscribe(sub)

"""One timer heap for the whole engine: backoff ends, timeouts, rate-limit refills.

Only the earliest entry has a ``loop.call_later`` handle; a job without a timeout costs nothing
here. A timer the core no longer needs (its job moved on) is disarmed: marked dead in the heap
and forgotten, and the heap is compacted when dead entries outnumber live ones, so memory is
bounded by the live timers. A timer that fires after its job moved on anyway is ignored by the
core (its key carries the attempt).

Time is the engine clock's monotonic time. With a clock moved by hand (one that has
``on_change``, like ``work.testing.FakeClock``) nothing is scheduled on the loop: due timers
fire when the clock moves.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from heapq import heapify, heappop, heappush
from typing import Any

from .._clock import Clock
from ..core import TimerKey

__all__ = ["TimerHeap"]

#: Dead entries tolerated before a compaction is considered.
_COMPACT_MIN = 64


class TimerHeap:
    """Timers on the engine's monotonic clock, woken by the loop (or by a manual clock)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, fire: Callable[[TimerKey], None], clock: Clock
    ) -> None:
        self._loop = loop
        self._fire = fire
        self._clock = clock
        # entries are [at, seq, key]; key is None once disarmed (seq is unique: keys are
        # never compared)
        self._heap: list[list[Any]] = []
        self._live: dict[TimerKey, list[Any]] = {}
        self._dead = 0
        self._seq = 0
        self._handle: asyncio.TimerHandle | None = None
        self._handle_at = math.inf
        on_change = getattr(clock, "on_change", None)
        self._manual = on_change is not None
        self._unsubscribe: Callable[[], None] | None = (
            on_change(self._moved) if on_change is not None else None
        )

    def __len__(self) -> int:
        """Timers armed and not yet fired or disarmed."""
        return len(self._live)

    @property
    def held(self) -> int:
        """Entries in the heap, dead ones included (at most about twice the live ones)."""
        return len(self._heap)

    def arm(self, at: float, key: TimerKey) -> None:
        """Fire ``key`` at monotonic time ``at`` (re-arming a key replaces its timer)."""
        if key in self._live:
            self.disarm(key)
        self._seq += 1
        entry = [at, self._seq, key]
        heappush(self._heap, entry)
        self._live[key] = entry
        if at < self._handle_at:
            self._wake_at(at)

    def disarm(self, key: TimerKey) -> None:
        """Forget ``key``'s timer (nothing if it fired or was never armed)."""
        entry = self._live.pop(key, None)
        if entry is None:
            return
        entry[2] = None
        self._dead += 1
        if self._dead > _COMPACT_MIN and self._dead * 2 > len(self._heap):
            self._heap = [e for e in self._heap if e[2] is not None]
            heapify(self._heap)
            self._dead = 0

    def _wake_at(self, at: float) -> None:
        self._handle_at = at
        if self._manual:
            return  # the clock's moves wake us
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_later(max(0.0, at - self._clock.monotonic()), self._on_due)

    def _moved(self) -> None:
        """The manual clock moved (from any thread): look for due timers on the loop."""
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._on_due)

    def _on_due(self) -> None:
        self._handle = None
        self._handle_at = math.inf
        heap = self._heap
        now = self._clock.monotonic()
        while heap and heap[0][0] <= now:
            _, _, key = heappop(heap)
            if key is None:
                self._dead -= 1
                continue
            del self._live[key]
            self._fire(key)
        while heap and heap[0][2] is None:  # do not wake for a dead entry
            heappop(heap)
            self._dead -= 1
        if heap and heap[0][0] < self._handle_at:  # timers armed while firing may be later
            self._wake_at(heap[0][0])

    def close(self) -> None:
        """Forget every timer (and stop listening to a manual clock)."""
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._handle_at = math.inf
        self._heap.clear()
        self._live.clear()
        self._dead = 0
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

"""One timer heap for the whole engine: backoff ends, timeouts (and later run_at).

Only the earliest entry has a ``loop.call_later`` handle; a job without a timeout costs nothing
here. Entries are never removed early: a timer that fires after its job moved on is ignored by
the core (its key carries the attempt).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from heapq import heappop, heappush

from ..core import TimerKey

__all__ = ["TimerHeap"]


class TimerHeap:
    """Timers on the wall clock (the core's clock), woken by the loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fire: Callable[[TimerKey, float], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._loop = loop
        self._fire = fire
        self._clock = clock
        self._heap: list[tuple[float, int, TimerKey]] = []
        self._seq = 0
        self._handle: asyncio.TimerHandle | None = None
        self._handle_at = math.inf

    def __len__(self) -> int:
        return len(self._heap)

    def arm(self, at: float, key: TimerKey) -> None:
        """Fire ``key`` at wall-clock time ``at``."""
        self._seq += 1
        heappush(self._heap, (at, self._seq, key))
        if at < self._handle_at:
            self._wake_at(at)

    def _wake_at(self, at: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle_at = at
        self._handle = self._loop.call_later(max(0.0, at - self._clock()), self._on_due)

    def _on_due(self) -> None:
        self._handle = None
        self._handle_at = math.inf
        heap = self._heap
        now = self._clock()
        while heap and heap[0][0] <= now:
            _, _, key = heappop(heap)
            self._fire(key, now)
        if heap and heap[0][0] < self._handle_at:  # timers armed while firing may be later
            self._wake_at(heap[0][0])

    def close(self) -> None:
        """Forget every timer."""
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._handle_at = math.inf
        self._heap.clear()

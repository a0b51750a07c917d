"""A clock you move by hand: for the pure core (call it for the time) and for the engine
(``Scheduler(clock=FakeClock())``: its timers fire when you advance it, never on their own)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

__all__ = ["FakeClock"]


class FakeClock:
    """Monotonic seconds since an arbitrary ``start``, and a wall clock that moves with it
    (from ``wall``, Unix seconds). Only ``advance`` and ``set`` move it.

    Given to a scheduler (``work.Scheduler(clock=clock)``), it drives timeouts, backoffs and rate
    limits: after ``clock.advance(5)`` every timer due by then fires at the engine loop's next
    turn (``await asyncio.sleep(0)`` in async code lets it run).
    """

    def __init__(self, start: float = 1_000_000.0, *, wall: float = 1_767_225_600.0) -> None:
        for name, value in (("start", start), ("wall", wall)):
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name} is a finite number of seconds, got {value!r}")
        self.now = float(start)
        self._start = self.now
        self._wall = float(wall)
        self._lock = threading.Lock()
        self._listeners: dict[int, Callable[[], None]] = {}
        self._next = 0

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        """The current time (seconds)."""
        return self.now

    def time(self) -> float:
        """The wall-clock time: ``wall`` plus the time advanced since ``start``."""
        return self._wall + (self.now - self._start)

    def advance(self, seconds: float) -> float:
        """Move forward (never back) and return the new time."""
        if not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"advance takes finite seconds >= 0, got {seconds!r}")
        self.now += seconds
        self._changed()
        return self.now

    def set(self, now: float) -> None:
        """Jump to ``now`` (not earlier than the current time)."""
        if not isinstance(now, int | float) or not math.isfinite(now) or now < self.now:
            raise ValueError(f"a clock does not go back: {now!r} < {self.now}")
        self.now = float(now)
        self._changed()

    def on_change(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` whenever the clock moves (from the thread that moves it); returns
        the function that stops the calls. The engine's timer heap uses this."""
        with self._lock:
            self._next += 1
            token = self._next
            self._listeners[token] = callback

        def stop() -> None:
            with self._lock:
                self._listeners.pop(token, None)

        return stop

    def _changed(self) -> None:
        with self._lock:
            listeners = list(self._listeners.values())
        for callback in listeners:
            callback()

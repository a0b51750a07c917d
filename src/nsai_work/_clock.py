"""The two clocks the engine reads (DESIGN.md, principle 5).

Durations (run and queue times, timeouts, backoffs, token buckets, fair-share charges) come from
a monotonic clock, which never jumps when the system time is set; the timestamps jobs carry
(``submitted_at``, ``started_at``...) are wall-clock UTC. A scheduler takes both as one
``Clock`` (``Scheduler(clock=...)``), so tests can drive it by hand with
``work.testing.FakeClock`` instead of sleeping.
"""

from __future__ import annotations

import time as _time
from typing import Final, Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """What the engine reads: ``monotonic()`` for durations and timers, ``time()`` (Unix
    seconds, UTC) for timestamps. A clock that also has ``on_change(callback)`` is moved by
    hand: the engine's timers then fire when it moves, never on their own."""

    def monotonic(self) -> float:
        """Seconds on a clock that only goes forward."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the Unix epoch (UTC)."""
        ...


class SystemClock:
    """The machine's clocks: ``time.monotonic`` and ``time.time``."""

    monotonic = staticmethod(_time.monotonic)
    time = staticmethod(_time.time)


SYSTEM_CLOCK: Final = SystemClock()

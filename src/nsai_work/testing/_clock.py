"""A clock you move by hand, for driving the pure core."""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """Seconds since an arbitrary start; only ``advance`` and ``set`` move it."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move forward (never back) and return the new time."""
        if seconds < 0:
            raise ValueError(f"a clock does not go back: advance({seconds})")
        self.now += seconds
        return self.now

    def set(self, now: float) -> None:
        """Jump to ``now`` (not earlier than the current time)."""
        if now < self.now:
            raise ValueError(f"a clock does not go back: {now} < {self.now}")
        self.now = float(now)

"""Helpers for users' tests (and ours): a fake clock, event capture, and the backend contract."""

from ._backend_check import check_backend
from ._clock import FakeClock
from ._events import CapturedEvent, capture_events

__all__ = ["CapturedEvent", "FakeClock", "capture_events", "check_backend"]

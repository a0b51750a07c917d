"""Helpers for users' tests (and ours): a fake clock, event capture, and the backend and store
contracts (``check_backend``, ``check_store``), and ``wait_schedules_settled`` for cron
schedules under a fake clock."""

from ._backend_check import check_backend
from ._clock import FakeClock
from ._events import CapturedEvent, capture_events
from ._schedules import wait_schedules_settled
from ._store_check import check_store

__all__ = [
    "CapturedEvent",
    "FakeClock",
    "capture_events",
    "check_backend",
    "check_store",
    "wait_schedules_settled",
]

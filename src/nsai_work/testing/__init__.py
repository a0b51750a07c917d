"""Helpers for users' tests (and ours): a fake clock, event capture, the backend and store
contracts (``check_backend``, ``check_store``), ``wait_schedules_settled`` for cron schedules
under a fake clock, and a stand-in for the ``modal`` module (``FakeModal``)."""

from ._backend_check import check_backend
from ._clock import FakeClock
from ._events import CapturedEvent, capture_events
from ._modal_fake import FakeModal, FakeSpawn
from ._schedules import wait_schedules_settled
from ._store_check import check_store

__all__ = [
    "CapturedEvent",
    "FakeClock",
    "FakeModal",
    "FakeSpawn",
    "capture_events",
    "check_backend",
    "check_store",
    "wait_schedules_settled",
]

"""The pure scheduling core: no I/O, no clock, no threads, no randomness of its own.

``SchedulingCore.handle(event, now) -> decisions`` holds every scheduling decision (admission,
priority, capacity, retries, timeouts, cancellation); the engine only carries them out. A test
checks that nothing in this package imports asyncio, time, os, socket, random or threading.
"""

from ._capacity import NO_NEEDS, Needs, PoolState, needs_of
from ._core import DEFAULT_TENANT_IDLE_TTL_S, SchedulingCore
from ._lifecycle import ALLOWED_TRANSITIONS, check_transition
from ._messages import (
    Amend,
    ArmTimer,
    BackendAvailability,
    Cancel,
    ConcurrencyLimitChanged,
    Decision,
    DisarmTimer,
    Dispatch,
    Event,
    Failed,
    HandleReported,
    JobKey,
    Limit,
    Outcome,
    PoolsChanged,
    Record,
    Reject,
    Rejected,
    Restore,
    Route,
    RunEnded,
    Stopped,
    StopRun,
    Submit,
    Succeeded,
    TenantChanged,
    TimerFired,
    TimerKey,
)
from ._queues import DEFAULT_FAIR_SHARE_RESOLUTION_S, check_resolution
from ._retry import backoff_delay_ms, base_delay_ms
from ._state import CORE_STATE_VERSION, CoreState

__all__ = [
    "ALLOWED_TRANSITIONS",
    "CORE_STATE_VERSION",
    "DEFAULT_FAIR_SHARE_RESOLUTION_S",
    "DEFAULT_TENANT_IDLE_TTL_S",
    "NO_NEEDS",
    "Amend",
    "ArmTimer",
    "BackendAvailability",
    "Cancel",
    "ConcurrencyLimitChanged",
    "CoreState",
    "Decision",
    "DisarmTimer",
    "Dispatch",
    "Event",
    "Failed",
    "HandleReported",
    "JobKey",
    "Limit",
    "Needs",
    "Outcome",
    "PoolState",
    "PoolsChanged",
    "Record",
    "Reject",
    "Rejected",
    "Restore",
    "Route",
    "RunEnded",
    "SchedulingCore",
    "StopRun",
    "Stopped",
    "Submit",
    "Succeeded",
    "TenantChanged",
    "TimerFired",
    "TimerKey",
    "backoff_delay_ms",
    "base_delay_ms",
    "check_resolution",
    "check_transition",
    "needs_of",
]

"""The catalogue: every event nsai-work itself emits (DESIGN.md's event table, in its order).

Users may emit events of their own with ``work.telemetry.execute``; the library emits only these
(a test checks it). Measurements carry their unit in the name; metadata never carries payloads,
results or secrets into exporters.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ALL_EVENTS",
    "JOB_CANCELED",
    "JOB_COMPLETED",
    "JOB_FAILED",
    "JOB_QUEUED",
    "JOB_RETRY",
    "JOB_STARTED",
    "JOB_SUBMITTED",
    "QUEUE_DEQUEUE",
    "QUEUE_ENQUEUE",
    "QUEUE_OVERFLOW",
    "SCHEDULER_ADMIT",
    "SCHEDULER_SELECT_BACKEND",
    "Event",
]

Event = tuple[str, ...]

#: submit decided (metadata ``decision`` = "accept" | "reject", ``reason``).
SCHEDULER_ADMIT: Final = ("work", "scheduler", "admit")
#: a job was accepted.
JOB_SUBMITTED: Final = ("work", "job", "submitted")
#: a queue limit rejected a submit (after the admit event).
QUEUE_OVERFLOW: Final = ("work", "queue", "overflow")
#: the job entered queued (measurement ``wait_ms``: time spent pending).
JOB_QUEUED: Final = ("work", "job", "queued")
#: the job was put on its priority queue.
QUEUE_ENQUEUE: Final = ("work", "queue", "enqueue")
#: the job left its queue to run (measurement ``queue_time_ms``).
QUEUE_DEQUEUE: Final = ("work", "queue", "dequeue")
#: backend and pool chosen (metadata ``backend``, ``pool``).
SCHEDULER_SELECT_BACKEND: Final = ("work", "scheduler", "select_backend")
#: an attempt started.
JOB_STARTED: Final = ("work", "job", "started")
#: an attempt failed and another is scheduled (``run_time_ms``, ``backoff_ms``).
JOB_RETRY: Final = ("work", "job", "retry")
#: the job ended succeeded, failed or timeout (metadata ``status``; ``run_time_ms``,
#: ``total_time_ms``).
JOB_COMPLETED: Final = ("work", "job", "completed")
#: after ``completed`` when the job failed or timed out.
JOB_FAILED: Final = ("work", "job", "failed")
#: the job was canceled (metadata ``reason``).
JOB_CANCELED: Final = ("work", "job", "canceled")

ALL_EVENTS: Final[tuple[Event, ...]] = (
    SCHEDULER_ADMIT,
    JOB_SUBMITTED,
    QUEUE_OVERFLOW,
    JOB_QUEUED,
    QUEUE_ENQUEUE,
    QUEUE_DEQUEUE,
    SCHEDULER_SELECT_BACKEND,
    JOB_STARTED,
    JOB_RETRY,
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_CANCELED,
)

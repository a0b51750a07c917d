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
    "JOB_DEADLINE_EXCEEDED",
    "JOB_DEPENDENCY_FAILED",
    "JOB_FAILED",
    "JOB_QUEUED",
    "JOB_RELEASED",
    "JOB_RETRY",
    "JOB_STARTED",
    "JOB_SUBMITTED",
    "JOB_WAITING",
    "QUEUE_DEQUEUE",
    "QUEUE_ENQUEUE",
    "QUEUE_OVERFLOW",
    "SCHEDULER_ADMIT",
    "SCHEDULER_SELECT_BACKEND",
    "SCHEDULE_FIRED",
    "SCHEDULE_MISSED",
    "SCHEDULE_PAUSED",
    "SCHEDULE_REMOVED",
    "SCHEDULE_RESUMED",
    "Event",
]

Event = tuple[str, ...]

#: submit decided (metadata ``decision`` = "accept" | "reject", ``reason``).
SCHEDULER_ADMIT: Final = ("work", "scheduler", "admit")
#: a job was accepted.
JOB_SUBMITTED: Final = ("work", "job", "submitted")
#: an accepted job waits before it may queue (after ``submitted``): metadata ``reason`` =
#: "dependencies" (``depends_on``: the ids it waits for) or "scheduled" (``run_at``).
JOB_WAITING: Final = ("work", "job", "waiting")
#: a queue limit rejected a submit (after the admit event).
QUEUE_OVERFLOW: Final = ("work", "queue", "overflow")
#: the job entered queued (measurement ``wait_ms``: time spent pending).
JOB_QUEUED: Final = ("work", "job", "queued")
#: what a waiting job waited for came (before ``queued``): metadata ``reason`` =
#: "dependencies" or "scheduled"; measurement ``wait_ms``.
JOB_RELEASED: Final = ("work", "job", "released")
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
#: after ``canceled`` when a dependency ended failed, timeout or canceled (metadata
#: ``dependency_id``, ``dependency_status``).
JOB_DEPENDENCY_FAILED: Final = ("work", "job", "dependency_failed")
#: after ``canceled`` when the job had not started by its deadline (metadata ``deadline``).
JOB_DEADLINE_EXCEEDED: Final = ("work", "job", "deadline_exceeded")
#: a cron schedule fired (metadata ``schedule``, ``tenant_id``, ``cron``, ``tz``,
#: ``fire_time``, ``job_id``, ``decision`` = "submitted" | "already_submitted" | "duplicate" |
#: "rejected"); measurement ``late_ms``.
SCHEDULE_FIRED: Final = ("work", "schedule", "fired")
#: fires a schedule missed were settled per its policy (metadata ``policy``, ``last_missed``);
#: measurement ``missed_count``.
SCHEDULE_MISSED: Final = ("work", "schedule", "missed")
#: a schedule was paused.
SCHEDULE_PAUSED: Final = ("work", "schedule", "paused")
#: a schedule was resumed.
SCHEDULE_RESUMED: Final = ("work", "schedule", "resumed")
#: a schedule was removed.
SCHEDULE_REMOVED: Final = ("work", "schedule", "removed")

ALL_EVENTS: Final[tuple[Event, ...]] = (
    SCHEDULER_ADMIT,
    JOB_SUBMITTED,
    JOB_WAITING,
    QUEUE_OVERFLOW,
    JOB_RELEASED,
    JOB_QUEUED,
    QUEUE_ENQUEUE,
    QUEUE_DEQUEUE,
    SCHEDULER_SELECT_BACKEND,
    JOB_STARTED,
    JOB_RETRY,
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_CANCELED,
    JOB_DEPENDENCY_FAILED,
    JOB_DEADLINE_EXCEEDED,
    SCHEDULE_FIRED,
    SCHEDULE_MISSED,
    SCHEDULE_PAUSED,
    SCHEDULE_RESUMED,
    SCHEDULE_REMOVED,
)

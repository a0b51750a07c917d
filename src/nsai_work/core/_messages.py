"""What flows into the core (events) and what comes back (decisions).

Events are facts the engine observed; decisions are what the engine must now do. Both are
frozen Structs that compare by value, so a recorded run of the core replays exactly.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct

from .._errors import WorkError
from .._ir import Job, JobError, Pool, Status, Tenant
from ._state import CoreState

__all__ = [
    "Amend",
    "ArmTimer",
    "BackendAvailability",
    "Cancel",
    "ConcurrencyLimitChanged",
    "Decision",
    "DisarmTimer",
    "Dispatch",
    "Event",
    "Failed",
    "Finished",
    "HandleReported",
    "JobKey",
    "Limit",
    "Outcome",
    "Pause",
    "PoolsChanged",
    "Record",
    "Reject",
    "Rejected",
    "Restore",
    "Route",
    "RunEnded",
    "StopRun",
    "Stopped",
    "Submit",
    "Succeeded",
    "TenantChanged",
    "TimerFired",
    "TimerKey",
]

#: Where a job may run, in order of preference: (backend name, its pools the job may use).
Route = tuple[tuple[str, tuple[str, ...]], ...]
#: A job, as the core knows it: jobs are keyed by (tenant_id, id), so tenants never see or
#: block each other's ids.
JobKey = tuple[str, str]
#: (what, tenant id, job id, attempt): "timeout" ends a run, "ready" ends a backoff; "limit"
#: (tenant "", a tool's name, 0) refills a rate-limited tool; "run_at" (attempt 0) ends a
#: scheduled wait, "deadline" (attempt 0) cancels a job that has not started.
TimerKey = tuple[str, str, str, int]
#: How a job that is not live in the core ended: (tenant id, job id, terminal status).
Finished = tuple[str, str, Status]


# ---- outcomes of a run ------------------------------------------------------------------------
class Succeeded(Struct, frozen=True, gc=False):
    """The handler returned ``result``."""

    result: Any = None


class Failed(Struct, frozen=True, gc=False):
    """The handler raised; ``retryable`` is False for ``NonRetryableError`` and alike."""

    error: JobError
    retryable: bool = True


class Stopped(Struct, frozen=True, gc=False):
    """The run ended because it was stopped (cancel, timeout, shutdown)."""


Outcome = Succeeded | Failed | Stopped


# ---- events (engine -> core) ------------------------------------------------------------------
class Limit(Struct, frozen=True, gc=False):
    """A limit a backend puts on some of its jobs, across tenants (e.g. one ALTAR tool's):
    at most ``max_concurrency`` running at once, and a token bucket of ``rate`` starts per
    second with ``burst`` tokens. The latest spec of a name wins."""

    name: str
    max_concurrency: int | None = None
    rate: float | None = None
    burst: int | None = None


class Submit(Struct, frozen=True, gc=False):
    """Validated new jobs, each with its route (and, optionally, the backend limits each is
    subject to); admitted all together or not at all.

    ``finished`` tells the core how the jobs' dependencies that are not live in it ended (the
    engine reads them from its store): a dependency neither live, in the batch nor listed there
    is unknown, and the submit is rejected."""

    jobs: tuple[Job, ...]
    routes: tuple[Route, ...]
    limits: tuple[tuple[Limit, ...], ...] = ()
    finished: tuple[Finished, ...] = ()


class RunEnded(Struct, frozen=True, gc=False):
    """The execution of ``attempt`` of a job has really ended (its reservation can go)."""

    tenant_id: str
    job_id: str
    attempt: int
    outcome: Outcome


class Cancel(Struct, frozen=True, gc=False):
    """Cancel a job (pending, queued or running). ``by``: who asked (an ``Actor``), recorded
    on the job as an ``Audit``; None for the scheduler's own cancels (a shutdown...)."""

    tenant_id: str
    job_id: str
    reason: str = "requested"
    by: tuple[str, str | None] | None = None


class Pause(Struct, frozen=True, gc=False):
    """Pause (``paused=True``) or resume what an operator names: a tenant (``tenant_id``), one
    of its namespaces (and ``namespace``), a pool (``pool``), or, naming none, the whole
    scheduler (a drain). Nothing new of it starts while it is paused; what runs goes on, and
    submits are still admitted."""

    paused: bool
    tenant_id: str | None = None
    namespace: str | None = None
    pool: str | None = None


class Rejected(Struct, frozen=True, gc=False):
    """Submits the engine refused before they reached the core (invalid, unroutable...), to be
    counted (by tenant and level where they have valid ones) under ``reason``. The jobs may be
    anything a caller passed."""

    jobs: tuple[Any, ...]
    reason: str = "invalid"


class TimerFired(Struct, frozen=True, gc=False):
    """A timer armed by an ``ArmTimer`` decision is due."""

    key: TimerKey


class PoolsChanged(Struct, frozen=True, gc=False):
    """A backend's pools now offer this capacity: those listed take their spec (or are added),
    those named in ``removed`` go, the others are left as they are.

    The backend's waiting jobs are placed again over its pools as they are now. Runs on a
    removed pool follow the connection-loss rule (their attempt fails with
    ``BackendLostError``, retried per policy; the capacity they hold comes back when the run
    really ends). A waiting job that no pool of its backend can hold any more waits with the
    reason ``pool_removed:<pool>`` (or ``no_pool``) for ``grace_s`` seconds, for such a pool to
    come (back), then is canceled with the reason ``unschedulable: ...``; None waits for ever.
    """

    backend: str
    pools: tuple[Pool, ...]
    removed: tuple[str, ...] = ()
    grace_s: float | None = None


class BackendAvailability(Struct, frozen=True, gc=False):
    """A backend is reachable (``available``) or not (its cluster or service went away:
    ``reason`` says how). While it is not, its pools start nothing and its queued jobs wait
    with the reason ``backend_unavailable``; when it goes away, its runs follow the
    connection-loss rule (see ``PoolsChanged``)."""

    backend: str
    available: bool
    reason: str = ""


class TenantChanged(Struct, frozen=True, gc=False):
    """A tenant's weight, quota or namespace limits are now ``tenant`` (effective for the next
    decision; nothing running is stopped)."""

    tenant: Tenant


class ConcurrencyLimitChanged(Struct, frozen=True, gc=False):
    """At most ``limit`` jobs of concurrency group ``group`` may run at once."""

    group: str
    limit: int


class HandleReported(Struct, frozen=True, gc=False):
    """The backend running ``attempt`` of a job says where that run lives (``handle``: a pid, a
    Ray task or job id, a Modal call id), so a restarted engine can find it again. Ignored
    unless that attempt is the job's running one."""

    tenant_id: str
    job_id: str
    attempt: int
    handle: str


class Restore(Struct, frozen=True, gc=False):
    """Rebuild a fresh core from what a store kept (DESIGN.md principle 6: state is data).

    ``jobs`` are the non-terminal jobs (pending, queued or running) in submission order, as
    stored, each with its route (and backend limits) as in ``Submit``; ``state`` is the last
    ``CoreState`` exported (None: fresh buckets, spend and standing). A restored job is never
    rejected: it was admitted before. Its waits continue from its own timestamps: a backoff
    until ``next_attempt_at``, a running attempt's timeout from its ``started_at``.

    A running job's attempt is closed as lost when ``lost_reason`` is given (its run died with
    the engine that started it: error ``EngineLostError``, then its retry policy decides), or
    kept running when it is None (the run is still going: a standby taking over, a backend that
    re-attaches; its ``RunEnded`` comes later). Only real transitions are recorded.

    The dependency graph is rebuilt from the jobs' ``depends_on``: ``finished`` says how the
    dependencies of pending jobs that are not among ``jobs`` ended (read from the store). One
    neither live nor listed was pruned after it finished; since a dependency's end and its
    dependents' moves are committed together, it had released them, so it counts as met."""

    jobs: tuple[Job, ...]
    routes: tuple[Route, ...]
    limits: tuple[tuple[Limit, ...], ...]
    state: CoreState | None
    lost_reason: str | None
    finished: tuple[Finished, ...] = ()


Event = (
    Submit
    | RunEnded
    | Cancel
    | TimerFired
    | PoolsChanged
    | BackendAvailability
    | TenantChanged
    | ConcurrencyLimitChanged
    | Rejected
    | Restore
    | HandleReported
    | Pause
)


# ---- decisions (core -> engine) ---------------------------------------------------------------
class Reject(Struct, frozen=True, gc=False):
    """Nothing of the Submit was admitted, because of ``error`` (job ``index`` of the batch)."""

    error: WorkError
    index: int | None = None


class Record(Struct, frozen=True, gc=False):
    """A job moved from ``previous`` (None: it was just admitted) to ``job.status``.

    ``elapsed_ms`` is the time spent in the previous state, ``total_ms`` the time from submit to
    a terminal state (0 for other records), ``backoff_ms`` the wait before the next attempt
    (running -> pending).
    """

    job: Job
    previous: Status | None
    elapsed_ms: float = 0.0
    total_ms: float = 0.0
    backoff_ms: float = 0.0


class Dispatch(Struct, frozen=True, gc=False):
    """Start ``job`` (now running, attempt ``job.attempt``) on ``backend``, in ``pool``."""

    job: Job
    backend: str
    pool: str
    queue_time_ms: float = 0.0


class ArmTimer(Struct, frozen=True, gc=False):
    """Feed ``TimerFired(key)`` back at time ``at`` (the monotonic clock of ``now``)."""

    at: float
    key: TimerKey


class DisarmTimer(Struct, frozen=True, gc=False):
    """The timer ``key`` is no longer needed (its job moved on): forget it, so timers held in
    memory are bounded by the live ones. Disarming a timer that fired already is a no-op."""

    key: TimerKey


class StopRun(Struct, frozen=True, gc=False):
    """Stop the execution of ``attempt`` of a job (kill, cancel the task); its ``RunEnded``
    still follows, and only then is its reservation released."""

    tenant_id: str
    job_id: str
    attempt: int
    backend: str
    reason: str


class Amend(Struct, frozen=True, gc=False):
    """A live job's snapshot changed without a transition (its running attempt's backend
    handle): store ``job``; nobody else needs telling."""

    job: Job


#: Everything ``SchedulingCore.handle`` may return.
Decision = Reject | Record | Dispatch | ArmTimer | StopRun | DisarmTimer | Amend

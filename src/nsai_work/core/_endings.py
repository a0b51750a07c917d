"""How runs, attempts and jobs end: a run's reported end, a failed attempt (retried with backoff
or final), a job that reaches a terminal status, a run told to stop, and cancellation.

- **A run's end** (``RunEnded``) is idempotent: it is keyed by (tenant, job id, attempt), so a
  late or duplicate report finds no run. What the run held comes back (``_runs.end_run``); the
  job moves on only if that attempt is still its current one (else it already moved on, by
  timeout or cancel, and only the capacity came back).
- **A failed attempt** is retried while the job's retry policy allows (a timeout only with
  ``retry_on_timeout``): the job goes back to pending with the reason ``backoff`` and a
  ``ready`` timer, or is queued at once for a zero delay. Otherwise the job ends with the
  attempt's status.
- **A job ends in one place** (``finish``): its last attempt is closed (cost, timeout timer),
  or the capacity its queued head held is released, or its backoff timer disarmed; its
  committed budget estimate is given back, and jobs that wait for it learn how it ended.
- **A run told to stop** (cancel, timeout, a lost backend) holds its capacity until it really
  ends, counted as ``stopping`` on its pool.

The timer keys are ``(TIMEOUT_KEY | READY_KEY, tenant, job id, attempt)``.
"""

from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING, Final

from msgspec.structs import replace

from .._ir import DEFAULT_CONSTRAINTS, Attempt, Audit, JobError, Status
from ._messages import ArmTimer, DisarmTimer, Failed, Record, StopRun, Succeeded
from ._parking import queued_job_left
from ._retry import backoff_delay_ms
from ._runs import end_run, stop_run

if TYPE_CHECKING:
    from ._core import SchedulingCore
    from ._messages import Cancel, Decision, RunEnded
    from ._queues import Entry

__all__ = [
    "READY_KEY",
    "TIMEOUT_KEY",
    "attempt_failed",
    "cancel",
    "finish",
    "run_ended",
    "stop_current_run",
]

_UTC: Final = _dt.UTC
_PENDING, _QUEUED, _RUNNING = Status.PENDING, Status.QUEUED, Status.RUNNING
#: The timer of a running attempt's ``resources.timeout_ms``.
TIMEOUT_KEY: Final = "timeout"
#: The timer that ends a retry's backoff.
READY_KEY: Final = "ready"


def run_ended(core: SchedulingCore, event: RunEnded, out: list[Decision]) -> None:
    """A run has really ended (see the module docstring)."""
    run = core._runs.pop((event.tenant_id, event.job_id, event.attempt), None)
    if run is None:
        return  # already reported: ending a run is idempotent
    end_run(run, core._now)
    entry = run.entry
    if entry.status is _RUNNING and entry.job.attempt == event.attempt:
        outcome = event.outcome
        if type(outcome) is Succeeded:
            finish(core, entry, Status.SUCCEEDED, out, result=outcome.result)
        elif type(outcome) is Failed:
            attempt_failed(core, entry, outcome.error, outcome.retryable, Status.FAILED, out)
        else:
            error = JobError(
                type="StoppedError",
                message="the run was stopped by its backend before it finished",
                attempt=event.attempt,
            )
            attempt_failed(core, entry, error, True, Status.FAILED, out)
    # (else the job already moved on, by timeout or cancel: only the capacity came back)
    tenant = run.tenant
    if not tenant.running and not tenant.waiting:  # its last live job: it goes idle
        core._tenants.check_active(tenant, core._now)


def attempt_failed(
    core: SchedulingCore,
    entry: Entry,
    error: JobError,
    retryable: bool,
    final: Status,
    out: list[Decision],
) -> None:
    """The running job's current attempt failed: retry it, or end the job with ``final``."""
    if error.attempt != entry.job.attempt:
        error = replace(error, attempt=entry.job.attempt)
    policy = entry.job.constraints.retry_policy
    if final is Status.TIMEOUT and not policy.retry_on_timeout:
        retryable = False
    if retryable and entry.job.attempt < policy.max_attempts:
        _retry(core, entry, error, final, out)
    else:
        finish(core, entry, final, out, error=error)


def _retry(
    core: SchedulingCore,
    entry: Entry,
    error: JobError,
    attempt_status: Status,
    out: list[Decision],
) -> None:
    job = entry.job
    delay_ms = backoff_delay_ms(job.constraints.retry_policy, job.attempt, core._rand)
    ready_at = core._now + delay_ms / 1000.0
    attempts, cost = _close_attempt(core, entry, attempt_status, error, out)
    job = replace(
        job,
        status=_PENDING,
        attempts=attempts,
        cost_usd=job.cost_usd + cost,
        error=error,
        waiting_reason="backoff",
        next_attempt_at=_dt.datetime.fromtimestamp(core._wall + delay_ms / 1000.0, _UTC),
    )
    elapsed_ms = (core._now - entry.since) * 1000.0
    core._jobs.move(entry, _PENDING, job, core._now)
    out.append(Record(job, _RUNNING, elapsed_ms=elapsed_ms, backoff_ms=delay_ms))
    if delay_ms > 0:
        out.append(ArmTimer(ready_at, (READY_KEY, entry.tenant, job.id, job.attempt)))
    else:
        core._enqueue_pending(entry, out)


def finish(
    core: SchedulingCore,
    entry: Entry,
    status: Status,
    out: list[Decision],
    *,
    result: object = None,
    error: JobError | None = None,
    cancel_reason: str | None = None,
    audit: tuple[Audit, ...] | None = None,
) -> None:
    """The job ends with the terminal ``status``: the one place a job ends."""
    job = entry.job
    previous = entry.status
    attempts, cost = job.attempts, 0.0
    if previous is _RUNNING:
        attempts, cost = _close_attempt(core, entry, status, error, out)
    elif previous is _QUEUED and entry.held is not None:
        core._holds.release(entry, core._queues.queue_of(entry))
    elif job.waiting_reason == "backoff":  # pending: its backoff timer is not needed
        out.append(DisarmTimer((READY_KEY, entry.tenant, job.id, job.attempt)))
    waits = core._waits
    if job.constraints is not DEFAULT_CONSTRAINTS:
        waits.leaving(entry, out)
    if entry.estimate is not None:
        entry.tenant_state.committed -= entry.estimate
    job = replace(
        job,
        status=status,
        attempts=attempts,
        cost_usd=job.cost_usd + cost,
        result=result,
        error=None if status is Status.SUCCEEDED else (error or job.error),
        finished_at=core._now_dt,
        waiting_reason=None,
        next_attempt_at=None,
        cancel_reason=cancel_reason,
        audit=job.audit if audit is None else audit,
    )
    now = core._now
    elapsed_ms = (now - entry.since) * 1000.0  # (before the move restarts the state's clock)
    core._jobs.move(entry, status, job, now)
    out.append(
        Record(
            job,
            previous,
            elapsed_ms=elapsed_ms,
            total_ms=(now - entry.submitted) * 1000.0,
        )
    )
    if waits.dependents:
        waits.settle((entry.tenant, job.id), status, out)


def _close_attempt(
    core: SchedulingCore, entry: Entry, status: Status, error: JobError | None, out: list[Decision]
) -> tuple[tuple[Attempt, ...], float]:
    """The job's attempts with the last one ended now, and what that attempt cost; its
    timeout timer is no longer needed."""
    job = entry.job
    if job.resources.timeout_ms is not None:
        out.append(DisarmTimer((TIMEOUT_KEY, entry.tenant, job.id, job.attempt)))
    cost = entry.rate * (core._now - entry.since) / 3600.0 if entry.rate else 0.0
    last = replace(
        job.attempts[-1], finished_at=core._now_dt, status=status, error=error, cost_usd=cost
    )
    return (*job.attempts[:-1], last), cost


def stop_current_run(core: SchedulingCore, entry: Entry, reason: str, out: list[Decision]) -> None:
    """Tell the engine to stop a job's current run. Until the run really ends it holds its
    capacity, counted as ``stopping`` on its pool (stats; the waiting reason
    ``stopping_runs:<pool>``), so a run that ignores cancellation stays visible."""
    job = entry.job
    run = core._runs.get((entry.tenant, job.id, job.attempt))
    if run is not None:
        stop_run(run)
    out.append(StopRun(entry.tenant, job.id, job.attempt, entry.backend, reason))


def cancel(core: SchedulingCore, event: Cancel, out: list[Decision]) -> None:
    """Cancel a live job (a running one is told to stop); an unknown or terminal one is left
    alone."""
    entry = core._jobs.get(event.tenant_id, event.job_id)
    if entry is None:
        return  # unknown or already terminal: nothing changes
    if core._stranded:
        core._stranded.pop((event.tenant_id, event.job_id), None)
    status = entry.status
    if status is _RUNNING:
        stop_current_run(core, entry, event.reason, out)
    elif status is _QUEUED:
        core._queues.discard(entry)
    audit = None
    if event.by is not None:
        by, key_name = event.by
        record = Audit(
            action="cancel", by=by, at=core._now_dt, key_name=key_name, reason=event.reason
        )
        audit = (*entry.job.audit, record)
    finish(core, entry, Status.CANCELED, out, cancel_reason=event.reason, audit=audit)
    if status is _QUEUED:  # its tenant may have a new head: it competes with that one
        queued_job_left(core._queues.queue_of(entry), entry, core._limits)

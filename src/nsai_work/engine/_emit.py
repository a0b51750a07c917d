"""Decisions to telemetry events, exactly as DESIGN.md's event table orders them.

With no handler attached at all, the engine does not call it (one attribute read per batch of
decisions). Otherwise the emitter keeps, per kind of transition, a plan: the (event, handler)
calls it makes, in order, rebuilt whenever the bus's handler table changes (the bus replaces the
table on every attach and detach). A transition whose plan is empty builds nothing; the others
build their metadata once, shared by their events.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from .._errors import AdmissionError, ConflictError, ValidationError, WorkError
from .._ir import DEFAULT_CONSTRAINTS, Job, Priority, Status
from ..core import Dispatch, Record
from ..telemetry import HandlerInfo, Telemetry
from ..telemetry._bus import HandlerFn
from ..telemetry.events import (
    JOB_CANCELED,
    JOB_COMPLETED,
    JOB_DEADLINE_EXCEEDED,
    JOB_DEPENDENCY_FAILED,
    JOB_FAILED,
    JOB_QUEUED,
    JOB_RELEASED,
    JOB_RETRY,
    JOB_STARTED,
    JOB_SUBMITTED,
    JOB_WAITING,
    QUEUE_DEQUEUE,
    QUEUE_ENQUEUE,
    QUEUE_OVERFLOW,
    SCHEDULER_ADMIT,
    SCHEDULER_SELECT_BACKEND,
)

__all__ = ["Emitter", "rejection_reason"]

_EMPTY: dict[str, float] = {}
_RUNNING, _PENDING, _QUEUED = Status.RUNNING, Status.PENDING, Status.QUEUED
_CANCELED, _FAILED, _TIMEOUT = Status.CANCELED, Status.FAILED, Status.TIMEOUT


def rejection_reason(error: BaseException) -> str:
    """The admit event's ``reason`` for a rejected submit."""
    if isinstance(error, AdmissionError):
        return error.reason
    if isinstance(error, ValidationError):
        return "invalid"
    if isinstance(error, ConflictError):
        return "duplicate_id"
    return "error"


def _label(value: object) -> object:
    """An enum's value; anything else as it is (a rejected job may hold unvalidated fields)."""
    return getattr(value, "value", value)


#: Enum members to their values (``.value`` on an enum member is a slow descriptor).
_VALUE: dict[object, str] = {member: member.value for member in (*Priority, *Status)}

# Kinds of transition, and the events each emits in order, with what each carries: the
# transition's measurements (1) or none (0), and the admit metadata (1) or the shared one (0).
_SUBMIT_QUEUED, _SUBMIT_PENDING, _REQUEUED, _RETRY, _CANCEL, _SUCCEED, _FAIL, _DISPATCH = range(8)
_KINDS: Final = (
    ((SCHEDULER_ADMIT, 0, 1), (JOB_SUBMITTED, 0, 0), (JOB_QUEUED, 1, 0), (QUEUE_ENQUEUE, 0, 0)),
    ((SCHEDULER_ADMIT, 0, 1), (JOB_SUBMITTED, 0, 0)),
    ((JOB_QUEUED, 1, 0), (QUEUE_ENQUEUE, 0, 0)),
    ((JOB_RETRY, 1, 0),),
    ((JOB_CANCELED, 0, 0),),
    ((JOB_COMPLETED, 1, 0),),
    ((JOB_COMPLETED, 1, 0), (JOB_FAILED, 1, 0)),
    ((QUEUE_DEQUEUE, 1, 0), (SCHEDULER_SELECT_BACKEND, 0, 0), (JOB_STARTED, 1, 0)),
)
#: One call of a plan: event, measurements slot, metadata slot, function, config, handler.
_Step = tuple[tuple[str, ...], int, int, HandlerFn, Any, HandlerInfo]


def _describe(job: Job, priority: object, status: object, error_type: object) -> dict[str, Any]:
    """The metadata every job event carries."""
    return {
        "job_id": job.id,
        "tenant_id": job.tenant_id,
        "namespace": job.namespace,
        "kind": job.kind,
        "priority": priority,
        "backend": job.backend,
        "status": status,
        "attempt": job.attempt,
        "error_type": error_type,
        "job": job,
    }


def _metadata(job: Job) -> dict[str, Any]:
    """The metadata of an admitted (validated) job's events."""
    error = job.error
    return _describe(
        job, _VALUE[job.priority], _VALUE[job.status], None if error is None else error.type
    )


def _rejected_metadata(job: Job, **extra: Any) -> dict[str, Any]:
    """The metadata of a rejected job's events: its fields may not have been validated."""
    meta = _describe(
        job, _label(job.priority), _label(job.status), getattr(job.error, "type", None)
    )
    meta.update(extra)
    return meta


class Emitter:
    """Turns the core's decisions into events on one bus. The metadata of a decision's events is
    built once and shared by them (handlers must not mutate it)."""

    __slots__ = ("bus", "plans", "table")

    def __init__(self, bus: Telemetry) -> None:
        self.bus = bus
        self.table: object = None  # the handler table the plans were built from
        self.plans: list[tuple[_Step, ...]] = []

    def _emit(
        self, event: tuple[str, ...], measurements: dict[str, float], job: Job, **extra: Any
    ) -> None:
        handlers = self.bus._by_event.get(event)
        if handlers is not None:
            self.bus._deliver(handlers, event, measurements, _rejected_metadata(job, **extra))

    def _plan(self, table: Mapping[tuple[str, ...], tuple[HandlerInfo, ...]]) -> None:
        """Build the plans from the bus's handler table (the one the bus uses now)."""
        self.table = table
        self.plans = [
            tuple(
                (event, measured, admit, info.function, info.config, info)
                for event, measured, admit in kind
                for info in table.get(event) or ()
            )
            for kind in _KINDS
        ]

    def _run(
        self,
        plan: tuple[_Step, ...],
        measurements: dict[str, float],
        meta: dict[str, Any],
        admit: dict[str, Any] | None = None,
    ) -> None:
        """Make a plan's calls. A handler that raises (anything, ``BaseException`` included) is
        detached at once: it gets none of the transition's later events; the other handlers get
        all of them."""
        if len(plan) == 1:  # the common case: one handler on one of the events
            event, measured, which, fn, config, info = plan[0]
            try:
                fn(
                    event,
                    measurements if measured else _EMPTY,
                    admit if which and admit is not None else meta,
                    config,
                )
            except BaseException:  # even SystemExit: a handler never stops the engine
                self.bus._handler_failed(info, event)
            return
        carried = (_EMPTY, measurements)
        metas = (meta, meta if admit is None else admit)
        steps: Iterator[_Step] = iter(plan)
        while True:
            try:
                # (``info`` names the handler if the call raises)
                for event, measured, which, fn, config, info in steps:  # noqa: B007
                    fn(event, carried[measured], metas[which], config)
                return
            except BaseException:  # even SystemExit: a handler never stops the engine
                self.bus._handler_failed(info, event)
                steps = _without(steps, info.id)

    def record(self, decision: Record) -> None:
        """Events of one transition."""
        table = self.bus._by_event
        if table is not self.table:
            self._plan(table)
        plans = self.plans
        job, previous, status = decision.job, decision.previous, decision.job.status
        if previous is None:
            plan = plans[_SUBMIT_QUEUED if status is _QUEUED else _SUBMIT_PENDING]
            if plan:
                meta = _metadata(job)
                admit = (
                    {**meta, "decision": "accept", "reason": "accepted"}
                    if SCHEDULER_ADMIT in table
                    else None
                )
                self._run(plan, {"wait_ms": 0.0}, meta, admit)
            if status is _PENDING and job.constraints is not DEFAULT_CONSTRAINTS:
                self._waiting(job, table)
        elif status is _QUEUED:
            if (
                previous is _PENDING
                and job.constraints is not DEFAULT_CONSTRAINTS
                and not job.attempts
                and JOB_RELEASED in table
            ):
                reason = _waits_for(job)
                if reason is not None:
                    self._emit(JOB_RELEASED, {"wait_ms": decision.elapsed_ms}, job, reason=reason)
            plan = plans[_REQUEUED]
            if plan:
                self._run(plan, {"wait_ms": decision.elapsed_ms}, _metadata(job))
        elif status is _PENDING:
            plan = plans[_RETRY]
            if plan:
                measurements = {
                    "run_time_ms": decision.elapsed_ms,
                    "backoff_ms": decision.backoff_ms,
                }
                self._run(plan, measurements, _metadata(job))
        elif status is _CANCELED:
            plan = plans[_CANCEL]
            if plan:
                meta = _metadata(job)
                meta["reason"] = job.cancel_reason
                self._run(plan, _EMPTY, meta)
            reason = job.cancel_reason
            if reason is not None and (
                reason == "deadline_exceeded" or reason.startswith("dependency_failed:")
            ):
                self._why_canceled(job, reason, table)
        else:
            plan = plans[_FAIL if status is _FAILED or status is _TIMEOUT else _SUCCEED]
            if plan:
                measurements = {
                    "run_time_ms": decision.elapsed_ms,
                    "total_time_ms": decision.total_ms,
                }
                self._run(plan, measurements, _metadata(job))

    def _waiting(self, job: Job, table: Mapping[tuple[str, ...], object]) -> None:
        """``work.job.waiting`` of a job submitted pending on its dependencies or its time."""
        if JOB_WAITING not in table:
            return
        reason = _waits_for(job)
        if reason == "dependencies":
            self._emit(
                JOB_WAITING, _EMPTY, job, reason=reason, depends_on=list(job.constraints.depends_on)
            )
        elif reason == "scheduled":
            run_at = job.constraints.run_at
            self._emit(
                JOB_WAITING,
                _EMPTY,
                job,
                reason=reason,
                run_at=None if run_at is None else run_at.isoformat(),
            )

    def _why_canceled(self, job: Job, reason: str, table: Mapping[tuple[str, ...], object]) -> None:
        """After ``canceled``: ``dependency_failed`` or ``deadline_exceeded``."""
        if reason == "deadline_exceeded":
            if JOB_DEADLINE_EXCEEDED in table:
                deadline = job.constraints.deadline
                self._emit(
                    JOB_DEADLINE_EXCEEDED,
                    _EMPTY,
                    job,
                    reason=reason,
                    deadline=None if deadline is None else deadline.isoformat(),
                )
        elif JOB_DEPENDENCY_FAILED in table:
            # "dependency_failed: <id> (<status>)"
            detail = reason.removeprefix("dependency_failed:").strip()
            dep_id, _, rest = detail.rpartition(" (")
            self._emit(
                JOB_DEPENDENCY_FAILED,
                _EMPTY,
                job,
                reason=reason,
                dependency_id=dep_id or detail,
                dependency_status=rest.rstrip(")") if dep_id else None,
            )

    def dispatch(self, decision: Dispatch) -> None:
        """Events of queued -> running."""
        table = self.bus._by_event
        if table is not self.table:
            self._plan(table)
        plan = self.plans[_DISPATCH]
        if plan:
            meta = _metadata(decision.job)
            meta["pool"] = decision.pool
            self._run(plan, {"queue_time_ms": decision.queue_time_ms}, meta)

    def duplicate(self, job: Job, holder: Job) -> None:
        """The admit event (decision ``duplicate``) of a submit whose unique key ``holder``
        holds: the submitted job's metadata, and the holder's id as ``existing_id``."""
        if self.bus._by_event:
            self._emit(
                SCHEDULER_ADMIT,
                _EMPTY,
                job,
                decision="duplicate",
                reason="unique_key",
                unique_key=job.constraints.unique_key,
                existing_id=holder.id,
            )

    def rejected(self, jobs: Sequence[Job], error: WorkError) -> None:
        """Admit events (decision ``reject``) for a refused submit, then overflow if a queue
        limit refused it."""
        if not self.bus._by_event:
            return
        reason = rejection_reason(error)
        overflow = reason == "queue_full"
        for job in jobs:
            self._emit(
                SCHEDULER_ADMIT, _EMPTY, job, decision="reject", reason=reason, error=str(error)
            )
            if overflow:
                self._emit(QUEUE_OVERFLOW, _EMPTY, job, reason=reason)


def _waits_for(job: Job) -> str | None:
    """What a job with constraints waits for before it may queue: "dependencies" (first),
    "scheduled", or None."""
    constraints = job.constraints
    if constraints.depends_on:
        return "dependencies"
    if constraints.run_at is not None:
        return "scheduled"
    return None


def _without(steps: Iterator[_Step], handler_id: str) -> Iterator[_Step]:
    """The rest of a plan without the calls of a handler that was just detached."""
    return (step for step in steps if step[5].id != handler_id)

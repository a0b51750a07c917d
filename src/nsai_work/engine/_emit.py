"""Decisions to telemetry events, exactly as DESIGN.md's event table orders them.

With no handler attached at all, each call costs one attribute read; otherwise each event costs
a dict lookup, and a transition builds its metadata (once, shared by its events) only when one of
its events has a listener.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._errors import AdmissionError, ConflictError, ValidationError, WorkError
from .._ir import Job, Priority, Status
from ..core import Dispatch, Record
from ..telemetry import Telemetry
from ..telemetry.events import (
    JOB_CANCELED,
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_QUEUED,
    JOB_RETRY,
    JOB_STARTED,
    JOB_SUBMITTED,
    QUEUE_DEQUEUE,
    QUEUE_ENQUEUE,
    QUEUE_OVERFLOW,
    SCHEDULER_ADMIT,
    SCHEDULER_SELECT_BACKEND,
)

__all__ = ["Emitter", "rejection_reason"]

_EMPTY: dict[str, float] = {}
#: The events of one decision, in order: (name, measurements); they share one metadata dict.
_Events = tuple[tuple[tuple[str, ...], dict[str, float]], ...]
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

    __slots__ = ("bus",)

    def __init__(self, bus: Telemetry) -> None:
        self.bus = bus

    def _emit(
        self, event: tuple[str, ...], measurements: dict[str, float], job: Job, **extra: Any
    ) -> None:
        handlers = self.bus._by_event.get(event)
        if handlers is not None:
            self.bus._deliver(handlers, event, measurements, _rejected_metadata(job, **extra))

    def _send(self, events: _Events, meta: dict[str, Any]) -> None:
        """Deliver ``events`` (name, measurements), in order, each with ``meta``. A handler that
        raises is detached at once: it gets none of the decision's later events."""
        bus = self.bus
        table = bus._by_event
        for event, measurements in events:
            handlers = table.get(event)
            if handlers is not None:
                for info in handlers:
                    try:
                        info.function(event, measurements, meta, info.config)
                    except Exception:
                        bus._handler_failed(info, event)
                        table = bus._by_event

    def record(self, decision: Record) -> None:
        """Events of one transition; nothing is built unless one of them has a listener."""
        table = self.bus._by_event
        if not table:
            return
        job, previous, status = decision.job, decision.previous, decision.job.status
        events: _Events
        if previous is None:
            if status is _QUEUED:
                events = (
                    (JOB_SUBMITTED, _EMPTY),
                    (JOB_QUEUED, {"wait_ms": 0.0}),
                    (QUEUE_ENQUEUE, _EMPTY),
                )
            else:
                events = ((JOB_SUBMITTED, _EMPTY),)
            if SCHEDULER_ADMIT in table:
                meta = _metadata(job)
                self._send(
                    ((SCHEDULER_ADMIT, _EMPTY),),
                    {**meta, "decision": "accept", "reason": "accepted"},
                )
                self._send(events, meta)
                return
        elif status is _QUEUED:
            events = ((JOB_QUEUED, {"wait_ms": decision.elapsed_ms}), (QUEUE_ENQUEUE, _EMPTY))
        elif status is _PENDING:
            measurements = {"run_time_ms": decision.elapsed_ms, "backoff_ms": decision.backoff_ms}
            events = ((JOB_RETRY, measurements),)
        elif status is _CANCELED:
            events = ((JOB_CANCELED, _EMPTY),)
        else:
            measurements = {"run_time_ms": decision.elapsed_ms, "total_time_ms": decision.total_ms}
            if status is _FAILED or status is _TIMEOUT:
                events = ((JOB_COMPLETED, measurements), (JOB_FAILED, measurements))
            else:
                events = ((JOB_COMPLETED, measurements),)
        for event, _ in events:
            if event in table:
                break
        else:
            return  # nobody listens to this transition
        meta = _metadata(job)
        if status is _CANCELED:
            meta["reason"] = job.cancel_reason
        self._send(events, meta)

    def dispatch(self, decision: Dispatch) -> None:
        """Events of queued -> running; nothing is built unless one of them has a listener."""
        table = self.bus._by_event
        if not (
            QUEUE_DEQUEUE in table or SCHEDULER_SELECT_BACKEND in table or JOB_STARTED in table
        ):
            return
        meta = _metadata(decision.job)
        meta["pool"] = decision.pool
        measurements = {"queue_time_ms": decision.queue_time_ms}
        self._send(
            (
                (QUEUE_DEQUEUE, measurements),
                (SCHEDULER_SELECT_BACKEND, _EMPTY),
                (JOB_STARTED, measurements),
            ),
            meta,
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

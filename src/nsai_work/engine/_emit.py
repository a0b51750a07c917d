"""Decisions to telemetry events, exactly as DESIGN.md's event table orders them.

With no handler attached at all, each call costs one attribute read; otherwise each event costs
a dict lookup, and metadata is built only for events someone listens to.
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

    def record(self, decision: Record) -> None:
        """Events of one transition."""
        by_event = self.bus._by_event
        if not by_event:
            return
        deliver, listeners = self.bus._deliver, by_event.get
        job, previous, status = decision.job, decision.previous, decision.job.status
        meta = _metadata(job)
        if previous is None:
            if handlers := listeners(SCHEDULER_ADMIT):
                deliver(
                    handlers,
                    SCHEDULER_ADMIT,
                    _EMPTY,
                    {**meta, "decision": "accept", "reason": "accepted"},
                )
            if handlers := listeners(JOB_SUBMITTED):
                deliver(handlers, JOB_SUBMITTED, _EMPTY, meta)
            if status is _QUEUED:
                if handlers := listeners(JOB_QUEUED):
                    deliver(handlers, JOB_QUEUED, {"wait_ms": 0.0}, meta)
                if handlers := listeners(QUEUE_ENQUEUE):
                    deliver(handlers, QUEUE_ENQUEUE, _EMPTY, meta)
        elif status is _QUEUED:
            if handlers := listeners(JOB_QUEUED):
                deliver(handlers, JOB_QUEUED, {"wait_ms": decision.elapsed_ms}, meta)
            if handlers := listeners(QUEUE_ENQUEUE):
                deliver(handlers, QUEUE_ENQUEUE, _EMPTY, meta)
        elif status is _PENDING:
            if handlers := listeners(JOB_RETRY):
                measurements = {
                    "run_time_ms": decision.elapsed_ms,
                    "backoff_ms": decision.backoff_ms,
                }
                deliver(handlers, JOB_RETRY, measurements, meta)
        elif status is _CANCELED:
            if handlers := listeners(JOB_CANCELED):
                deliver(handlers, JOB_CANCELED, _EMPTY, {**meta, "reason": job.cancel_reason})
        else:
            measurements = {"run_time_ms": decision.elapsed_ms, "total_time_ms": decision.total_ms}
            if handlers := listeners(JOB_COMPLETED):
                deliver(handlers, JOB_COMPLETED, measurements, meta)
            if (status is _FAILED or status is _TIMEOUT) and (handlers := listeners(JOB_FAILED)):
                deliver(handlers, JOB_FAILED, measurements, meta)

    def dispatch(self, decision: Dispatch) -> None:
        """Events of queued -> running."""
        by_event = self.bus._by_event
        if not by_event:
            return
        deliver, listeners = self.bus._deliver, by_event.get
        meta = _metadata(decision.job)
        meta["pool"] = decision.pool
        measurements = {"queue_time_ms": decision.queue_time_ms}
        if handlers := listeners(QUEUE_DEQUEUE):
            deliver(handlers, QUEUE_DEQUEUE, measurements, meta)
        if handlers := listeners(SCHEDULER_SELECT_BACKEND):
            deliver(handlers, SCHEDULER_SELECT_BACKEND, _EMPTY, meta)
        if handlers := listeners(JOB_STARTED):
            deliver(handlers, JOB_STARTED, measurements, meta)

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

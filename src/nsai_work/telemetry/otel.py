"""OpenTelemetry traces of jobs: a span for each submit and one for each attempt, in the
caller's trace (``pip install nsai-work[otel]``).

``instrument(scheduler)`` (or ``create_app(tracing=True)`` for a server) turns it on for one
scheduler or store client; nothing is imported and nothing is done per job until then (the
engine checks one attribute per submit call). What it does:

- **submit**: each job submitted gets a span ``nsai_work.submit`` (kind PRODUCER), a child of
  the trace context already in the job's ``metadata["traceparent"]`` (W3C Trace Context, what
  ``work.Client(url)`` and a server put there from an HTTP caller's ``traceparent`` header), or
  else of the caller's current context. The submit span's own context is written into the job's
  ``metadata["traceparent"]`` (and ``"tracestate"``) before the job is admitted, so it is stored
  with the job.
- **attempt**: each attempt gets a span ``nsai_work.attempt`` (kind CONSUMER) from its start to
  its end, a child of the job's ``traceparent``, which is the submit span: the caller's trace
  goes on into the job, in any process, and after a restart (the context is in the stored
  job). A failed or timed-out attempt's span has status ERROR with the error's type.

Spans carry ids and labels (``nsai_work.job_id``, ``tenant_id``, ``namespace``, ``kind``,
``priority``, ``attempt``, ``backend``, ``pool``), never payloads or results. Spans go to the
``tracer_provider`` given, or OpenTelemetry's global one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from msgspec.structs import replace
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .._ir import Job
from ._bus import Telemetry
from .events import JOB_CANCELED, JOB_COMPLETED, JOB_RETRY, JOB_STARTED

__all__ = ["Tracing", "context_of", "instrument"]

_PROPAGATOR = TraceContextTextMapPropagator()
_KEYS = ("traceparent", "tracestate")
_ENDS = (JOB_RETRY, JOB_COMPLETED, JOB_CANCELED)


def context_of(job: Job) -> otel_context.Context | None:
    """The trace context a job carries (its ``metadata["traceparent"]``), or None: in a handler,
    ``tracer.start_as_current_span("step", context=context_of(job))`` puts your spans in the
    job's trace."""
    if "traceparent" not in job.metadata:
        return None
    return _PROPAGATOR.extract({k: str(job.metadata[k]) for k in _KEYS if k in job.metadata})


class Tracing:
    """The spans of one scheduler (or store client): made by ``instrument``; ``close()`` stops
    them."""

    def __init__(self, engine: Any, tracer_provider: TracerProvider | None = None) -> None:
        from .. import __version__

        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        self.tracer: Tracer = provider.get_tracer("nsai_work", __version__)
        self._engine = engine
        self._spans: dict[tuple[str, str], Span] = {}
        self._lock = threading.Lock()
        self._bus: Telemetry | None = getattr(engine, "_bus", None)
        if self._bus is None and hasattr(engine, "_feed"):  # a scheduler not started yet
            from . import default_bus

            bus = engine.config.telemetry
            self._bus = bus if bus is not None else default_bus()
        #: The engine's loop: the bus may be shared by schedulers (the process-wide one), and
        #: each emits its events on its own loop.
        self._loop = getattr(engine, "_loop", None)
        self._id = f"nsai_work.otel.{id(self):x}"
        if self._bus is not None:  # a scheduler: attempts run here
            self._bus.attach(self._id, JOB_STARTED, self._started)
            self._bus.attach(f"{self._id}.end", list(_ENDS), self._ended)
        engine._tracing = self

    def close(self) -> None:
        """Stop tracing this engine (attempt spans still open end now)."""
        if self._engine._tracing is self:
            self._engine._tracing = None
        if self._bus is not None:
            self._bus.detach(self._id)
            self._bus.detach(f"{self._id}.end")
        with self._lock:
            spans, self._spans = self._spans, {}
        for span in spans.values():
            span.end()

    # ---- submits (called by the engine, before it admits the jobs) ----------------------------

    def submitting(self, jobs: Sequence[Job]) -> list[Job]:
        """The jobs with a submit span's context in their metadata (one span each, ended)."""
        current = otel_context.get_current()
        traced = []
        for job in jobs:
            parent = context_of(job) or current
            span = self.tracer.start_span(
                "nsai_work.submit",
                context=parent,
                kind=SpanKind.PRODUCER,
                attributes=_attributes(job),
            )
            carrier: dict[str, str] = {}
            _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
            metadata = {k: v for k, v in job.metadata.items() if k not in _KEYS}
            metadata.update(carrier)
            traced.append(replace(job, metadata=metadata))
            span.end()
        return traced

    # ---- attempts (handlers on the scheduler's bus) -------------------------------------------

    def _mine(self) -> bool:
        """Whether the event being handled is this engine's (emitted on its loop)."""
        if self._loop is None:  # (instrumented before its start)
            self._loop = getattr(self._engine, "_loop", None)
        return self._loop is None or _running_loop() is self._loop

    def _started(
        self, event: Any, measurements: Mapping[str, float], meta: Mapping[str, Any], config: Any
    ) -> None:
        if not self._mine():
            return
        job: Job = meta["job"]
        attributes = _attributes(job)
        attributes["nsai_work.attempt"] = int(meta.get("attempt") or job.attempt)
        for name in ("backend", "pool"):
            if meta.get(name) is not None:
                attributes[f"nsai_work.{name}"] = str(meta[name])
        span = self.tracer.start_span(
            "nsai_work.attempt",
            context=context_of(job),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )
        with self._lock:
            previous = self._spans.pop((job.tenant_id, job.id), None)
            self._spans[(job.tenant_id, job.id)] = span
        if previous is not None:  # pragma: no cover - an end the bus did not tell
            previous.end()

    def _ended(
        self, event: Any, measurements: Mapping[str, float], meta: Mapping[str, Any], config: Any
    ) -> None:
        if not self._mine():
            return
        with self._lock:
            span = self._spans.pop((meta["tenant_id"], meta["job_id"]), None)
        if span is None:
            return  # canceled before it ran, or started before tracing
        status = meta.get("status")
        if event == JOB_RETRY or status in ("failed", "timeout"):
            span.set_status(Status(StatusCode.ERROR, str(meta.get("error_type") or status)))
        span.set_attribute("nsai_work.outcome", "retried" if event == JOB_RETRY else str(status))
        span.end()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def instrument(engine: Any, *, tracer_provider: TracerProvider | None = None) -> Tracing:
    """Trace ``engine``'s submits and attempts (a ``work.Scheduler`` or ``work.Client(store=)``,
    or their blocking faces;
    a store client has submit spans only, its scheduler the attempts). Instrument a scheduler
    before its start to trace the jobs it recovers from a durable store at once. Returns the
    ``Tracing``; ``close()`` it to stop."""
    from ..engine._blocking import SyncFace

    if isinstance(engine, SyncFace):  # work.SyncScheduler, work.connect(store=...)
        engine = engine.engine  # type: ignore[attr-defined]
    existing = getattr(engine, "_tracing", None)
    if existing is not None:
        existing.close()
    return Tracing(engine, tracer_provider)


def _attributes(job: Job) -> dict[str, Any]:
    return {
        "nsai_work.job_id": job.id,
        "nsai_work.tenant_id": job.tenant_id,
        "nsai_work.namespace": job.namespace,
        "nsai_work.kind": job.kind,
        "nsai_work.priority": str(job.priority),
    }

"""OpenTelemetry traces (``nsai_work.telemetry.otel``), read with the SDK's in-memory exporter:
the submit span and each attempt's span share the caller's trace, the attempt a child of the
submit; through a restart on SQLite (the context is stored in the job's metadata), through a
store client, and through the HTTP API (``traceparent``); nothing when it is off."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import nsai_work as work
from nsai_work.core import Pause
from nsai_work.server import create_app
from nsai_work.telemetry.otel import context_of, instrument
from tests._service import running_server


@pytest.fixture
def traced() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()  # ours, not the global one
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def test_submit_and_attempt_spans_share_the_callers_trace(
    traced: Any, handlers: Callable[..., str], arun: Any
) -> None:
    provider, exporter = traced
    tries: list[int] = []

    def flaky(job: work.Job) -> str:
        tries.append(job.attempt)
        if len(tries) == 1:
            raise RuntimeError("once")
        return "ok"

    kind = handlers(flaky)
    retried = work.Constraints(
        retry_policy=work.RetryPolicy(max_attempts=2, base_delay_ms=1, jitter=False)
    )

    async def scenario() -> work.Job:
        async with work.Scheduler() as scheduler:
            tracing = instrument(scheduler, tracer_provider=provider)
            tracer = provider.get_tracer("caller")
            with tracer.start_as_current_span("caller"):
                job = await scheduler.submit(
                    work.Job(kind=kind, tenant_id="acme", constraints=retried)
                )
            done = await scheduler.wait(job.id, timeout=10)
            tracing.close()
            return done

    done = arun(scenario())
    assert done.status is work.Status.SUCCEEDED
    (caller,) = _named(exporter, "caller")
    (submit,) = _named(exporter, "nsai_work.submit")
    attempts = sorted(_named(exporter, "nsai_work.attempt"), key=lambda s: s.start_time or 0)
    assert len(attempts) == 2
    trace_id = caller.context.trace_id
    assert submit.context.trace_id == trace_id
    assert submit.parent is not None
    assert submit.parent.span_id == caller.context.span_id
    assert submit.kind is SpanKind.PRODUCER
    for attempt in attempts:
        assert attempt.context.trace_id == trace_id
        assert attempt.parent is not None
        assert attempt.parent.span_id == submit.context.span_id
        assert attempt.kind is SpanKind.CONSUMER
        assert attempt.attributes is not None
        assert attempt.attributes["nsai_work.job_id"] == done.id
    assert [a.attributes["nsai_work.attempt"] for a in attempts] == [1, 2]  # type: ignore[index]
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert [a.attributes["nsai_work.outcome"] for a in attempts] == ["retried", "succeeded"]  # type: ignore[index]
    # the context is the job's: a handler's own spans can join it
    assert done.metadata["traceparent"].split("-")[1] == f"{trace_id:032x}"
    context = context_of(done)
    assert context is not None


def test_the_trace_goes_on_after_a_restart_on_sqlite(
    tmp_path: Path, traced: Any, handlers: Callable[..., str], arun: Any
) -> None:
    provider, exporter = traced
    kind = handlers(lambda job: "ran")
    url = f"sqlite:///{tmp_path / 'w.db'}"

    async def before() -> str:
        async with work.Scheduler(store=url) as scheduler:
            instrument(scheduler, tracer_provider=provider)
            scheduler._feed(Pause(True))  # (a drain: nothing starts; not kept at a restart)
            with provider.get_tracer("caller").start_as_current_span("caller"):
                job = await scheduler.submit(work.Job(kind=kind, tenant_id="acme"))
            assert (await scheduler.get(job.id)).status is work.Status.QUEUED
            return job.id

    job_id = arun(before())
    assert not _named(exporter, "nsai_work.attempt")

    async def after() -> work.Job:
        scheduler = work.Scheduler(store=url)  # a new process, as far as it knows
        tracing = instrument(scheduler, tracer_provider=provider)  # (before it recovers jobs)
        async with scheduler:
            done = await scheduler.wait(job_id, timeout=10)
            tracing.close()
            return done

    assert arun(after()).result == "ran"
    (caller,) = _named(exporter, "caller")
    (submit,) = _named(exporter, "nsai_work.submit")
    (attempt,) = _named(exporter, "nsai_work.attempt")
    assert caller.context.trace_id == submit.context.trace_id == attempt.context.trace_id
    assert attempt.parent is not None
    assert attempt.parent.span_id == submit.context.span_id


def test_a_store_clients_submit_span_is_the_parent_of_the_schedulers_attempt(
    tmp_path: Path, traced: Any, handlers: Callable[..., str], arun: Any
) -> None:
    provider, exporter = traced
    kind = handlers(lambda job: "ran")
    url = f"sqlite:///{tmp_path / 'w.db'}"

    async def scenario() -> None:
        async with work.Scheduler(store=url) as scheduler, work.Client(store=url) as client:
            instrument(scheduler, tracer_provider=provider)
            instrument(client, tracer_provider=provider)
            with provider.get_tracer("caller").start_as_current_span("caller"):
                job = await client.submit(work.Job(kind=kind, tenant_id="acme"))
            await client.wait(job.id, timeout=10)
            await asyncio.sleep(0.05)  # the attempt span ends at the run's end event

    arun(scenario())
    (caller,) = _named(exporter, "caller")
    (submit,) = _named(exporter, "nsai_work.submit")
    (attempt,) = _named(exporter, "nsai_work.attempt")
    assert caller.context.trace_id == submit.context.trace_id == attempt.context.trace_id
    assert attempt.parent is not None
    assert attempt.parent.span_id == submit.context.span_id


def test_an_http_callers_trace_goes_on_into_the_job(
    traced: Any, handlers: Callable[..., str]
) -> None:
    provider, exporter = traced
    kind = handlers(lambda job: "ran")
    with running_server(tracing=provider) as api:
        with work.connect(api.url, api_key=api.acme) as client:
            with provider.get_tracer("caller").start_as_current_span("caller"):
                job = client.submit(work.Job(kind=kind, tenant_id="acme"))
            client.wait(job.id, timeout=10)
        # raw HTTP with a traceparent header of its own
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        raw = api.call(
            "POST",
            "/v1/jobs",
            api.acme,
            json={"kind": kind, "tenant_id": "acme"},
            headers={"traceparent": parent},
        ).json()
        api.call("GET", f"/v1/jobs/{raw['id']}/wait", api.acme, params={"timeout": 10})
    (caller,) = _named(exporter, "caller")
    submits = _named(exporter, "nsai_work.submit")
    attempts = _named(exporter, "nsai_work.attempt")
    assert len(submits) == len(attempts) == 2
    by_trace = {s.context.trace_id: s for s in submits}
    assert set(by_trace) == {caller.context.trace_id, 0x0AF7651916CD43DD8448EB211C80319C}
    assert by_trace[caller.context.trace_id].parent.span_id == caller.context.span_id  # type: ignore[union-attr]
    for attempt in attempts:
        assert attempt.parent is not None
        assert attempt.parent.span_id == by_trace[attempt.context.trace_id].context.span_id


def test_two_schedulers_on_the_process_wide_bus_trace_their_own_jobs(
    handlers: Callable[..., str], arun: Any
) -> None:
    kind = handlers(lambda job: "ran")
    exporters = [InMemorySpanExporter(), InMemorySpanExporter()]
    providers = [TracerProvider(), TracerProvider()]
    for provider, exporter in zip(providers, exporters, strict=True):
        provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def one(provider: TracerProvider, tenant: str) -> None:
        async with work.Scheduler() as scheduler:  # both on work.telemetry's default bus
            tracing = instrument(scheduler, tracer_provider=provider)
            job = await scheduler.submit(work.Job(kind=kind, tenant_id=tenant))
            await scheduler.wait(job.id, timeout=10)
            tracing.close()

    other = threading.Thread(target=lambda: asyncio.run(one(providers[1], "globex")))
    other.start()
    arun(one(providers[0], "acme"))
    other.join()
    for exporter, tenant in zip(exporters, ["acme", "globex"], strict=True):
        attempts = _named(exporter, "nsai_work.attempt")
        assert [a.attributes["nsai_work.tenant_id"] for a in attempts] == [tenant]  # type: ignore[index]
    for provider in providers:
        provider.shutdown()


def test_the_blocking_face_carries_the_callers_context(
    traced: Any, handlers: Callable[..., str]
) -> None:
    provider, exporter = traced
    kind = handlers(lambda job: "ran")
    with work.SyncScheduler() as scheduler:
        tracing = instrument(scheduler, tracer_provider=provider)
        with provider.get_tracer("caller").start_as_current_span("caller"):
            job = scheduler.submit(work.Job(kind=kind, tenant_id="acme"))
        scheduler.wait(job.id, timeout=10)
        tracing.close()
    (caller,) = _named(exporter, "caller")
    (submit,) = _named(exporter, "nsai_work.submit")
    (attempt,) = _named(exporter, "nsai_work.attempt")
    assert caller.context.trace_id == submit.context.trace_id == attempt.context.trace_id
    assert submit.parent is not None
    assert submit.parent.span_id == caller.context.span_id


def test_no_tracing_no_import_and_no_metadata(handlers: Callable[..., str]) -> None:
    code = (
        "import sys, nsai_work as work\n"
        "from nsai_work.server import KeyRing, Server, create_app\n"
        "with work.SyncScheduler() as s:\n"
        "    job = s.wait(s.submit(work.Job(kind='tool_call', tenant_id='a',"
        " payload={'tool': 'echo'})).id, timeout=10)\n"
        "create_app(keys=KeyRing())\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.trace',"
        " 'opentelemetry.sdk', 'nsai_work.telemetry.otel'))), job.metadata)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] {}"
    assert create_app  # (imported above for the same check in this process)

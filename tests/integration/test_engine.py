"""The engine end to end, through its three faces: the async ``Scheduler``, the blocking
``SyncScheduler`` and the module functions. Waits are on futures, events and telemetry, never on
sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

import nsai_work as work
from nsai_work.telemetry import Telemetry
from nsai_work.telemetry.events import JOB_CANCELED, JOB_RETRY, JOB_STARTED
from nsai_work.testing import capture_events

Run = Callable[[Coroutine[Any, Any, Any]], Any]
Register = Callable[..., str]

TENANT = "engine"


def unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


def policy(attempts: int = 1, base_delay_ms: int = 1, **extra: Any) -> work.Constraints:
    """A retry policy with a small, jitter-free delay."""
    return work.Constraints(
        retry_policy=work.RetryPolicy(
            max_attempts=attempts, base_delay_ms=base_delay_ms, jitter=False, **extra
        ),
    )


def when(bus: Telemetry, event: tuple[str, ...], job_id: str, flag: Any) -> Any:
    """Set ``flag`` (a threading or asyncio Event) when ``event`` is emitted for ``job_id``."""

    def handler(name: Any, measurements: Any, metadata: Any, config: Any) -> None:
        if metadata.get("job_id") == job_id:
            flag.set()

    bus.attach(unique("flag"), event, handler)
    return flag


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """A gate sync handlers block on; always opened at the end so no thread is left behind."""
    event = threading.Event()
    yield event
    event.set()


ONE_ASYNC_SLOT = {"local": [work.Pool(name="local:async", slots=1)]}
ONE_THREAD_SLOT = {"local": [work.Pool(name="local:threads", slots=1)]}


# ---- the quickstart -----------------------------------------------------------------------------


def test_quickstart_sync(handlers: Register) -> None:
    kind = handlers(lambda job: {"echo": job.payload["text"]})
    with work.SyncScheduler() as s:
        job = s.submit(work.Job(kind=kind, tenant_id=TENANT, payload={"text": "hi"}))
        assert job.status in ("queued", "running", "succeeded")
        assert job.submitted_at is not None
        done = s.wait(job.id, timeout=5)
    assert done.status == "succeeded"
    assert done.result == {"echo": "hi"}
    assert done.error is None
    assert done.backend == "local"
    assert done.attempt == 1
    assert len(done.attempts) == 1
    assert done.attempts[0].status == "succeeded"
    assert done.finished_at is not None
    assert done.started_at is not None
    assert done.started_at <= done.finished_at


def test_quickstart_async(handlers: Register, arun: Run) -> None:
    async def embed(job: work.Job) -> dict[str, int]:
        await asyncio.sleep(0)
        return {"dims": len(job.payload["text"])}

    kind = handlers(embed)

    async def main() -> work.Job:
        async with work.Scheduler() as s:
            job = await s.submit(work.Job(kind=kind, tenant_id=TENANT, payload={"text": "abc"}))
            return await s.wait(job.id, timeout=5)

    done = arun(main())
    assert done.status == "succeeded"
    assert done.result == {"dims": 3}


def test_tool_call_quickstart_runs_on_altar(tools: Register) -> None:
    name = tools(lambda args: {"sum": args["a"] + args["b"]})
    with work.SyncScheduler() as s:
        job = s.submit(
            work.Job(
                kind="tool_call",
                tenant_id=TENANT,
                payload={"tool": name, "arguments": {"a": 1, "b": 2}},
            )
        )
        echo = s.submit(
            work.Job(
                kind="tool_call", tenant_id=TENANT, payload={"tool_name": "echo", "args": {"hi": 1}}
            )
        )
        done, echoed = s.wait_many([job.id, echo.id], timeout=5)
    assert (done.status, done.backend, done.result) == ("succeeded", "altar", {"sum": 3})
    assert echoed.result == {"hi": 1}


@pytest.mark.parametrize("style", ["sync", "async"])
def test_sync_and_async_handlers_run_in_their_pools(handlers: Register, style: str) -> None:
    seen: list[str] = []

    def sync_handler(job: work.Job) -> str:
        seen.append(threading.current_thread().name)
        return "sync"

    async def async_handler(job: work.Job) -> str:
        seen.append(threading.current_thread().name)
        return "async"

    kind = handlers(sync_handler if style == "sync" else async_handler)
    with work.SyncScheduler() as s:
        done = s.wait(s.submit(work.Job(kind=kind, tenant_id=TENANT)).id, timeout=5)
    assert done.result == style
    assert done.pool == ("local:threads" if style == "sync" else "local:async")
    if style == "async":
        assert seen == ["nsai-work-engine"]  # on the engine's loop thread
    else:
        assert seen[0] != "nsai-work-engine"


@pytest.mark.parametrize("style", ["sync", "async"])
def test_handlers_taking_ctx_get_the_attempt(handlers: Register, style: str) -> None:
    seen: list[tuple[int, str]] = []

    def body(job: work.Job, ctx: work.JobContext) -> int:
        seen.append((ctx.attempt, ctx.job.id))
        if ctx.attempt < 2:
            raise RuntimeError("first attempt fails")
        return ctx.attempt

    async def async_body(job: work.Job, ctx: work.JobContext) -> int:
        return body(job, ctx)

    kind = handlers(body if style == "sync" else async_body)
    with work.SyncScheduler() as s:
        job = s.submit(work.Job(kind=kind, tenant_id=TENANT, constraints=policy(3)))
        done = s.wait(job.id, timeout=5)
    assert done.status == "succeeded"
    assert done.result == 2
    assert seen == [(1, job.id), (2, job.id)]


# ---- retries, failures, timeouts ----------------------------------------------------------------


def test_retries_keep_every_attempt_and_the_last_error(handlers: Register) -> None:
    def flaky(job: work.Job, ctx: work.JobContext) -> None:
        raise ValueError(f"boom {ctx.attempt}")

    kind = handlers(flaky)
    with work.SyncScheduler() as s:
        job = s.submit(work.Job(kind=kind, tenant_id=TENANT, constraints=policy(3)))
        done = s.wait(job.id, timeout=10)
    assert done.status == "failed"
    assert done.attempt == 3
    assert [a.number for a in done.attempts] == [1, 2, 3]
    assert [a.status for a in done.attempts] == ["failed"] * 3
    for number, attempt in enumerate(done.attempts, start=1):
        assert attempt.error is not None
        assert attempt.error.type == "ValueError"
        assert attempt.error.message == f"boom {number}"
        assert attempt.error.attempt == number
        assert attempt.finished_at is not None
    assert done.error == done.attempts[-1].error
    assert done.error is not None
    assert done.error.traceback is not None
    assert "ValueError: boom 3" in done.error.traceback
    assert "flaky" in done.error.traceback


def test_a_retry_that_succeeds(handlers: Register) -> None:
    def flaky(job: work.Job, ctx: work.JobContext) -> str:
        if ctx.attempt < 3:
            raise ConnectionError(f"try {ctx.attempt}")
        return "third time lucky"

    kind = handlers(flaky)
    with work.SyncScheduler() as s:
        done = s.wait(s.submit(work.Job(kind=kind, tenant_id=TENANT, constraints=policy(5))).id, 10)
    assert done.status == "succeeded"
    assert done.result == "third time lucky"
    assert [a.status for a in done.attempts] == ["failed", "failed", "succeeded"]
    assert [a.error.message for a in done.attempts[:2] if a.error] == ["try 1", "try 2"]
    assert done.attempts[2].error is None


def test_non_retryable_error_fails_at_once(handlers: Register) -> None:
    calls: list[int] = []

    def handler(job: work.Job) -> None:
        calls.append(1)
        raise work.NonRetryableError("bad input, do not retry")

    kind = handlers(handler)
    with work.SyncScheduler() as s:
        done = s.wait(s.submit(work.Job(kind=kind, tenant_id=TENANT, constraints=policy(5))).id, 5)
    assert done.status == "failed"
    assert len(done.attempts) == 1
    assert calls == [1]
    assert done.error is not None
    assert done.error.type.endswith("NonRetryableError")
    assert done.error.message == "bad input, do not retry"


def test_async_job_past_its_timeout_is_cancelled(handlers: Register) -> None:
    saw_cancel = threading.Event()

    async def slow(job: work.Job) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            saw_cancel.set()
            raise

    kind = handlers(slow)
    with work.SyncScheduler() as s:
        job = s.submit(
            work.Job(
                kind=kind,
                tenant_id=TENANT,
                resources=work.Resources(timeout_ms=50),
                constraints=policy(1),
            )
        )
        done = s.wait(job.id, timeout=5)
        assert done.status == "timeout"
        assert done.error is not None
        assert done.error.type == "TimeoutError"
        assert "50 ms" in done.error.message
        assert done.attempts[0].status == "timeout"
        assert saw_cancel.wait(5), "the coroutine never saw CancelledError"
        s.wait_idle(timeout=5)
        assert s.stats().pools["local:async"].used.slots == 0


def test_a_timeout_is_retried_like_a_failure(handlers: Register) -> None:
    async def slow(job: work.Job, ctx: work.JobContext) -> str:
        if ctx.attempt == 1:
            await asyncio.Event().wait()
        return "second try"

    kind = handlers(slow)
    with work.SyncScheduler() as s:
        job = s.submit(
            work.Job(
                kind=kind,
                tenant_id=TENANT,
                resources=work.Resources(timeout_ms=50),
                constraints=policy(2),
            )
        )
        done = s.wait(job.id, timeout=5)
    assert done.status == "succeeded"
    assert [a.status for a in done.attempts] == ["timeout", "succeeded"]


def test_retry_on_timeout_false_ends_at_the_first_timeout(handlers: Register) -> None:
    async def slow(job: work.Job) -> None:
        await asyncio.Event().wait()

    kind = handlers(slow)
    with work.SyncScheduler() as s:
        job = s.submit(
            work.Job(
                kind=kind,
                tenant_id=TENANT,
                resources=work.Resources(timeout_ms=30),
                constraints=policy(3, retry_on_timeout=False),
            )
        )
        done = s.wait(job.id, timeout=5)
    assert done.status == "timeout"
    assert len(done.attempts) == 1


def test_sync_job_past_its_timeout_holds_its_slot_until_its_thread_returns(
    handlers: Register, gate: threading.Event
) -> None:
    cancelled_seen: list[bool] = []

    def blocking(job: work.Job, ctx: work.JobContext) -> str:
        gate.wait(10)
        cancelled_seen.append(ctx.cancelled)
        return "too late"

    a_kind = handlers(blocking)
    b_kind = handlers(lambda job: "b done")
    with work.SyncScheduler(pools=ONE_THREAD_SLOT) as s:
        a = s.submit(
            work.Job(
                kind=a_kind,
                tenant_id=TENANT,
                resources=work.Resources(timeout_ms=50),
                constraints=policy(1),
            )
        )
        b = s.submit(work.Job(kind=b_kind, tenant_id=TENANT))
        a_done = s.wait(a.id, timeout=5)
        assert a_done.status == "timeout"
        b_now = s.get(b.id)
        assert b_now.status == "queued"
        assert b_now.waiting_reason == "stopping_runs:local:threads"
        stats = s.stats()
        assert stats.pools["local:threads"].used.slots == 1  # A's thread still holds it
        assert (stats.totals.timeout, stats.totals.queued, stats.totals.running) == (1, 1, 0)
        gate.set()
        b_done = s.wait(b.id, timeout=5)
        assert b_done.status == "succeeded"
        assert b_done.result == "b done"
        a_final = s.get(a.id)
    assert a_final.status == "timeout"  # the late result is discarded
    assert a_final.result is None
    assert cancelled_seen == [True]


# ---- cancel -------------------------------------------------------------------------------------


def test_cancel_pending_queued_and_running_async_jobs(handlers: Register, arun: Run) -> None:
    saw_cancel = threading.Event()

    async def always_fails(job: work.Job) -> None:
        raise RuntimeError("again")

    async def hangs(job: work.Job) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            saw_cancel.set()
            raise

    fail_kind, hang_kind = handlers(always_fails), handlers(hangs)
    long_backoff = policy(3, base_delay_ms=600_000, max_delay_ms=600_000)

    async def main() -> None:
        bus = Telemetry()
        async with work.Scheduler(pools=ONE_ASYNC_SLOT, telemetry=bus) as s:
            with capture_events(bus=bus) as log:
                pending = work.Job(kind=fail_kind, tenant_id=TENANT, constraints=long_backoff)
                retried = when(bus, JOB_RETRY, pending.id, asyncio.Event())
                await s.submit(pending)
                await asyncio.wait_for(retried.wait(), 5)
                now = await s.get(pending.id)
                assert now.status == "pending"
                assert now.waiting_reason == "backoff"
                assert now.next_attempt_at is not None

                running = work.Job(kind=hang_kind, tenant_id=TENANT)
                started = when(bus, JOB_STARTED, running.id, asyncio.Event())
                await s.submit(running)
                await asyncio.wait_for(started.wait(), 5)
                queued = await s.submit(work.Job(kind=hang_kind, tenant_id=TENANT))
                assert (await s.get(queued.id)).status == "queued"

                for job_id, reason in (
                    (pending.id, "no longer needed"),
                    (queued.id, None),
                    (running.id, "user asked"),
                ):
                    canceled = await s.cancel(job_id, reason)
                    assert canceled.status == "canceled"
                    assert canceled.cancel_reason == (reason or "requested")
                    assert canceled.finished_at is not None
                    assert (await s.wait(job_id, timeout=1)).status == "canceled"
                    assert log.for_job(job_id)[-1] == JOB_CANCELED
                    [event] = [
                        e for e in log.named(*JOB_CANCELED) if e.metadata["job_id"] == job_id
                    ]
                    assert event.metadata["reason"] == (reason or "requested")
                    assert event.metadata["status"] == "canceled"
                await s.wait_idle(timeout=5)
                assert saw_cancel.is_set(), "the running coroutine never saw CancelledError"
                stats = await s.stats()
                assert stats.totals.canceled == 3
                assert stats.pools["local:async"].used.slots == 0

    arun(main())


def test_cancel_of_a_finished_job_returns_it_unchanged(handlers: Register) -> None:
    kind = handlers(lambda job: "result")
    bus = Telemetry()
    with work.SyncScheduler(telemetry=bus) as s:
        done = s.wait(s.submit(work.Job(kind=kind, tenant_id=TENANT)).id, timeout=5)
        with capture_events(bus=bus) as log:
            again = s.cancel(done.id, "too late")
        assert again == done
        assert again.status == "succeeded"
        assert again.cancel_reason is None
        assert log == []
        assert s.stats().totals.canceled == 0


def test_cancel_of_a_running_sync_job(handlers: Register, gate: threading.Event) -> None:
    started = threading.Event()

    def blocking(job: work.Job, ctx: work.JobContext) -> None:
        started.set()
        gate.wait(10)

    kind = handlers(blocking)
    with work.SyncScheduler(pools=ONE_THREAD_SLOT) as s:
        job = s.submit(work.Job(kind=kind, tenant_id=TENANT))
        assert started.wait(5)
        assert s.cancel(job.id).status == "canceled"
        assert s.stats().pools["local:threads"].used.slots == 1
        gate.set()
        s.wait_idle(timeout=5)
        assert s.stats().pools["local:threads"].used.slots == 0
        assert s.get(job.id).status == "canceled"


# ---- retry(job_id), wait, wait_many, as_completed -----------------------------------------------


def test_retry_submits_a_new_job_copied_from_a_terminal_one(
    handlers: Register, gate: threading.Event
) -> None:
    outcomes = iter([RuntimeError("first run fails"), "second run works"])

    def handler(job: work.Job) -> str:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    kind = handlers(handler)
    blocker = handlers(lambda job: gate.wait(10))
    with work.SyncScheduler() as s:
        original = s.submit(
            work.Job(
                kind=kind,
                tenant_id=TENANT,
                namespace="ns",
                priority="interactive",
                payload={"x": 1},
                tags=("t",),
                constraints=policy(1),
            )
        )
        failed = s.wait(original.id, timeout=5)
        assert failed.status == "failed"
        again = s.retry(original.id)
        assert again.id != original.id
        assert again.id > original.id
        assert again.retry_of == original.id
        assert (again.kind, again.namespace, again.priority, again.payload, again.tags) == (
            kind,
            "ns",
            "interactive",
            {"x": 1},
            ("t",),
        )
        done = s.wait(again.id, timeout=5)
        assert done.status == "succeeded"
        assert done.result == "second run works"
        assert s.get(original.id).status == "failed"  # never reopened

        live = s.submit(work.Job(kind=blocker, tenant_id=TENANT))
        with pytest.raises(work.ConflictError, match=live.id):
            s.retry(live.id)
        gate.set()


def test_wait_timeout_raises_wait_timeout_error(handlers: Register, gate: threading.Event) -> None:
    kind = handlers(lambda job: gate.wait(10) and "late")
    with work.SyncScheduler() as s:
        job = s.submit(work.Job(kind=kind, tenant_id=TENANT))
        with pytest.raises(work.WaitTimeoutError, match=rf"job {job.id} is running\)$"):
            s.wait(job.id, timeout=0.05)
        with pytest.raises(TimeoutError):
            s.wait(job.id, timeout=0)
        with pytest.raises(work.WaitTimeoutError):
            s.wait_many([job.id], timeout=0.05)
        assert s.get(job.id).status == "running"  # waiting changed nothing
        gate.set()
        assert s.wait(job.id, timeout=5).result == "late"


def test_wait_returns_a_failed_job_instead_of_raising(handlers: Register) -> None:
    kind = handlers(lambda job: 1 / 0)
    with work.SyncScheduler() as s:
        done = s.wait(s.submit(work.Job(kind=kind, tenant_id=TENANT, constraints=policy(1))).id, 5)
    assert done.status == "failed"
    assert done.error is not None
    assert done.error.type == "ZeroDivisionError"


def test_wait_many_returns_jobs_in_the_order_given(handlers: Register) -> None:
    kind = handlers(lambda job: job.payload["n"] * 10)
    with work.SyncScheduler() as s:
        jobs = s.submit_many(
            [work.Job(kind=kind, tenant_id=TENANT, payload={"n": n}) for n in range(6)]
        )
        ids = [j.id for j in reversed(jobs)]
        done = s.wait_many(ids, timeout=5)
    assert [j.id for j in done] == ids
    assert [j.result for j in done] == [50, 40, 30, 20, 10, 0]


def test_as_completed_sync_yields_jobs_as_they_finish(
    handlers: Register, gate: threading.Event
) -> None:
    slow = handlers(lambda job: gate.wait(10) and "slow")
    fast = handlers(lambda job: "fast")
    with work.SyncScheduler() as s:
        first = s.submit(work.Job(kind=slow, tenant_id=TENANT))
        second = s.submit(work.Job(kind=fast, tenant_id=TENANT))
        stream = s.as_completed([first.id, second.id], timeout=5)
        assert next(stream).id == second.id
        gate.set()
        assert next(stream).id == first.id
        assert list(stream) == []


def test_as_completed_async_yields_jobs_as_they_finish(handlers: Register, arun: Run) -> None:
    release = asyncio.Event()

    async def slow(job: work.Job) -> str:
        await release.wait()
        return "slow"

    async def fast(job: work.Job) -> str:
        return "fast"

    slow_kind, fast_kind = handlers(slow), handlers(fast)

    async def main() -> None:
        async with work.Scheduler() as s:
            a = await s.submit(work.Job(kind=slow_kind, tenant_id=TENANT))
            b = await s.submit(work.Job(kind=fast_kind, tenant_id=TENANT))
            done = await s.wait(b.id, timeout=5)  # already finished jobs come first
            order = []
            async for job in s.as_completed([a.id, b.id], timeout=5):
                order.append(job.id)
                release.set()
            assert order == [done.id, a.id]
            release.clear()
            blocked = await s.submit(work.Job(kind=slow_kind, tenant_id=TENANT))
            stream = s.as_completed([blocked.id], timeout=0.05)
            with pytest.raises(work.WaitTimeoutError):
                await stream.__anext__()
            release.set()
            assert (await s.wait(blocked.id, timeout=5)).result == "slow"

    arun(main())


# ---- list and get -------------------------------------------------------------------------------


def test_list_pages_newest_first_with_a_cursor(handlers: Register) -> None:
    kind = handlers(lambda job: None)
    tenant = unique("tenant")
    with work.SyncScheduler() as s:
        ids = [s.submit(work.Job(kind=kind, tenant_id=tenant)).id for _ in range(7)]
        s.submit(work.Job(kind=kind, tenant_id=unique("other")))
        pages = []
        cursor = None
        while True:
            page = s.list(tenant, limit=3, cursor=cursor)
            pages.append([j.id for j in page])
            cursor = page.next_cursor
            if cursor is None:
                break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [job_id for page in pages for job_id in page] == list(reversed(ids))


def test_list_filters_by_namespace_and_status(handlers: Register) -> None:
    def handler(job: work.Job) -> str:
        if job.payload.get("fail"):
            raise RuntimeError("asked to fail")
        return "ok"

    kind = handlers(handler)
    tenant = unique("tenant")
    with work.SyncScheduler() as s:
        specs = [("a", False), ("a", False), ("a", True), ("b", False), ("b", True)]
        jobs = [
            s.submit(
                work.Job(
                    kind=kind,
                    tenant_id=tenant,
                    namespace=ns,
                    payload={"fail": fail},
                    constraints=policy(1),
                )
            )
            for ns, fail in specs
        ]
        s.wait_many([j.id for j in jobs], timeout=5)
        ids = [j.id for j in jobs]

        def listed(**kw: Any) -> list[str]:
            return [j.id for j in s.list(tenant, **kw)]

        assert listed() == ids[::-1]
        assert listed(namespace="a") == ids[2::-1]
        assert listed(namespace="b") == ids[:2:-1]
        assert listed(status="failed") == [ids[4], ids[2]]
        assert listed(status=work.Status.SUCCEEDED) == [ids[3], ids[1], ids[0]]
        assert listed(namespace="b", status="succeeded") == [ids[3]]
        assert listed(namespace="c") == []
        assert listed(status="running") == []
        assert all(j.tenant_id == tenant for j in s.list(tenant))


def test_get_of_an_unknown_id(handlers: Register) -> None:
    with work.SyncScheduler() as s:
        with pytest.raises(work.NotFoundError, match="no-such-id"):
            s.get("no-such-id")
        with pytest.raises(LookupError):
            s.get(work.new_job_id())


def test_finished_jobs_beyond_finished_max_are_pruned(handlers: Register) -> None:
    kind = handlers(lambda job: None)
    with work.SyncScheduler(finished_max=2) as s:
        ids = []
        for _ in range(4):
            job = s.submit(work.Job(kind=kind, tenant_id=TENANT))
            s.wait(job.id, timeout=5)
            ids.append(job.id)
        for pruned in ids[:2]:
            with pytest.raises(work.NotFoundError):
                s.get(pruned)
        assert [j.id for j in s.list(TENANT)] == ids[:1:-1]


def test_progress_is_visible_while_a_job_runs(handlers: Register, gate: threading.Event) -> None:
    reported = threading.Event()

    def handler(job: work.Job, ctx: work.JobContext) -> str:
        ctx.progress(0.25, "a quarter")
        reported.set()
        gate.wait(10)
        return "done"

    kind = handlers(handler)
    with work.SyncScheduler() as s:
        job = s.submit(work.Job(kind=kind, tenant_id=TENANT))
        assert reported.wait(5)
        now = s.get(job.id)
        assert now.status == "running"
        assert now.progress == work.Progress(fraction=0.25, message="a quarter")
        gate.set()
        assert s.wait(job.id, timeout=5).status == "succeeded"


# ---- stop ---------------------------------------------------------------------------------------


def test_stop_cancels_waiting_jobs_and_drains_running_ones(handlers: Register, arun: Run) -> None:
    release = asyncio.Event()

    async def work_until_released(job: work.Job) -> str:
        await release.wait()
        return "drained"

    kind = handlers(work_until_released)

    async def main() -> None:
        bus = Telemetry()
        s = work.Scheduler(pools=ONE_ASYNC_SLOT, telemetry=bus)
        await s.start()
        running = work.Job(kind=kind, tenant_id=TENANT)
        started = when(bus, JOB_STARTED, running.id, asyncio.Event())
        await s.submit(running)
        await asyncio.wait_for(started.wait(), 5)
        queued = work.Job(kind=kind, tenant_id=TENANT)
        canceled = when(bus, JOB_CANCELED, queued.id, asyncio.Event())
        await s.submit(queued)

        stopping = asyncio.create_task(s.stop(timeout=10))
        await asyncio.wait_for(canceled.wait(), 5)
        assert not s.running
        with pytest.raises(work.NotStartedError):
            await s.submit(work.Job(kind=kind, tenant_id=TENANT))
        release.set()
        await asyncio.wait_for(stopping, 10)

        drained = await s.get(running.id)
        assert (drained.status, drained.result) == ("succeeded", "drained")
        shut = await s.get(queued.id)
        assert (shut.status, shut.cancel_reason) == ("canceled", "shutdown")

    arun(main())


def test_stop_cancels_running_jobs_at_its_deadline(handlers: Register, arun: Run) -> None:
    async def forever(job: work.Job) -> None:
        await asyncio.Event().wait()

    kind = handlers(forever)

    async def main() -> None:
        bus = Telemetry()
        s = work.Scheduler(telemetry=bus)
        await s.start()
        job = work.Job(kind=kind, tenant_id=TENANT)
        started = when(bus, JOB_STARTED, job.id, asyncio.Event())
        await s.submit(job)
        await asyncio.wait_for(started.wait(), 5)
        await s.stop(timeout=0.05)
        ended = await s.get(job.id)
        assert (ended.status, ended.cancel_reason) == ("canceled", "shutdown")
        await s.stop()  # idempotent

    arun(main())


def test_a_stopped_scheduler_cannot_restart(arun: Run) -> None:
    async def main() -> None:
        s = work.Scheduler()
        async with s:
            pass
        with pytest.raises(work.NotStartedError):
            await s.start()

    arun(main())


# ---- module functions ---------------------------------------------------------------------------


@pytest.fixture
def default_stopped() -> Iterator[None]:
    work.stop()
    yield
    work.stop()


VERBS: dict[str, Callable[[], Any]] = {
    "submit": lambda: work.submit(work.Job(kind="k", tenant_id="t")),
    "submit_many": lambda: work.submit_many([work.Job(kind="k", tenant_id="t")]),
    "get": lambda: work.get("x"),
    "list": lambda: work.list("t"),
    "wait": lambda: work.wait("x", timeout=1),
    "wait_many": lambda: work.wait_many(["x"], timeout=1),
    "as_completed": lambda: list(work.as_completed(["x"], timeout=1)),
    "cancel": lambda: work.cancel("x"),
    "retry": lambda: work.retry("x"),
    "stats": lambda: work.stats(),
    "default_scheduler": lambda: work.default_scheduler(),
}


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.usefixtures("default_stopped")
def test_any_verb_before_start_raises_not_started(verb: str) -> None:
    with pytest.raises(work.NotStartedError, match=r"work\.start\(\)"):
        VERBS[verb]()


@pytest.mark.usefixtures("default_stopped")
def test_module_functions_quickstart_and_idempotent_start(handlers: Register) -> None:
    kind = handlers(lambda job: {"hi": job.payload["who"]})
    first = work.start()
    assert work.start() is first
    assert work.start(max_waiting=1_000_000) is first  # the same options
    with pytest.raises(work.ConfigurationError, match=r"work\.stop\(\)"):
        work.start(max_waiting=5)
    job = work.submit(work.Job(kind=kind, tenant_id=TENANT, payload={"who": "you"}))
    assert work.wait(job.id, timeout=5).result == {"hi": "you"}
    assert work.get(job.id).status == "succeeded"
    assert [j.id for j in work.list(TENANT)] == [job.id]
    assert work.stats().totals.succeeded == 1
    more = work.submit_many(
        [work.Job(kind=kind, tenant_id=TENANT, payload={"who": n}) for n in "ab"]
    )
    assert {j.result["hi"] for j in work.as_completed([j.id for j in more], timeout=5)} == {
        "a",
        "b",
    }
    assert work.cancel(job.id).status == "succeeded"
    assert work.wait(work.retry(job.id).id, timeout=5).status == "succeeded"
    work.stop()
    with pytest.raises(work.NotStartedError):
        work.get(job.id)
    assert work.start() is not first  # a new one after stop


# ---- calling the blocking facade from the engine's own loop -------------------------------------


def test_blocking_call_from_an_async_handler_raises_instead_of_deadlocking(
    handlers: Register,
) -> None:
    errors: list[BaseException] = []
    with work.SyncScheduler() as s:

        async def handler(job: work.Job) -> str:
            for call in (
                lambda: s.get(job.id),
                lambda: s.wait(job.id, timeout=1),
                lambda: s.submit(work.Job(kind=job.kind, tenant_id=TENANT)),
                lambda: list(s.as_completed([job.id])),
                lambda: s.stats(),
            ):
                try:
                    call()
                except BaseException as exc:
                    errors.append(exc)
            return "still alive"

        kind = handlers(handler)
        done = s.wait(s.submit(work.Job(kind=kind, tenant_id=TENANT)).id, timeout=5)
    assert done.result == "still alive"
    assert len(errors) == 5
    for error in errors:
        assert isinstance(error, work.WorkError)
        assert "async" in str(error)
        assert "deadlock" in str(error)


@pytest.mark.usefixtures("default_stopped")
def test_module_function_from_an_async_handler_raises(handlers: Register) -> None:
    errors: list[BaseException] = []

    async def handler(job: work.Job) -> str:
        try:
            work.get(job.id)
        except BaseException as exc:
            errors.append(exc)
        return "ok"

    kind = handlers(handler)
    work.start()
    assert (
        work.wait(work.submit(work.Job(kind=kind, tenant_id=TENANT)).id, timeout=5).result == "ok"
    )
    assert len(errors) == 1
    assert isinstance(errors[0], work.WorkError)
    assert "async API" in str(errors[0])


def test_a_sync_handler_may_use_the_blocking_facade(handlers: Register) -> None:
    with work.SyncScheduler() as s:
        child = handlers(lambda job: "child result")

        def parent(job: work.Job) -> Any:
            sub = s.submit(work.Job(kind=child, tenant_id=TENANT))
            return s.wait(sub.id, timeout=5).result

        kind = handlers(parent)
        done = s.wait(s.submit(work.Job(kind=kind, tenant_id=TENANT)).id, timeout=10)
    assert done.result == "child result"


# ---- robustness ---------------------------------------------------------------------------------


def test_a_raising_telemetry_handler_is_detached_and_scheduling_continues(
    handlers: Register, caplog: pytest.LogCaptureFixture
) -> None:
    kind = handlers(lambda job: "fine")
    bus = Telemetry()
    calls: list[str] = []

    def bad(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        calls.append(metadata["job_id"])
        raise RuntimeError("telemetry handler bug")

    bus.attach("bad-handler", JOB_STARTED, bad)
    with (
        caplog.at_level(logging.ERROR, logger="nsai_work.telemetry"),
        work.SyncScheduler(telemetry=bus) as s,
        capture_events(bus=bus) as log,
    ):
        first = s.wait(s.submit(work.Job(kind=kind, tenant_id=TENANT)).id, timeout=5)
        second = s.wait(s.submit(work.Job(kind=kind, tenant_id=TENANT)).id, timeout=5)
    assert (first.status, second.status) == ("succeeded", "succeeded")
    assert calls == [first.id]
    assert [h.id for h in bus.list_handlers()] == []  # the capture is detached too
    assert "bad-handler" in caplog.text
    assert "detached" in caplog.text
    assert ("work", "job", "completed") in log.for_job(second.id)


def test_handler_exceptions_never_crash_the_engine(handlers: Register) -> None:
    class CustomError(Exception):
        pass

    async def async_raiser(job: work.Job) -> None:
        raise CustomError("async boom")

    raisers = [
        handlers(lambda job: {}["missing"]),
        handlers(lambda job: 1 / 0),
        handlers(async_raiser),
        handlers(lambda job: (_ for _ in ()).throw(CustomError("from a generator"))),
        handlers(lambda job: {"not json": {1, 2}}),
    ]
    ok = handlers(lambda job: "ok")
    with work.SyncScheduler() as s:
        failed = [
            s.submit(work.Job(kind=k, tenant_id=TENANT, constraints=policy(2))) for k in raisers
        ]
        ended = s.wait_many([j.id for j in failed], timeout=10)
        assert [j.status for j in ended] == ["failed"] * len(raisers)
        assert ended[2].error is not None
        assert ended[2].error.type.endswith("CustomError")
        later = s.submit_many([work.Job(kind=ok, tenant_id=TENANT) for _ in range(5)])
        assert [j.status for j in s.wait_many([j.id for j in later], timeout=5)] == [
            "succeeded"
        ] * 5


def test_an_exception_whose_str_raises_still_fails_the_job(handlers: Register) -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("cannot print me")

    def handler(job: work.Job) -> None:
        raise Unprintable()

    kind = handlers(handler)
    ok = handlers(lambda job: "ok")
    s = work.SyncScheduler(pools=ONE_THREAD_SLOT).start()
    try:
        job = s.submit(work.Job(kind=kind, tenant_id=TENANT, constraints=policy(1)))
        done = s.wait(job.id, timeout=2)
        assert done.status == "failed"
        assert done.error is not None
        assert "Unprintable" in done.error.type
        after = s.submit(work.Job(kind=ok, tenant_id=TENANT))
        assert s.wait(after.id, timeout=5).status == "succeeded"
    finally:
        s.stop(timeout=0.2)


# ---- strict priority ----------------------------------------------------------------------------


def test_strict_priority_end_to_end(handlers: Register, arun: Run) -> None:
    release = asyncio.Event()
    order: list[str] = []

    async def blocker(job: work.Job) -> None:
        await release.wait()

    async def record(job: work.Job) -> None:
        order.append(job.payload["name"])

    block_kind, kind = handlers(blocker), handlers(record)

    async def main() -> None:
        bus = Telemetry()
        async with work.Scheduler(pools=ONE_ASYNC_SLOT, telemetry=bus) as s:
            first = work.Job(kind=block_kind, tenant_id=TENANT)
            started = when(bus, JOB_STARTED, first.id, asyncio.Event())
            await s.submit(first)
            await asyncio.wait_for(started.wait(), 5)
            names = [
                ("b1", "batch"),
                ("b2", "batch"),
                ("o1", "offline"),
                ("b3", "batch"),
                ("i1", "interactive"),
                ("r1", "realtime"),
            ]
            jobs = [
                await s.submit(
                    work.Job(kind=kind, tenant_id=TENANT, priority=p, payload={"name": n})
                )
                for n, p in names
            ]
            try:
                now = [await s.get(j.id) for j in jobs]
                assert [j.status for j in now] == ["queued"] * len(jobs)
                assert now[0].waiting_reason == "higher_priority_backlog"
                assert now[-1].waiting_reason == "no_capacity"
            finally:
                release.set()
            await s.wait_many([j.id for j in jobs], timeout=5)

    arun(main())
    assert order == ["r1", "i1", "b1", "b2", "b3", "o1"]


# ---- the mock backend ---------------------------------------------------------------------------

Mock = work.backends.Mock


def test_mock_is_chosen_only_when_named(handlers: Register) -> None:
    kind = handlers(lambda job: "local ran")
    with work.SyncScheduler() as s:
        local = s.wait(s.submit(work.Job(kind=kind, tenant_id=TENANT)).id, timeout=5)
        assert (local.backend, local.result) == ("local", "local ran")
        assert Mock.history() == []
        with pytest.raises(work.UnschedulableError):
            s.submit(work.Job(kind="unhandled-kind", tenant_id=TENANT))
        named = s.submit(
            work.Job(
                kind="unhandled-kind",
                tenant_id=TENANT,
                constraints=work.Constraints(backend="mock"),
            )
        )
        done = s.wait(named.id, timeout=5)
    assert (done.status, done.backend, done.pool) == ("succeeded", "mock", "mock")
    assert done.result == {"ok": True, "job_id": named.id}
    assert [(e.job.id, e.attempt) for e in Mock.history()] == [(named.id, 1)]


def test_mock_as_the_default_backend(handlers: Register) -> None:
    kind = handlers(lambda job: "local ran")
    with work.SyncScheduler(default_backend="mock") as s:
        done = s.wait(s.submit(work.Job(kind=kind, tenant_id=TENANT)).id, timeout=5)
        tool = s.wait(
            s.submit(work.Job(kind="anything", tenant_id=TENANT, payload={"a": 1})).id, timeout=5
        )
    assert done.backend == "mock"
    assert done.result == {"ok": True, "job_id": done.id}
    assert tool.backend == "mock"
    assert len(Mock.history()) == 2


MOCKED = work.Constraints(
    backend="mock", retry_policy=work.RetryPolicy(max_attempts=2, base_delay_ms=1)
)


def test_mock_configured_to_fail() -> None:
    Mock.configure(behavior=("fail", "Simulated failure"))
    with work.SyncScheduler() as s:
        done = s.wait(s.submit(work.Job(kind="x", tenant_id=TENANT, constraints=MOCKED)).id, 5)
    assert done.status == "failed"
    assert done.error is not None
    assert done.error.message == "Simulated failure"
    assert [a.error.message for a in done.attempts if a.error] == ["Simulated failure"] * 2
    assert [e.attempt for e in Mock.history()] == [1, 2]


def test_mock_fail_permanently_and_custom_results() -> None:
    with work.SyncScheduler() as s:
        Mock.configure(behavior=("fail_permanently", "no retry"))
        failed = s.wait(s.submit(work.Job(kind="x", tenant_id=TENANT, constraints=MOCKED)).id, 5)
        Mock.configure(behavior=("ok", {"answer": 42}))
        answered = s.wait(s.submit(work.Job(kind="x", tenant_id=TENANT, constraints=MOCKED)).id, 5)
    assert (failed.status, len(failed.attempts)) == ("failed", 1)
    assert failed.error is not None
    assert failed.error.message == "no retry"
    assert answered.result == {"answer": 42}


def test_mock_delay_ms_is_applied() -> None:
    one_try = work.Constraints(backend="mock", retry_policy=work.RetryPolicy(max_attempts=1))
    with work.SyncScheduler() as s:
        Mock.configure(delay_ms=60_000)
        delayed = s.submit(
            work.Job(
                kind="x",
                tenant_id=TENANT,
                constraints=one_try,
                resources=work.Resources(timeout_ms=50),
            )
        )
        assert s.wait(delayed.id, timeout=5).status == "timeout"  # still in its delay
        Mock.configure(delay_ms=1)
        quick = s.wait(s.submit(work.Job(kind="x", tenant_id=TENANT, constraints=one_try)).id, 5)
        assert quick.status == "succeeded"


def test_mock_hang_runs_until_canceled() -> None:
    Mock.configure(behavior="hang")
    bus = Telemetry()
    with work.SyncScheduler(telemetry=bus) as s:
        job = work.Job(kind="x", tenant_id=TENANT, constraints=MOCKED)
        started = when(bus, JOB_STARTED, job.id, threading.Event())
        s.submit(job)
        assert started.wait(5)
        assert s.get(job.id).status == "running"
        assert s.cancel(job.id).status == "canceled"
        s.wait_idle(timeout=5)
        assert s.stats().pools["mock"].used.slots == 0


def test_mock_history_and_reset() -> None:
    Mock.configure(behavior=("fail", "x"), delay_ms=5)
    Mock.reset()
    with work.SyncScheduler() as s:
        jobs = [
            s.submit(work.Job(kind=f"k{i}", tenant_id=TENANT, constraints=MOCKED)) for i in range(3)
        ]
        assert all(j.status == "succeeded" for j in s.wait_many([j.id for j in jobs], timeout=5))
    history = Mock.history()
    assert sorted(e.job.id for e in history) == sorted(j.id for j in jobs)
    assert {e.job.kind for e in history} == {"k0", "k1", "k2"}
    assert "MockExecution" in repr(history[0])
    Mock.reset()
    assert Mock.history() == []


def test_isolated_mock_keeps_its_own_configuration() -> None:
    mine = work.backends.MockBackend(name="mine", isolated=True)
    mine.configure(behavior=("fail", "only mine fails"))
    with work.SyncScheduler(backends=["local", mine, "mock"]) as s:
        shared = s.wait(s.submit(work.Job(kind="x", tenant_id=TENANT, constraints=MOCKED)).id, 5)
        own = s.wait(
            s.submit(
                work.Job(
                    kind="x",
                    tenant_id=TENANT,
                    constraints=work.Constraints(
                        backend="mine", retry_policy=work.RetryPolicy(max_attempts=1)
                    ),
                )
            ).id,
            5,
        )
    assert shared.status == "succeeded"
    assert own.status == "failed"
    assert len(mine.history()) == 1
    assert len(Mock.history()) == 1


@pytest.mark.parametrize("behavior", ["explode", ("fail",), ("nope", "x"), 42])
def test_mock_refuses_an_unknown_behavior(behavior: Any) -> None:
    with pytest.raises(work.ValidationError, match="behavior"):
        Mock.configure(behavior=behavior)
    with pytest.raises(work.ValidationError):
        Mock.configure(delay_ms=-1)


# ---- stats --------------------------------------------------------------------------------------


def test_stats_count_by_priority_tenant_and_backend(handlers: Register) -> None:
    kind = handlers(lambda job: None)
    with work.SyncScheduler() as s:
        jobs = [
            s.submit(work.Job(kind=kind, tenant_id="t1", priority="realtime")),
            s.submit(work.Job(kind=kind, tenant_id="t2")),
            s.submit(work.Job(kind="x", tenant_id="t2", constraints=MOCKED)),
        ]
        s.wait_many([j.id for j in jobs], timeout=5)
        s.wait_idle(timeout=5)
        stats = s.stats()
    assert (stats.totals.submitted, stats.totals.succeeded) == (3, 3)
    assert stats.by_priority["realtime"].succeeded == 1
    assert stats.by_priority["batch"].succeeded == 2
    assert stats.by_tenant["t2"].submitted == 2
    assert stats.by_backend["mock"].succeeded == 1
    assert stats.by_backend["local"].succeeded == 2
    assert {"local:async", "local:threads", "altar:async", "altar:threads", "mock"} <= set(
        stats.pools
    )
    assert all(p.used.slots == 0 for p in stats.pools.values())
    assert stats.pools["local:async"].capacity.slots == 256


def test_context_manager_exits_cleanly_on_an_exception(handlers: Register) -> None:
    kind = handlers(lambda job: None)
    s = work.SyncScheduler()
    with contextlib.suppress(KeyError), s:
        s.submit(work.Job(kind=kind, tenant_id=TENANT))
        raise KeyError("user code failed")
    assert not s.running


def test_list_is_newest_first_even_with_caller_chosen_ids(handlers: Register) -> None:
    kind = handlers(lambda job: None)
    tenant = unique("tenant")
    with work.SyncScheduler() as s:
        older = s.submit(work.Job(kind=kind, tenant_id=tenant, id="zzz-submitted-first"))
        newer = s.submit(work.Job(kind=kind, tenant_id=tenant, id="aaa-submitted-second"))
        listed = [j.id for j in s.list(tenant)]
    assert listed == [newer.id, older.id]


def test_a_large_batch_leaves_the_garbage_collector_alone(handlers: Register) -> None:
    """Library code does not change process-wide state: a large submit_many used to run with
    the cyclic GC turned off, for the host application's other threads too."""
    import gc

    kind = handlers(lambda job: None)
    bus = Telemetry()
    seen: list[bool] = []
    bus.attach(
        unique("gc"),
        ("work", "job", "submitted"),
        lambda event, measurements, metadata, config: seen.append(gc.isenabled()),
    )
    with work.SyncScheduler(telemetry=bus) as s:
        jobs = s.submit_many([work.Job(kind=kind, tenant_id=TENANT) for _ in range(2000)])
        assert seen == [True] * 2000
        done = s.wait_many([job.id for job in jobs], timeout=30)
    assert {job.status for job in done} == {work.Status.SUCCEEDED}


def test_a_bare_handler_decorator_runs_jobs_of_the_functions_name() -> None:
    @work.handler
    def engine_bare_decorator(job: work.Job, ctx: work.JobContext) -> int:
        ctx.progress(1.0)
        return job.payload["n"] * 2

    try:
        with work.SyncScheduler() as s:
            job = s.submit(
                work.Job(kind="engine_bare_decorator", tenant_id=TENANT, payload={"n": 21})
            )
            done = s.wait(job.id, timeout=5)
        assert (done.status, done.result, done.attempt) == ("succeeded", 42, 1)
    finally:
        work.unregister_handler("engine_bare_decorator")


def test_a_handler_that_cannot_take_the_job_is_refused_before_any_job_runs() -> None:
    def takes_nothing() -> None:
        return None

    with pytest.raises(work.ValidationError, match=r"\(job\) or \(job, ctx\)"):
        work.register_handler(unique("engine.nothing"), takes_nothing)

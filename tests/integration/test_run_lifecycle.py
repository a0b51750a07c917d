"""A run's capacity comes back exactly once on every path, and nothing user code does stops the
engine: cancels racing the dispatch on every built-in backend, ``BaseException`` from handlers,
tools and telemetry handlers, and a loop thread that dies."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import nsai_work as work
from nsai_work.backends import AltarBackend, LocalBackend, MockBackend, ProcessBackend
from nsai_work.telemetry import Telemetry
from nsai_work.telemetry.events import JOB_COMPLETED, JOB_SUBMITTED
from nsai_work.testing import FakeClock

from . import _process_handlers

Run = Callable[[Coroutine[Any, Any, Any]], Any]
Register = Callable[..., str]

SLOTS = 4


async def _noop_async(job: work.Job) -> None:
    return None


def _noop_sync(job: work.Job) -> None:
    return None


def _backend_cases(handlers: Register, tools: Register) -> dict[str, tuple[Any, Callable[[], Any]]]:
    """Per built-in backend: a backend with SLOTS slots, and how to build a job it runs."""
    async_kind = handlers(_noop_async)
    sync_kind = handlers(_noop_sync)
    tool = tools(lambda args: args)
    process_kind = handlers(_process_handlers.echo)
    return {
        "local:async": (
            LocalBackend(async_slots=SLOTS),
            lambda: work.Job(kind=async_kind, tenant_id="race"),
        ),
        "local:threads": (
            LocalBackend(threads=SLOTS),
            lambda: work.Job(kind=sync_kind, tenant_id="race"),
        ),
        "altar:threads": (
            AltarBackend(threads=SLOTS),
            lambda: work.Job(kind="tool_call", tenant_id="race", payload={"tool": tool}),
        ),
        "process": (
            ProcessBackend(workers=SLOTS),
            lambda: work.Job(kind=process_kind, tenant_id="race"),
        ),
        "mock": (
            MockBackend(),
            lambda: work.Job(
                kind="anything", tenant_id="race", constraints=work.Constraints(backend="mock")
            ),
        ),
    }


POOLS = ["local:async", "local:threads", "altar:threads", "process", "mock"]


@pytest.mark.parametrize("pool", POOLS)
def test_a_cancel_in_the_dispatch_step_gives_the_slot_back(
    pool: str, handlers: Register, tools: Register, arun: Run
) -> None:
    """Submit then cancel in the same loop step (the run task has not started): the slot comes
    back, later jobs run, and stop does not wait for the lost runs."""
    backend, make = _backend_cases(handlers, tools)[pool]
    pools = {"mock": [work.Pool(name="mock", slots=SLOTS)]} if pool == "mock" else {}

    async def main() -> None:
        async with work.Scheduler(backends=[backend], pools=pools) as s:
            for _ in range(3):  # three rounds of filling every slot and canceling at once
                for _ in range(SLOTS):
                    job = await s.submit(make())
                    assert job.status == "running"  # dispatched; its task has not started
                    canceled = await s.cancel(job.id)
                    assert canceled.status == "canceled"
                await s.wait_idle(timeout=10)
            stats = await s.stats()
            assert stats.pools[pool].used.slots == 0
            assert stats.totals.canceled == 3 * SLOTS
            last = await s.submit(make())
            done = await s.wait(last.id, timeout=10)
            assert done.status == "succeeded"
            loop = asyncio.get_running_loop()
            started = loop.time()
            await s.stop(timeout=5)
            assert loop.time() - started < 4  # not the whole timeout: no run was lost

    arun(main())


def test_threads_submitting_and_canceling_leak_no_slot(handlers: Register) -> None:
    kind = handlers(_noop_async)
    with work.SyncScheduler(backends=[LocalBackend(async_slots=16)]) as s:
        stop = threading.Event()

        def churn() -> None:
            while not stop.is_set():
                job = s.submit(work.Job(kind=kind, tenant_id="race"))
                s.cancel(job.id)

        threads = [threading.Thread(target=churn) for _ in range(4)]
        for thread in threads:
            thread.start()
        finish = threading.Timer(1.5, stop.set)
        finish.start()
        for thread in threads:
            thread.join(timeout=30)
        s.wait_idle(timeout=10)
        stats = s.stats()
        assert stats.pools["local:async"].used.slots == 0
        assert stats.totals.submitted == stats.totals.finished
        assert stats.totals.submitted > 0
        jobs = s.submit_many([work.Job(kind=kind, tenant_id="race") for _ in range(32)])
        assert {j.status for j in s.wait_many([j.id for j in jobs], timeout=10)} == {"succeeded"}


# ---- BaseException from user code ---------------------------------------------------------------


def _raise(exc: BaseException) -> Callable[..., Any]:
    def sync_handler(job: work.Job) -> None:
        raise exc

    return sync_handler


def _raise_async(exc: BaseException) -> Callable[..., Any]:
    async def async_handler(job: work.Job) -> None:
        raise exc

    return async_handler


@pytest.mark.parametrize("style", ["sync", "async", "tool"])
@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt(), GeneratorExit()])
def test_a_base_exception_fails_the_attempt_without_retry(
    style: str, exc: BaseException, handlers: Register, tools: Register
) -> None:
    fn = _raise_async(exc) if style == "async" else _raise(exc)
    retries = work.Constraints(retry_policy=work.RetryPolicy(max_attempts=3, base_delay_ms=1))
    if style == "tool":
        job = work.Job(
            kind="tool_call", tenant_id="t", payload={"tool": tools(fn)}, constraints=retries
        )
    else:
        job = work.Job(kind=handlers(fn), tenant_id="t", constraints=retries)
    ok = handlers(lambda job: "still alive")
    with work.SyncScheduler() as s:
        failed = s.wait(s.submit(job).id, timeout=10)
        after = s.wait(s.submit(work.Job(kind=ok, tenant_id="t")).id, timeout=10)
    assert failed.status == "failed"
    assert failed.attempt == 1  # not retried
    assert failed.error is not None
    assert failed.error.type == type(exc).__name__
    assert after.status == "succeeded"
    assert after.result == "still alive"


def test_a_telemetry_handler_raising_keyboard_interrupt_does_not_fail_the_submit(
    handlers: Register,
) -> None:
    kind = handlers(lambda job: 42)
    bus = Telemetry()
    calls: list[str] = []

    def interrupt(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        calls.append(metadata["job_id"])
        raise KeyboardInterrupt

    bus.attach("interrupt", JOB_SUBMITTED, interrupt)
    with work.SyncScheduler(telemetry=bus) as s:
        first = s.submit(work.Job(kind=kind, tenant_id="t"))  # no error for an admitted job
        second = s.submit(work.Job(kind=kind, tenant_id="t"))
        done = s.wait_many([first.id, second.id], timeout=10)
    assert [j.status for j in done] == ["succeeded", "succeeded"]
    assert calls == [first.id]  # detached after its first call
    assert bus.list_handlers() == []


def test_a_telemetry_handler_raising_system_exit_on_completion_is_detached(
    handlers: Register,
) -> None:
    kind = handlers(lambda job: 1)
    bus = Telemetry()
    bus.attach("exit", JOB_COMPLETED, lambda *args: (_ for _ in ()).throw(SystemExit(1)))
    with work.SyncScheduler(telemetry=bus) as s:
        jobs = s.submit_many([work.Job(kind=kind, tenant_id="t") for _ in range(5)])
        done = s.wait_many([j.id for j in jobs], timeout=10)
        assert s.running
    assert {j.status for j in done} == {"succeeded"}
    assert bus.list_handlers() == []


# ---- a loop thread that dies --------------------------------------------------------------------


def test_when_the_loop_thread_dies_every_call_raises_with_the_cause(handlers: Register) -> None:
    async def kill_the_loop(job: work.Job) -> None:
        def boom() -> None:
            raise SystemExit(7)

        asyncio.get_running_loop().call_later(0.2, boom)  # not ours to catch: it kills the loop
        await asyncio.sleep(30)

    kind = handlers(kill_the_loop)
    s = work.SyncScheduler().start()
    try:
        job = s.submit(work.Job(kind=kind, tenant_id="t"))
        with pytest.raises(work.NotStartedError, match="died") as blocked:
            s.wait(job.id, timeout=20)  # blocked when the loop dies
        assert isinstance(blocked.value.__cause__, SystemExit)
        for call in (
            lambda: s.get(job.id),
            lambda: s.wait(job.id, timeout=1),
            lambda: s.submit(work.Job(kind=kind, tenant_id="t")),
            lambda: list(s.as_completed([job.id])),
            s.stats,
        ):
            with pytest.raises(work.NotStartedError, match="died") as later:
                call()
            assert isinstance(later.value.__cause__, SystemExit)
        assert not s.running
    finally:
        s.stop(timeout=1)


# ---- handlers that ignore cancellation ----------------------------------------------------------


def test_a_run_that_ignores_its_timeout_keeps_its_slot_visibly(
    handlers: Register, arun: Run
) -> None:
    """The job ends ``timeout`` at once; its slot stays held until the handler really returns,
    and stats and the waiting reasons say so."""
    release = asyncio.Event()
    started = asyncio.Event()

    async def stubborn(job: work.Job) -> str:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await release.wait()  # swallows its cancellation until released
        return "late"

    stubborn_kind = handlers(stubborn)
    quick_kind = handlers(_noop_async)
    clock = FakeClock()

    async def main() -> None:
        async with work.Scheduler(
            clock=clock, pools={"local": [work.Pool(name="local:async", slots=1)]}
        ) as s:
            first = await s.submit(
                work.Job(
                    kind=stubborn_kind,
                    tenant_id="t",
                    resources=work.Resources(timeout_ms=1000),
                    constraints=work.Constraints(retry_policy=work.RetryPolicy(max_attempts=1)),
                )
            )
            await started.wait()
            second = await s.submit(work.Job(kind=quick_kind, tenant_id="t"))
            clock.advance(1.0)
            assert (await s.wait(first.id, timeout=10)).status == "timeout"
            stats = await s.stats()
            assert stats.pools["local:async"].used.slots == 1
            assert stats.pools["local:async"].used.stopping == 1
            waiting = await s.get(second.id)
            assert waiting.status == "queued"
            assert waiting.waiting_reason == "stopping_runs:local:async"
            release.set()
            assert (await s.wait(second.id, timeout=10)).status == "succeeded"
            await s.wait_idle(timeout=10)
            used = (await s.stats()).pools["local:async"].used
            assert (used.slots, used.stopping) == (0, 0)

    arun(main())


def test_stop_waits_for_a_handler_that_swallows_its_cancellation_then_returns(
    handlers: Register, caplog: pytest.LogCaptureFixture
) -> None:
    async def swallows(job: work.Job) -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.3)  # cleans up for a while, then returns
        return "cleaned up"

    kind = handlers(swallows)
    s = work.SyncScheduler().start()
    job = s.submit(work.Job(kind=kind, tenant_id="t"))
    started = time.monotonic()
    s.stop(timeout=0)
    assert time.monotonic() - started < 4  # the handler's 0.3 s, not the 5 s grace
    del s
    gc.collect()
    assert not [r for r in caplog.records if "destroyed" in r.getMessage()]
    assert not [r for r in caplog.records if "abandoned" in r.getMessage()]
    assert job.id


@pytest.mark.slow
def test_stop_abandons_a_handler_that_never_stops_without_asyncio_warnings(
    handlers: Register, caplog: pytest.LogCaptureFixture
) -> None:
    async def never_stops(job: work.Job) -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    kind = handlers(never_stops)
    s = work.SyncScheduler().start()
    job = s.submit(work.Job(kind=kind, tenant_id="t"))
    started = time.monotonic()
    s.stop(timeout=0)
    assert time.monotonic() - started < 10  # the 5 s grace, then it gives up
    del s
    gc.collect()
    assert not [r for r in caplog.records if "destroyed" in r.getMessage()]
    (abandoned,) = [r for r in caplog.records if "abandoned" in r.getMessage()]
    assert job.id in abandoned.getMessage()


@pytest.mark.parametrize(
    "fn", [_process_handlers.raise_system_exit, _process_handlers.raise_keyboard_interrupt]
)
def test_a_base_exception_in_a_worker_process_fails_without_retry(
    fn: Callable[..., Any], handlers: Register
) -> None:
    kind = handlers(fn)
    retries = work.Constraints(
        backend="process", retry_policy=work.RetryPolicy(max_attempts=3, base_delay_ms=1)
    )
    with work.SyncScheduler(backends=["local", ProcessBackend(workers=1)]) as s:
        failed = s.wait(s.submit(work.Job(kind=kind, tenant_id="t", constraints=retries)).id, 30)
    assert failed.status == "failed"
    assert failed.attempt == 1
    assert failed.error is not None
    assert failed.error.type in ("SystemExit", "KeyboardInterrupt")

"""The engine's two clocks (DESIGN.md principle 5): durations and timers on a monotonic clock,
timestamps on the wall clock, both injected, so a test drives timeouts and backoffs with
``work.testing.FakeClock`` instead of sleeping. Also: what the engine keeps per timer and per
waiter stays bounded by what is live."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import nsai_work as work
from nsai_work.engine import _watchers
from nsai_work.telemetry import Telemetry
from nsai_work.telemetry.events import JOB_COMPLETED, JOB_FAILED, JOB_RETRY
from nsai_work.testing import FakeClock, capture_events

Run = Callable[[Coroutine[Any, Any, Any]], Any]
Register = Callable[..., str]

ONE_SHOT = work.Constraints(retry_policy=work.RetryPolicy(max_attempts=1))
WALL = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _at(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def test_run_time_and_timestamps_come_from_the_injected_clocks(
    handlers: Register, arun: Run
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def held(job: work.Job) -> str:
        started.set()
        await release.wait()
        return "done"

    kind = handlers(held)
    clock = FakeClock(start=500.0, wall=WALL)
    bus = Telemetry()

    async def main() -> work.Job:
        with capture_events([JOB_COMPLETED], bus=bus) as events:
            async with work.Scheduler(clock=clock, telemetry=bus) as s:
                job = await s.submit(work.Job(kind=kind, tenant_id="t"))
                await started.wait()
                clock.advance(2.5)  # the run lasts 2.5 s on the injected clock
                release.set()
                done = await s.wait(job.id, timeout=10)
        (completed,) = events
        assert completed.measurements["run_time_ms"] == 2500.0
        assert completed.measurements["total_time_ms"] == 2500.0
        return done

    done = arun(main())
    assert done.status == "succeeded"
    assert done.submitted_at == done.started_at == _at(WALL)
    assert done.finished_at == _at(WALL + 2.5)
    assert done.attempts[0].finished_at == _at(WALL + 2.5)


def test_failed_and_retried_runs_report_their_real_run_time(handlers: Register) -> None:
    """run_time_ms of job.failed and job.retry was always 0.0 (the state's clock was restarted
    before the time in it was measured)."""

    def slow_failure(job: work.Job) -> None:
        import time

        time.sleep(0.05)
        raise RuntimeError("no")

    kind = handlers(slow_failure)
    bus = Telemetry()
    policy = work.RetryPolicy(max_attempts=2, base_delay_ms=1, jitter=False)
    with (
        capture_events([JOB_RETRY, JOB_COMPLETED, JOB_FAILED], bus=bus) as events,
        work.SyncScheduler(telemetry=bus) as s,
    ):
        job = s.submit(
            work.Job(kind=kind, tenant_id="t", constraints=work.Constraints(retry_policy=policy))
        )
        assert s.wait(job.id, timeout=10).status == "failed"
    assert [e.event[-1] for e in events] == ["retry", "completed", "failed"]
    for event in events:
        assert 45.0 <= event.measurements["run_time_ms"] < 10_000.0, event
    assert events[-1].measurements["total_time_ms"] >= 2 * 45.0


def test_a_fake_clock_drives_timeouts_without_waiting(handlers: Register, arun: Run) -> None:
    started = asyncio.Event()

    async def forever(job: work.Job) -> None:
        started.set()
        await asyncio.Event().wait()

    kind = handlers(forever)
    clock = FakeClock()

    async def main() -> work.Job:
        async with work.Scheduler(clock=clock) as s:
            job = await s.submit(
                work.Job(
                    kind=kind,
                    tenant_id="t",
                    resources=work.Resources(timeout_ms=3_600_000),  # an hour
                    constraints=ONE_SHOT,
                )
            )
            await started.wait()
            clock.advance(3599.0)
            await asyncio.sleep(0)  # (due timers fire at the loop's next turn)
            assert (await s.get(job.id)).status == "running"
            clock.advance(1.0)
            done = await s.wait(job.id, timeout=10)
            await s.wait_idle(timeout=10)
            return done

    done = arun(main())
    assert done.status == "timeout"
    assert done.error is not None
    assert "3600000 ms" in done.error.message


def test_a_fake_clock_drives_backoff(handlers: Register, arun: Run) -> None:
    calls: list[int] = []

    def flaky(job: work.Job, ctx: work.JobContext) -> str:
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("first try fails")
        return "second try"

    kind = handlers(flaky)
    clock = FakeClock(wall=WALL)
    policy = work.RetryPolicy(max_attempts=2, base_delay_ms=60_000, jitter=False)

    async def main() -> None:
        async with work.Scheduler(clock=clock) as s:
            job = await s.submit(
                work.Job(
                    kind=kind, tenant_id="t", constraints=work.Constraints(retry_policy=policy)
                )
            )
            for _ in range(200):  # the first attempt runs in a thread: let it end
                pending = await s.get(job.id)
                if pending.status == "pending":
                    break
                await asyncio.sleep(0.01)
            assert pending.waiting_reason == "backoff"
            assert pending.next_attempt_at == _at(WALL + 60.0)
            clock.advance(60.0)
            done = await s.wait(job.id, timeout=10)
            assert done.result == "second try"

    arun(main())
    assert calls == [1, 2]


def test_timers_of_finished_jobs_are_forgotten(handlers: Register, arun: Run) -> None:
    """50,000 jobs with 1-hour timeouts left 50,000 heap entries after they finished."""
    kind = handlers(_quick)

    async def main() -> None:
        async with work.Scheduler() as s:
            jobs = await s.submit_many(
                work.Job(kind=kind, tenant_id="t", resources=work.Resources(timeout_ms=3_600_000))
                for _ in range(2000)
            )
            await s.wait_many([j.id for j in jobs], timeout=30)
            await s.wait_idle(timeout=10)
            assert [key[0] for key in s._timers._live] == ["sweep"]  # (the idle-tenant sweep)
            assert s._timers.held <= 65  # dead entries are compacted away

    arun(main())


async def _quick(job: work.Job) -> None:
    return None


def test_a_finished_job_wakes_only_its_own_waiters(
    handlers: Register, arun: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every wait() was checked at every job's end: O(waiters) per finished job."""
    checks = 0
    original = _watchers.WaitGroup.done

    def counted(self: Any, job: work.Job) -> None:
        nonlocal checks
        checks += 1
        original(self, job)

    monkeypatch.setattr(_watchers.WaitGroup, "done", counted)
    release = asyncio.Event()

    async def gated(job: work.Job) -> None:
        await release.wait()

    kind = handlers(gated)

    async def main() -> None:
        async with work.Scheduler() as s:
            jobs = await s.submit_many(work.Job(kind=kind, tenant_id="t") for _ in range(200))
            waits = [asyncio.create_task(s.wait(j.id, timeout=30)) for j in jobs]
            await asyncio.sleep(0)
            release.set()
            done = await asyncio.gather(*waits)
            assert {j.status for j in done} == {"succeeded"}

    arun(main())
    assert checks == 200  # one per finished job, not 200 x 200


def test_a_clock_without_monotonic_and_time_is_refused() -> None:
    with pytest.raises(work.ConfigurationError, match=r"monotonic\(\) and time\(\)"):
        work.Scheduler(clock=lambda: 0.0)

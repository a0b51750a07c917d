"""Recovery at start from a durable store: what a stopped (or dead) scheduler left is taken up
by the next one on the same store, in order, with its attempts, and with runs that did not end
closed as ``engine_lost`` and retried by their policy. The same tests run on SQLite and on a real
PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

import nsai_work as work

Register = Callable[..., str]
Run = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'work.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def test_a_restart_takes_up_waiting_and_lost_jobs(
    store_url: str, handlers: Register, arun: Run
) -> None:
    release = asyncio.Event()
    two_running = asyncio.Event()
    ran: list[tuple[str, int]] = []

    async def work_fn(job: work.Job) -> int:
        ran.append((job.id, job.attempt))
        if len(ran) == 2:
            two_running.set()
        if job.payload.get("hang") and job.attempt == 1:
            await release.wait()  # the first scheduler never sees this end
        return int(job.payload["n"])

    kind = handlers(work_fn)
    retry = work.RetryPolicy(max_attempts=3, base_delay_ms=1, max_delay_ms=1)
    limits = {"concurrency_limits": {"two": 2}}  # two run at once: the hanging ones

    async def first() -> list[work.Job]:
        async with work.Scheduler(store=store_url, **limits) as s:
            hung = await s.submit_many(
                [
                    work.Job(
                        kind=kind,
                        tenant_id="acme",
                        payload={"n": n, "hang": True},
                        constraints=work.Constraints(retry_policy=retry, concurrency_group="two"),
                    )
                    for n in range(2)
                ]
            )
            waiting = await s.submit_many(
                [
                    work.Job(
                        kind=kind,
                        tenant_id="globex",
                        payload={"n": n},
                        constraints=work.Constraints(concurrency_group="two"),
                    )
                    for n in range(2, 6)
                ]
            )
            await asyncio.wait_for(two_running.wait(), 10)
            # both slots hang: the waiting jobs wait; a durable stop keeps them all
            await s.stop(timeout=0)
            return [*hung, *waiting]

    submitted = arun(first())
    assert len(ran) == 2
    release.set()

    async def second() -> list[work.Job]:
        async with work.Scheduler(store=store_url, **limits) as s:
            return await s.wait_many([job.id for job in submitted], timeout=30)

    done = arun(second())
    assert [job.status for job in done] == [work.Status.SUCCEEDED] * 6
    assert [job.result for job in done] == list(range(6))
    for job in done[:2]:  # their first run was lost with the first scheduler
        assert [a.status for a in job.attempts] == ["failed", "succeeded"]
        assert job.attempts[0].error is not None
        assert job.attempts[0].error.type == "EngineLostError"
        assert "engine_lost" in job.attempts[0].error.message
    for job in done[2:]:
        assert [a.status for a in job.attempts] == ["succeeded"]


def test_a_durable_stop_starts_nothing_new_while_runs_finish(
    store_url: str, handlers: Register, arun: Run
) -> None:
    # A stop lets running jobs finish; the waiting ones stay in the store for the next start.
    # The engine went on dispatching them as runs ended, so a stop with a timeout drained the
    # backlog (and a run it started late was abandoned at the deadline, losing an attempt).
    release, started = asyncio.Event(), asyncio.Event()
    ran: list[int] = []

    async def step(job: work.Job) -> int:
        ran.append(job.payload["n"])
        if job.payload["n"] == 0:
            started.set()
            await release.wait()
        return int(job.payload["n"])

    kind = handlers(step)
    one = work.Constraints(concurrency_group="one")  # one at a time (the default limit)

    async def first() -> list[work.Job]:
        async with work.Scheduler(store=store_url) as s:
            jobs = await s.submit_many(
                [
                    work.Job(kind=kind, tenant_id="acme", payload={"n": n}, constraints=one)
                    for n in range(4)
                ]
            )
            await asyncio.wait_for(started.wait(), 10)
            stopping = asyncio.create_task(s.stop(timeout=10))
            await asyncio.sleep(0.05)
            release.set()  # the running job ends during the stop
            await stopping
            return jobs

    jobs = arun(first())
    assert ran == [0]

    async def second() -> list[work.Job]:
        async with work.Scheduler(store=store_url) as s:
            first_job = await s.get(jobs[0].id)
            assert first_job.status == work.Status.SUCCEEDED
            return await s.wait_many([job.id for job in jobs[1:]], timeout=30)

    done = arun(second())
    assert ran == [0, 1, 2, 3]
    for job in done:  # they never ran before: one attempt each, none lost
        assert [a.status for a in job.attempts] == ["succeeded"]


def test_a_job_with_no_attempts_left_fails_as_lost(
    store_url: str, handlers: Register, arun: Run
) -> None:
    never, started = asyncio.Event(), asyncio.Event()

    async def hang(job: work.Job) -> None:
        started.set()
        await never.wait()

    kind = handlers(hang)
    once = work.Constraints(retry_policy=work.RetryPolicy(max_attempts=1))

    async def first() -> str:
        async with work.Scheduler(store=store_url) as s:
            job = await s.submit(work.Job(kind=kind, tenant_id="acme", constraints=once))
            await asyncio.wait_for(started.wait(), 10)
            await s.stop(timeout=0)
            return job.id

    job_id = arun(first())
    never.set()

    async def second() -> work.Job:
        async with work.Scheduler(store=store_url) as s:
            return await s.wait(job_id, timeout=30)

    job = arun(second())
    assert job.status == work.Status.FAILED
    assert job.error is not None
    assert job.error.type == "EngineLostError"
    assert [a.status for a in job.attempts] == ["failed"]


def test_a_second_scheduler_on_the_store_is_refused_naming_the_holder(
    store_url: str, arun: Run
) -> None:
    async def both() -> None:
        async with work.Scheduler(store=store_url):
            other = work.Scheduler(store=store_url)
            with pytest.raises(work.StoreError, match=r"pid \d+") as refused:
                await other.start()
            assert "password" not in str(refused.value)

    arun(both())


def test_budget_spend_and_runtime_tenants_survive_a_restart(
    store_url: str, handlers: Register, arun: Run
) -> None:
    kind = handlers(lambda job: None)

    async def first() -> None:
        async with work.Scheduler(store=store_url) as s:
            await s.set_tenant(work.Tenant("acme", weight=7.0, quota=work.Quota(max_running=3)))
            job = await s.submit(work.Job(kind=kind, tenant_id="acme"))
            await s.wait(job.id, timeout=10)

    arun(first())

    async def second() -> work.TenantStats:
        async with work.Scheduler(store=store_url) as s:
            return await s.as_tenant("acme").stats()

    stats = arun(second())
    assert stats.weight == 7.0
    assert stats.quota.max_running == 3


def test_finished_jobs_leave_a_durable_store_after_their_ttl(
    store_url: str, handlers: Register, arun: Run
) -> None:
    kind = handlers(lambda job: job.payload["n"])

    async def main() -> None:
        async with work.Scheduler(store=store_url, finished_ttl_s=0.3) as s:
            job = await s.submit(work.Job(kind=kind, tenant_id="acme", payload={"n": 1}))
            assert (await s.wait(job.id, timeout=10)).result == 1
            assert (await s.get(job.id)).status == work.Status.SUCCEEDED  # kept for now
            await asyncio.sleep(0.8)  # the TTL, and a few rounds of pruning
            with pytest.raises(work.NotFoundError):
                await s.get(job.id)
        async with work.Scheduler(store=store_url, finished_max=1) as s:
            jobs = await s.submit_many(
                [work.Job(kind=kind, tenant_id="acme", payload={"n": n}) for n in range(3)]
            )
            await s.wait_many([j.id for j in jobs], timeout=10)
            await s._retention.prune()  # type: ignore[union-attr]
            kept = [j.id for j in await s.list("acme")]
            assert len(kept) == 1

    arun(main())

"""Dependencies, ``run_at`` and deadlines through the engine: ``ctx.upstream``, dependencies
that ended before the submit (read from the store), a restart on a durable store (SQLite and
PostgreSQL) with dependency state to recover, and time driven by a ``FakeClock``."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

import nsai_work as work
from nsai_work.testing import FakeClock

Register = Callable[..., str]
Run = Callable[[Coroutine[Any, Any, Any]], Any]
ONCE = work.RetryPolicy(max_attempts=1)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'work.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def after(*deps: work.Job, **more: Any) -> work.Constraints:
    return work.Constraints(depends_on=tuple(d.id for d in deps), retry_policy=ONCE, **more)


def test_upstream_results_reach_the_handler_and_order_holds(handlers: Register, arun: Run) -> None:
    order: list[str] = []

    async def step(job: work.Job, ctx: work.JobContext) -> dict[str, Any]:
        order.append(job.payload["name"])
        return {"name": job.payload["name"], "seen": dict(ctx.upstream)}

    kind = handlers(step)

    async def main() -> list[work.Job]:
        async with work.Scheduler() as s:
            a = work.Job(kind=kind, tenant_id="acme", payload={"name": "a"})
            b = work.Job(kind=kind, tenant_id="acme", payload={"name": "b"}, constraints=after(a))
            c = work.Job(kind=kind, tenant_id="acme", payload={"name": "c"}, constraints=after(a))
            d = work.Job(
                kind=kind, tenant_id="acme", payload={"name": "d"}, constraints=after(b, c)
            )
            admitted = await s.submit_many([d, c, b, a])
            assert [j.status for j in admitted[:3]] == ["pending"] * 3
            got = await s.get(d.id)
            assert got.waiting_reason == f"dependencies: {b.id}, {c.id}"
            return await s.wait_many([a.id, b.id, c.id, d.id], timeout=10)

    a, b, c, d = arun(main())
    assert [j.status for j in (a, b, c, d)] == ["succeeded"] * 4
    assert order[0] == "a"
    assert order[-1] == "d"
    assert d.result["seen"] == {b.id: b.result, c.id: c.result}
    assert b.result["seen"] == {a.id: {"name": "a", "seen": {}}}


def test_a_dependency_that_ended_before_the_submit_is_read_from_the_store(
    store_url: str, handlers: Register, arun: Run
) -> None:
    async def step(job: work.Job, ctx: work.JobContext) -> Any:
        if job.payload.get("fail"):
            raise work.NonRetryableError("no")
        return {"up": dict(ctx.upstream)}

    kind = handlers(step)

    async def first() -> tuple[work.Job, work.Job]:
        async with work.Scheduler(store=store_url) as s:
            good = await s.submit(work.Job(kind=kind, tenant_id="acme", payload={"n": 1}))
            bad = await s.submit(
                work.Job(kind=kind, tenant_id="acme", payload={"fail": True}, constraints=after())
            )
            return tuple(await s.wait_many([good.id, bad.id], timeout=10))  # type: ignore[return-value]

    good, bad = arun(first())

    async def second() -> list[work.Job]:
        async with work.Scheduler(store=store_url) as s:
            ok = await s.submit(work.Job(kind=kind, tenant_id="acme", constraints=after(good)))
            doomed = await s.submit(work.Job(kind=kind, tenant_id="acme", constraints=after(bad)))
            with pytest.raises(work.ValidationError, match="has no job with that id") as info:
                await s.submit(work.Job(kind=kind, tenant_id="other", constraints=after(good)))
            assert info.value.path == "$.constraints.depends_on[0]"
            return await s.wait_many([ok.id, doomed.id], timeout=10)

    ok, doomed = arun(second())
    assert ok.status == "succeeded"
    assert ok.result == {"up": {good.id: {"up": {}}}}
    assert doomed.status == "canceled"
    assert doomed.cancel_reason == f"dependency_failed: {bad.id} (failed)"


def test_a_restart_recovers_dependency_state(store_url: str, handlers: Register, arun: Run) -> None:
    """A dependency running when the scheduler died is lost at the restart: one with no attempt
    left fails, and its dependents are canceled transitively; one with attempts left runs again
    and then releases its dependents."""
    never, started = asyncio.Event(), asyncio.Event()
    first_runs = 0

    async def step(job: work.Job, ctx: work.JobContext) -> Any:
        nonlocal first_runs
        if job.payload.get("hang") and job.attempt == 1:
            first_runs += 1
            if first_runs == 2:
                started.set()
            await never.wait()
        return {"name": job.payload["name"], "up": sorted(ctx.upstream)}

    kind = handlers(step)
    retry = work.RetryPolicy(max_attempts=2, base_delay_ms=1, max_delay_ms=1)

    def job(name: str, **more: Any) -> work.Job:
        return work.Job(
            kind=kind, tenant_id="acme", payload={"name": name, **more.pop("p", {})}, **more
        )

    lost = job("lost", p={"hang": True}, constraints=work.Constraints(retry_policy=ONCE))
    child = job("child", constraints=after(lost))
    grandchild = job("grandchild", constraints=after(child))
    survivor = job("survivor", constraints=after(lost, allow_failure=True))
    again = job("again", p={"hang": True}, constraints=work.Constraints(retry_policy=retry))
    waits = job("waits", constraints=after(again))
    everything = [lost, child, grandchild, survivor, again, waits]

    async def first() -> None:
        async with work.Scheduler(store=store_url) as s:
            await s.submit_many(everything)
            await asyncio.wait_for(started.wait(), 10)
            assert (await s.get(waits.id)).status == "pending"
            await s.stop(timeout=0)  # a durable store keeps them for the next start

    arun(first())
    never.set()

    async def second() -> list[work.Job]:
        async with work.Scheduler(store=store_url) as s:
            return await s.wait_many([j.id for j in everything], timeout=30)

    ends = {j.payload["name"]: j for j in arun(second())}
    assert ends["lost"].status == "failed"
    assert ends["lost"].error is not None
    assert ends["lost"].error.type == "EngineLostError"
    assert ends["child"].cancel_reason == f"dependency_failed: {lost.id} (failed)"
    assert ends["grandchild"].cancel_reason == f"dependency_failed: {child.id} (canceled)"
    assert ends["survivor"].status == "succeeded"
    assert ends["again"].status == "succeeded"
    assert ends["waits"].status == "succeeded"
    assert ends["waits"].result == {"name": "waits", "up": [again.id]}


def test_run_at_and_deadline_with_a_fake_clock(handlers: Register, arun: Run) -> None:
    clock = FakeClock(start=100.0)
    ran: list[str] = []
    release = asyncio.Event()

    async def step(job: work.Job) -> str:
        ran.append(job.payload["name"])
        if job.payload["name"] == "blocker":
            await release.wait()
        return str(job.payload["name"])

    kind = handlers(step)
    wall = dt.datetime.fromtimestamp(clock.time(), dt.UTC)

    def job(name: str, **constraints: Any) -> work.Job:
        return work.Job(
            kind=kind,
            tenant_id="acme",
            payload={"name": name},
            constraints=work.Constraints(**constraints),
        )

    async def main() -> list[work.Job]:
        one_slot = {"local": [work.Pool(name="local:async", slots=1)]}
        async with work.Scheduler(clock=clock, pools=one_slot) as s:
            await s.submit(job("blocker"))
            later = await s.submit(job("later", run_at=wall + dt.timedelta(seconds=30)))
            soon = await s.submit(job("soon", schedule_in_s=10))
            missed = await s.submit(job("missed", deadline=wall + dt.timedelta(seconds=15)))
            assert soon.constraints.run_at == wall + dt.timedelta(seconds=10)
            assert soon.constraints.schedule_in_s is None
            assert (await s.get(later.id)).waiting_reason == "scheduled"
            clock.advance(9.9)
            await asyncio.sleep(0.05)
            assert (await s.get(soon.id)).status == "pending"
            clock.advance(0.1)
            await asyncio.sleep(0.05)
            assert (await s.get(soon.id)).status == "queued"  # (behind the blocker)
            clock.advance(5)  # the deadline passes before "missed" could start
            missed = await s.wait(missed.id, timeout=5)
            release.set()
            soon = await s.wait(soon.id, timeout=5)
            assert ran == ["blocker", "soon"]
            clock.advance(14.9)
            await asyncio.sleep(0.05)
            assert ran == ["blocker", "soon"]
            clock.advance(0.1)
            return [await s.wait(later.id, timeout=5), soon, missed]

    later, soon, missed = arun(main())
    assert later.status == "succeeded"
    assert soon.status == "succeeded"
    assert later.started_at is not None
    assert soon.started_at is not None
    assert later.started_at >= wall + dt.timedelta(seconds=30)
    assert soon.started_at >= wall + dt.timedelta(seconds=15)
    assert missed.status == "canceled"
    assert missed.cancel_reason == "deadline_exceeded"
    assert missed.attempts == ()

"""Unique jobs (``constraints.unique_key``): a duplicate submit returns the job that holds the
key, marked ``duplicate``, and creates nothing; 1,000 concurrent duplicate submits make one job
on every store, and so do clients of one store racing each other and the scheduler; the key
counts in ``unique_states`` only, for ``unique_period_s`` only, per tenant."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

import nsai_work as work
from nsai_work.stores import ListQuery
from nsai_work.telemetry.events import SCHEDULER_ADMIT
from nsai_work.testing import FakeClock, capture_events

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/work.db"
    return str(request.getfixturevalue("postgres_url"))


def unique(kind: str, key: str = "nightly", tenant_id: str = "acme", **c: Any) -> work.Job:
    return work.Job(
        kind=kind, tenant_id=tenant_id, constraints=work.Constraints(unique_key=key, **c)
    )


async def _all_jobs(s: Any, tenant_id: str) -> list[work.Job]:
    page = await s.list(tenant_id, limit=1000)
    return list(page)


def test_1000_concurrent_duplicate_submits_make_one_job(
    url: str, handlers: Callable[..., str], arun: Run[Any]
) -> None:
    gate = asyncio.Event()

    async def held(job: work.Job) -> str:
        await gate.wait()
        return "done"

    kind = handlers(held)

    async def run() -> None:
        async with work.Scheduler(store=url) as s:
            with capture_events([SCHEDULER_ADMIT]) as events:
                got = await asyncio.gather(*(s.submit(unique(kind)) for _ in range(1000)))
            ids = {job.id for job in got}
            assert len(ids) == 1
            assert sum(not job.duplicate for job in got) == 1
            assert sum(job.duplicate for job in got) == 999
            assert [j.id for j in await _all_jobs(s, "acme")] == list(ids)
            decisions = [e.metadata["decision"] for e in events]
            assert decisions.count("duplicate") == 999
            assert decisions.count("accept") == 1
            assert {e.metadata["existing_id"] for e in events if "existing_id" in e.metadata} == ids
            gate.set()
            done = await s.wait(ids.pop(), timeout=20)
            assert done.result == "done"
            assert done.duplicate is False

    arun(run())


def test_a_batch_with_one_key_twice_admits_the_first(
    url: str, handlers: Callable[..., str], arun: Run[Any]
) -> None:
    kind = handlers(lambda job: job.payload["n"])

    async def run() -> None:
        async with work.Scheduler(store=url) as s:
            first = unique(kind)
            second = work.Job(
                kind=kind, tenant_id="acme", payload={"n": 2}, constraints=first.constraints
            )
            other = unique(kind, key="other")
            got = await s.submit_many([first, second, other])
            assert [j.id for j in got] == [first.id, first.id, other.id]
            assert [j.duplicate for j in got] == [False, True, False]

    arun(run())


def test_the_key_counts_in_its_states_and_period_per_tenant(
    url: str, handlers: Callable[..., str], arun: Run[Any]
) -> None:
    kind = handlers(lambda job: "ok")
    clock = FakeClock()

    async def run() -> None:
        async with work.Scheduler(store=url, clock=clock) as s:
            a = await s.submit(unique(kind))
            await s.wait(a.id, timeout=10)
            # default states: pending, queued, running; a finished job holds nothing
            b = await s.submit(unique(kind))
            assert (b.id != a.id, b.duplicate) == (True, False)
            await s.wait(b.id, timeout=10)
            # succeeded counts, for 60 s from the submit
            states = (work.Status.SUCCEEDED, work.Status.PENDING, work.Status.QUEUED)
            c = await s.submit(unique(kind, "daily", unique_states=states, unique_period_s=60))
            await s.wait(c.id, timeout=10)
            again = await s.submit(unique(kind, "daily", unique_states=states))
            assert (again.id, again.duplicate, again.status) == (
                c.id,
                True,
                work.Status.SUCCEEDED,
            )
            other_tenant = await s.submit(unique(kind, "daily", tenant_id="globex"))
            assert other_tenant.duplicate is False
            clock.advance(60)
            later = await s.submit(unique(kind, "daily", unique_states=states))
            assert (later.id != c.id, later.duplicate) == (True, False)
            keys = [j.constraints.unique_key for j in await _all_jobs(s, "acme")]
            assert sorted(keys) == ["daily", "daily", "nightly", "nightly"]

    arun(run())


def test_a_rejected_submit_frees_its_key(
    url: str, handlers: Callable[..., str], arun: Run[Any]
) -> None:
    kind = handlers(lambda job: "ok")

    async def run() -> None:
        async with work.Scheduler(store=url) as s:
            await s.set_tenant(work.Tenant(id="acme", quota=work.Quota(max_queued=0)))
            with pytest.raises(work.AdmissionError):
                await s.submit(unique(kind))
            await s.set_tenant(work.Tenant(id="acme"))
            job = await s.submit(unique(kind))
            assert job.duplicate is False
            assert (await s.wait(job.id, timeout=10)).result == "ok"

    arun(run())


@pytest.mark.parametrize("shared", ["sqlite", "postgres"])
def test_clients_racing_the_scheduler_make_one_job(
    shared: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    handlers: Callable[..., str],
    arun: Run[Any],
) -> None:
    store = (
        f"sqlite://{tmp_path}/work.db"
        if shared == "sqlite"
        else str(request.getfixturevalue("postgres_url"))
    )
    gate = asyncio.Event()

    async def held(job: work.Job) -> str:
        await gate.wait()
        return "done"

    kind = handlers(held)

    async def run() -> None:
        async with work.Scheduler(store=store) as s:
            clients = [work.Client(store=store) for _ in range(3)]
            for client in clients:
                await client.open()
            try:
                submits = [s.submit(unique(kind)) for _ in range(100)] + [
                    c.submit(unique(kind)) for c in clients for _ in range(100)
                ]
                got = await asyncio.gather(*submits)
                ids = {job.id for job in got}
                assert len(ids) == 1
                assert sum(not job.duplicate for job in got) == 1
                page = await clients[0].list("acme", limit=1000)
                assert [j.id for j in page] == list(ids)
                gate.set()
                assert (await clients[1].wait(ids.pop(), timeout=20)).result == "done"
            finally:
                for client in clients:
                    await client.close()

    arun(run())


def test_listing_sees_one_job(url: str, handlers: Callable[..., str], arun: Run[Any]) -> None:
    kind = handlers(lambda job: "ok")

    async def run() -> None:
        async with work.Scheduler(store=url) as s:
            await s.submit_many([unique(kind, key=f"k{n % 3}") for n in range(9)])
            page = await s.list("acme", limit=100)
            assert sorted(j.constraints.unique_key or "" for j in page) == ["k0", "k1", "k2"]
            assert isinstance(ListQuery(tenant_id="acme"), ListQuery)

    arun(run())

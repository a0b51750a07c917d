"""The engine on a PostgreSQL store: jobs submitted to a ``Scheduler(store="postgresql://...")``
run, and their records are in the database when it stops (the engine's group commit through
``PostgresStore.write``); through a server restart, submits wait for the store and none is
lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

import nsai_work as work
from nsai_work.stores import ListQuery
from nsai_work.stores.postgres import PostgresStore
from tests._postgres import PostgresCluster

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]
Register = Callable[..., str]
TENANT = "pg-engine"


def test_a_scheduler_on_postgres_runs_jobs_and_keeps_their_records(
    postgres_url: str, handlers: Register, arun: Run[Any]
) -> None:
    async def double(job: work.Job) -> dict[str, int]:
        return {"twice": job.payload["n"] * 2}

    kind = handlers(double)

    async def run() -> list[work.Job]:
        async with work.Scheduler(store=postgres_url) as scheduler:
            jobs = await scheduler.submit_many(
                [work.Job(kind=kind, tenant_id=TENANT, payload={"n": n}) for n in range(200)]
            )
            done = [await scheduler.wait(job.id, timeout=20) for job in jobs]
            page = await scheduler.list(TENANT, limit=10)
            assert [j.id for j in page] == [j.id for j in reversed(jobs)][:10]
            return done

    done = arun(run())
    assert [j.status for j in done] == [work.Status.SUCCEEDED] * 200
    assert [j.result for j in done] == [{"twice": n * 2} for n in range(200)]

    async def read_back() -> None:
        store = PostgresStore(postgres_url)
        await store.open("client")
        stored = await store.get_many([(TENANT, j.id) for j in done])
        assert stored == done  # every terminal record, as the scheduler last saw it
        page, _ = await store.list(ListQuery(tenant_id=TENANT, status=work.Status.SUCCEEDED))
        assert len(page) == 100
        assert (await store.lease()) is None  # the scheduler let the lease go
        await store.close()

    arun(read_back())


def test_submits_wait_through_a_restart_and_none_is_lost(
    postgres_cluster: PostgresCluster,
    postgres_url: str,
    handlers: Register,
    arun: Run[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def echo(job: work.Job) -> int:
        return int(job.payload["n"])

    kind = handlers(echo)

    async def run() -> list[work.Job]:
        async with work.Scheduler(store=postgres_url, store_timeout_s=60) as scheduler:
            loop = asyncio.get_running_loop()
            restart = loop.run_in_executor(None, postgres_cluster.restart)
            submitted: list[work.Job] = []
            while not restart.done() or len(submitted) < 300:  # and on after it
                job = work.Job(kind=kind, tenant_id=TENANT, payload={"n": len(submitted)})
                submitted.append(await scheduler.submit(job))
                await asyncio.sleep(0.001)
            await restart
            return [await scheduler.wait(job.id, timeout=30) for job in submitted]

    with caplog.at_level(logging.WARNING, logger="nsai_work.engine"):
        done = arun(run())
    assert [j.result for j in done] == list(range(len(done)))
    assert "commit failed" in caplog.text  # the restart met the engine's writes

    async def read_back() -> None:
        store = PostgresStore(postgres_url)
        await store.open("client")
        assert await store.get_many([(TENANT, j.id) for j in done]) == done
        await store.close()

    arun(read_back())

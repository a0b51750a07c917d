"""A submit the store refuses after the core admitted it (a client committed the same id
between the submit's check and its commit) fails with ``ConflictError``; the job it made ends
in the engine without a trace in the store, and without telling anyone waiting for the id
(their job is the store's)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import pytest

import nsai_work as work
from nsai_work.stores import JobKey, WriteBatch
from nsai_work.stores.sqlite import SqliteStore
from nsai_work.telemetry import Telemetry
from nsai_work.telemetry.events import JOB_CANCELED, JOB_COMPLETED, JOB_FAILED

Run = Callable[[Coroutine[Any, Any, Any]], Any]
Register = Callable[..., str]


class RacyStore(SqliteStore):
    """Its first ``get_many`` sees nothing: as if the rows it asks about were committed by a
    client right after it answered. Its first commit of new jobs takes 100 ms, long enough for
    the refused job to run and end meanwhile."""

    blind = True
    slow = True

    async def write(self, batch: WriteBatch) -> None:
        if self.slow and batch.inserts:
            self.slow = False
            await asyncio.sleep(0.1)
        await super().write(batch)

    async def get_many(self, keys: Sequence[JobKey]) -> list[work.Job | None]:
        found = await super().get_many(keys)
        if self.blind:
            self.blind = False
            return [None] * len(found)
        return found


def test_a_refused_admission_fails_its_submit_and_leaves_the_stored_job_alone(
    arun: Run, handlers: Register, tmp_path: Path
) -> None:
    path = tmp_path / "work.db"
    ran: list[str] = []
    kind = handlers(lambda job: ran.append(job.payload["who"]) or job.payload["who"])

    async def first() -> work.Job:
        async with work.Scheduler(store=f"sqlite://{path}") as s:
            job = await s.submit(
                work.Job(kind=kind, tenant_id="acme", id="dup", payload={"who": "original"})
            )
            return await s.wait(job.id, timeout=10)

    original = arun(first())
    ended: list[str] = []
    bus = Telemetry()
    bus.attach_many(
        "ends",
        [JOB_COMPLETED, JOB_FAILED, JOB_CANCELED],
        lambda event, measurements, metadata, config: ended.append(metadata["job_id"]),
    )

    async def second() -> tuple[work.Job, work.Job, work.Job]:
        store = RacyStore(f"sqlite://{path}")
        async with work.Scheduler(store=store, telemetry=bus) as s:
            with pytest.raises(work.ConflictError, match="duplicate job id 'dup'"):
                await s.submit(
                    work.Job(kind=kind, tenant_id="acme", id="dup", payload={"who": "impostor"})
                )
            await s.wait_idle(timeout=10)
            after = await s.wait("dup", timeout=10)
            other = await s.submit(work.Job(kind=kind, tenant_id="acme", payload={"who": "next"}))
            done = await s.wait(other.id, timeout=10)
            return after, done, await s.get("dup")

    after, done, again = arun(second())
    assert original.status is work.Status.SUCCEEDED
    assert original.result == "original"
    assert after == original == again  # the store's job, untouched
    assert done.status is work.Status.SUCCEEDED
    assert done.result == "next"
    assert ran == ["original", "impostor", "next"]  # it ran before its commit was refused
    assert ended == [done.id]  # nothing told of the impostor's end

    async def third() -> work.Job:
        async with work.Scheduler(store=f"sqlite://{path}") as s:
            return await s.get("dup")

    assert arun(third()) == original  # nor stored

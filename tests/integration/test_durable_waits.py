"""A wait on a durable store looks its jobs up with a read that awaits the store; a job that
finishes (and is committed) during that read was told before the wait's watcher existed. The
wait must still see it end, not hang (the crash storm's final run once waited for ever)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import pytest

import nsai_work as work
from nsai_work.stores.sqlite import SqliteStore

Run = Callable[[Coroutine[Any, Any, Any]], Any]
Register = Callable[..., str]


class SlowReads(SqliteStore):
    """Its ``find_many`` answers what it read, 200 ms later: the jobs it saw running finish
    (and are committed) meanwhile."""

    async def find_many(self, job_ids: Sequence[str]) -> dict[str, list[work.Job]]:
        found = await super().find_many(job_ids)
        await asyncio.sleep(0.2)
        return found


@pytest.mark.parametrize("how", ["wait", "wait_many", "as_completed"])
def test_a_job_that_ends_while_the_wait_reads_it_is_seen_ending(
    arun: Run, handlers: Register, tmp_path: Path, how: str
) -> None:
    async def step(job: work.Job) -> int:
        await asyncio.sleep(0.05)
        return int(job.payload["n"])

    kind = handlers(step)

    async def main() -> list[work.Job]:
        async with work.Scheduler(store=SlowReads(f"sqlite://{tmp_path / 'w.db'}")) as s:
            jobs = await s.submit_many(
                [work.Job(kind=kind, tenant_id="acme", payload={"n": n}) for n in range(3)]
            )
            ids = [job.id for job in jobs]
            if how == "wait":
                return [await s.wait(ids[0], timeout=5)]
            if how == "wait_many":
                return await s.wait_many(ids, timeout=5)
            return [job async for job in s.as_completed(ids, timeout=5)]

    done = arun(main())
    assert all(job.status is work.Status.SUCCEEDED for job in done)
    assert sorted(job.result for job in done) == ([0] if how == "wait" else [0, 1, 2])

"""The channel a backend uses to tell the engine its pools or its availability changed
(``bind(events)``: ``events.pools_changed``, ``events.availability_changed``), end to end."""

from __future__ import annotations

import asyncio
import threading

import pytest

import nsai_work as work
from nsai_work import Pool

SMALL = Pool(name="small", slots=1, cpu=1.0)


class ElasticBackend:
    """Jobs of kind "elastic" that run until released; pools come and go on request."""

    name = "elastic"

    def __init__(self) -> None:
        self.events: work.BackendEvents | None = None
        self.release = asyncio.Event()

    def bind(self, events: work.BackendEvents) -> None:
        self.events = events

    def pools(self) -> list[Pool]:
        return [SMALL]

    def supports(self, job: work.Job) -> bool:
        return job.kind == "elastic"

    async def execute(self, job: work.Job, ctx: work.JobContext) -> str:
        await self.release.wait()
        return "done"

    def cancel(self, job_id: str) -> None:
        pass


def _from_thread(call: object) -> None:
    thread = threading.Thread(target=call)  # type: ignore[arg-type]
    thread.start()
    thread.join()


async def _until(predicate: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_pools_come_and_go_through_the_channel() -> None:
    asyncio.run(_pools_come_and_go())


async def _pools_come_and_go() -> None:
    backend = ElasticBackend()
    async with work.Scheduler(backends=[backend]) as s:
        assert backend.events is not None
        assert backend.events.backend == "elastic"
        job = lambda cpu: work.Job(  # noqa: E731
            kind="elastic", tenant_id="acme", resources=work.Resources(cpu=cpu)
        )
        # a job no pool could hold is refused; one that waits for capacity waits
        with pytest.raises(work.UnschedulableError):
            await s.submit(job(4.0))
        first = await s.submit(job(1.0))
        second = await s.submit(job(1.0))
        await _until(lambda: s._core.waiting_reason("acme", second.id) is not None)

        # a bigger pool comes (from another thread): the waiting job starts there
        big = Pool(name="big", slots=2, cpu=4.0)
        _from_thread(lambda: backend.events.pools_changed([SMALL, big]))
        await _until(lambda: s._core.get("acme", second.id).status == "running")
        assert (await s.get(second.id)).pool == "big"
        assert set((await s.stats()).pools) == {"small", "big"}
        big_job = await s.submit(job(4.0))  # admitted now

        # "big" goes: its runs are lost (retried per policy), its queued jobs wait saying why
        backend.events.pools_changed([SMALL], grace_s=30.0)
        await _until(lambda: s._core.waiting_reason("acme", big_job.id) == "pool_removed:big")
        lost = await s.get(second.id)
        assert lost.attempts[0].error is not None
        assert lost.attempts[0].error.type == "BackendLostError"
        assert set((await s.stats()).pools) == {"small"}

        # the backend goes away and comes back
        backend.events.availability_changed(False, "service unreachable")
        await _until(lambda: s._core.get("acme", first.id).status != "running")
        assert (await s.stats()).pools["small"].available is False
        backend.events.availability_changed(True)
        backend.release.set()
        done = await s.wait(first.id, timeout=10)
        assert done.status == "succeeded"
        assert done.attempts[0].error is not None
        assert "service unreachable" in done.attempts[0].error.message
        await s.cancel(big_job.id)
        await s.wait_idle(timeout=10)


def test_bad_pools_are_refused_naming_the_field() -> None:
    asyncio.run(_bad_pools())


async def _bad_pools() -> None:
    backend = ElasticBackend()
    async with work.Scheduler(backends=[backend]) as s:
        assert s.running
        assert backend.events is not None
        with pytest.raises(work.ValidationError, match=r"\$\.grace_s"):
            backend.events.pools_changed([Pool(name="small")], grace_s=-1.0)
        with pytest.raises(work.ValidationError, match="unique"):
            backend.events.pools_changed([Pool(name="a"), Pool(name="a")])
        with pytest.raises(work.ValidationError, match=r"\$\.pools\[0\]"):
            backend.events.pools_changed([Pool(name="bad name!")])

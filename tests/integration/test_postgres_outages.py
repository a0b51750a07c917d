"""PostgresStore through outages: the server restarted (fast, and as a crash) in the middle of a
stream of writes, and a COMMIT whose answer is lost (a TCP proxy that cuts the connection right
after it). Writes fail while the server is away and succeed after; nothing acknowledged is
lost; no batch is ever half written; a retried batch whose COMMIT did happen is not refused as
a duplicate of itself."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

import psycopg
import pytest
from msgspec.structs import replace

import nsai_work as work
from nsai_work.stores import WriteBatch
from nsai_work.stores.postgres import PostgresStore
from tests._postgres import HOST, PostgresCluster

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]
JOBS_PER_BATCH = 20


def job(**fields: Any) -> work.Job:
    return work.Job(kind="pg.outage", tenant_id="acme", **fields)


async def write_until_done(store: PostgresStore, batch: WriteBatch) -> int:
    """Write like the engine's writer: keep the batch and retry while the store fails; returns
    how many attempts failed."""
    failures = 0
    while True:
        try:
            await store.write(batch)
            return failures
        except work.StoreError:
            failures += 1
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_restart_in_the_middle_of_writes(
    postgres_cluster: PostgresCluster,
    postgres_url: str,
    arun: Run[Any],
    mode: Literal["fast", "immediate"],
) -> None:
    """Batches of inserts plus updates of the previous batch, written in a loop while the
    server restarts in a thread."""

    async def scenario() -> tuple[int, int]:
        store = PostgresStore(postgres_url, connect_timeout=2)
        await store.open()
        loop = asyncio.get_running_loop()
        restart: asyncio.Future[None] | None = None
        previous: list[work.Job] = []
        failures, number = 0, 0
        while restart is None or not restart.done() or number < 40:
            new = [job(payload={"batch": number, "i": i}) for i in range(JOBS_PER_BATCH)]
            running = [replace(j, status=work.Status.RUNNING) for j in previous]
            batch = WriteBatch(inserts=new, updates=running, state=str(number).encode())
            failures += await write_until_done(store, batch)
            previous = new
            number += 1
            if number == 10:
                restart = loop.run_in_executor(None, lambda: postgres_cluster.restart(mode=mode))
        assert restart is not None
        await restart
        await store.close()
        return failures, number

    failures, batches = arun(scenario())
    assert failures > 0, "no write failed: the restart happened outside the stream of writes"

    async def check() -> None:
        store = PostgresStore(postgres_url)
        await store.open()
        recovered = await store.load()
        assert recovered.state == str(batches - 1).encode()
        by_batch: dict[int, list[work.Job]] = {}
        for one in recovered.jobs:
            by_batch.setdefault(one.payload["batch"], []).append(one)
        assert sorted(by_batch) == list(range(batches))  # nothing acknowledged is lost
        for number, jobs in by_batch.items():
            assert len(jobs) == JOBS_PER_BATCH  # and no batch is half written
            want = work.Status.PENDING if number == batches - 1 else work.Status.RUNNING
            assert {j.status for j in jobs} == {want}
            assert [j.payload["i"] for j in jobs] == list(range(JOBS_PER_BATCH))  # in order
        await store.close()

    arun(check())


def test_reads_clients_and_wake_ups_recover_after_a_restart(
    postgres_cluster: PostgresCluster, postgres_url: str, arun: Run[Any]
) -> None:
    async def scenario() -> None:
        scheduler = PostgresStore(postgres_url, min_connections=2)
        client = PostgresStore(postgres_url, min_connections=2)
        await scheduler.open()
        await client.open("client")
        before = job()
        await scheduler.write(WriteBatch(inserts=[before]))
        await asyncio.get_running_loop().run_in_executor(None, postgres_cluster.restart)
        # Pooled connections the server dropped are replaced: the first read succeeds.
        assert await client.get_many([("acme", before.id)]) == [before]
        assert await scheduler.owners(before.id) == ["acme"]
        # The listener is replaced too; the wait says True (something may have changed).
        assert await scheduler.wait_for_change(10.0)
        await scheduler.inbox()
        waiter = asyncio.ensure_future(scheduler.wait_for_change(10.0))
        after = job()
        await client.submit([after])
        assert await waiter
        assert (await scheduler.inbox()).jobs == [after]
        await client.close()
        await scheduler.close()

    arun(scenario())


def test_a_wait_during_an_outage_returns_at_its_timeout(arun: Run[Any]) -> None:
    with PostgresCluster(durable=False) as cluster:
        url = cluster.create_database()

        async def scenario() -> None:
            store = PostgresStore(url, connect_timeout=1)
            await store.open()
            await asyncio.get_running_loop().run_in_executor(None, cluster.stop)
            assert not await store.wait_for_change(0.3)
            with pytest.raises(work.StoreError, match=r"127\.0\.0\.1"):
                await store.write(WriteBatch(inserts=[job()]))
            with pytest.raises(work.StoreError):
                await store.get_many([("acme", "x")])
            await store.close()

        arun(scenario())


# ---- a COMMIT whose answer is lost --------------------------------------------------------------


class CuttingProxy:
    """A TCP proxy to the server that, when armed, cuts the client's connection at its next
    COMMIT: after the server has committed and answered (the answer is swallowed), or without
    passing the COMMIT on (the server rolls the transaction back)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.armed: Literal["forward", "drop"] | None = None
        self.cuts = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        sreader, swriter = await asyncio.open_connection(HOST, self.target)
        swallow = False  # the COMMIT went on: drop the server's answer, then cut

        async def up() -> None:
            nonlocal swallow
            while data := await creader.read(65536):
                if self.armed and b"COMMIT" in data:
                    mode, self.armed = self.armed, None
                    self.cuts += 1
                    if mode == "drop":
                        return
                    swallow = True
                swriter.write(data)
                await swriter.drain()

        async def down() -> None:
            while data := await sreader.read(65536):
                if swallow:
                    if b"Z\x00\x00\x00\x05" in data:  # ReadyForQuery: the COMMIT is done
                        return
                    continue
                cwriter.write(data)
                await cwriter.drain()

        try:
            tasks = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            cwriter.close()
            swriter.close()
            for writer in (cwriter, swriter):
                with contextlib.suppress(Exception):
                    await writer.wait_closed()


@pytest.mark.parametrize("commit", ["forward", "drop"])
def test_a_commit_whose_answer_is_lost(
    postgres_cluster: PostgresCluster,
    postgres_url: str,
    arun: Run[Any],
    commit: Literal["forward", "drop"],
) -> None:
    """The write raises (its outcome is unknown); the engine sends the batch again, with newer
    snapshots of its jobs; it is written once, whether the lost COMMIT happened or not."""

    async def scenario() -> None:
        proxy = CuttingProxy(postgres_cluster.port)
        await proxy.start()
        url = postgres_url.replace(f":{postgres_cluster.port}/", f":{proxy.port}/")
        store = PostgresStore(url)
        await store.open()
        first = job()
        await store.write(WriteBatch(inserts=[first]))
        new = [job(payload={"i": i}) for i in range(3)]
        proxy.armed = commit
        with pytest.raises(work.StoreError, match="failed"):
            await store.write(
                WriteBatch(inserts=new, updates=[replace(first, status=work.Status.QUEUED)])
            )
        assert proxy.cuts == 1
        with psycopg.connect(postgres_url) as conn:  # what the server holds now
            count = conn.execute("SELECT count(*) FROM jobs").fetchone()
        assert count == ((4,) if commit == "forward" else (1,))
        newer = [replace(new[0], status=work.Status.RUNNING), *new[1:]]
        await store.write(WriteBatch(inserts=newer, updates=[first], state=b"after"))
        keys = [("acme", j.id) for j in [first, *newer]]
        assert await store.get_many(keys) == [first, *newer]
        recovered = await store.load()
        assert recovered.jobs == [first, *newer]
        assert recovered.state == b"after"
        await store.close()
        await proxy.close()

    arun(scenario())


@pytest.mark.parametrize("delay_s", [0.0, 0.005, 0.02])
def test_a_write_canceled_midway_is_all_or_nothing(
    postgres_url: str, arun: Run[Any], delay_s: float
) -> None:
    async def scenario() -> None:
        store = PostgresStore(postgres_url)
        await store.open()
        big = [job(payload={"i": i}) for i in range(5000)]
        task = asyncio.ensure_future(store.write(WriteBatch(inserts=big, state=b"big")))
        await asyncio.sleep(delay_s)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with psycopg.connect(postgres_url) as conn:
            count = conn.execute("SELECT count(*) FROM jobs").fetchone()
        assert count in ((0,), (5000,))
        small = job()
        await store.write(WriteBatch(inserts=[small], state=b"small"))
        assert await store.get_many([("acme", small.id)]) == [small]
        assert (await store.load()).state == b"small"
        await store.close()

    arun(scenario())


@pytest.mark.parametrize("commit", ["forward", "drop"])
def test_a_client_submit_whose_commit_answer_is_lost(
    postgres_cluster: PostgresCluster,
    postgres_url: str,
    arun: Run[Any],
    commit: Literal["forward", "drop"],
) -> None:
    """The client reads its jobs back: all there as sent, the submit succeeded (and the
    scheduler is woken again); none there, it raises and a retry goes through."""

    async def scenario() -> None:
        proxy = CuttingProxy(postgres_cluster.port)
        await proxy.start()
        scheduler = PostgresStore(postgres_url)
        await scheduler.open()
        url = postgres_url.replace(f":{postgres_cluster.port}/", f":{proxy.port}/")
        client = PostgresStore(url)
        await client.open("client")
        jobs = [job(payload={"i": i}) for i in range(3)]
        await scheduler.inbox()
        proxy.armed = commit
        if commit == "forward":
            await client.submit(jobs)
            assert await scheduler.wait_for_change(5.0)
        else:
            with pytest.raises(work.StoreError, match="may or may not"):
                await client.submit(jobs)
            assert (await scheduler.inbox()).jobs == []
            await client.submit(jobs)
        assert proxy.cuts == 1
        assert (await scheduler.inbox()).jobs == jobs
        await client.close()
        await scheduler.close()
        await proxy.close()

    arun(scenario())

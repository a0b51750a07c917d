"""The SQLite store across processes and objects: a scheduler killed with SIGKILL in the middle
of its batches loses no committed batch and leaves no partial one; a second scheduler is
refused with the holder's name; processes opening a new file at once migrate it once; four
clients and a scheduler exchange jobs through the inbox."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from msgspec.structs import replace

import nsai_work as work
from nsai_work.stores import ListQuery, WriteBatch
from nsai_work.stores._sqlite_schema import migrations
from nsai_work.stores.sqlite import SqliteStore

from ._sqlite_child import CRASH_TENANT

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the process tests run on Linux"
)


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration._sqlite_child", *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def close_pipes(process: subprocess.Popen[str]) -> None:
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


async def everything(store: SqliteStore, tenant: str) -> list[work.Job]:
    jobs: list[work.Job] = []
    cursor = None
    while True:
        page, cursor = await store.list(ListQuery(tenant_id=tenant, limit=1000, cursor=cursor))
        jobs += page
        if cursor is None:
            return jobs


# ---- crash safety -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_scheduler_loses_no_committed_batch_and_leaves_no_partial_one(
    tmp_path: Path, arun: Run[Any]
) -> None:
    url = f"sqlite://{tmp_path}/work.db"
    size = 400
    rng = random.Random(7)
    acknowledged = 0
    for _round in range(6):
        writer = spawn("batches", url, str(size))
        assert writer.stdout is not None
        want = acknowledged + rng.randint(1, 4)
        while acknowledged < want:  # wait for a few commits, then kill at a random moment
            line = writer.stdout.readline()
            assert line, writer.stderr.read() if writer.stderr else "the writer died"
            acknowledged = int(line)
        time.sleep(rng.uniform(0, 0.03))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        for line in writer.stdout.read().split():
            acknowledged = max(acknowledged, int(line))
        close_pipes(writer)
        acknowledged = arun(_verify_batches(url, size, acknowledged))


async def _verify_batches(url: str, size: int, acknowledged: int) -> int:
    """Every acknowledged batch is there whole, none is there in part; returns the last."""
    store = SqliteStore(url)
    await store.open()  # the dead writer's lock is free
    jobs = await everything(store, CRASH_TENANT)
    per_batch = Counter(job.payload["batch"] for job in jobs)
    last = max(per_batch)
    assert last >= acknowledged, f"batch {acknowledged} was acknowledged and is gone"
    assert last <= acknowledged + 1  # the one in flight may have committed before the kill
    assert per_batch == dict.fromkeys(range(1, last + 1), size), "a batch is there in part"
    for job in jobs:  # each batch finished the one before it, in the same transaction
        want = work.Status.PENDING if job.payload["batch"] == last else work.Status.SUCCEEDED
        assert job.status is want, (job.payload, job.status, last)
    recovered = await store.load()
    assert recovered.state == str(last).encode()
    assert {job.payload["batch"] for job in recovered.jobs} == {last}
    await store.close()
    return last


# ---- one scheduler ------------------------------------------------------------------------------


def test_a_second_scheduler_process_is_refused_with_the_holders_name(
    tmp_path: Path, arun: Run[Any]
) -> None:
    url = f"sqlite://{tmp_path}/work.db"
    holder = spawn("hold", url)
    assert holder.stdout is not None
    assert holder.stdin is not None
    held = json.loads(holder.stdout.readline())
    assert held["pid"] == holder.pid

    async def while_held() -> None:
        second = SqliteStore(url)
        with pytest.raises(work.StoreError) as caught:
            await second.open("scheduler")
        await second.close()
        message = str(caught.value)
        assert f"another scheduler holds the SQLite store {tmp_path}/work.db" in message
        assert f"pid {holder.pid} on host {socket.gethostname()}, since 20" in message
        assert "open this store as a client" in message
        client = SqliteStore(url)
        await client.open("client")
        lease = await client.lease()
        assert lease is not None
        assert (lease.pid, lease.fence) == (holder.pid, held["fence"])
        await client.submit([work.Job(kind="k", tenant_id="t")])  # clients work meanwhile
        await client.close()

    arun(while_held())
    holder.stdin.close()  # the holder closes its store and exits
    assert holder.wait(timeout=30) == 0
    close_pipes(holder)

    async def after() -> None:
        store = SqliteStore(url)
        await store.open("scheduler")
        lease = await store.lease()
        assert lease is not None
        assert lease.pid == os.getpid()
        assert lease.fence == held["fence"] + 1
        await store.close()

    arun(after())


def test_a_killed_schedulers_lease_passes_to_the_next(tmp_path: Path, arun: Run[Any]) -> None:
    url = f"sqlite://{tmp_path}/work.db"
    holder = spawn("hold", url)
    assert holder.stdout is not None
    held = json.loads(holder.stdout.readline())
    holder.kill()
    holder.wait()
    close_pipes(holder)

    async def after() -> None:
        client = SqliteStore(url)
        await client.open("client")
        stale = await client.lease()  # the row still names the dead holder (documented)
        assert stale is not None
        assert stale.pid == held["pid"]
        store = SqliteStore(url)
        await store.open("scheduler")
        lease = await client.lease()
        assert lease is not None
        assert (lease.pid, lease.fence) == (os.getpid(), held["fence"] + 1)
        await store.close()
        await client.close()

    arun(after())


def test_processes_opening_a_new_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/work.db"
    openers = [spawn("open", url, "client") for _ in range(6)]
    for opener in openers:
        out, err = opener.communicate(timeout=60)
        close_pipes(opener)
        assert json.loads(out) == {"ok": True}, err
    conn = sqlite3.connect(tmp_path / "work.db")
    versions = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    conn.close()
    assert versions == [(version,) for version, _, _ in migrations()]


# ---- clients and the scheduler ------------------------------------------------------------------


def test_four_clients_and_a_scheduler_exchange_jobs_through_the_inbox(
    tmp_path: Path, arun: Run[Any]
) -> None:
    url = f"sqlite://{tmp_path}/work.db"
    admitted: Counter[tuple[str, str]] = Counter()
    canceled_first: set[tuple[str, str]] = set()  # asked to cancel before the inbox gave them

    async def schedule(store: SqliteStore, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await store.wait_for_change(0.05)
            inbox = await store.inbox(limit=7)  # small, so the inbox is read in rounds
            latest: dict[tuple[str, str], work.Job] = {}
            for job in inbox.jobs:
                admitted[job.tenant_id, job.id] += 1
                if job.payload["cancel"]:  # left queued until its client asks to cancel it
                    latest[job.tenant_id, job.id] = replace(job, status=work.Status.QUEUED)
                else:
                    result = {"echo": job.payload["i"]}
                    latest[job.tenant_id, job.id] = replace(
                        job, status=work.Status.SUCCEEDED, result=result, finished_at=job.created_at
                    )
            asked = [key for key, _ in inbox.cancels]
            for (key, reason), job in zip(inbox.cancels, await store.get_many(asked), strict=True):
                assert job is not None
                if key not in admitted:
                    canceled_first.add(key)
                job = latest.get(key, job)
                latest[key] = replace(
                    job,
                    status=work.Status.CANCELED,
                    cancel_reason=reason,
                    finished_at=job.created_at,
                )
            if latest:
                await store.write(WriteBatch(updates=list(latest.values())))

    async def use(number: int) -> list[work.Job]:
        store = SqliteStore(url)
        await store.open("client")
        tenant = f"tenant-{number}"
        mine: list[work.Job] = []
        for batch in range(8):
            jobs = [
                work.Job(kind="echo", tenant_id=tenant, payload={"i": i, "cancel": i == 0})
                for i in range(batch * 5, batch * 5 + 5)
            ]
            await store.submit(jobs)
            mine += jobs
            await asyncio.sleep(0)
        for job in mine:
            if job.payload["cancel"]:
                assert await store.request_cancel((tenant, job.id), f"client {number}")
        keys = [(tenant, job.id) for job in mine]
        while True:
            found = await store.get_many(keys)
            if all(job is not None and job.is_terminal for job in found):
                await store.close()
                return [job for job in found if job is not None]
            await store.wait_for_change(0.5)

    async def scenario() -> list[list[work.Job]]:
        scheduler = SqliteStore(url)
        await scheduler.open("scheduler")
        stop = asyncio.Event()
        loop = asyncio.ensure_future(schedule(scheduler, stop))
        try:
            return await asyncio.gather(*(use(n) for n in range(4)))
        finally:
            stop.set()
            await loop
            assert (await scheduler.inbox()).jobs == []
            assert (await scheduler.load()).jobs == []
            await scheduler.close()

    results = arun(scenario())
    assert set(admitted.values()) == {1}  # no job came from the inbox twice
    assert len(admitted.keys() | canceled_first) == 4 * 40
    for number, jobs in enumerate(results):
        for job in jobs:
            if job.payload["cancel"]:
                assert (job.status, job.cancel_reason) == (work.Status.CANCELED, f"client {number}")
            else:
                assert (job.status, job.result) == (
                    work.Status.SUCCEEDED,
                    {"echo": job.payload["i"]},
                )

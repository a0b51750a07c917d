"""``check_store``'s sections on the one scheduler and its clients: the inbox of submitted jobs
and cancel requests, the wake-up after a client's commit, and the scheduler lease."""

from __future__ import annotations

import asyncio
import datetime as _dt
import os
import socket
from typing import Any

from msgspec.structs import replace

from .._errors import ConflictError, StoreError
from .._ir import Job, Status
from ..stores._protocol import Inbox, JobKey, WriteBatch
from ._store_harness import Check, fail, finished, plain_job, rich_job, same_jobs

__all__ = ["check_inbox", "check_lease", "check_wait_for_change"]


async def check_inbox(check: Check) -> None:
    """submit() and inbox(): clients' jobs come back, oldest first, until the scheduler writes
    them; cancel requests come back until the job is written terminal; a duplicate submit
    fails whole."""
    store = await check.opened()
    client = await check.client_for(store)
    a = check.tenant("inbox")

    async def inbox(what: str, want: list[Job], cancels: list[tuple[JobKey, str]]) -> None:
        found: Inbox = await store.inbox()
        same_jobs(check.section, [j for j in found.jobs if j.tenant_id == a], want, what)
        asked = sorted((tuple(key), reason) for key, reason in found.cancels if key[0] == a)
        if asked != sorted(cancels):
            fail(f"{check.section}: {what}: cancel requests {asked}, expected {sorted(cancels)}")

    await inbox("inbox() before any submit", [], [])
    k1, k2, k3 = plain_job(a), rich_job(a, status=Status.PENDING), plain_job(a)
    await client.submit([k1, k2])
    await client.submit([k3])
    await inbox("inbox() after two submits", [k1, k2, k3], [])
    await inbox("inbox() again (nothing was written: the jobs come again)", [k1, k2, k3], [])
    same_jobs(check.section, (await store.inbox(limit=2)).jobs, [k1, k2], "inbox(limit=2)")
    same_jobs(
        check.section, await client.get_many([(a, k2.id)]), [k2], "get_many of a submitted job"
    )

    k4 = plain_job(a)
    await check.expect_error(
        ConflictError,
        client.submit([k4, replace(k1, payload={"again": True})]),
        "submit() of a batch holding a submitted (tenant_id, id)",
        k1.id,
    )
    written = plain_job(a)
    await store.write(WriteBatch(inserts=[written]))
    await check.expect_error(
        ConflictError, client.submit([written]), "submit() of a job the scheduler wrote", written.id
    )
    if await client.get_many([(a, k4.id)]) != [None]:
        fail(f"{check.section}: a refused submit() stored part of its batch ({k4.id!r})")
    await inbox("inbox() after refused submits", [k1, k2, k3], [])

    k1q = replace(k1, status=Status.QUEUED)
    k2f = finished(k2, Status.FAILED)
    await store.write(WriteBatch(updates=[k1q]))
    await store.write(WriteBatch(updates=[k2f]))
    await inbox("inbox() after the scheduler wrote two of the jobs", [k3], [])
    live = [j.id for j in (await store.load()).jobs if j.tenant_id == a]
    if live != [k1.id, written.id]:
        fail(f"{check.section}: load() should hold the written jobs only, in order, got {live}")

    if not await client.request_cancel((a, k1.id), "asked by ü"):
        fail(f"{check.section}: request_cancel of a queued job should return True")
    if await client.request_cancel((a, "no-such-job"), "x"):
        fail(f"{check.section}: request_cancel of an unknown job should return False")
    if await client.request_cancel((a, k2.id), "x"):
        fail(f"{check.section}: request_cancel of a terminal job should return False")
    if not await client.request_cancel((a, k3.id), "early"):
        fail(f"{check.section}: request_cancel of a submitted job should return True")
    k1c, k3c = ((a, k1.id), "asked by ü"), ((a, k3.id), "early")
    await inbox("inbox() after two cancel requests", [k3], [k1c, k3c])
    k1r = replace(k1q, status=Status.RUNNING)
    await store.write(WriteBatch(updates=[k1r]))
    await inbox("inbox() after a non-terminal write of a job asked to cancel", [k3], [k1c, k3c])
    await store.write(WriteBatch(updates=[finished(k1r, Status.CANCELED)]))
    await inbox("inbox() after the job asked to cancel was written terminal", [k3], [k3c])
    if check.durable:
        store = await check.reopened(store)
        await inbox("inbox() after the scheduler reopened (a crash loses none)", [k3], [k3c])
    await store.write(WriteBatch(updates=[finished(k3, Status.CANCELED)]))
    await inbox("inbox() once every job is settled", [], [])
    await check.clean(store, [k1, k2, k3, written])


async def check_wait_for_change(check: Check) -> None:
    """wait_for_change(): True soon after a client's commit, also one made before the wait
    began (after the last inbox()); False at the timeout when nothing was committed."""
    store = await check.opened()
    client = await check.client_for(store)
    a = check.tenant("wake")
    loop = asyncio.get_running_loop()

    async def woken(what: str, commit: Any) -> None:
        await store.inbox()
        waiter = asyncio.ensure_future(store.wait_for_change(check.timeout_s))
        await asyncio.sleep(0.05)
        if waiter.done():
            fail(f"{check.section}: wait_for_change returned {waiter.result()} before {what}")
        start = loop.time()
        await commit()
        woke = await waiter
        took = loop.time() - start
        if woke is not True or took > 2.0:
            fail(
                f"{check.section}: wait_for_change should return True soon after {what}; got "
                f"{woke} after {took:.3f} s"
            )

    await store.inbox()
    start = loop.time()
    if await store.wait_for_change(0.2):
        fail(f"{check.section}: wait_for_change(0.2) returned True with nothing committed")
    if not 0.15 <= loop.time() - start <= 5.0:
        fail(f"{check.section}: wait_for_change(0.2) returned after {loop.time() - start:.3f} s")
    j1, j2 = plain_job(a), plain_job(a)
    await woken("a client's submit", lambda: client.submit([j1]))
    await woken("a client's request_cancel", lambda: client.request_cancel((a, j1.id), "stop"))
    await store.inbox()
    await client.submit([j2])
    if not await store.wait_for_change(2.0):
        fail(f"{check.section}: a submit between inbox() and wait_for_change() was missed")
    await check.clean(store, [j1, j2])


async def check_lease(check: Check) -> None:
    """lease(): the scheduler's pid, host, since and fence; a second scheduler is refused with
    the holder's name while a client opens; the fence grows at each scheduler open."""
    store = await check.opened()
    a = check.tenant("lease")
    lease = await store.lease()
    if lease is None:
        fail(f"{check.section}: lease() of an open scheduler returned None")
    now = _dt.datetime.now(_dt.UTC)
    if lease.pid != os.getpid() or lease.host != socket.gethostname():
        fail(
            f"{check.section}: the lease should name pid {os.getpid()} on "
            f"{socket.gethostname()!r}, got {lease}"
        )
    if lease.since.tzinfo is None or not now - _dt.timedelta(days=1) <= lease.since <= now:
        fail(
            f"{check.section}: the lease's since should be an aware time before now, got "
            f"{lease.since!r}"
        )
    if isinstance(lease.fence, bool) or not isinstance(lease.fence, int):
        fail(f"{check.section}: the lease's fence should be an int, got {lease.fence!r}")
    await store.open("scheduler")
    if await store.lease() != lease:
        fail(f"{check.section}: open() of an open scheduler changed its lease")
    if not check.durable:
        return
    client = await check.opened("client")
    if await client.lease() != lease:
        fail(
            f"{check.section}: a client should see the scheduler's lease {lease}, got "
            f"{await client.lease()}"
        )
    second = check.factory()
    try:
        refused = await check.expect_error(
            StoreError,
            second.open("scheduler"),
            "open('scheduler') while another scheduler holds the store",
            str(lease.pid),
            lease.host,
        )
    finally:
        await second.close()
    if lease.since.strftime("%Y-%m-%d") not in str(refused):
        fail(
            f"{check.section}: the refusal should say since when the holder has the lease: "
            f"{refused}"
        )
    job = plain_job(a)
    await store.write(WriteBatch(inserts=[job]))  # the refused open disturbed nothing
    await store.close()
    if await client.lease() is not None:
        fail(
            f"{check.section}: lease() after the scheduler closed should be None, got "
            f"{await client.lease()}"
        )
    successor = await check.opened()
    renewed = await successor.lease()
    if renewed is None or renewed.fence <= lease.fence:
        fail(
            f"{check.section}: the fence should grow at each scheduler open: {lease.fence} then "
            f"{renewed}"
        )
    await check.clean(successor, [job])

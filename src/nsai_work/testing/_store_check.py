"""``check_store(factory)``: prove a store against the Store Protocol (``nsai_work.stores``)
with real values: writes and their atomicity, exact round trips, listing against a brute-force
oracle, recovery, pruning, the client inbox, change notification and the scheduler lease.
Every built-in store passes it; so should yours.

The suite is a list of sections (``SECTIONS``), one async function per part of the contract,
so a table added later (cron schedules, unique keys, ...) adds a section. Each section starts
from empty data and leaves it empty: it deletes the jobs it made.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import uuid
from collections.abc import Callable
from typing import Any

from msgspec.structs import replace

from .._errors import ConflictError, StoreError
from .._ir import Job, Status
from ..stores._protocol import JobKey, Store, WriteBatch
from ._store_check_clients import check_inbox, check_lease, check_wait_for_change
from ._store_check_list import check_list
from ._store_check_schedules import check_schedules
from ._store_check_unique import check_unique_keys
from ._store_harness import (
    T0,
    TEXT,
    Check,
    Section,
    fail,
    finished,
    plain_job,
    rich_job,
    same_jobs,
)

__all__ = ["SECTIONS", "check_store"]

_UTC = _dt.UTC


# ---- sections ---------------------------------------------------------------------------------


async def check_open_close(check: Check) -> None:
    """Open and close are idempotent; a store that is not open, and a client's write, raise
    StoreError."""
    store = check.factory()
    await check.expect_error(StoreError, store.get_many([("t", "x")]), "get_many before open")
    await store.close()  # closing what was never opened is fine
    await store.open("scheduler")
    check.track(store)
    await store.open("scheduler")  # idempotent
    await store.close()
    await store.close()
    await check.expect_error(StoreError, store.get_many([("t", "x")]), "get_many after close")
    client = await check.opened("client")
    await check.expect_error(
        StoreError, client.write(WriteBatch(inserts=[plain_job("t")])), "write() by a client"
    )


async def check_write(check: Check) -> None:
    """write(): inserts, updates in order, deletes and state in one transaction; a batch with a
    duplicate insert or an unknown update fails whole."""
    store = await check.opened()
    a, b = check.tenant("write-a"), check.tenant("write-b")
    j1, j2, j3 = rich_job(a), plain_job(a), plain_job(a, payload={"n": 3})
    await store.write(WriteBatch(inserts=[j1, j2, j3], state=b"state-1"))
    if (await store.load()).state != b"state-1":
        fail(f"{check.section}: load().state after write(state=b'state-1') is not b'state-1'")
    same_jobs(
        check.section,
        await store.get_many([(a, j1.id), (a, j2.id), (a, j3.id)]),
        [j1, j2, j3],
        "get_many after an insert",
    )
    j4 = plain_job(a, status=Status.QUEUED)
    j1_done = finished(j1, Status.SUCCEEDED, T0 + _dt.timedelta(minutes=5))
    j1_done = replace(j1_done, result={"answer": TEXT})
    await store.write(
        WriteBatch(
            inserts=[j4], updates=[j1_done], deletes=[(a, j3.id), (a, "no-such-job")], state=b"s2"
        )
    )
    same_jobs(
        check.section,
        await store.get_many([(a, j1.id), (a, j2.id), (a, j3.id), (a, j4.id)]),
        [j1_done, j2, None, j4],
        "get_many after a batch of an insert, an update and deletes",
    )
    j2_queued = replace(j2, status=Status.QUEUED)
    j2_running = replace(j2, status=Status.RUNNING, started_at=T0)
    await store.write(WriteBatch(updates=[j2_queued, j2_running]))
    same_jobs(
        check.section,
        await store.get_many([(a, j2.id)]),
        [j2_running],
        "updates are applied in order",
    )

    j5 = plain_job(a)
    dup = replace(j1, payload={"dup": True})
    await check.expect_error(
        ConflictError,
        store.write(WriteBatch(inserts=[j5, dup], updates=[finished(j2_running)], state=b"s3")),
        "write() of a batch inserting a stored (tenant_id, id)",
        j1.id,
    )
    j6 = plain_job(a)
    await check.expect_error(
        ConflictError,
        store.write(WriteBatch(inserts=[j6, j6], state=b"s3")),
        "write() of a batch inserting one job twice",
        j6.id,
    )
    j7 = plain_job(a)
    await check.expect_error(
        StoreError,
        store.write(WriteBatch(inserts=[j7], updates=[plain_job(a)], state=b"s3")),
        "write() of a batch updating a job the store does not hold",
    )
    same_jobs(
        check.section,
        await store.get_many([(a, j5.id), (a, j6.id), (a, j7.id), (a, j1.id), (a, j2.id)]),
        [None, None, None, j1_done, j2_running],
        "get_many after refused batches (nothing of them may be written)",
    )
    recovered = await store.load()
    if recovered.state != b"s2":
        fail(
            f"{check.section}: a refused batch changed the state: {recovered.state!r}, expected "
            f"b's2'"
        )

    other = replace(j1, tenant_id=b)  # the same id in another tenant is another job
    await store.write(WriteBatch(inserts=[other]))
    await store.write(WriteBatch())  # an empty batch is fine
    if (await store.load()).state != b"s2":
        fail(f"{check.section}: a batch with state=None must leave the state unchanged")
    same_jobs(
        check.section,
        await store.get_many([(b, j1.id), (a, j1.id)]),
        [other, j1_done],
        "two tenants' jobs with one id",
    )
    if check.durable:
        store = await check.reopened(store)
        same_jobs(
            check.section,
            await store.get_many([(a, j1.id), (a, j2.id), (a, j4.id), (b, j1.id)]),
            [j1_done, j2_running, j4, other],
            "get_many after close and reopen",
        )
        if (await store.load()).state != b"s2":
            fail(f"{check.section}: the state did not survive close and reopen")
    await check.clean(store, [j1, j2, j4, other])


async def check_get_many(check: Check) -> None:
    """get_many(): exact round trips (unicode ids, a 2 MB payload), order and duplicates of the
    keys, other tenants' and unknown keys, 1,200 keys at once."""
    store = await check.opened()
    a, b = check.tenant("get-a"), check.tenant("get-b")
    big = plain_job(a, payload={"blob": "x" * 2_000_000 + TEXT, "list": list(range(10_000))})
    odd = plain_job(a, id=f"{TEXT}-{uuid.uuid4().hex}")
    many = [plain_job(a, payload={"i": i}) for i in range(1200)]
    await store.write(WriteBatch(inserts=[big, odd, *many]))
    keys: list[JobKey] = [(a, odd.id), (b, odd.id), (a, "missing"), (a, big.id), (a, odd.id)]
    same_jobs(check.section, await store.get_many(keys), [odd, None, None, big, odd], "get_many")
    if await store.get_many([]) != []:
        fail(f"{check.section}: get_many([]) should return []")
    want = list(reversed(many))
    same_jobs(
        check.section,
        await store.get_many([(a, j.id) for j in want]),
        want,
        "get_many of 1,200 keys",
    )
    if check.durable:
        store = await check.reopened(store)
        same_jobs(
            check.section,
            await store.get_many([(a, big.id), (a, odd.id)]),
            [big, odd],
            "get_many after reopen",
        )
    await check.clean(store, [big, odd, *many])


async def check_owners(check: Check) -> None:
    """owners() and find_many(): every tenant's job with an id."""
    store = await check.opened()
    a, b = check.tenant("own-a"), check.tenant("own-b")
    shared = f"shared-{uuid.uuid4().hex}"
    ja, jb, alone = plain_job(a, id=shared), plain_job(b, id=shared), plain_job(a)
    await store.write(WriteBatch(inserts=[ja, jb, alone]))
    for job_id, want in ((shared, sorted([a, b])), (alone.id, [a]), ("no-such-id", [])):
        got = await store.owners(job_id)
        if sorted(got) != want:
            fail(f"{check.section}: owners({job_id!r}) returned {got}, expected {want}")
    many = await store.find_many([shared, alone.id, "no-such-id", shared])
    if many != {shared: sorted([ja, jb], key=lambda job: job.tenant_id), alone.id: [alone]}:
        found = {job_id: [(j.tenant_id, j.id) for j in jobs] for job_id, jobs in many.items()}
        fail(
            f"{check.section}: find_many([shared, alone, unknown, shared]) returned {found}, "
            f"expected the jobs {{shared: [{a!r}'s, {b!r}'s], alone: [{a!r}'s]}} as stored"
        )
    await check.clean(store, [ja])
    if await store.owners(shared) != [b]:
        fail(f"{check.section}: owners() after a delete should be [{b!r}]")
    await check.clean(store, [jb, alone])


async def check_load(check: Check) -> None:
    """load(): the non-terminal jobs the scheduler wrote, in submission order, as last
    written; the state; damaged rows quarantined (with ``damage``)."""
    store = await check.opened()
    client = await check.client_for(store)
    a = check.tenant("load")
    pending, queued, running = plain_job(a), plain_job(a, status=Status.QUEUED), rich_job(a)
    done, failed = finished(plain_job(a)), finished(plain_job(a), Status.FAILED)
    await store.write(WriteBatch(inserts=[pending, queued, running, done, failed], state=b"one"))
    later = plain_job(a, status=Status.QUEUED)
    pending2 = replace(pending, status=Status.QUEUED, queued_at=T0)
    await store.write(
        WriteBatch(inserts=[later], updates=[finished(queued, Status.CANCELED), pending2])
    )
    submitted = plain_job(a)
    await client.submit([submitted])
    want = [pending2, running, later]

    async def expect(store: Any, want: list[Job], what: str) -> Any:
        recovered = await store.load()
        same_jobs(check.section, [j for j in recovered.jobs if j.tenant_id == a], want, what)
        if recovered.state != b"one":
            fail(f"{check.section}: {what}: state {recovered.state!r}, expected b'one'")
        return recovered

    await expect(store, want, "load() (a client's job the scheduler has not written is not in it)")
    admitted = replace(submitted, status=Status.QUEUED)
    await store.write(WriteBatch(updates=[admitted]))
    want.append(admitted)
    await expect(store, want, "load() after the scheduler wrote a client's job")
    everything = [pending, queued, running, done, failed, later, submitted]
    if check.durable:
        store = await check.reopened(store)
        await expect(store, want, "load() after close and reopen")
        if check.damage is not None:
            await store.close()
            check.damage(a, running.id)
            store = await check.opened()
            recovered = await expect(
                store, [pending2, later, admitted], "load() with a damaged row"
            )
            set_aside = [(q.tenant_id, q.job_id) for q in recovered.quarantined if q.reason]
            if (a, running.id) not in set_aside:
                fail(
                    f"{check.section}: load() should report the damaged row (with a reason) in "
                    f"quarantined, got {recovered.quarantined}"
                )
            await expect(store, [pending2, later, admitted], "load() after a quarantine")
            everything.remove(running)
    await check.clean(store, everything)


async def check_prune(check: Check) -> None:
    """prune(): finished jobs by finished_at, then all but the keep_max that finished last;
    never a job that is not finished."""
    store = await check.opened()
    a, b = check.tenant("prune-a"), check.tenant("prune-b")
    now = _dt.datetime.now(_UTC)
    hours = [4, 3, 2, 1]
    old = [finished(plain_job(a), at=now - _dt.timedelta(hours=h)) for h in hours]
    recent = finished(plain_job(b), Status.FAILED, now - _dt.timedelta(minutes=30))
    live = plain_job(a, created_at=now - _dt.timedelta(days=30))
    await store.write(WriteBatch(inserts=[*old, recent, live]))

    async def prune(before: _dt.datetime, keep_max: int, want: int, left: list[Job]) -> None:
        got = await store.prune(before, keep_max)
        if got != want:
            fail(
                f"{check.section}: prune({before.isoformat()}, keep_max={keep_max}) returned "
                f"{got}, expected {want}"
            )
        everyone = [*old, recent, live]
        found = await store.get_many([(j.tenant_id, j.id) for j in everyone])
        kept = [j.id for j in found if j is not None]
        if kept != [j.id for j in everyone if j in left]:
            fail(
                f"{check.section}: after prune(keep_max={keep_max}) the store holds {kept}, "
                f"expected {[j.id for j in left]}"
            )

    await prune(now - _dt.timedelta(minutes=150), 100, 2, [old[2], old[3], recent, live])
    await prune(now - _dt.timedelta(days=10), 2, 1, [old[3], recent, live])
    await prune(now - _dt.timedelta(days=10), 2, 0, [old[3], recent, live])
    await prune(now - _dt.timedelta(days=10), 0, 2, [live])
    await check.clean(store, [live])


#: The sections, in the order they run: (name, async function of a ``Check``). A table added
#: to the Protocol adds its section here.
SECTIONS: list[tuple[str, Section]] = [
    ("open and close", check_open_close),
    ("write", check_write),
    ("get_many", check_get_many),
    ("owners", check_owners),
    ("list", check_list),
    ("load", check_load),
    ("prune", check_prune),
    ("inbox", check_inbox),
    ("wait_for_change", check_wait_for_change),
    ("lease", check_lease),
    ("unique keys", check_unique_keys),
    ("cron schedules", check_schedules),
]


def check_store(
    factory: Callable[[], Store],
    *,
    damage: Callable[[str, str], None] | None = None,
    timeout_s: float = 60.0,
) -> None:
    """Raise ``AssertionError`` saying what breaks the Store contract.

    ``factory()`` returns a new, unopened store over the same data at every call, and that data
    is empty at the first call (a new database file, a fresh schema): a durable store is
    closed and reopened over it, a second scheduler is refused on it, clients share it. A store
    whose ``durable`` is False keeps its data in its object: its sections use one object for
    the scheduler and its clients, and the reopen and lease-between-objects checks are skipped.

    ``damage(tenant_id, job_id)`` (optional, durable stores) spoils that job's stored row so
    it no longer decodes as a job; it is called while no store object is open, and proves
    that ``load()`` sets the row aside. ``timeout_s`` bounds each section.
    """
    probe = factory()
    if not isinstance(probe, Store):
        missing = [m for m in ("open", "close", "write", "load", "list") if not hasattr(probe, m)]
        fail(
            f"factory() must return a Store (nsai_work.stores.Store), got {probe!r}; missing "
            f"{missing}"
        )
    if not isinstance(probe.url, str) or not isinstance(probe.durable, bool):
        fail(
            f"a store's url must be a str and durable a bool, got {probe.url!r}, {probe.durable!r}"
        )
    if factory() is probe:
        fail("factory() must return a new store object at each call")
    check = Check(factory, probe.durable, damage, timeout_s)
    asyncio.run(_run(check))


async def _run(check: Check) -> None:
    check.section = "empty data"
    store = await check.opened()
    try:
        leftover = (await store.load()).jobs or (await store.inbox()).jobs
        if leftover:
            fail(
                f"factory() must give empty data at first; it holds {len(leftover)} jobs, e.g. "
                f"{leftover[0].id!r}"
            )
    finally:
        await check.close_all()
    for name, section in SECTIONS:
        check.section = name
        try:
            await asyncio.wait_for(section(check), check.timeout_s)
        except TimeoutError:
            fail(f"{name}: did not finish within {check.timeout_s} s")
        finally:
            await check.close_all()

"""The memory store: its indexes stay right through every transition; listing pages newest
first, by any combination of namespace, status and kind, and refuses a cursor it did not give;
finished jobs are pruned by count and by age, and vanish from every index. (Listings against a
brute-force oracle, jobs changing between pages: tests/property/test_memory_store_machine.py.)"""

from __future__ import annotations

import asyncio
import random
from itertools import product
from typing import Any

import pytest
from msgspec.structs import replace

import nsai_work as work
from nsai_work.stores import ListQuery, MemoryStore
from nsai_work.stores import _memory_table as memory
from nsai_work.stores._memory_table import JobTable

S = work.Status
LIVE = (S.PENDING, S.QUEUED, S.RUNNING)
TERMINAL = (S.SUCCEEDED, S.FAILED, S.TIMEOUT, S.CANCELED)


def new_job(
    tenant: str = "t1", namespace: str = "default", kind: str = "k", **fields: Any
) -> work.Job:
    return work.Job(kind=kind, tenant_id=tenant, namespace=namespace, **fields)


def everything(store: JobTable, tenant: str, **filters: Any) -> list[str]:
    """Every id ``list`` returns for these filters, page by page (small pages)."""
    ids: list[str] = []
    cursor = None
    while True:
        jobs, cursor = store.list(tenant, limit=3, cursor=cursor, **filters)
        ids.extend(j.id for j in jobs)
        if cursor is None:
            return ids


def check_indexes(store: JobTable, model: dict[str, work.Job]) -> None:
    """What the store answers equals what a plain dict of jobs says."""
    assert len(store) == len(model)
    for job_id, job in model.items():
        assert (job.tenant_id, job_id) in store
        assert store.get(job.tenant_id, job_id) is job
        assert store.owners(job_id) == [job.tenant_id]
    for status in S:
        expected = {(j.tenant_id, i) for i, j in model.items() if j.status is status}
        assert sorted(store.keys_with_status(status)) == sorted(expected)
    tenants = {j.tenant_id for j in model.values()} | {"nobody"}
    namespaces = {j.namespace for j in model.values()} | {"nowhere"}
    kinds = {j.kind for j in model.values()} | {"nothing"}
    for tenant in tenants:
        for namespace, kind, status in product((None, *namespaces), (None, *kinds), (None, *S)):
            expected = sorted(
                (
                    i
                    for i, j in model.items()
                    if j.tenant_id == tenant
                    and (namespace is None or j.namespace == namespace)
                    and (kind is None or j.kind == kind)
                    and (status is None or j.status is status)
                ),
                reverse=True,  # ids are UUIDv7: in submission order here
            )
            listed = everything(store, tenant, namespace=namespace, kind=kind, status=status)
            assert listed == expected


@pytest.mark.parametrize("unindexed_max", [memory.UNINDEXED_MAX, 5, 0])
def test_insert_and_transitions_keep_every_index_right(
    monkeypatch: pytest.MonkeyPatch, unindexed_max: int
) -> None:
    monkeypatch.setattr(memory, "UNINDEXED_MAX", unindexed_max)
    rng = random.Random(1234)
    store = JobTable(finished_max=10_000)
    model: dict[str, work.Job] = {}
    now = 1000.0
    for step in range(400):
        live = [j for j in model.values() if j.status in LIVE]
        if not live or rng.random() < 0.4:
            job = new_job(
                tenant=rng.choice(["t1", "t2", "t3"]),
                namespace=rng.choice(["default", "a", "b"]),
                kind=rng.choice(["k", "k", "other"]),
                status=rng.choice(LIVE),
            )
            store.insert(job)
        else:
            current = rng.choice(live)
            job = replace(current, status=rng.choice(LIVE + TERMINAL), attempt=current.attempt + 1)
            now += 1.0
            store.put(job, now)
        model[job.id] = job
        if step % 50 == 0:
            check_indexes(store, model)
    check_indexes(store, model)


def test_a_put_without_a_status_change_keeps_the_status_index() -> None:
    store = JobTable()
    job = new_job(status=S.RUNNING)
    store.insert(job)
    progressed = replace(job, progress=work.Progress(fraction=0.5))
    store.put(progressed, 1.0)
    assert store.get(job.tenant_id, job.id) is progressed
    assert store.keys_with_status(S.RUNNING) == [(job.tenant_id, job.id)]


def test_duplicate_insert_for_the_same_tenant_is_a_conflict() -> None:
    store = JobTable()
    job = new_job()
    store.insert(job)
    with pytest.raises(work.ConflictError, match=job.id):
        store.insert(replace(job, namespace="elsewhere"))
    assert len(store) == 1


def test_jobs_are_keyed_by_tenant_and_id() -> None:
    """Two tenants may use the same id: each sees only its own job, and the id index names
    both owners until their jobs are pruned."""
    store = JobTable(finished_max=0)
    mine = new_job(tenant="t1", id="shared")
    theirs = new_job(tenant="t2", id="shared")
    store.insert(mine)
    store.insert(theirs)
    assert store.get("t1", "shared") is mine
    assert store.get("t2", "shared") is theirs
    assert store.get("t3", "shared") is None
    assert sorted(store.owners("shared")) == ["t1", "t2"]
    assert everything(store, "t1") == ["shared"]
    assert everything(store, "t2") == ["shared"]
    store.put(replace(mine, status=S.CANCELED), 1.0)  # finished_max=0: pruned at once
    assert store.get("t1", "shared") is None
    assert store.owners("shared") == ["t2"]
    store.put(replace(theirs, status=S.CANCELED), 2.0)
    assert store.owners("shared") == []
    assert len(store) == 0


def test_pages_cover_everything_exactly_once_newest_first() -> None:
    store = JobTable()
    jobs = [new_job(namespace="a" if i % 3 else "b") for i in range(57)]
    for job in jobs:
        store.insert(job)
    store.insert(new_job(tenant="t2"))
    newest_first = [j.id for j in reversed(jobs)]
    for limit in (1, 7, 10, 57, 58, 100):
        ids: list[str] = []
        cursor = None
        pages = 0
        while True:
            page, cursor = store.list("t1", limit=limit, cursor=cursor)
            assert len(page) <= limit
            ids.extend(j.id for j in page)
            pages += 1
            if cursor is None:
                break
            assert len(page) == limit
        assert ids == newest_first
        assert pages == -(-57 // limit)
    assert everything(store, "t1", namespace="b") == [j.id for j in reversed(jobs[::3])]


def test_the_cursor_resumes_after_the_last_job_of_the_page() -> None:
    store = JobTable()
    jobs = [new_job() for _ in range(5)]
    for job in jobs:
        store.insert(job)
    page, cursor = store.list("t1", limit=2)
    assert [j.id for j in page] == [jobs[4].id, jobs[3].id]
    assert isinstance(cursor, str)  # opaque: it resumes after the last job of the page
    rest, end = store.list("t1", limit=10, cursor=cursor)
    assert [j.id for j in rest] == [jobs[2].id, jobs[1].id, jobs[0].id]
    assert end is None
    assert store.list("t1", limit=3)[0] == [*reversed(jobs)][:3]
    assert store.list("t1", limit=5)[1] is None  # an exactly full last page has no cursor


def test_status_filter_pages_while_jobs_move() -> None:
    store = JobTable()
    jobs = [new_job(status=S.QUEUED) for _ in range(6)]
    for job in jobs:
        store.insert(job)
    first, cursor = store.list("t1", status=S.QUEUED, limit=2)
    assert [j.id for j in first] == [jobs[5].id, jobs[4].id]
    store.put(replace(jobs[1], status=S.RUNNING), 1.0)  # moves out of the filter meanwhile
    rest = []
    while cursor is not None:
        page, cursor = store.list("t1", status=S.QUEUED, limit=2, cursor=cursor)
        rest.extend(j.id for j in page)
    assert rest == [jobs[3].id, jobs[2].id, jobs[0].id]


def test_an_unknown_tenant_or_namespace_lists_nothing() -> None:
    store = JobTable()
    store.insert(new_job())
    assert store.list("nobody") == ([], None)
    assert store.list("t1", namespace="nowhere") == ([], None)
    assert store.list("t1", status=S.FAILED) == ([], None)


def test_filters_combine() -> None:
    store = JobTable()
    jobs = [
        new_job(namespace=namespace, kind=kind, status=status)
        for namespace in ("a", "b")
        for kind in ("x", "y")
        for status in (S.QUEUED, S.RUNNING)
    ]
    for job in jobs:
        store.insert(job)

    def ids(**filters: Any) -> list[str]:
        return [
            j.id
            for j in reversed(jobs)
            if all(getattr(j, name) == value for name, value in filters.items())
        ]

    assert everything(store, "t1", kind="x") == ids(kind="x")
    assert everything(store, "t1", kind="y", status=S.RUNNING) == ids(kind="y", status=S.RUNNING)
    assert everything(store, "t1", namespace="b", kind="x") == ids(namespace="b", kind="x")
    only = everything(store, "t1", namespace="a", kind="y", status=S.QUEUED)
    assert only == ids(namespace="a", kind="y", status=S.QUEUED)
    assert len(only) == 1
    assert store.list("t1", kind="z") == ([], None)


@pytest.mark.parametrize("fanout", [1, 2, 4])
def test_listings_stay_right_as_coarse_cells_are_built(
    monkeypatch: pytest.MonkeyPatch, fanout: int
) -> None:
    """A listing that spans more than ``_FANOUT`` (namespace, kind) leaves reads a coarse cell,
    built from them when they went past it: it holds every job they hold, and moves with them.
    While the tenant has one namespace, a listing by it reads the cell of all its jobs; its
    second namespace builds the first one's own."""
    monkeypatch.setattr(memory, "_FANOUT", fanout)
    store = JobTable()
    first = [new_job(namespace="a", kind=f"k{i % 3}", status=S.QUEUED) for i in range(9)]
    for job in first:
        store.insert(job)
    assert store.list("t1", namespace="b") == ([], None)
    assert store.list("t1", kind="k9") == ([], None)
    newest_first = [j.id for j in reversed(first)]
    assert everything(store, "t1", namespace="a") == newest_first
    assert everything(store, "t1", kind="k1") == [j.id for j in reversed(first) if j.kind == "k1"]
    other = new_job(namespace="b", kind="k0", status=S.QUEUED)
    store.insert(other)
    store.put(replace(first[0], status=S.RUNNING), 1.0)  # moves in every cell it is in
    assert everything(store, "t1", namespace="a") == newest_first
    assert everything(store, "t1", namespace="a", status=S.QUEUED) == newest_first[:8]
    assert everything(store, "t1", kind="k0", status=S.RUNNING) == [first[0].id]
    assert everything(store, "t1", namespace="b") == [other.id]
    k0 = [other.id, *(j.id for j in reversed(first) if j.kind == "k0")]
    assert everything(store, "t1", kind="k0") == k0
    assert everything(store, "t1", kind="k0", status=S.QUEUED) == k0[:-1]
    assert everything(store, "t1") == [other.id, *newest_first]
    tenant = store._tenants["t1"]
    assert len(tenant.leaves) == 4
    kept = {(None, None), ("a", None)} if fanout < 3 else set()
    assert set(tenant.coarse) == kept | ({(None, "k0")} if fanout == 1 else set())


def test_a_cursor_outlives_the_job_it_names() -> None:
    store = JobTable(finished_max=0)
    jobs = [new_job(status=S.RUNNING) for _ in range(6)]
    for job in jobs:
        store.insert(job)
    page, cursor = store.list("t1", limit=3)
    assert [j.id for j in page] == [jobs[5].id, jobs[4].id, jobs[3].id]
    store.put(replace(jobs[3], status=S.SUCCEEDED), 1.0)  # finished_max=0: pruned at once
    assert store.get("t1", jobs[3].id) is None
    rest, end = store.list("t1", limit=3, cursor=cursor)
    assert [j.id for j in rest] == [jobs[2].id, jobs[1].id, jobs[0].id]
    assert end is None


@pytest.mark.parametrize(
    "cursor", ["", "abc", "-1", "1.5", " 12", "\u00b2", "\u0661", "9" * 20, "x" * 500, 12]
)
def test_a_cursor_the_store_did_not_give_is_refused(cursor: Any) -> None:
    store = JobTable()
    store.insert(new_job())
    with pytest.raises(work.ValidationError, match="cursor") as caught:
        store.list("t1", cursor=cursor)
    assert caught.value.path == "$.cursor"
    assert "next_cursor" in str(caught.value)
    assert len(str(caught.value)) < 300  # a long cursor is shown cut


def test_status_may_be_its_value_and_a_bad_one_or_limit_is_refused() -> None:
    store = JobTable()
    job = new_job(status=S.QUEUED)
    store.insert(job)
    assert store.list("t1", status="queued") == ([job], None)  # type: ignore[arg-type]
    with pytest.raises(work.ValidationError, match="unknown status 'queueing'"):
        store.list("t1", status="queueing")  # type: ignore[arg-type]
    with pytest.raises(work.ValidationError, match="limit"):
        store.list("t1", limit=0)


def test_owners_of_a_shared_id_are_found_without_a_scan() -> None:
    store = JobTable()
    for tenant in ("t1", "t2", "t3"):
        store.insert(new_job(tenant=tenant, id="same"))
    for i in range(50):
        store.insert(new_job(tenant="t2", id=f"other-{i}"))
        store.insert(new_job(tenant="t3", id=f"other-{i}"))
    assert sorted(store.owners("same")) == ["t1", "t2", "t3"]
    assert store._shared_ids["same"] == {"t2", "t3"}  # the tenants, kept by id
    assert sorted(store.owners("other-7")) == ["t2", "t3"]


def test_moves_are_indexed_when_a_listing_reads_them() -> None:
    store = JobTable(finished_max=2)
    jobs = [new_job(status=S.QUEUED) for _ in range(5)]
    for job in jobs:
        store.insert(job)
    moved = [replace(job, status=S.RUNNING) for job in jobs[:3]]
    for job in moved:
        store.put(job, 1.0)
    for job in moved[:2]:
        _finish(store, job, 2.0)
    leaf = store._tenants["t1"].leaves[("default", "k")].cells[0]
    assert leaf == [None] * len(S)  # nothing indexed yet: the listing below does it
    assert everything(store, "t1", status=S.QUEUED) == [jobs[4].id, jobs[3].id]
    assert everything(store, "t1", status=S.RUNNING) == [jobs[2].id]
    assert everything(store, "t1", status=S.SUCCEEDED) == [jobs[1].id, jobs[0].id]
    assert store._unindexed == {}
    # a job that finishes and is pruned between two listings never reaches an index
    store = JobTable(finished_max=0)
    kept = new_job(status=S.QUEUED)
    store.insert(kept)
    assert everything(store, "t1") == [kept.id]  # (indexed: queued)
    late = new_job(status=S.QUEUED)
    store.insert(late)
    store.put(replace(late, status=S.RUNNING), 1.0)
    assert store._unindexed == {store._place[late.id][0]: memory._NOWHERE}
    _finish(store, late, 2.0)  # pruned at once (finished_max=0)
    assert store._unindexed == {}
    assert_gone(store, late)
    assert everything(store, "t1") == [kept.id]


@pytest.fixture
def slices_of_4(monkeypatch: pytest.MonkeyPatch) -> None:
    """The memory store's reader indexes 4 noted jobs between two yields to the loop."""
    from nsai_work.stores import memory as memory_store

    monkeypatch.setattr(memory_store, "INDEX_SLICE", 4)


async def _open_store() -> MemoryStore:
    store = MemoryStore()
    await store.open()
    return store


def test_the_stores_reader_indexes_in_slices_with_the_loop_free_between(slices_of_4: None) -> None:
    asyncio.run(_read_in_slices())


async def _read_in_slices() -> None:
    store = await _open_store()
    jobs = [new_job(status=S.QUEUED) for _ in range(30)]
    for job in jobs:
        store.table.insert(job)
    for job in jobs[::3]:
        store.table.put(replace(job, status=S.RUNNING), 1.0)
    assert store.table.noted == 30
    seen: list[int] = []  # notes left each time another task got the loop

    async def other() -> None:
        while store.table.noted:
            seen.append(store.table.noted)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(other())
    await asyncio.sleep(0)
    page, _ = await store.list(ListQuery(tenant_id="t1", status=S.RUNNING, limit=100))
    await watcher
    assert [job.id for job in page] == [job.id for job in jobs[::3]][::-1]
    assert seen == [30, 26, 22, 18, 14, 10, 6, 2]  # never more than a slice (4) in one go
    assert store.table.noted == 0


def test_writers_noting_faster_than_the_slices_do_not_hold_a_reader(slices_of_4: None) -> None:
    asyncio.run(_read_under_a_flood())


async def _read_under_a_flood() -> None:
    store = await _open_store()
    added: list[work.Job] = []

    def add(count: int) -> None:
        for _ in range(count):
            job = new_job(status=S.QUEUED)
            store.table.insert(job)
            added.append(job)

    add(20)
    stop = False

    async def flood() -> None:  # 10 new notes each time it gets the loop: more than a slice
        while not stop:
            add(10)
            await asyncio.sleep(0)

    writer = asyncio.create_task(flood())
    await asyncio.sleep(0)
    page, _ = await asyncio.wait_for(store.list(ListQuery(tenant_id="t1", limit=1_000)), 5.0)
    stop = True
    await writer
    assert len(page) > 20  # the writer noted more between the slices, and the read ended
    assert [job.id for job in page] == [job.id for job in added[: len(page)]][::-1]


# ---- retention ---------------------------------------------------------------------------------


def _finish(
    store: JobTable, job: work.Job, now: float, status: work.Status = S.SUCCEEDED
) -> work.Job:
    done = replace(job, status=status)
    store.put(done, now)
    return done


def assert_gone(store: JobTable, job: work.Job) -> None:
    assert store.get(job.tenant_id, job.id) is None
    assert (job.tenant_id, job.id) not in store
    assert store.owners(job.id) == []
    for status in S:
        assert (job.tenant_id, job.id) not in store.keys_with_status(status)
    assert job.id not in everything(store, job.tenant_id)
    assert job.id not in everything(store, job.tenant_id, namespace=job.namespace)
    assert job.id not in everything(store, job.tenant_id, status=job.status)


def test_retention_by_count_drops_the_oldest_finished() -> None:
    store = JobTable(finished_max=3)
    live = new_job(status=S.RUNNING)
    store.insert(live)
    jobs = [new_job(namespace=f"ns{i}", status=S.RUNNING) for i in range(5)]
    for job in jobs:
        store.insert(job)
    # finish them in another order than they were created: retention follows finishing order
    order = [2, 0, 4, 1, 3]
    finished = {}
    for now, index in enumerate(order, start=1):
        finished[index] = _finish(store, jobs[index], float(now), TERMINAL[index % 4])
    for index in order[:2]:
        assert_gone(store, finished[index])
    for index in order[2:]:
        assert store.get(jobs[index].tenant_id, jobs[index].id) is finished[index]
    assert store.get(live.tenant_id, live.id) is live  # live jobs are never pruned
    assert len(store) == 4
    total = sum(len(store.keys_with_status(status)) for status in S)
    assert total == 4


def test_retention_by_age() -> None:
    store = JobTable(finished_ttl_s=10.0)
    old, young, live = new_job(tenant="t9"), new_job(), new_job(status=S.QUEUED)
    for job in (old, young, live):
        store.insert(job)
    old_done = _finish(store, old, 100.0, S.FAILED)
    young_done = _finish(store, young, 105.0)
    assert store.prune(109.0) == 0
    assert store.prune(110.0) == 0  # exactly ttl old: still kept
    assert store.prune(110.5) == 1
    assert_gone(store, old_done)
    assert store.get(young.tenant_id, young.id) is young_done
    assert store.list("t9") == ([], None)
    assert store.prune(1000.0) == 1
    assert_gone(store, young_done)
    assert store.get(live.tenant_id, live.id) is live
    assert store.prune(10_000.0) == 0


def test_a_later_transition_prunes_what_has_expired() -> None:
    store = JobTable(finished_ttl_s=5.0)
    first, second = new_job(), new_job()
    store.insert(first)
    store.insert(second)
    first_done = _finish(store, first, 0.0)
    _finish(store, second, 100.0)  # finishing another job prunes the expired one
    assert_gone(store, first_done)
    assert (second.tenant_id, second.id) in store


def test_finished_max_zero_keeps_no_finished_job() -> None:
    store = JobTable(finished_max=0)
    job = new_job()
    store.insert(job)
    done = _finish(store, job, 1.0, S.CANCELED)
    assert_gone(store, done)
    assert len(store) == 0


def test_pruning_leaves_no_empty_index_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_FANOUT", 1)  # every coarse cell is kept
    store = JobTable(finished_max=0)
    for tenant in ("a", "b"):
        for namespace in ("x", "y"):
            job = new_job(tenant=tenant, namespace=namespace)
            store.insert(job)
            _finish(store, job, 1.0)
    # a tenant with jobs in two namespaces and two kinds at once (all four cells)
    jobs = [new_job(tenant="c", namespace=n, kind=k) for n in ("x", "y") for k in ("p", "q")]
    for job in jobs:
        store.insert(job)
    assert len(store._tenants["c"].leaves) == 4
    assert len(store._tenants["c"].coarse) == 5  # all, 2 namespaces, 2 kinds
    for job in jobs:
        _finish(store, job, 2.0)
    # memory stays bounded however many tenants and namespaces came and went
    assert store._tenants == {}
    assert store._place == {}
    assert store._slot_at == {}
    assert store._shared_ids == {}
    assert len(store) == 0
    assert store._unindexed == {}


@pytest.mark.parametrize("options", [{"finished_ttl_s": -1.0}, {"finished_max": -1}])
def test_negative_retention_is_refused(options: dict[str, Any]) -> None:
    with pytest.raises(work.ValidationError):
        JobTable(**options)

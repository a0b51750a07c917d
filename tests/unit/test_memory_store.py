"""The memory store: its indexes by tenant, (tenant, namespace) and status stay right through
every transition; listing pages newest first; finished jobs are pruned by count and by age, and
vanish from every index."""

from __future__ import annotations

import random
from typing import Any

import pytest
from msgspec.structs import replace

import nsai_work as work
from nsai_work.stores.memory import MemoryStore

S = work.Status
LIVE = (S.PENDING, S.QUEUED, S.RUNNING)
TERMINAL = (S.SUCCEEDED, S.FAILED, S.TIMEOUT, S.CANCELED)


def new_job(tenant: str = "t1", namespace: str = "default", **fields: Any) -> work.Job:
    return work.Job(kind="k", tenant_id=tenant, namespace=namespace, **fields)


def everything(store: MemoryStore, tenant: str, **filters: Any) -> list[str]:
    """Every id ``list`` returns for these filters, page by page (small pages)."""
    ids: list[str] = []
    cursor = None
    while True:
        jobs, cursor = store.list(tenant, limit=3, cursor=cursor, **filters)
        ids.extend(j.id for j in jobs)
        if cursor is None:
            return ids


def check_indexes(store: MemoryStore, model: dict[str, work.Job]) -> None:
    """What the store answers equals what a plain dict of jobs says."""
    assert len(store) == len(model)
    for job_id, job in model.items():
        assert (job.tenant_id, job_id) in store
        assert store.get(job.tenant_id, job_id) is job
        assert store.owners(job_id) == [job.tenant_id]
    for status in S:
        expected = {(j.tenant_id, i) for i, j in model.items() if j.status is status}
        assert store.count(status) == len(expected)
        assert set(store.keys_with_status(status)) == expected
    tenants = {j.tenant_id for j in model.values()} | {"nobody"}
    namespaces = {j.namespace for j in model.values()} | {"nowhere"}
    for tenant in tenants:
        for namespace in (None, *namespaces):
            for status in (None, *S):
                expected = sorted(
                    (
                        i
                        for i, j in model.items()
                        if j.tenant_id == tenant
                        and (namespace is None or j.namespace == namespace)
                        and (status is None or j.status is status)
                    ),
                    reverse=True,
                )
                assert everything(store, tenant, namespace=namespace, status=status) == expected


def test_insert_and_transitions_keep_every_index_right() -> None:
    rng = random.Random(1234)
    store = MemoryStore(finished_max=10_000)
    model: dict[str, work.Job] = {}
    now = 1000.0
    for step in range(400):
        live = [j for j in model.values() if j.status in LIVE]
        if not live or rng.random() < 0.4:
            job = new_job(
                tenant=rng.choice(["t1", "t2", "t3"]),
                namespace=rng.choice(["default", "a", "b"]),
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
    store = MemoryStore()
    job = new_job(status=S.RUNNING)
    store.insert(job)
    progressed = replace(job, progress=work.Progress(fraction=0.5))
    store.put(progressed, 1.0)
    assert store.get(job.tenant_id, job.id) is progressed
    assert store.keys_with_status(S.RUNNING) == [(job.tenant_id, job.id)]
    assert store.count(S.RUNNING) == 1


def test_duplicate_insert_for_the_same_tenant_is_a_conflict() -> None:
    store = MemoryStore()
    job = new_job()
    store.insert(job)
    with pytest.raises(work.ConflictError, match=job.id):
        store.insert(replace(job, namespace="elsewhere"))
    assert len(store) == 1


def test_jobs_are_keyed_by_tenant_and_id() -> None:
    """Two tenants may use the same id: each sees only its own job, and the id index names
    both owners until their jobs are pruned."""
    store = MemoryStore(finished_max=0)
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
    store = MemoryStore()
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
    store = MemoryStore()
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
    store = MemoryStore()
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
    store = MemoryStore()
    store.insert(new_job())
    assert store.list("nobody") == ([], None)
    assert store.list("t1", namespace="nowhere") == ([], None)
    assert store.list("t1", status=S.FAILED) == ([], None)


# ---- retention ---------------------------------------------------------------------------------


def _finish(
    store: MemoryStore, job: work.Job, now: float, status: work.Status = S.SUCCEEDED
) -> work.Job:
    done = replace(job, status=status)
    store.put(done, now)
    return done


def assert_gone(store: MemoryStore, job: work.Job) -> None:
    assert store.get(job.tenant_id, job.id) is None
    assert (job.tenant_id, job.id) not in store
    assert store.owners(job.id) == []
    for status in S:
        assert (job.tenant_id, job.id) not in store.keys_with_status(status)
    assert job.id not in everything(store, job.tenant_id)
    assert job.id not in everything(store, job.tenant_id, namespace=job.namespace)
    assert job.id not in everything(store, job.tenant_id, status=job.status)


def test_retention_by_count_drops_the_oldest_finished() -> None:
    store = MemoryStore(finished_max=3)
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
    total = sum(store.count(status) for status in S)
    assert total == 4


def test_retention_by_age() -> None:
    store = MemoryStore(finished_ttl_s=10.0)
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
    store = MemoryStore(finished_ttl_s=5.0)
    first, second = new_job(), new_job()
    store.insert(first)
    store.insert(second)
    first_done = _finish(store, first, 0.0)
    _finish(store, second, 100.0)  # finishing another job prunes the expired one
    assert_gone(store, first_done)
    assert (second.tenant_id, second.id) in store


def test_finished_max_zero_keeps_no_finished_job() -> None:
    store = MemoryStore(finished_max=0)
    job = new_job()
    store.insert(job)
    done = _finish(store, job, 1.0, S.CANCELED)
    assert_gone(store, done)
    assert len(store) == 0


def test_pruning_leaves_no_empty_index_entries() -> None:
    store = MemoryStore(finished_max=0)
    for tenant in ("a", "b"):
        for namespace in ("x", "y"):
            job = new_job(tenant=tenant, namespace=namespace)
            store.insert(job)
            _finish(store, job, 1.0)
    # memory stays bounded however many tenants and namespaces came and went
    assert store._by_tenant == {}
    assert store._by_namespace == {}
    assert store._shared_ids == {}
    assert len(store) == 0
    assert all(not slots for slots in store._by_status.values())


@pytest.mark.parametrize("options", [{"finished_ttl_s": -1.0}, {"finished_max": -1}])
def test_negative_retention_is_refused(options: dict[str, Any]) -> None:
    with pytest.raises(work.ValidationError):
        MemoryStore(**options)

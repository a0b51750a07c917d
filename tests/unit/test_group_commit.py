"""The engine's group commit: batches, coalescing, waiting for a commit, retries through an
outage, duplicate inserts. The store here is a small in-test Store that records each committed
batch and can be told to fail (the real stores run the same writer in the integration tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from msgspec.structs import replace

import nsai_work as work
from nsai_work.engine._writes import GroupCommit
from nsai_work.stores import JobKey, WriteBatch


class RecordingStore:
    """Commits batches into a dict; ``down`` makes writes fail like a restarting database."""

    url = "test://recording"
    durable = True

    def __init__(self) -> None:
        self.rows: dict[JobKey, work.Job] = {}
        self.batches: list[WriteBatch] = []
        self.down = False
        self.failures = 0
        self.write_delay_s = 0.0

    async def write(self, batch: WriteBatch) -> None:
        await asyncio.sleep(self.write_delay_s)
        if self.down:
            self.failures += 1
            raise work.StoreError("connection refused")
        keys = [(j.tenant_id, j.id) for j in batch.inserts]
        if any(key in self.rows for key in keys):
            raise work.ConflictError("duplicate")
        for job in [*batch.inserts, *batch.updates]:
            self.rows[(job.tenant_id, job.id)] = job
        self.batches.append(batch)

    async def get_many(self, keys: Sequence[JobKey]) -> list[work.Job | None]:
        return [self.rows.get(key) for key in keys]


def _job(n: int, tenant: str = "acme") -> work.Job:
    return work.Job(kind="k", tenant_id=tenant, id=f"job-{n}")


def _run(test: Any) -> Any:
    return asyncio.run(test())


def test_concurrent_submits_share_commits_and_each_returns_after_its_jobs_are_stored() -> None:
    store = RecordingStore()
    store.write_delay_s = 0.01

    async def test() -> None:
        writes = GroupCommit(store, flush_s=0.005, timeout_s=5)  # type: ignore[arg-type]
        writes.start()

        async def submit(n: int) -> None:
            writes.insert(_job(n))
            await writes.wait_submitted(writes.submitted([("acme", f"job-{n}")]))
            assert ("acme", f"job-{n}") in store.rows

        await asyncio.gather(*(submit(n) for n in range(50)))
        await writes.close()

    _run(test)
    assert len(store.rows) == 50
    assert len(store.batches) < 10  # 50 submits, a few commits
    assert sum(len(b.inserts) for b in store.batches) == 50


def test_a_job_changed_several_times_before_a_commit_is_written_once_as_its_latest() -> None:
    store = RecordingStore()

    async def test() -> None:
        writes = GroupCommit(store, flush_s=0.05, timeout_s=5)  # type: ignore[arg-type]
        writes.start()
        job = _job(1)
        writes.insert(job)
        writes.update(replace(job, status=work.Status.QUEUED))
        writes.update(replace(job, status=work.Status.RUNNING, attempt=1))
        await writes.commit()
        await writes.close()

    _run(test)
    (batch,) = store.batches
    assert [(j.id, j.status, j.attempt) for j in batch.inserts] == [("job-1", "running", 1)]
    assert batch.updates == []


def test_after_commit_runs_only_once_the_write_is_durable() -> None:
    store = RecordingStore()
    seen: list[tuple[str, bool]] = []

    async def test() -> None:
        writes = GroupCommit(store, flush_s=0.01, timeout_s=5)  # type: ignore[arg-type]
        writes.start()
        writes.after_commit(lambda: seen.append(("nothing pending", True)))
        job = replace(_job(1), status=work.Status.SUCCEEDED, result={"ok": 1})
        writes.insert(job)
        writes.after_commit(lambda: seen.append(("finished", ("acme", "job-1") in store.rows)))
        assert seen == [("nothing pending", True)]
        await writes.commit()
        await writes.close()

    _run(test)
    assert seen == [("nothing pending", True), ("finished", True)]


def test_an_outage_is_retried_in_order_and_loses_nothing() -> None:
    store = RecordingStore()

    async def test() -> None:
        writes = GroupCommit(store, flush_s=0.001, timeout_s=5)  # type: ignore[arg-type]
        writes.start()
        store.down = True
        writes.insert(_job(1))
        first = writes.submitted([("acme", "job-1")])
        await asyncio.sleep(0.12)
        writes.update(replace(_job(1), status=work.Status.QUEUED))
        writes.insert(_job(2))
        second = writes.submitted([("acme", "job-2")])
        await asyncio.sleep(0.05)
        assert store.rows == {}
        store.down = False
        await writes.wait_submitted(first)
        await writes.wait_submitted(second)
        await writes.close()

    _run(test)
    assert store.failures >= 2
    assert store.rows[("acme", "job-1")].status == "queued"
    assert ("acme", "job-2") in store.rows


def test_a_submit_gives_up_waiting_with_store_unavailable_but_its_write_is_kept() -> None:
    store = RecordingStore()

    async def test() -> None:
        writes = GroupCommit(store, flush_s=0.001, timeout_s=0.1)  # type: ignore[arg-type]
        writes.start()
        store.down = True
        writes.insert(_job(1))
        done = writes.submitted([("acme", "job-1")])
        with pytest.raises(work.StoreUnavailableError, match=r"did not commit within 0\.1 s"):
            await writes.wait_submitted(done)
        store.down = False
        await writes.commit()
        await writes.close()

    _run(test)
    assert ("acme", "job-1") in store.rows


def test_a_duplicate_insert_fails_its_whole_submit_and_no_other() -> None:
    store = RecordingStore()
    store.rows[("acme", "job-2")] = _job(2)
    withdrawn: list[list[JobKey]] = []

    async def test() -> None:
        writes = GroupCommit(store, flush_s=0.01, timeout_s=5)  # type: ignore[arg-type]
        writes.on_conflict = withdrawn.append
        writes.start()
        writes.insert(_job(1))
        writes.insert(_job(2))
        clashing = writes.submitted([("acme", "job-1"), ("acme", "job-2")])  # one a duplicate
        writes.insert(_job(3, tenant="globex"))
        other = writes.submitted([("globex", "job-3")])
        with pytest.raises(work.ConflictError, match="'job-2'"):
            await writes.wait_submitted(clashing)
        await writes.wait_submitted(other)
        writes.update(replace(_job(1), status=work.Status.CANCELED))  # dropped: withdrawn
        await writes.commit()
        await writes.close()

    _run(test)
    assert sorted(withdrawn[0]) == [("acme", "job-1"), ("acme", "job-2")]
    assert ("acme", "job-1") not in store.rows
    assert ("globex", "job-3") in store.rows


def test_the_writer_survives_a_failing_read_after_a_conflict_and_a_store_bug() -> None:
    store = RecordingStore()
    store.rows[("acme", "job-2")] = _job(2)
    reads = 0
    original = store.get_many

    async def flaky_get_many(keys: Sequence[JobKey]) -> list[work.Job | None]:
        nonlocal reads
        reads += 1
        if reads == 1:
            raise work.StoreError("connection lost right after the conflict")
        if reads == 2:
            raise RuntimeError("a bug in the store")
        return await original(keys)

    store.get_many = flaky_get_many  # type: ignore[method-assign]

    async def test() -> None:
        writes = GroupCommit(store, flush_s=0.001, timeout_s=5)  # type: ignore[arg-type]
        writes.start()
        writes.insert(_job(2))
        clashing = writes.submitted([("acme", "job-2")])
        with pytest.raises(work.ConflictError):
            await writes.wait_submitted(clashing)
        writes.insert(_job(3))
        await writes.wait_submitted(writes.submitted([("acme", "job-3")]))
        await writes.close()

    _run(test)
    assert reads == 3
    assert ("acme", "job-3") in store.rows

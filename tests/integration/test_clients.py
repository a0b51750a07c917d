"""Clients of a store a scheduler serves (``work.Client``, ``work.connect``), in one process: a
client's jobs run and its waits see them end; get, list, cancel and retry through the store; a
job the scheduler declines ends canceled with the error; a submit while no scheduler runs
waits for one; duplicates, closed clients and stores that cannot be shared say so.

Every test runs over each store that processes can share (``SHARED_STORES``: SQLite, and
PostgreSQL through the ``postgres_url`` fixture), but those of the client's own poller, which use
a SQLite store made to fail. The scheduler and its clients open the same store through objects of
their own, as separate processes would (tests/acceptance/test_client_processes.py runs them as
processes)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

import nsai_work as work
from nsai_work.stores import MemoryStore, WriteBatch, store_from_url
from nsai_work.stores.sqlite import SqliteStore

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]

#: Stores that processes share.
SHARED_STORES = ["sqlite", "postgres"]


@pytest.fixture(params=SHARED_STORES)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new, empty store that a scheduler and its clients share."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/work.db"
    return str(request.getfixturevalue("postgres_url"))


def job(kind: str, tenant_id: str = "acme", **fields: Any) -> work.Job:
    return work.Job(kind=kind, tenant_id=tenant_id, **fields)


# ---- submit, wait, get, list ------------------------------------------------------------------


def test_a_client_job_runs_once_and_the_clients_waits_see_it_end(
    url: str, handlers: Callable[..., str], arun: Run[Any]
) -> None:
    runs: list[str] = []
    kind = handlers(lambda j: runs.append(j.id) or {"echo": j.payload["i"]})

    async def scenario() -> None:
        async with work.Scheduler(store=url) as scheduler, work.Client(store=url) as client:
            one = await client.submit(job(kind, payload={"i": 0}))
            assert one.status == work.Status.PENDING  # stored; the scheduler admits it
            done = await client.wait(one.id, timeout=10)
            assert (done.status, done.result) == (work.Status.SUCCEEDED, {"echo": 0})
            assert done.submitted_at is not None
            assert done.finished_at is not None
            many = await client.submit_many([job(kind, payload={"i": i}) for i in range(1, 301)])
            finished = await client.wait_many([j.id for j in many], timeout=20)
            assert [j.result for j in finished] == [{"echo": i} for i in range(1, 301)]
            seen = [j.id async for j in client.as_completed([one.id, many[0].id], timeout=5)]
            assert sorted(seen) == sorted([one.id, many[0].id])
            # the scheduler sees the client's jobs as its own
            assert (await scheduler.get(one.id)).result == {"echo": 0}
            assert (await scheduler.wait(many[-1].id, timeout=5)).status == work.Status.SUCCEEDED

    arun(scenario())
    assert len(runs) == 301 == len(set(runs))


def test_a_client_gets_and_lists_what_the_scheduler_committed(
    url: str, handlers: Callable[..., str], arun: Run[Any]
) -> None:
    kind = handlers(lambda j: j.payload)

    async def scenario() -> None:
        async with work.Scheduler(store=url), work.Client(store=url) as client:
            jobs = await client.submit_many(
                [job(kind, namespace="ns1" if i % 2 else "ns2", payload={"i": i}) for i in range(5)]
            )
            await client.wait_many([j.id for j in jobs], timeout=10)
            assert (await client.get(jobs[2].id)).result == {"i": 2}
            assert (await client.get(jobs[2].id, tenant_id="acme")).id == jobs[2].id
            page = await client.list("acme", limit=2)
            assert [j.id for j in page] == [jobs[4].id, jobs[3].id]
            rest = await client.list("acme", cursor=page.next_cursor)
            assert [j.id for j in rest] == [jobs[2].id, jobs[1].id, jobs[0].id]
            assert rest.next_cursor is None
            odd = await client.list("acme", namespace="ns1", status="succeeded")
            assert [j.payload["i"] for j in odd] == [3, 1]
            assert len(await client.list("globex")) == 0
            with pytest.raises(work.NotFoundError, match="no job 'nope' in the store"):
                await client.get("nope")
            with pytest.raises(work.NotFoundError):
                await client.get(jobs[0].id, tenant_id="globex")
            with pytest.raises(work.ValidationError, match="list needs tenant_id"):
                await client.list()

    arun(scenario())


def test_a_clients_retry_copies_a_finished_job_and_the_scheduler_runs_it(
    url: str, handlers: Callable[..., str], arun: Run[Any]
) -> None:
    kind = handlers(lambda j: j.payload["n"] * 2)

    async def scenario() -> None:
        async with work.Scheduler(store=url), work.Client(store=url) as client:
            first = await client.submit(job(kind, payload={"n": 21}))
            with pytest.raises(work.ConflictError, match="retry\\(\\) copies a finished job"):
                await client.retry(first.id)  # still pending
            await client.wait(first.id, timeout=10)
            again = await client.retry(first.id)
            assert (again.retry_of, again.payload) == (first.id, {"n": 21})
            done = await client.wait(again.id, timeout=10)
            assert (done.status, done.result, done.retry_of) == ("succeeded", 42, first.id)

    arun(scenario())


# ---- cancel -----------------------------------------------------------------------------------


def test_a_clients_cancel_reaches_the_scheduler_and_stops_the_run(
    url: str, handlers: Callable[..., str], arun: Run[Any]
) -> None:
    started = asyncio.Event()
    stopped: list[str] = []

    async def forever(j: work.Job) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            stopped.append(j.id)
            raise

    kind = handlers(forever)

    async def scenario() -> None:
        async with work.Scheduler(store=url), work.Client(store=url) as client:
            running = await client.submit(job(kind))
            await asyncio.wait_for(started.wait(), 10)
            asked = await client.cancel(running.id, "no longer needed")
            assert asked.status in (work.Status.PENDING, work.Status.QUEUED, work.Status.RUNNING)
            ended = await client.wait(running.id, timeout=10)
            assert (ended.status, ended.cancel_reason) == ("canceled", "no longer needed")
            again = await client.cancel(running.id, "twice")  # terminal: returned unchanged
            assert again.cancel_reason == "no longer needed"

    arun(scenario())
    assert len(stopped) == 1


def test_a_cancel_requested_before_the_scheduler_admits_the_job_cancels_it(
    url: str, handlers: Callable[..., str], arun: Run[Any]
) -> None:
    runs: list[str] = []
    kind = handlers(lambda j: runs.append(j.id))

    async def scenario() -> None:
        async with work.Client(store=url) as client:
            doomed, kept = await client.submit_many([job(kind), job(kind)])
            await client.cancel(doomed.id, "changed my mind")
            async with work.Scheduler(store=url):
                ended = await client.wait_many([doomed.id, kept.id], timeout=10)
            assert [(j.status, j.cancel_reason) for j in ended] == [
                ("canceled", "changed my mind"),
                ("succeeded", None),
            ]

    arun(scenario())
    assert len(runs) == 1  # the canceled job never ran


def test_the_scheduler_cancels_a_clients_job_whether_or_not_it_admitted_it_yet(
    url: str, handlers: Callable[..., str], arun: Run[Any]
) -> None:
    started: set[str] = set()
    both = asyncio.Event()

    async def forever(j: work.Job) -> None:
        started.add(j.id)
        if len(started) == 2:
            both.set()
        await asyncio.sleep(60)

    kind = handlers(forever)

    async def scenario() -> None:
        async with work.Client(store=url) as client:
            jobs = await client.submit_many([job(kind) for _ in range(3)])
            async with work.Scheduler(store=url) as scheduler:
                # the first before the inbox admits it (the inbox has not read yet), the
                # others once they run
                await scheduler.cancel(jobs[0].id, "by the scheduler")
                await asyncio.wait_for(both.wait(), 10)
                for each in jobs[1:]:
                    await scheduler.cancel(each.id, "by the scheduler")
                ended = await client.wait_many([j.id for j in jobs], timeout=10)
            assert {(j.status, j.cancel_reason) for j in ended} == {
                ("canceled", "by the scheduler")
            }

    arun(scenario())


# ---- declined jobs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"kind": "nobody.runs.this"}, "nsai_work.UnschedulableError"),
        (
            {"tenant_id": "small", "resources": work.Resources(cpu=1)},
            "nsai_work.QuotaExceededError",
        ),
        ({"tenant_id": "stranger"}, "nsai_work.UnschedulableError"),
    ],
    ids=["no-backend", "quota", "unknown-tenant"],
)
def test_a_job_the_scheduler_declines_ends_canceled_rejected_with_the_error(
    url: str,
    handlers: Callable[..., str],
    arun: Run[Any],
    fields: dict[str, Any],
    error: str,
) -> None:
    kind = handlers(lambda j: "ran")
    tenants = [work.Tenant("acme"), work.Tenant("small", quota=work.Quota(cpu=0.5))]

    async def scenario() -> None:
        options = {"tenants": tenants, "unknown_tenants": "reject"}
        async with work.Scheduler(store=url, **options), work.Client(store=url) as client:
            declined = job(**{"kind": kind, "tenant_id": "acme", **fields})
            batch = await client.submit_many([job(kind), declined, job(kind)])
            ended = await client.wait_many([j.id for j in batch], timeout=10)
            first, bad, last = ended
            assert (
                (first.status, first.result) == (last.status, last.result) == ("succeeded", "ran")
            )
            assert (bad.status, bad.cancel_reason) == ("canceled", "rejected")
            assert bad.error is not None
            assert bad.error.type == error
            assert bad.error.message  # the admission error's message, as a local submit raises it

    arun(scenario())


def test_a_full_queue_declines_the_client_jobs_beyond_it_one_by_one(
    url: str, handlers: Callable[..., str], arun: Run[Any]
) -> None:
    gate = threading.Event()
    kind = handlers(lambda j: gate.wait(10))
    pools = {"local": [work.Pool(name="local:threads", slots=1)]}

    async def scenario() -> None:
        async with (
            work.Scheduler(store=url, pools=pools, max_waiting=2) as scheduler,
            work.Client(store=url) as client,
        ):
            try:
                jobs = await client.submit_many([job(kind) for _ in range(6)])
                ends = [j async for j in client.as_completed([j.id for j in jobs[3:]], timeout=10)]
                assert all(j.error and j.error.type == "nsai_work.QueueFullError" for j in ends)
            finally:
                gate.set()
            done = await client.wait_many([j.id for j in jobs[:3]], timeout=10)
            assert [j.status for j in done] == ["succeeded"] * 3  # one ran, two waited
            assert (await scheduler.stats()).totals.rejected == 3

    arun(scenario())


# ---- no scheduler yet -------------------------------------------------------------------------


def test_jobs_submitted_while_no_scheduler_runs_run_when_one_starts(
    url: str, handlers: Callable[..., str], arun: Run[Any]
) -> None:
    runs: list[str] = []
    kind = handlers(lambda j: runs.append(j.id))

    async def scenario() -> None:
        async with work.Client(store=url) as client:
            jobs = await client.submit_many([job(kind) for _ in range(1500)])  # > one inbox read
            with pytest.raises(work.WaitTimeoutError, match=r"job \S+ is pending"):
                await client.wait(jobs[0].id, timeout=0.1)
            async with work.Scheduler(store=url):
                done = await client.wait_many([j.id for j in jobs], timeout=20)
            assert {j.status for j in done} == {work.Status.SUCCEEDED}

    arun(scenario())
    assert len(runs) == 1500 == len(set(runs))


# ---- errors -----------------------------------------------------------------------------------


def test_a_duplicate_id_is_a_conflict_whoever_holds_it(
    url: str, handlers: Callable[..., str], arun: Run[Any]
) -> None:
    kind = handlers(lambda j: None)

    async def scenario() -> None:
        async with work.Scheduler(store=url) as scheduler, work.Client(store=url) as client:
            mine = await client.submit(job(kind, id="dup-1"))
            with pytest.raises(work.ConflictError, match="duplicate job id 'dup-1'"):
                await client.submit(job(kind, id="dup-1"))
            with pytest.raises(work.ConflictError, match="duplicate job id 'dup-1'"):
                await scheduler.submit(job(kind, id="dup-1"))
            await scheduler.submit(job(kind, id="dup-2"))
            with pytest.raises(work.ConflictError, match="duplicate job id 'dup-2'"):
                await client.submit_many([job(kind, id="fresh"), job(kind, id="dup-2")])
            with pytest.raises(work.NotFoundError):
                await client.get("fresh")  # nothing of the refused batch was stored
            assert (await client.wait(mine.id, timeout=10)).status == work.Status.SUCCEEDED
            other = await client.submit(job(kind, tenant_id="globex", id="dup-1"))  # per tenant
            await client.wait(other.id, tenant_id="globex", timeout=10)
            with pytest.raises(work.ValidationError, match="exists under 2 tenants"):
                await client.get("dup-1")

    arun(scenario())


def test_a_client_checks_jobs_as_the_scheduler_does(url: str, arun: Run[Any]) -> None:
    async def scenario() -> None:
        async with work.Client(store=url) as client:
            with pytest.raises(work.ValidationError, match="status is set by the scheduler"):
                await client.submit(job("k", status=work.Status.QUEUED))
            with pytest.raises(work.ValidationError, match="of job #1") as caught:
                await client.submit_many([job("k"), job("k", payload={"x": float("nan")})])
            assert caught.value.index == 1
            assert await client.submit_many([]) == []

    arun(scenario())


@pytest.mark.parametrize("store", ["memory://", "MEMORY://", MemoryStore()], ids=str)
def test_a_store_that_processes_cannot_share_is_refused(store: Any) -> None:
    for face in (work.Client, work.SyncClient, work.connect):
        with pytest.raises(work.ConfigurationError, match="one process's memory"):
            face(store=store)


def test_a_client_that_is_not_open_or_closed_says_so(url: str, arun: Run[Any]) -> None:
    async def scenario() -> None:
        client = work.Client(store=url)
        with pytest.raises(work.NotStartedError, match="is not open"):
            await client.get("x")
        async with client:
            assert client.opened
        with pytest.raises(work.NotStartedError, match="was closed"):
            await client.submit(job("k"))
        with pytest.raises(work.NotStartedError, match="create a new one"):
            await client.open()

    arun(scenario())
    with pytest.raises(work.ConfigurationError, match="poll_interval_s"):
        work.Client(store=url, poll_interval_s=0)
    with pytest.raises(work.ConfigurationError, match="store is a URL"):
        work.Client(store=42)  # type: ignore[arg-type]
    with pytest.raises(work.ConfigurationError, match="unknown store scheme"):
        work.connect(store="nosuch://x")


def test_a_wait_for_a_job_pruned_before_the_client_saw_it_end_says_so(
    url: str, arun: Run[Any]
) -> None:
    async def scenario() -> None:
        async with work.Client(store=url) as client:
            pending = await client.submit(job("k"))
            waiting = asyncio.ensure_future(client.wait(pending.id, timeout=10))
            while not client._watchers:  # until it waits  # noqa: ASYNC110
                await asyncio.sleep(0.001)
            scheduler = store_from_url(url)
            await scheduler.open("scheduler")
            try:  # what retention does to a finished job
                await scheduler.write(WriteBatch(deletes=[("acme", pending.id)]))
            finally:
                await scheduler.close()
            with pytest.raises(work.NotFoundError, match="finished and was pruned"):
                await waiting

    arun(scenario())


def test_closing_a_client_ends_its_waits_in_progress(url: str, arun: Run[Any]) -> None:
    async def scenario() -> None:
        client = await work.Client(store=url).open()
        pending = await client.submit(job("k"))
        waiting = asyncio.ensure_future(client.wait(pending.id))
        iterating = asyncio.ensure_future(anext(client.as_completed([pending.id])))
        key = ("acme", pending.id)
        while len(client._watchers.get(key, ())) < 2:  # until both are waiting  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        await client.close()
        for task in (waiting, iterating):
            with pytest.raises(work.NotStartedError, match="closed while this call waited"):
                await task

    arun(scenario())


# ---- the blocking face ------------------------------------------------------------------------


def test_the_blocking_client_does_what_the_async_one_does(
    url: str, handlers: Callable[..., str]
) -> None:
    kind = handlers(lambda j: j.payload["i"])
    with work.SyncScheduler(store=url), work.connect(store=url) as client:
        assert client.opened
        jobs = client.submit_many([job(kind, payload={"i": i}) for i in range(20)])
        assert [j.result for j in client.wait_many([j.id for j in jobs], timeout=10)] == list(
            range(20)
        )
        assert sorted(j.result for j in client.as_completed([j.id for j in jobs])) == list(
            range(20)
        )
        assert client.get(jobs[3].id).result == 3
        assert len(client.list("acme", limit=5)) == 5
        assert client.cancel(jobs[0].id).status == "succeeded"  # terminal: unchanged
        assert client.engine.url == url
    assert not client.opened
    with pytest.raises(work.NotStartedError, match="SyncClient is not open"):
        client.get(jobs[0].id)


def test_closing_a_blocking_client_ends_the_waits_of_other_threads(url: str) -> None:
    client = work.connect(store=url)
    pending = client.submit(job("k"))
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            client.wait(pending.id)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    engine = client.engine
    while not engine._watchers:  # until the other thread's wait is watching
        thread.join(0.001)
    client.close()
    thread.join(10)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], work.NotStartedError)


def test_stopping_a_blocking_scheduler_ends_the_waits_of_other_threads(
    url: str, handlers: Callable[..., str]
) -> None:
    gate = threading.Event()
    started = threading.Event()
    kind = handlers(lambda j: started.set() or gate.wait(10))
    errors: list[BaseException] = []
    scheduler = work.SyncScheduler(store=url).start()
    try:
        running = scheduler.submit(job(kind))
        assert started.wait(10)

        def wait() -> None:
            try:
                scheduler.wait(running.id)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=wait)
        thread.start()
        while not scheduler.engine._watchers:  # until the other thread's wait is watching
            thread.join(0.001)
        scheduler.stop(timeout=0.1)  # the run is left for the next start (a durable store)
        thread.join(10)
    finally:
        gate.set()
    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], work.NotStartedError)
    assert "stopped while this call waited" in str(errors[0])


def test_a_client_may_be_given_a_store_object(tmp_path: Path, arun: Run[Any]) -> None:
    store = SqliteStore(f"sqlite://{tmp_path}/work.db")

    async def scenario() -> None:
        async with work.Client(store=store) as client:
            submitted = await client.submit(job("k"))
            assert (await client.get(submitted.id)).id == submitted.id
            assert client.url == store.url

    arun(scenario())


class _Flaky(SqliteStore):
    """A SQLite store whose ``wait_for_change`` fails: ``failures`` times with ``error``."""

    def __init__(self, url: str, error: Exception, failures: int) -> None:
        super().__init__(url)
        self.error = error
        self.failures = failures

    async def wait_for_change(self, timeout: float) -> bool:
        if self.failures:
            self.failures -= 1
            raise self.error
        return await super().wait_for_change(timeout)


def test_a_waiting_client_rides_out_a_failing_store(
    tmp_path: Path, handlers: Callable[..., str], arun: Run[Any], caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite://{tmp_path}/work.db"
    kind = handlers(lambda j: "done")
    flaky = _Flaky(url, work.StoreError("the disk is on fire"), failures=2)

    async def scenario() -> None:
        async with work.Scheduler(store=url), work.Client(store=flaky) as client:
            submitted = await client.submit(job(kind))
            assert (await client.wait(submitted.id, timeout=10)).result == "done"

    arun(scenario())
    assert flaky.failures == 0
    assert "the disk is on fire" in caplog.text


def test_a_client_poller_that_breaks_ends_the_waits_with_its_error(
    tmp_path: Path, arun: Run[Any], caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite://{tmp_path}/work.db"
    broken = _Flaky(url, RuntimeError("a bug"), failures=1)

    async def scenario() -> None:
        async with work.Client(store=broken) as client:
            submitted = await client.submit(job("k"))
            with pytest.raises(RuntimeError, match="a bug"):
                await client.wait(submitted.id, timeout=10)

    arun(scenario())
    assert "the poller of" in caplog.text

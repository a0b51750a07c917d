"""One behaviour suite for the local API and the HTTP client: the same verbs, the same results,
the same errors. Each test runs on ``work.Scheduler`` (full rights) and on ``work.Client(url,
api_key=<admin key>)`` against a real server (uvicorn on loopback), and the tenant tests on
``scheduler.as_tenant("acme")`` and on ``work.Client(url, api_key=<acme's key>)``: code moves
from embedded to remote by changing the line that makes the face."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

import nsai_work as work
from tests._service import Running, running_server

Face = Callable[[], contextlib.AbstractAsyncContextManager[Any]]


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    with running_server() as running:
        yield running


@pytest.fixture(params=["local", "http"])
def face(request: pytest.FixtureRequest, server: Running) -> Face:
    """Full rights: a Scheduler, or a client with an admin key."""

    @contextlib.asynccontextmanager
    async def make() -> AsyncIterator[Any]:
        if request.param == "local":
            async with work.Scheduler() as scheduler:
                yield scheduler
        else:
            async with work.Client(server.url, api_key=server.admin) as client:
                yield client

    return make


@pytest.fixture(params=["local", "http"])
def acme(request: pytest.FixtureRequest, server: Running) -> Face:
    """acme's verbs: a tenant scope of a Scheduler, or a client with acme's key. The second
    value is a full-rights face of the same scheduler (to make globex's jobs)."""

    @contextlib.asynccontextmanager
    async def make() -> AsyncIterator[Any]:
        if request.param == "local":
            async with work.Scheduler() as scheduler:
                yield scheduler.as_tenant("acme"), scheduler
        else:
            async with (
                work.Client(server.url, api_key=server.acme) as client,
                work.Client(server.url, api_key=server.admin) as admin,
            ):
                yield client, admin

    return make


def job(kind: str, tenant_id: str = "acme", **fields: Any) -> work.Job:
    return work.Job(kind=kind, tenant_id=tenant_id, **fields)


def test_submit_get_wait_and_a_result(face: Face, handlers: Callable[..., str], arun: Any) -> None:
    kind = handlers(lambda j: {"sum": j.payload["a"] + j.payload["b"]})

    async def scenario() -> None:
        async with face() as s:
            submitted = await s.submit(job(kind, payload={"a": 2, "b": 3}, namespace="ml"))
            assert submitted.status in (
                work.Status.QUEUED,
                work.Status.RUNNING,
                work.Status.PENDING,
            )
            assert submitted.submitted_at is not None
            done = await s.wait(submitted.id, timeout=10)
            assert (done.status, done.result, done.attempt) == (
                work.Status.SUCCEEDED,
                {"sum": 5},
                1,
            )
            got = await s.get(submitted.id)
            assert got.result == {"sum": 5}
            assert got.namespace == "ml"
            assert got.finished_at is not None

    arun(scenario())


def test_a_failing_job_is_returned_failed_with_its_error(
    face: Face, handlers: Callable[..., str], arun: Any
) -> None:
    def boom(j: work.Job) -> None:
        raise work.NonRetryableError("no such model")

    kind = handlers(boom)

    async def scenario() -> None:
        async with face() as s:
            done = await s.wait((await s.submit(job(kind))).id, timeout=10)
            assert done.status == work.Status.FAILED
            assert done.error.message == "no such model"
            assert done.error.type == "nsai_work.NonRetryableError"

    arun(scenario())


def test_submit_many_is_all_or_nothing_and_names_the_bad_job(
    face: Face, handlers: Callable[..., str], arun: Any
) -> None:
    kind = handlers(lambda j: j.payload["i"])

    async def scenario() -> None:
        async with face() as s:
            ns = f"batch{id(s) % 100000}"
            bad = [job(kind, namespace=ns, payload={"i": i}) for i in range(3)]
            bad.append(job(kind, namespace=ns, resources=work.Resources(cpu=-1)))
            with pytest.raises(work.ValidationError) as caught:
                await s.submit_many(bad)
            assert (caught.value.index, caught.value.path) == (3, "$.resources.cpu")
            assert caught.value.rule == "Expected `float` >= 0.0"
            assert len(await s.list("acme", namespace=ns)) == 0
            good = await s.submit_many(
                [job(kind, namespace=ns, payload={"i": i}) for i in range(5)]
            )
            finished = await s.wait_many([j.id for j in good], timeout=10)
            assert [j.result for j in finished] == [0, 1, 2, 3, 4]
            seen = sorted(
                [j.result async for j in s.as_completed([j.id for j in good], timeout=10)]
            )
            assert seen == [0, 1, 2, 3, 4]

    arun(scenario())


def test_list_filters_and_pages(face: Face, handlers: Callable[..., str], arun: Any) -> None:
    kind = handlers(lambda j: None)

    async def scenario() -> None:
        async with face() as s:
            ns = f"list{id(s) % 100000}"
            jobs = await s.submit_many([job(kind, namespace=ns) for _ in range(7)])
            await s.wait_many([j.id for j in jobs], timeout=10)
            first = await s.list("acme", namespace=ns, limit=4)
            assert [j.id for j in first] == [j.id for j in reversed(jobs)][:4]
            rest = await s.list("acme", namespace=ns, limit=4, cursor=first.next_cursor)
            assert [j.id for j in rest] == [j.id for j in reversed(jobs)][4:]
            assert rest.next_cursor is None
            done = await s.list("acme", namespace=ns, status="succeeded", kind=kind)
            assert len(done) == 7
            assert len(await s.list("acme", namespace=ns, status="running")) == 0

    arun(scenario())


def test_cancel_a_running_job_and_a_finished_one(
    face: Face, handlers: Callable[..., str], arun: Any
) -> None:
    started = threading.Event()

    async def slow(j: work.Job) -> None:
        started.set()
        await asyncio.sleep(30)

    kind = handlers(slow)
    quick = handlers(lambda j: "done")

    async def scenario() -> None:
        async with face() as s:
            running = await s.submit(job(kind))
            await asyncio.to_thread(started.wait, 10)
            await s.cancel(running.id, "operator said so")
            canceled = await s.wait(running.id, timeout=10)
            assert (canceled.status, canceled.cancel_reason) == (
                work.Status.CANCELED,
                "operator said so",
            )
            finished = await s.wait((await s.submit(job(quick))).id, timeout=10)
            again = await s.cancel(finished.id)
            assert (again.status, again.result) == (work.Status.SUCCEEDED, "done")

    arun(scenario())


def test_retry_copies_a_finished_job_and_refuses_a_live_one(
    face: Face, handlers: Callable[..., str], arun: Any
) -> None:
    gate = threading.Event()
    kind = handlers(lambda j: gate.wait(10) and j.payload)

    async def scenario() -> None:
        async with face() as s:
            first = await s.submit(job(kind, payload={"n": 1}))
            with pytest.raises(work.ConflictError, match="retry\\(\\) copies a finished job"):
                await s.retry(first.id)
            gate.set()
            await s.wait(first.id, timeout=10)
            copy = await s.retry(first.id)
            assert copy.id != first.id
            assert (copy.retry_of, copy.payload) == (first.id, {"n": 1})
            assert (await s.wait(copy.id, timeout=10)).result == {"n": 1}

    arun(scenario())


def test_the_same_errors(face: Face, handlers: Callable[..., str], arun: Any) -> None:
    kind = handlers(lambda j: None)
    blocker = threading.Event()
    slow = handlers(lambda j: blocker.wait(10))

    async def scenario() -> None:
        async with face() as s:
            with pytest.raises(work.NotFoundError, match="no job 'nope' here"):
                await s.get("nope")
            with pytest.raises(work.NotFoundError):
                await s.wait("nope", timeout=1)
            with pytest.raises(work.ValidationError) as caught:
                await s.list("acme", limit=0)
            assert caught.value.path == "$.limit"
            with pytest.raises(work.ValidationError) as caught:
                await s.list("acme", status="sleeping")
            assert caught.value.path == "$.status"
            with pytest.raises(work.ValidationError) as caught:
                await s.submit(job(kind, tenant_id="acme corp"))
            assert caught.value.path == "$.tenant_id"
            with pytest.raises(work.UnschedulableError, match="H100"):
                await s.submit(job(kind, resources=work.Resources(gpu="H100", gpu_count=1)))
            live = await s.submit(job(slow))
            with pytest.raises(work.WaitTimeoutError) as timed_out:
                await s.wait(live.id, timeout=0.2)
            assert isinstance(timed_out.value, TimeoutError)
            assert "1 of 1 jobs are not finished after 0.2 s" in str(timed_out.value)
            with pytest.raises(work.ValidationError) as caught:
                await s.wait(live.id, timeout=-1)
            assert caught.value.path == "$.timeout"
            blocker.set()
            await s.wait(live.id, timeout=10)
            dup = job(kind)
            await s.submit(dup)
            with pytest.raises(work.ConflictError, match="duplicate job id"):
                await s.submit(dup)

    arun(scenario())


def test_a_tenants_face_sees_its_own_jobs_only(
    acme: Face, handlers: Callable[..., str], arun: Any
) -> None:
    kind = handlers(lambda j: j.tenant_id)

    async def scenario() -> None:
        async with acme() as (mine, everyone):
            theirs = await everyone.submit(job(kind, tenant_id="globex"))
            await everyone.wait(theirs.id, timeout=10)
            with pytest.raises(work.NotFoundError) as unknown:
                await mine.get("no-such-id")
            with pytest.raises(work.NotFoundError) as hidden:
                await mine.get(theirs.id)
            assert str(hidden.value) == str(unknown.value).replace("no-such-id", theirs.id)
            for verb in (mine.cancel, mine.retry, mine.wait):
                with pytest.raises(work.NotFoundError):
                    await verb(theirs.id)
            with pytest.raises(work.ValidationError) as caught:
                await mine.submit(job(kind, tenant_id="globex"))
            assert caught.value.path == "$.tenant_id"
            with pytest.raises(work.ValidationError) as caught:
                await mine.list("globex")
            assert caught.value.path == "$.tenant_id"
            ns = f"own{id(mine) % 100000}"
            own = await mine.submit(job(kind, namespace=ns))
            assert (await mine.wait(own.id, timeout=10)).result == "acme"
            assert [j.id for j in await mine.list(namespace=ns)] == [own.id]
            stats = await mine.stats()
            assert stats.succeeded >= 1

    arun(scenario())


def test_the_blocking_client_has_the_same_verbs(
    server: Running, handlers: Callable[..., str]
) -> None:
    kind = handlers(lambda j: j.payload["n"] * 2)
    started = threading.Event()
    slow = handlers(lambda j: started.set() or threading.Event().wait(0.5))
    with work.connect(server.url, api_key=server.acme) as client:
        assert isinstance(client, work.SyncClient)
        assert client.caller.tenant_id == "acme"
        jobs = client.submit_many([job(kind, payload={"n": n}) for n in range(3)])
        assert [j.result for j in client.wait_many([j.id for j in jobs], timeout=10)] == [0, 2, 4]
        assert sorted(j.result for j in client.as_completed([j.id for j in jobs])) == [0, 2, 4]
        assert client.wait(jobs[0].id).result == 0
        assert client.retry(jobs[0].id).retry_of == jobs[0].id
        live = client.submit(job(slow))
        started.wait(10)
        client.cancel(live.id, "enough")
        assert client.wait(live.id, timeout=10).cancel_reason == "enough"
        assert client.stats().succeeded >= 3
    with pytest.raises(work.ConfigurationError, match="unknown or revoked"):
        work.connect(server.url, api_key="nsw_0000000000000000_" + "a" * 43)
    with pytest.raises(work.NotStartedError, match="cannot be reached"):
        work.connect("http://127.0.0.1:9", api_key=server.acme)


def test_a_server_that_is_a_client_of_the_store(
    tmp_path: Any, handlers: Callable[..., str]
) -> None:
    """Servers without the scheduler share a store the scheduler serves (here: one process
    with the scheduler, and a server that is a client of the same SQLite file)."""
    kind = handlers(lambda j: j.payload["n"] + 1)
    url = f"sqlite://{tmp_path}/work.db"
    with (
        work.SyncScheduler(store=url),
        running_server(store=url, scheduler=False) as api,
        work.connect(api.url, api_key=api.acme) as client,
    ):
        assert api.app.state.service.runs_scheduler is False
        submitted = client.submit(job(kind, payload={"n": 41}))
        assert submitted.status == work.Status.PENDING  # committed; the scheduler admits it
        assert client.wait(submitted.id, timeout=10).result == 42
        with pytest.raises(work.NotStartedError, match="needs the scheduler's memory"):
            client.stats()

"""Bulk cancel and retry by filter (``cancel_where``, ``retry_where``): the same behaviour on the
local API (memory and SQLite), a store client, and the HTTP client with an admin key; bounded
batches that go on with a cursor; the tenant named is the only one touched."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import nsai_work as work
from tests._service import Running, running_server

Face = Callable[[], contextlib.AbstractAsyncContextManager[Any]]


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    with running_server() as running:
        yield running


@pytest.fixture(params=["memory", "sqlite", "store-client", "http"])
def face(request: pytest.FixtureRequest, server: Running, tmp_path: Path) -> Face:
    """Full rights over every tenant, four ways."""

    @contextlib.asynccontextmanager
    async def make() -> AsyncIterator[Any]:
        if request.param == "memory":
            async with work.Scheduler() as scheduler:
                yield scheduler
        elif request.param == "sqlite":
            async with work.Scheduler(store=f"sqlite:///{tmp_path / 'w.db'}") as scheduler:
                yield scheduler
        elif request.param == "store-client":
            url = f"sqlite:///{tmp_path / 'c.db'}"
            async with work.Scheduler(store=url), work.Client(store=url) as client:
                yield client
        else:
            async with work.Client(server.url, api_key=server.admin) as client:
                yield client

    return make


async def _settled(face: Any, ids: list[str], tenant: str) -> list[work.Job]:
    return await face.wait_many(ids, timeout=10, tenant_id=tenant)


def test_cancel_where_acts_on_matches_in_bounded_batches_then_retry_where(
    face: Face, handlers: Callable[..., str], arun: Any
) -> None:
    async def slow(job: work.Job) -> None:
        await asyncio.sleep(60)

    kind = handlers(slow)
    tenant, other = f"t{uuid.uuid4().hex[:8]}", f"o{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        async with face() as s:
            urgent = await s.submit_many(
                work.Job(kind=kind, tenant_id=tenant, priority="interactive") for _ in range(2)
            )
            between = datetime.now(UTC)
            batch = await s.submit_many(work.Job(kind=kind, tenant_id=tenant) for _ in range(5))
            theirs = await s.submit(work.Job(kind=kind, tenant_id=other))

            first = await s.cancel_where(tenant, priority="batch", limit=3, reason="cleanup")
            assert first.action == "cancel"
            assert first.count == 3
            assert first.job_ids == [j.id for j in reversed(batch)][:3]  # newest first
            assert first.next_cursor is not None
            rest = await s.cancel_where(
                tenant, priority="batch", limit=3, cursor=first.next_cursor, reason="cleanup"
            )
            assert rest.job_ids == [batch[1].id, batch[0].id]
            assert (rest.count, rest.matched, rest.next_cursor) == (2, 2, None)

            canceled = await _settled(s, [j.id for j in batch], tenant)
            assert {j.status for j in canceled} == {work.Status.CANCELED}
            assert {j.cancel_reason for j in canceled} == {"cleanup"}
            for job in [*urgent, theirs]:
                assert (await s.get(job.id, tenant_id=job.tenant_id)).status not in (
                    work.Status.CANCELED,
                )

            # again: finished jobs match but are skipped
            again = await s.cancel_where(tenant, created_after=between, limit=100)
            assert (again.count, again.matched, again.skipped) == (0, 5, 5)

            retried = await s.retry_where(tenant, status="canceled", limit=1000)
            assert retried.action == "retry"
            assert retried.count == 5
            assert sorted(retried.job_ids) == sorted(j.id for j in batch)
            assert len(set(retried.new_job_ids)) == 5
            for old, new in zip(retried.job_ids, retried.new_job_ids, strict=True):
                copy = await s.get(new, tenant_id=tenant)
                assert copy.retry_of == old
                assert copy.status is not work.Status.CANCELED

            # the interactive ones before `between` only: a time range and a priority
            early = await s.cancel_where(tenant, created_before=between, priority="interactive")
            assert sorted(early.job_ids) == sorted(j.id for j in urgent)
            await _settled(s, early.job_ids, tenant)  # (a store client's cancel is a request)
            everything = await s.cancel_where(tenant)
            assert sorted(everything.job_ids) == sorted(retried.new_job_ids)
            assert everything.skipped == 7
            assert (await s.get(theirs.id, tenant_id=other)).status is not work.Status.CANCELED
            await s.cancel(theirs.id, tenant_id=other)
            await _settled(s, everything.job_ids, tenant)  # nothing left running at the stop
            await _settled(s, [theirs.id], other)

    arun(scenario())


def test_bad_filters_are_refused_naming_the_field(face: Face, arun: Any) -> None:
    async def scenario() -> None:
        async with face() as s:
            for call, path in [
                (s.cancel_where(), "$.tenant_id"),
                (s.cancel_where("acme", limit=1001), "$.limit"),
                (s.retry_where("acme", limit=0), "$.limit"),
                (s.retry_where("acme", status="nope"), "$.status"),
                (s.cancel_where("acme", priority="urgent"), "$.priority"),
                (s.cancel_where("acme", created_after=datetime(2026, 1, 1)), "$.created_after"),
            ]:
                with pytest.raises(work.ValidationError) as caught:
                    await call
                assert caught.value.path == path

    arun(scenario())


def test_a_scoped_face_acts_on_its_own_tenant_only(arun: Any, handlers: Callable[..., str]) -> None:
    async def slow(job: work.Job) -> None:
        await asyncio.sleep(60)

    kind = handlers(slow)

    async def scenario() -> None:
        async with work.Scheduler() as scheduler:
            mine = await scheduler.submit(work.Job(kind=kind, tenant_id="acme"))
            theirs = await scheduler.submit(work.Job(kind=kind, tenant_id="globex"))
            acme = scheduler.as_tenant("acme")
            assert (await acme.cancel_where()).job_ids == [mine.id]
            with pytest.raises(work.ValidationError):
                await acme.cancel_where("globex")
            assert (await scheduler.get(theirs.id)).status is not work.Status.CANCELED
            await scheduler.cancel(theirs.id)

    arun(scenario())


def test_a_tenants_key_may_not_call_the_bulk_routes(server: Running, arun: Any) -> None:
    async def scenario() -> None:
        async with work.Client(server.url, api_key=server.acme) as client:
            with pytest.raises(work.ConfigurationError, match="admin"):
                await client.cancel_where()

    arun(scenario())
    answer = server.call("POST", "/v1/ops/retry", server.admin, json={"tenant_id": "acme", "x": 1})
    assert answer.status_code == 422
    assert "x" in answer.json()["detail"]

"""``check_store``'s listing section: every combination of filters against a brute-force
oracle, paging by cursor, cursors that outlive their row, and cursors a store must refuse."""

from __future__ import annotations

import datetime as _dt
import random

from msgspec.structs import replace

from .._errors import ValidationError
from .._ir import Job, Status
from ..stores._protocol import ListQuery, WriteBatch
from ._store_harness import Check, fail, plain_job, same_jobs

__all__ = ["check_list"]

NAMESPACES = ("ns-1", "ns-2", "ns-3")
KINDS = ("kind.x", "kind.y")


def _describe(query: ListQuery) -> str:
    parts = [f"tenant_id={query.tenant_id!r}"]
    for name in ("namespace", "status", "kind"):
        value = getattr(query, name)
        if value is not None:
            parts.append(f"{name}={str(value)!r}")
    return f"list({', '.join(parts)}, limit={query.limit})"


def _matches(job: Job, query: ListQuery) -> bool:
    return (
        job.tenant_id == query.tenant_id
        and (query.namespace is None or job.namespace == query.namespace)
        and (query.status is None or job.status == query.status)
        and (query.kind is None or job.kind == query.kind)
    )


async def walk(check: Check, store: object, query: ListQuery, want: list[Job]) -> None:
    """Page through ``query`` by cursor; fail unless the pages hold ``want`` exactly, each job
    once, every page before the last full, and the last with no cursor."""
    got: list[Job] = []
    cursor: str | None = None
    for _ in range(len(want) // query.limit + 2):
        page, cursor = await store.list(replace(query, cursor=cursor))  # type: ignore[attr-defined]
        if cursor is not None and len(page) != query.limit:
            fail(
                f"{check.section}: {_describe(query)} returned a page of {len(page)} with a "
                f"next cursor; a page before the last holds `limit` jobs"
            )
        got.extend(page)
        if cursor is None:
            break
    else:
        fail(f"{check.section}: {_describe(query)} kept returning cursors past {len(want)} jobs")
    same_jobs(check.section, got, want, f"{_describe(query)} paged through")


async def check_list(check: Check) -> None:
    """list(): newest first for every combination of namespace, status and kind, as the
    oracle says; paging visits each job once; bad and foreign cursors are refused."""
    store = await check.opened()
    client = await check.client_for(store)
    a, b, nobody = check.tenant("list-a"), check.tenant("list-b"), check.tenant("list-none")
    rng = random.Random(20260304)
    now = _dt.datetime.now(_dt.UTC)
    oracle: list[Job] = []  # in submission order
    used: dict[str, set[str]] = {a: set(), b: set()}
    for batch_no in range(6):
        batch: list[Job] = []
        for _ in range(12):
            tenant = a if rng.random() < 0.7 else b
            other = b if tenant == a else a
            shared = sorted(used[other] - used[tenant])
            status = rng.choice(list(Status))
            job = plain_job(
                tenant,
                namespace=rng.choice(NAMESPACES),
                kind=rng.choice(KINDS),
                status=status,
                finished_at=now if status.is_terminal else None,
            )
            if shared and rng.random() < 0.2:  # the other tenant's id: another job
                job = replace(job, id=rng.choice(shared))
            used[tenant].add(job.id)
            batch.append(job)
        await store.write(WriteBatch(inserts=batch))
        oracle += batch
        if batch_no == 2:  # a client's submits take their place in submission order too
            submitted = [plain_job(a, namespace=NAMESPACES[i], kind=KINDS[i % 2]) for i in range(3)]
            await client.submit(submitted)
            oracle += submitted
    updates: list[Job] = []
    for index in rng.sample(range(len(oracle)), 30):
        job = oracle[index]
        if not job.is_terminal:  # a transition keeps the job's place
            status = rng.choice(list(Status))
            job = replace(job, status=status, finished_at=now if status.is_terminal else None)
            oracle[index] = job
            updates.append(job)
    await store.write(WriteBatch(updates=updates))

    newest_first = oracle[::-1]
    for tenant in (a, b, nobody):
        for namespace in (None, *NAMESPACES, "ns-none"):
            for status in (None, *Status):
                for kind in (None, *KINDS, "kind.none"):
                    query = ListQuery(
                        tenant_id=tenant, namespace=namespace, status=status, kind=kind, limit=4
                    )
                    await walk(check, store, query, [j for j in newest_first if _matches(j, query)])
    mine = [j for j in newest_first if j.tenant_id == a]
    await walk(check, store, ListQuery(tenant_id=a, limit=1), mine)
    page, cursor = await store.list(ListQuery(tenant_id=a, limit=1000))
    same_jobs(check.section, page, mine, "list(limit=1000)")
    if cursor is not None:
        fail(f"{check.section}: a page holding the last job should have no cursor, got {cursor!r}")

    # A cursor outlives its job, and new jobs do not shift the pages after it.
    first, cursor = await store.list(ListQuery(tenant_id=a, limit=5))
    gone = first[-1]
    await check.clean(store, [gone])
    newer = [plain_job(a) for _ in range(3)]
    await store.write(WriteBatch(inserts=newer))
    rest = [j for j in mine[5:] if j.id != gone.id]
    second, _ = await store.list(ListQuery(tenant_id=a, limit=5, cursor=cursor))
    same_jobs(check.section, second, rest[:5], "the page after a cursor whose job was deleted")

    _, foreign = await store.list(ListQuery(tenant_id=b, limit=1))
    for bad in ("garbage", "", "0", "12345", "-1", "1.2.3", "🙂", foreign):
        try:
            await store.list(ListQuery(tenant_id=a, limit=3, cursor=bad))
        except ValidationError as exc:
            if exc.path != "$.cursor":
                fail(
                    f"{check.section}: a bad cursor's ValidationError is at {exc.path}, not "
                    f"$.cursor"
                )
            continue
        except Exception as exc:
            fail(
                f"{check.section}: list(cursor={bad!r}) should raise ValidationError, raised "
                f"{exc!r}"
            )
        fail(
            f"{check.section}: list(cursor={bad!r}) should raise ValidationError at $.cursor "
            f"(a cursor this store did not return for this query)"
        )
    try:
        await store.list(ListQuery(tenant_id=a, limit=0))
    except ValidationError as exc:
        if exc.path != "$.limit":
            fail(f"{check.section}: limit=0's ValidationError is at {exc.path}, not $.limit")
    else:
        fail(f"{check.section}: list(limit=0) should raise ValidationError at $.limit")
    await check.clean(store, oracle + newer)

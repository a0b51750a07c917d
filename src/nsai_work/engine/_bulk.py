"""The bulk verbs, ``cancel_where`` and ``retry_where``, for every face (see ``_bulk.py`` at the
package root for what they match and answer).

Each reads the tenant's jobs through the engine's ``_list`` (newest first, the store's
filters), keeps those that pass the others, and acts on each as the single verb would: a
cancel is the engine's ``_cancel``, a retry submits the copies in one batch (all or nothing;
if the batch is refused, each copy is submitted alone, so one copy over a quota does not hold
back the others, and its error is reported)."""

from __future__ import annotations

import builtins
import contextlib
from typing import TYPE_CHECKING, Literal

from .._bulk import BULK_SCAN_PAGES, BulkFailure, BulkFilter, BulkResult
from .._errors import WorkError
from .._ir import TERMINAL_STATUSES, Job
from .._validate import retry_copy
from ..stores import ListQuery

if TYPE_CHECKING:
    from ._verbs import Verbs

__all__ = ["run_bulk"]


async def run_bulk(
    verbs: Verbs, action: Literal["cancel", "retry"], where: BulkFilter
) -> BulkResult:
    """Carry out a bulk cancel or retry as ``verbs``' caller (its tenant scope applies)."""
    where.check()
    tenant_id = verbs._tenant(where.tenant_id)
    page = await verbs.list(
        tenant_id,
        namespace=where.namespace,
        status=where.status,
        kind=where.kind,
        limit=where.limit,
        cursor=where.cursor,
    )  # (the first page: list checks the arguments it shares)
    assert tenant_id is not None or verbs._scope is not None
    tenant = tenant_id if tenant_id is not None else verbs._scope
    assert tenant is not None
    result = BulkResult(action=action, tenant_id=tenant)
    engine = verbs._engine
    pages = 1
    while True:
        todo = _sort(page.jobs, where, action, result)
        if action == "cancel":
            for job in todo:
                reason = where.reason or "requested"
                await engine._cancel((job.tenant_id, job.id), reason, verbs._actor)
                result.job_ids.append(job.id)
            writes = getattr(engine, "_writes", None)  # a scheduler's group commit
            if todo and writes is not None:
                await writes.commit()  # the cancels are durable: a list now shows them
        elif todo:
            await _retry(verbs, todo, result)
        cursor = page.next_cursor
        left = where.limit - len(result.job_ids) - len(result.failed)
        if cursor is None or left <= 0 or pages >= BULK_SCAN_PAGES:
            result.next_cursor = cursor
            result.count = len(result.job_ids)
            return result
        page = await engine._list(
            ListQuery(
                tenant_id=tenant,
                namespace=where.namespace,
                status=where.status,
                kind=where.kind,
                limit=left,
                cursor=cursor,
            )
        )
        pages += 1


def _sort(
    jobs: builtins.list[Job], where: BulkFilter, action: str, result: BulkResult
) -> builtins.list[Job]:
    """The jobs of a page the action applies to; counts the matched and the skipped."""
    todo = []
    for job in jobs:
        if not where.keeps(job):
            continue
        result.matched += 1
        finished = job.status in TERMINAL_STATUSES
        if finished == (action == "retry"):
            todo.append(job)
        else:
            result.skipped += 1
    return todo


async def _retry(verbs: Verbs, jobs: builtins.list[Job], result: BulkResult) -> None:
    """Submit a copy of each finished job: in one batch, or one by one if the batch fails."""
    engine = verbs._engine
    try:
        with contextlib.ExitStack() as stack:
            copies = [stack.enter_context(retry_copy(job, verbs._actor)) for job in jobs]
            admitted = await engine._admit(copies, batch=True)
    except WorkError:
        admitted = None
    if admitted is not None:
        result.job_ids.extend(job.id for job in jobs)
        result.new_job_ids.extend(job.id for job in admitted)
        return
    for job in jobs:
        try:
            with retry_copy(job, verbs._actor) as one:
                (copy,) = await engine._admit([one], batch=False)
        except WorkError as exc:
            result.failed.append(
                BulkFailure(job_id=job.id, error=type(exc).__name__, message=str(exc))
            )
        else:
            result.job_ids.append(job.id)
            result.new_job_ids.append(copy.id)

"""How the scheduler reads jobs: live ones from the core, the others from the store.

``Reads`` is the part of the ``Scheduler`` that answers ``JobLookups``'s questions (who owns an
id, every job with each of many ids, each key's latest snapshot) and what a read adds to a
stored snapshot (the waiting reason and progress that change between transitions). A durable
store's copy of a live job may lag behind the core's by a group commit, so live jobs are read
from the core.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import TYPE_CHECKING

from msgspec.structs import replace

from .._errors import NotFoundError
from .._ir import Job, Status
from ..stores import JobKey, ListQuery, Store
from ._verbs import Page

if TYPE_CHECKING:
    from ..core import SchedulingCore
    from ._config import Config
    from ._runner import RunTuple
    from ._writes import Writes

__all__ = ["Reads"]

_QUEUED, _PENDING, _RUNNING = Status.QUEUED, Status.PENDING, Status.RUNNING


class Reads:
    """The scheduler's reads (mixed into ``Scheduler``, which sets these attributes)."""

    config: Config
    _state: str
    _store: Store
    _core: SchedulingCore
    _writes: Writes
    _runs: dict[tuple[str, str, int], RunTuple]

    async def _owners(self, job_id: str) -> builtins.list[str]:
        """The tenants with a job with this id: live here, or in the store."""
        if self._state == "new":
            return []
        live = self._core.owners(job_id)
        stored = await self._store.owners(job_id)
        return live if not stored else sorted({*live, *stored})

    async def _find_many(self, job_ids: Sequence[str]) -> dict[str, builtins.list[Job]]:
        """Every job with each of these ids: from the store (one query), with live jobs as
        the core has them now (a durable store's copy may lag behind, or not exist yet)."""
        if self._state == "new" or not job_ids:
            return {}
        found = await self._store.find_many(job_ids)
        if not self._writes.durable:  # the memory store holds every job as it is now
            return found
        core = self._core
        for job_id in job_ids:
            owners = core.owners(job_id)
            if not owners:
                continue
            by_tenant = {job.tenant_id: job for job in found.get(job_id, ())}
            for tenant_id in owners:
                by_tenant[tenant_id] = core.get(tenant_id, job_id)  # type: ignore[assignment]
            found[job_id] = [by_tenant[tenant_id] for tenant_id in sorted(by_tenant)]
        return found

    async def _read(self, keys: Sequence[JobKey]) -> builtins.list[Job | None]:
        """Each job's latest snapshot: a live job's from the core (a durable store may not have
        it yet), any other's from the store; None when there is none."""
        if self._state == "new":
            return [None] * len(keys)
        live = self._core.get
        jobs = [live(*key) for key in keys]
        missing = [index for index, job in enumerate(jobs) if job is None]
        if missing:
            found = await self._store.get_many([keys[index] for index in missing])
            for index, job in zip(missing, found, strict=True):
                jobs[index] = job
        return jobs

    def not_found(self, job_id: str) -> NotFoundError:
        """The one answer for an unknown id, another tenant's job, or a pruned one."""
        return NotFoundError(
            f"no job {job_id!r} here: unknown, another tenant's, or finished and pruned "
            f"(finished jobs are kept finished_ttl_s={self.config.finished_ttl_s} s)"
        )

    def _current(self, job: Job) -> Job:
        """A stored snapshot with what changes between transitions filled in."""
        status = job.status
        if status is _QUEUED or status is _PENDING:
            reason = self._core.waiting_reason(job.tenant_id, job.id)
            if reason is not None and reason != job.waiting_reason:
                return replace(job, waiting_reason=reason)
        elif status is _RUNNING:
            run = self._runs.get((job.tenant_id, job.id, job.attempt))
            if run is not None and run[1].last_progress is not None:
                return replace(job, progress=run[1].last_progress)
        return job

    async def _list(self, query: ListQuery) -> Page:
        """A page of a tenant's jobs from the store's indexes, newest first (arguments checked);
        live jobs as they are now."""
        if self._state == "new":
            return Page(jobs=[])
        jobs, next_cursor = await self._store.list(query)
        live = self._core.get
        return Page(
            jobs=[self._current(live(job.tenant_id, job.id) or job) for job in jobs],
            next_cursor=next_cursor,
        )

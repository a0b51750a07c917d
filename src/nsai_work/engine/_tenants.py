"""Tenant-scoped handles: the verbs of a scheduler, narrowed to one tenant's jobs.

``scheduler.as_tenant("acme")`` (async), ``sync_scheduler.as_tenant("acme")`` and
``work.as_tenant("acme")`` see and change only acme's jobs: jobs are keyed by (tenant_id, id),
so another tenant's job id behaves exactly like an unknown one (``NotFoundError``, same
message), a job with the id of another tenant's job is simply acme's own, and a job of another
tenant cannot be submitted through it.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING

from .._errors import ValidationError
from .._ir import Job, Status
from .._stats import TenantStats
from ._scheduler import job_list

if TYPE_CHECKING:
    from ._scheduler import Page, Scheduler
    from ._sync import SyncScheduler

__all__ = ["SyncTenantScope", "TenantScope"]


def _check_tenant_id(tenant_id: object) -> str:
    if not isinstance(tenant_id, str) or not tenant_id:
        raise ValidationError(
            f"tenant_id is a non-empty string, got {tenant_id!r}", path="$.tenant_id"
        )
    return tenant_id


def _own(tenant_id: str, jobs: Iterable[Job], *, batch: bool) -> builtins.list[Job]:
    checked = []
    for index, job in enumerate(jobs):
        owner = getattr(job, "tenant_id", None)
        if owner != tenant_id:
            raise ValidationError(
                f"this handle submits for tenant {tenant_id!r} only; the job is for {owner!r}",
                path="$.tenant_id",
                index=index if batch else None,
            )
        checked.append(job)
    return checked


class TenantScope:
    """The async verbs of a ``Scheduler``, for one tenant."""

    def __init__(self, scheduler: Scheduler, tenant_id: str) -> None:
        self.scheduler = scheduler
        self.tenant_id = _check_tenant_id(tenant_id)

    def _mine(self, job_id: str) -> Job:
        return self.scheduler.get_now(job_id, tenant_id=self.tenant_id)

    async def submit(self, job: Job) -> Job:
        """Submit one of this tenant's jobs."""
        return self.scheduler.submit_now(_own(self.tenant_id, [job], batch=False), batch=False)[0]

    async def submit_many(self, jobs: Iterable[Job]) -> builtins.list[Job]:
        """Submit a batch of this tenant's jobs, all or nothing."""
        return self.scheduler.submit_now(
            _own(self.tenant_id, job_list(jobs), batch=True), batch=True
        )

    async def get(self, job_id: str) -> Job:
        """One of this tenant's jobs, as it is now."""
        return self._mine(job_id)

    async def list(
        self,
        *,
        namespace: str | None = None,
        status: Status | str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """A page of this tenant's jobs, newest first."""
        return self.scheduler.list_now(
            self.tenant_id, namespace=namespace, status=status, limit=limit, cursor=cursor
        )

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """One of this tenant's jobs once terminal."""
        return await self.scheduler.wait(job_id, timeout, tenant_id=self.tenant_id)

    async def wait_many(
        self, job_ids: Iterable[str], timeout: float | None = None
    ) -> builtins.list[Job]:
        """Several of this tenant's jobs once terminal."""
        return await self.scheduler.wait_many(job_ids, timeout, tenant_id=self.tenant_id)

    async def as_completed(
        self, job_ids: Iterable[str], timeout: float | None = None
    ) -> AsyncIterator[Job]:
        """This tenant's jobs as they finish."""
        async for job in self.scheduler.as_completed(job_ids, timeout, tenant_id=self.tenant_id):
            yield job

    async def cancel(self, job_id: str, reason: str | None = None) -> Job:
        """Cancel one of this tenant's jobs."""
        return self.scheduler.cancel_now(job_id, reason, tenant_id=self.tenant_id)

    async def retry(self, job_id: str) -> Job:
        """Submit a copy of one of this tenant's terminal jobs."""
        return self.scheduler.retry_now(job_id, tenant_id=self.tenant_id)

    async def stats(self) -> TenantStats:
        """This tenant's counts, use against quota, and share against fair share."""
        return self.scheduler.tenant_stats_now(self.tenant_id)


class SyncTenantScope:
    """The blocking verbs of a ``SyncScheduler``, for one tenant."""

    def __init__(self, scheduler: SyncScheduler, tenant_id: str) -> None:
        self.scheduler = scheduler
        self.tenant_id = _check_tenant_id(tenant_id)

    def submit(self, job: Job) -> Job:
        """Submit one of this tenant's jobs."""
        jobs = _own(self.tenant_id, [job], batch=False)
        return self.scheduler.submit(jobs[0])

    def submit_many(self, jobs: Iterable[Job]) -> builtins.list[Job]:
        """Submit a batch of this tenant's jobs, all or nothing."""
        return self.scheduler.submit_many(_own(self.tenant_id, job_list(jobs), batch=True))

    def get(self, job_id: str) -> Job:
        """One of this tenant's jobs, as it is now."""
        return self.scheduler.get(job_id, tenant_id=self.tenant_id)

    def list(
        self,
        *,
        namespace: str | None = None,
        status: Status | str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """A page of this tenant's jobs, newest first."""
        return self.scheduler.list(
            self.tenant_id, namespace=namespace, status=status, limit=limit, cursor=cursor
        )

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """One of this tenant's jobs once terminal."""
        return self.scheduler.wait(job_id, timeout, tenant_id=self.tenant_id)

    def wait_many(self, job_ids: Iterable[str], timeout: float | None = None) -> builtins.list[Job]:
        """Several of this tenant's jobs once terminal."""
        return self.scheduler.wait_many(job_ids, timeout, tenant_id=self.tenant_id)

    def as_completed(self, job_ids: Iterable[str], timeout: float | None = None) -> Iterator[Job]:
        """This tenant's jobs as they finish."""
        return self.scheduler.as_completed(job_ids, timeout, tenant_id=self.tenant_id)

    def cancel(self, job_id: str, reason: str | None = None) -> Job:
        """Cancel one of this tenant's jobs."""
        return self.scheduler.cancel(job_id, reason, tenant_id=self.tenant_id)

    def retry(self, job_id: str) -> Job:
        """Submit a copy of one of this tenant's terminal jobs."""
        return self.scheduler.retry(job_id, tenant_id=self.tenant_id)

    def stats(self) -> TenantStats:
        """This tenant's counts, use against quota, and share against fair share."""
        return self.scheduler._call(self.scheduler.engine.tenant_stats_now, self.tenant_id)

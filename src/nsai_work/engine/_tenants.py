"""Tenant-scoped handles: the verbs of a scheduler, narrowed to one tenant's jobs.

``scheduler.as_tenant("acme")`` (async), ``sync_scheduler.as_tenant("acme")`` and
``work.as_tenant("acme")`` see and change only acme's jobs: jobs are keyed by (tenant_id, id),
so another tenant's job id behaves exactly like an unknown one (``NotFoundError``, same
message), a job with the id of another tenant's job is simply acme's own, and a job of another
tenant cannot be submitted through it. The verbs are ``Verbs``'s, bound to the tenant.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import ValidationError
from .._stats import TenantStats
from ._blocking import SyncVerbs, blocking
from ._verbs import Verbs

if TYPE_CHECKING:
    from ._scheduler import Scheduler
    from ._sync import SyncScheduler

__all__ = ["SyncTenantScope", "TenantScope"]

T = TypeVar("T")


def check_tenant_id(tenant_id: object) -> str:
    """A tenant id a handle is bound to: a non-empty string."""
    if not isinstance(tenant_id, str) or not tenant_id:
        raise ValidationError(
            f"tenant_id is a non-empty string, got {tenant_id!r}", path="$.tenant_id"
        )
    return tenant_id


class TenantScope(Verbs):
    """The async verbs of a ``Scheduler``, for one tenant."""

    __slots__ = ("scheduler", "tenant_id")

    def __init__(self, scheduler: Scheduler, tenant_id: str) -> None:
        self.scheduler = scheduler
        self.tenant_id = check_tenant_id(tenant_id)

    @property
    def _engine(self) -> Scheduler:
        return self.scheduler

    @property
    def _scope(self) -> str | None:
        return self.tenant_id

    async def stats(self) -> TenantStats:
        """This tenant's counts, use against quota, and share against fair share."""
        return self.scheduler._tenant_stats(self.tenant_id)


class SyncTenantScope(SyncVerbs):
    """The blocking verbs of a ``SyncScheduler``, for one tenant."""

    __slots__ = ("scheduler", "tenant_id")

    def __init__(self, scheduler: SyncScheduler, tenant_id: str) -> None:
        self.scheduler = scheduler
        self.tenant_id = check_tenant_id(tenant_id)

    def _run(self, make: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
        return self.scheduler._run(lambda engine: make(TenantScope(engine, self.tenant_id)))

    def _iterate(self, make: Callable[[Any], AsyncIterator[T]]) -> Iterator[T]:
        return self.scheduler._iterate(lambda engine: make(TenantScope(engine, self.tenant_id)))

    stats = blocking(TenantScope.stats)

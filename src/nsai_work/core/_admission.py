"""Admission: the checks a batch of submitted jobs must pass, all or nothing.

In order: the global cap on waiting jobs, duplicate ids, a route whose pools could ever hold
each job, the tenant being known (or a default applying), what the tenant's and namespace's
quotas could ever allow, their caps on queued jobs, and the submit-rate bucket. A rejection
names the limit, its value and the current usage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from .._errors import (
    AdmissionError,
    ConflictError,
    QueueFullError,
    QuotaExceededError,
    RateLimitedError,
    UnschedulableError,
    WorkError,
)
from .._ir import Job
from ._capacity import NO_NEEDS, Needs, PoolState
from ._messages import Route
from ._tenants import TenantState, quota_never_allows

__all__ = [
    "Plan",
    "Rejection",
    "Router",
    "check_duplicates",
    "check_max_waiting",
    "check_queue_caps",
    "check_quotas",
    "check_rate",
    "unknown_tenant",
]

#: A rejection: (the error, the index of the job in the batch or None, the reason to count).
Rejection = tuple[WorkError, int | None, str]
#: An admitted job: (job, needs, backend, pool group, tenant state).
Plan = tuple[Job, Needs, str, tuple[str, ...], TenantState]

_QUOTA_PATH: Final = {
    "cpu": "$.resources.cpu",
    "memory_mb": "$.resources.memory_mb",
    "max_running": "$.tenant_id",
}


class Router:
    """Chooses, for a route, the first backend with pools that could ever hold the job."""

    def __init__(self, pools: Mapping[str, PoolState]) -> None:
        self._pools = pools
        self._cache: dict[Route, tuple[str, tuple[str, ...]] | None] = {}

    def forget(self) -> None:
        """Pools changed: routes must be chosen again."""
        self._cache.clear()

    def choose(self, needs: Needs, route: Route) -> tuple[str, tuple[str, ...]] | None:
        """(backend, the pools of it that could ever hold these needs), or None."""
        if needs is NO_NEEDS:
            try:
                return self._cache[route]
            except KeyError:
                pass
        choice = None
        pools = self._pools
        for backend, pool_names in route:
            fitting = tuple(
                name for name in pool_names if name in pools and pools[name].could_ever_hold(needs)
            )
            if fitting:
                choice = (backend, fitting)
                break
        if needs is NO_NEEDS:
            self._cache[route] = choice
        return choice

    def unschedulable(self, needs: Needs, route: Route) -> UnschedulableError:
        """Why no pool of the route could ever hold these needs."""
        pools = [self._pools[n] for _, names in route for n in names if n in self._pools]
        if not route:
            return UnschedulableError("no backend can run this job")
        if not pools:
            names = ", ".join(f"{b}: {list(p)}" for b, p in route)
            return UnschedulableError(f"no known pool for this job's backends ({names})")
        shortfalls = [(pool, pool.shortfall(needs)) for pool in pools]
        first = next((gap for _, gap in shortfalls if gap is not None), None)
        if first is None:  # pragma: no cover - defensive
            return UnschedulableError(f"no pool can ever hold this job ({needs.describe()})")
        field = first[0]
        offers = [
            f"{pool.name}: {gap[2]}"
            for pool, gap in shortfalls
            if gap is not None and gap[0] == field
        ]
        path = "$.resources." + ("gpu" if field == "gpu" else field.split(".")[0])
        return UnschedulableError(
            f"no pool can ever hold this job: it asks {field}={first[1]} but the pools offer "
            f"{'; '.join(offers) or 'less'} (needs {needs.describe()}); ask for less or declare "
            f"a pool that has it (Scheduler(pools=...)) - at {path}"
        )


def check_max_waiting(waiting: int, cap: int | None, count: int) -> Rejection | None:
    """The global cap on pending + queued jobs."""
    if cap is not None and waiting + count > cap:
        return (
            QueueFullError(
                f"queue full: {waiting} jobs are waiting and max_waiting is {cap}, so {count} "
                f"more cannot be admitted; retry later (back-pressure) or raise max_waiting"
            ),
            None,
            "max_waiting",
        )
    return None


def check_duplicates(jobs: Sequence[Job], live: Mapping[str, object]) -> Rejection | None:
    """Ids already live, or twice in the batch."""
    seen: set[str] = set()
    for index, job in enumerate(jobs):
        if job.id in live or job.id in seen:
            return (
                ConflictError(
                    f"duplicate job id {job.id!r}: a job with this id already exists; omit id to "
                    f"get a fresh one"
                ),
                index,
                "duplicate_id",
            )
        seen.add(job.id)
    return None


def _quota_error(scope: str, limit: tuple[str, object, object], index: int) -> Rejection:
    field, asked, allowed = limit
    path = _QUOTA_PATH.get(field, "$.resources.gpu" if field.startswith("gpus") else "$.resources")
    return (
        QuotaExceededError(
            f"{scope} allows {field}={allowed} for any job; this job asks {asked}; ask for less "
            f"or raise the quota - at {path}"
        ),
        index,
        f"quota:{field}",
    )


def check_quotas(plans: Sequence[Plan]) -> Rejection | None:
    """Jobs that ask more than their tenant's (or namespace's) quota could ever allow."""
    for index, (job, needs, _, _, tenant) in enumerate(plans):
        limit = quota_never_allows(tenant.quota, needs)
        if limit is not None:
            return _quota_error(f"tenant {tenant.spec.id!r}'s quota", limit, index)
        namespace = tenant.namespaces.get(job.namespace)
        if namespace is not None:
            limit = quota_never_allows(namespace.quota, needs)
            if limit is not None:
                return _quota_error(
                    f"namespace {job.namespace!r} of tenant {tenant.spec.id!r}", limit, index
                )
    return None


def check_queue_caps(plans: Sequence[Plan]) -> Rejection | None:
    """``max_queued`` of tenants and namespaces: their waiting jobs plus this batch's."""
    adding: dict[tuple[str, str | None], int] = {}
    key: tuple[str, str | None]
    for job, _, _, _, tenant in plans:
        if tenant.quota.max_queued is not None:
            key = (job.tenant_id, None)
            adding[key] = adding.get(key, 0) + 1
        namespace = tenant.namespaces.get(job.namespace)
        if namespace is not None and namespace.quota.max_queued is not None:
            key = (job.tenant_id, job.namespace)
            adding[key] = adding.get(key, 0) + 1
    if not adding:
        return None
    states = {job.tenant_id: tenant for job, _, _, _, tenant in plans}
    for (tenant_id, namespace_name), count in adding.items():
        tenant = states[tenant_id]
        if namespace_name is None:
            cap, waiting, scope = tenant.quota.max_queued, tenant.waiting, f"tenant {tenant_id!r}"
        else:
            namespace = tenant.namespaces[namespace_name]
            cap, waiting = namespace.quota.max_queued, namespace.waiting
            scope = f"namespace {namespace_name!r} of tenant {tenant_id!r}"
        assert cap is not None
        if waiting + count > cap:
            index = next(
                i
                for i, (job, _, _, _, _) in enumerate(plans)
                if job.tenant_id == tenant_id
                and (namespace_name is None or job.namespace == namespace_name)
            )
            return (
                QuotaExceededError(
                    f"{scope} has {waiting} jobs waiting and max_queued={cap}: {count} more "
                    f"cannot be admitted; wait for some to start or raise max_queued"
                ),
                index,
                "max_queued",
            )
    return None


def check_rate(plans: Sequence[Plan], now: float) -> Rejection | None:
    """The submit-rate buckets: one token per job. Tokens are only taken if all pass."""
    needed: dict[str, int] = {}
    states: dict[str, TenantState] = {}
    for job, _, _, _, tenant in plans:
        if tenant.quota.submit_rate is not None:
            needed[job.tenant_id] = needed.get(job.tenant_id, 0) + 1
            states[job.tenant_id] = tenant
    for tenant_id, count in needed.items():
        tenant = states[tenant_id]
        tenant.refill(now)
        rate = tenant.quota.submit_rate
        assert rate is not None
        if count > tenant.burst:
            return (
                RateLimitedError(
                    f"tenant {tenant_id!r} may submit at most burst={tenant.burst} jobs at once "
                    f"(submit_rate={rate}/s); this batch has {count}: split it",
                    retry_after_s=(count - tenant.tokens) / rate,
                ),
                _first_of(plans, tenant_id),
                "submit_rate",
            )
        if tenant.tokens + 1e-9 < count:
            wait_s = (count - tenant.tokens) / rate
            return (
                RateLimitedError(
                    f"tenant {tenant_id!r} is over its submit_rate={rate}/s (burst "
                    f"{tenant.burst}): {count} jobs need {count} tokens, {tenant.tokens:.2f} are "
                    f"left; retry after {wait_s:.3f} s",
                    retry_after_s=wait_s,
                ),
                _first_of(plans, tenant_id),
                "submit_rate",
            )
    for tenant_id, count in needed.items():
        states[tenant_id].tokens -= count
    return None


def _first_of(plans: Sequence[Plan], tenant_id: str) -> int:
    return next(i for i, plan in enumerate(plans) if plan[0].tenant_id == tenant_id)


def unknown_tenant(tenant_id: str, index: int) -> Rejection:
    """A tenant that is not configured when unknown tenants are rejected."""
    error: AdmissionError = UnschedulableError(
        f"unknown tenant {tenant_id!r}: this scheduler only admits configured tenants "
        f"(default_tenant=None); add it with set_tenant(work.Tenant({tenant_id!r}, ...)) - at "
        f"$.tenant_id"
    )
    return (error, index, "unknown_tenant")

"""Admission: the checks a batch of submitted jobs must pass, all or nothing, and the record
of each admitted job.

``check_batch`` runs them in order: the global cap on waiting jobs, duplicate ids, a route
whose pools could ever hold each job, the tenant being known (or a default applying), then,
when a tenant of the batch has a quota or namespace limits, what the tenant's and namespace's
quotas could ever allow, their caps on queued jobs, the tenant's budget and its submit-rate
bucket. A rejection names the limit, its value and the current usage. ``queued_entry`` makes
the core's record of a job that passed.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

from msgspec.structs import replace

from .._errors import (
    AdmissionError,
    ConflictError,
    QueueFullError,
    QuotaExceededError,
    RateLimitedError,
    UnschedulableError,
    WorkError,
)
from .._ir import Job, Status
from ._capacity import NO_NEEDS, Needs, PoolState, needs_of
from ._messages import Route, Submit
from ._queues import Entry, LimitKey
from ._tenants import TenantState, quota_never_allows

if TYPE_CHECKING:
    from ._jobs import LiveJobs
    from ._registry import TenantRegistry

__all__ = [
    "Choice",
    "Plan",
    "Rejection",
    "Router",
    "check_batch",
    "check_budgets",
    "check_duplicates",
    "check_max_waiting",
    "check_queue_caps",
    "check_quotas",
    "check_rate",
    "queued_entry",
    "unknown_tenant",
]

#: A rejection: (the error, the index of the job in the batch or None, the reason to count).
Rejection = tuple[WorkError, int | None, str]

_QUOTA_PATH: Final = {
    "cpu": "$.resources.cpu",
    "memory_mb": "$.resources.memory_mb",
    "max_running": "$.tenant_id",
}


class Choice:
    """Where an admitted job may run: its backend, the pools of it that could ever hold it (in
    route order: the job's queue group), the same pools cheapest first with their hourly rate
    (the placement order), and its estimated maximum cost per attempt (None when it cannot be
    bounded: no timeout on a pool that charges for what it asks)."""

    __slots__ = ("backend", "estimate", "group", "placement")

    def __init__(
        self,
        backend: str,
        group: tuple[str, ...],
        placement: tuple[tuple[float, PoolState], ...],
        estimate: float | None,
    ) -> None:
        self.backend = backend
        self.group = group
        self.placement = placement
        self.estimate = estimate


#: An admitted job: (job, needs, where it may run, tenant state).
Plan = tuple[Job, Needs, Choice, TenantState]


class Router:
    """Chooses, for a route, the first backend with pools that could ever hold the job, that
    carry the labels it asks for, and whose estimated cost is within its cap."""

    def __init__(self, pools: Mapping[str, PoolState]) -> None:
        self._pools = pools
        self._cache: dict[Route, Choice | None] = {}

    def forget(self) -> None:
        """Pools changed: routes must be chosen again."""
        self._cache.clear()

    def choose(self, needs: Needs, route: Route, job: Job) -> Choice | UnschedulableError:
        """Where the job may run, or why it never could."""
        labels = job.constraints.pool_labels
        timeout_ms = job.resources.timeout_ms
        cap = job.resources.max_cost_usd
        simple = needs is NO_NEEDS and not labels and timeout_ms is None
        if simple:
            cached = self._cache.get(route, _MISSING)
            if cached is not _MISSING:
                return cached if cached is not None else self.unschedulable(needs, route)
        pools = self._pools
        over_cap: list[tuple[PoolState, float]] = []
        labelled = False
        for backend, names in route:
            candidates = [pools[n] for n in names if n in pools]
            if labels:
                candidates = [p for p in candidates if _has_labels(p, labels)]
                labelled = labelled or bool(candidates)
            fitting = [p for p in candidates if p.could_ever_hold(needs)]
            if not fitting:
                continue
            rates = [p.hourly_rate(needs) for p in fitting]
            if timeout_ms is not None:
                hours = timeout_ms / 3_600_000.0
                if cap is not None:
                    keep = [i for i, rate in enumerate(rates) if rate * hours <= cap + 1e-12]
                    over_cap += [(fitting[i], rates[i] * hours) for i in range(len(fitting))]
                    fitting = [fitting[i] for i in keep]
                    rates = [rates[i] for i in keep]
                    if not fitting:
                        continue
                estimate: float | None = max(rates) * hours
            else:  # no timeout: bounded only if the job costs nothing per hour
                estimate = None if max(rates) > 0 else 0.0
            order = sorted(range(len(fitting)), key=rates.__getitem__)  # stable on ties
            choice = Choice(
                backend,
                tuple(p.name for p in fitting),
                tuple((rates[i], fitting[i]) for i in order),
                estimate,
            )
            if simple:
                self._cache[route] = choice
            return choice
        if simple:
            self._cache[route] = None
        if over_cap:
            cheapest, cost = min(over_cap, key=lambda item: item[1])
            return UnschedulableError(
                f"the estimated maximum cost of this job is ${cost:.4f} on the cheapest pool that "
                f"fits ({cheapest.name}: ${cheapest.hourly_rate(needs):.4f}/h x "
                f"{timeout_ms} ms timeout), over its max_cost_usd=${cap}; raise the cap, ask for "
                f"less, or shorten timeout_ms - at $.resources.max_cost_usd"
            )
        if labels and not labelled:
            offered = sorted({f"{k}={v}" for p in pools.values() for k, v in p.spec.labels.items()})
            return UnschedulableError(
                f"no pool of this job's backends has the labels {dict(labels)}; pool labels: "
                f"{offered or 'none'} - at $.constraints.pool_labels"
            )
        return self.unschedulable(needs, route)

    def unschedulable(self, needs: Needs, route: Route) -> UnschedulableError:
        """Why no pool of the route could ever hold these needs: the resource, what was asked
        and the largest offer."""
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
        offers = [(pool, gap[2]) for pool, gap in shortfalls if gap is not None and gap[0] == field]
        largest_pool, largest = max(offers, key=lambda item: _as_number(item[1]))
        path = "$.resources." + ("gpu" if field == "gpu" else field.split(".")[0])
        return UnschedulableError(
            f"no pool can ever hold this job: it asks {field}={first[1]} and the largest offer is "
            f"{largest} (pool {largest_pool.name}); needs {needs.describe()}; ask for less or "
            f"declare a pool that has it (Scheduler(pools=...)) - at {path}"
        )


_MISSING: Final = Choice("", (), (), None)


def _has_labels(pool: PoolState, labels: Mapping[str, str]) -> bool:
    have = pool.spec.labels
    return all(have.get(key) == value for key, value in labels.items())


def _as_number(offer: object) -> float:
    if isinstance(offer, int | float):
        return float(offer)
    if isinstance(offer, str):  # "8 x A100, 2 x L4": the largest count
        counts = [part.strip().split(" x ")[0] for part in offer.split(",")]
        return max((float(c) for c in counts if c.replace(".", "", 1).isdigit()), default=0.0)
    return 0.0


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


def check_duplicates(
    jobs: Sequence[Job], live: Mapping[str, Entry], shared: Mapping[tuple[str, str], Entry]
) -> Rejection | None:
    """Ids already live for the same tenant (``live`` by id, ``shared`` by (tenant, id) for ids
    two tenants use), or twice for one tenant in the batch. Jobs are keyed by (tenant_id, id):
    another tenant's ids are neither seen nor blocked."""
    seen: dict[str, str] = {}  # job id -> the tenant of its first job in the batch
    more: set[tuple[str, str]] = set()  # (tenant, id) of later jobs whose id another used first
    for index, job in enumerate(jobs):
        tenant_id, job_id = job.tenant_id, job.id
        first = seen.get(job_id)
        if first is None:
            seen[job_id] = tenant_id
            duplicate = False
        elif first == tenant_id:
            duplicate = True
        else:
            duplicate = (tenant_id, job_id) in more
            more.add((tenant_id, job_id))
        if not duplicate:
            entry = live.get(job_id)
            duplicate = (entry is not None and entry.tenant == tenant_id) or (
                bool(shared) and (tenant_id, job_id) in shared
            )
        if duplicate:
            return (
                ConflictError(
                    f"duplicate job id {job_id!r}: tenant {tenant_id!r} already has a job with "
                    f"this id; omit id to get a fresh one"
                ),
                index,
                "duplicate_id",
            )
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
    for index, (job, needs, _, tenant) in enumerate(plans):
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
    for job, _, _, tenant in plans:
        if tenant.quota.max_queued is not None:
            key = (job.tenant_id, None)
            adding[key] = adding.get(key, 0) + 1
        namespace = tenant.namespaces.get(job.namespace)
        if namespace is not None and namespace.quota.max_queued is not None:
            key = (job.tenant_id, job.namespace)
            adding[key] = adding.get(key, 0) + 1
    if not adding:
        return None
    states = {job.tenant_id: tenant for job, _, _, tenant in plans}
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
                for i, (job, _, _, _) in enumerate(plans)
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
    for job, _, _, tenant in plans:
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


def check_budgets(plans: Sequence[Plan], now: float) -> Rejection | None:
    """Tenants' budgets: spend this period, plus the estimated maximum cost of their admitted
    jobs, plus this batch's, must stay within ``budget_usd``."""
    adding: dict[str, float] = {}
    states: dict[str, TenantState] = {}
    for index, (job, _, choice, tenant) in enumerate(plans):
        if tenant.quota.budget_usd is None:
            continue
        if choice.estimate is None:
            return (
                QuotaExceededError(
                    f"tenant {job.tenant_id!r} has a budget "
                    f"(budget_usd={tenant.quota.budget_usd}), so its jobs that cost money per "
                    f"hour must set resources.timeout_ms: the estimated maximum cost is price x "
                    f"resources x timeout - at $.resources.timeout_ms"
                ),
                index,
                "budget",
            )
        adding[job.tenant_id] = adding.get(job.tenant_id, 0.0) + choice.estimate
        states[job.tenant_id] = tenant
    for tenant_id, cost in adding.items():
        tenant = states[tenant_id]
        tenant.roll_period(now)
        budget = tenant.quota.budget_usd
        assert budget is not None
        used = tenant.spend_period + tenant.committed
        if used + cost > budget + 1e-9:
            return (
                QuotaExceededError(
                    f"tenant {tenant_id!r} budget_usd={budget} per "
                    f"{tenant.quota.budget_period_s:g} s: ${tenant.spend_period:.4f} spent and "
                    f"${tenant.committed:.4f} committed to admitted jobs; this submit's estimated "
                    f"maximum cost ${cost:.4f} would exceed it - at $.resources"
                ),
                _first_of(plans, tenant_id),
                "budget",
            )
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


def check_batch(
    event: Submit,
    live: LiveJobs,
    max_waiting: int | None,
    router: Router,
    tenants: TenantRegistry,
    now: float,
) -> tuple[list[Plan], Rejection | None]:
    """Run a submitted batch through the checks (see the module docstring). Returns the plans of
    its jobs, and the first rejection (then the plans are incomplete) or None."""
    jobs = event.jobs
    count = len(jobs)
    if len(event.routes) != count:
        raise ValueError("Submit: one route per job is required")
    rejection = check_max_waiting(live.waiting, max_waiting, count) or (
        check_duplicates(jobs, live.by_id, live.shared)
        if count > 1 or live.get(jobs[0].tenant_id, jobs[0].id) is not None
        else None
    )
    plans: list[Plan] = []
    if rejection is not None:
        return plans, rejection
    limited = False  # does any tenant of the batch have a quota or namespace limits?
    for index, job in enumerate(jobs):
        needs = needs_of(job.resources)
        choice = router.choose(needs, event.routes[index], job)
        if not isinstance(choice, Choice):
            return plans, (choice, index, "unschedulable")
        tenant = tenants.state(job.tenant_id, now)
        if tenant is None:
            return plans, unknown_tenant(job.tenant_id, index)
        limited = limited or tenant.limited
        plans.append((job, needs, choice, tenant))
    if not limited:
        return plans, None
    return plans, (
        check_quotas(plans)
        or check_queue_caps(plans)
        or check_budgets(plans, now)
        or check_rate(plans, now)
    )


def queued_entry(plan: Plan, limits: tuple[LimitKey, ...], now: float, at: _dt.datetime) -> Entry:
    """The core's record of an admitted job, queued from ``now`` (``at`` on the wall clock)
    with the ``limits`` it is subject to."""
    job, needs, choice, tenant = plan
    backend, estimate = choice.backend, choice.estimate
    job = replace(
        job,
        status=Status.QUEUED,
        backend=backend,
        submitted_at=at,
        queued_at=at,
        estimated_cost_usd=estimate,
    )
    return Entry(
        job=job,
        tenant=job.tenant_id,
        tenant_state=tenant,
        namespace=job.namespace,
        limits=limits,
        rank=job.priority.rank,
        needs=needs,
        backend=backend,
        group=choice.group,
        status=Status.QUEUED,
        since=now,
        submitted=now,
        placement=choice.placement,
        estimate=estimate,
    )

"""``SchedulingCore``: the pure scheduling state machine.

``decisions = core.handle(event, now, wall)``. The core reads no clock, does no I/O, starts no
thread and owns no randomness (jitter comes from the injected ``rand``), so the same events,
clock readings and random source give the same decisions. The engine carries the decisions out.
``now`` is a monotonic clock in seconds: every duration (run and queue times, timeouts, backoffs,
token buckets, fair-share charges, budget periods) and every timer is on it; ``wall`` is the
wall-clock UTC time in seconds, used only for the timestamps jobs carry.

What it decides here: admission (a batch is admitted whole or not at all: routing, tenant
quotas, queue caps, submit rates), strict priority between levels, weighted dominant-resource
fair share between tenants within a level, tenant and namespace limits and concurrency groups at
dispatch, the opt-in starvation guard, reservation of pool capacity on dispatch and release when
the run has really ended, retries with backoff, timeouts, and cancellation.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from msgspec import Struct
from msgspec.structs import replace

from .._errors import ConfigurationError
from .._ir import (
    _PRIORITY_RANK,
    UNLIMITED,
    Attempt,
    Job,
    JobError,
    Pool,
    Priority,
    PriorityGuard,
    Status,
    Tenant,
)
from .._stats import PoolStats, Stats, TenantStats, TenantUsage
from ._admission import (
    Choice,
    Plan,
    Rejection,
    Router,
    check_budgets,
    check_duplicates,
    check_max_waiting,
    check_queue_caps,
    check_quotas,
    check_rate,
    unknown_tenant,
)
from ._capacity import NO_NEEDS, PoolState, Reservation, needs_of
from ._counters import (
    QUEUED_SLOT,
    REJECTED,
    SLOT,
    SUBMITTED,
    CellKey,
    StatsBuilder,
    TenantCounters,
    add_counter,
    counts,
    new_counter,
    pool_usage,
)
from ._lifecycle import ALLOWED_TRANSITIONS, check_transition
from ._messages import (
    ArmTimer,
    Cancel,
    ConcurrencyLimitChanged,
    DisarmTimer,
    Dispatch,
    Event,
    Failed,
    Limit,
    PoolsChanged,
    Record,
    Reject,
    Rejected,
    RunEnded,
    StopRun,
    Submit,
    Succeeded,
    TenantChanged,
    TimerFired,
)
from ._queues import (
    DEFAULT_FAIR_SHARE_RESOLUTION_S,
    FIFO,
    LEVELS,
    TENANT,
    Entry,
    GroupQueue,
    LimitKey,
    ReadyQueues,
    SubKey,
    TenantQueue,
    check_resolution,
)
from ._retry import backoff_delay_ms
from ._tenants import Capacity, TenantState, dominant_share, job_share, quota_gate

__all__ = ["Decision", "SchedulingCore"]

Decision = Reject | Record | Dispatch | ArmTimer | StopRun | DisarmTimer

_UTC: Final = _dt.UTC
_PENDING, _QUEUED, _RUNNING = Status.PENDING, Status.QUEUED, Status.RUNNING
_WAITING: Final = frozenset({Status.PENDING, Status.QUEUED})
_TIMEOUT_KEY: Final = "timeout"
_READY_KEY: Final = "ready"
_LIMIT_KEY: Final = "limit"
_SWEEP_KEY: Final = "sweep"
#: How many idle tenants one sweep drops at most (the next sweep follows at once).
_SWEEP_BATCH: Final = 512
#: How long a tenant's state is kept once it has no waiting or running job, by default.
DEFAULT_TENANT_IDLE_TTL_S: Final = 3600.0
#: The tenant unknown tenants are admitted as, unless configured otherwise.
DEFAULT_TENANT: Final = Tenant("*")


class _Run(Struct, gc=False):
    """A dispatched execution: holds its reservation (on the pool, the tenant, its namespace and
    its concurrency group) until the engine reports its end. Not tracked by the garbage
    collector: nothing it refers to refers back to it."""

    reservation: Reservation
    entry: Entry  # the job's (its status and attempt say whether the run is still current)
    backend: str
    tenant: TenantState
    namespace: str
    limits: tuple[_Limit, ...]
    started: float
    rate: float  # USD per hour
    stopping: bool = False  # told to stop (cancel, timeout): counted in its pool's stopping
    # Set by charge(): its tenant's queue in the group it was picked from, what it was charged,
    # its dominant share of the group's capacity and its tenant's weight then.
    queue: TenantQueue | None = None
    charged: float = 0.0
    share: float = 0.0
    weight: float = 1.0


class _Limit:
    """A concurrency group, or a limit a backend puts on some of its jobs (an ALTAR tool's):
    how many of its runs hold a slot against ``max_running``, an optional token bucket of
    ``rate`` starts per second, and the FIFOs parked on it."""

    __slots__ = (
        "burst",
        "key",
        "last",
        "max_running",
        "parked",
        "rate",
        "running",
        "timer_armed",
        "tokens",
    )

    def __init__(self, key: LimitKey, max_running: int | None) -> None:
        self.key = key
        self.max_running = max_running
        self.running = 0
        self.rate: float | None = None
        self.burst = 1
        self.tokens = 0.0
        self.last = 0.0
        self.timer_armed = False
        self.parked: list[tuple[TenantQueue, SubKey]] = []

    def set_rate(self, rate: float | None, burst: int | None, now: float) -> None:
        """Change the bucket (a new one starts full)."""
        if rate == self.rate and (burst or max(1, math.ceil(rate or 0))) == self.burst:
            return
        fresh = self.rate is None
        self.rate = rate
        self.burst = burst or max(1, math.ceil(rate or 0))
        if fresh:
            self.tokens, self.last = float(self.burst), now
        self.tokens = min(self.tokens, float(self.burst))

    def refill(self, now: float) -> None:
        if self.rate is not None and now > self.last:
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
            self.last = now

    def reason(self, now: float) -> str | None:
        """Why one more run cannot start now (and the waiting reason), or None."""
        kind, name = self.key
        if self.max_running is not None and self.running >= self.max_running:
            return f"concurrency_group:{name}" if kind == "group" else f"tool_concurrency:{name}"
        if self.rate is not None:
            self.refill(now)
            if self.tokens < 1.0 - 1e-9:
                return f"tool_rate:{name}"
        return None

    def next_token_at(self, now: float) -> float:
        assert self.rate is not None
        return now + (1.0 - self.tokens) / self.rate


class _Guard:
    """The starvation guard's memory: the levels of the last ``window`` dispatches."""

    __slots__ = ("counts", "min_share", "recent", "window")

    def __init__(self, spec: PriorityGuard) -> None:
        self.window = spec.window
        self.min_share = {p.rank: share for p, share in spec.min_share.items()}
        self.recent: deque[int] = deque()
        self.counts = [0] * LEVELS

    def record(self, rank: int) -> None:
        self.recent.append(rank)
        self.counts[rank] += 1
        if len(self.recent) > self.window:
            self.counts[self.recent.popleft()] -= 1

    def owed(self, backlog: list[int]) -> list[int]:
        """Guarded levels with queued jobs that got less than their share of recent dispatches,
        lowest level first."""
        total = len(self.recent) or 1
        return [
            rank
            for rank in sorted(self.min_share, reverse=True)
            if backlog[rank] and self.counts[rank] / total < self.min_share[rank]
        ]


class SchedulingCore:
    """The scheduling state of one scheduler; feed it events, carry out its decisions.

    ``pools`` maps each backend name to the pools it offers (pool names are unique across
    backends). ``rand`` returns floats in [0, 1) for retry jitter. ``max_waiting`` caps pending
    plus queued jobs (None: no cap). ``tenants`` are the configured tenants; an unknown tenant
    is admitted as ``default_tenant`` (its weight and quota, under its own id), or rejected when
    that is None. ``concurrency_limits`` sets limits per concurrency group (others get
    ``default_concurrency_limit``). ``guard`` is the opt-in starvation guard.
    ``fair_share_resolution_s`` is how finely fair share tells tenants apart, in seconds of a
    pool group's whole capacity per unit of weight: tenants whose weighted dominant-resource
    time served differs by less than that are served oldest job first.
    ``tenant_idle_ttl_s`` is how long a tenant's state (usage, standing, counters) is kept once
    it has no waiting or running job (None: forever); its configured spec is never dropped,
    nor a tenant that still owes submit-rate tokens or has spent in its budget period.
    """

    def __init__(
        self,
        *,
        pools: Mapping[str, Sequence[Pool]],
        rand: Callable[[], float],
        max_waiting: int | None = None,
        tenants: Sequence[Tenant] = (),
        default_tenant: Tenant | None = DEFAULT_TENANT,
        concurrency_limits: Mapping[str, int] | None = None,
        default_concurrency_limit: int = 1,
        guard: PriorityGuard | None = None,
        fair_share_resolution_s: float = DEFAULT_FAIR_SHARE_RESOLUTION_S,
        tenant_idle_ttl_s: float | None = DEFAULT_TENANT_IDLE_TTL_S,
    ) -> None:
        check_resolution(fair_share_resolution_s)
        if tenant_idle_ttl_s is not None and not (
            isinstance(tenant_idle_ttl_s, int | float)
            and not isinstance(tenant_idle_ttl_s, bool)
            and math.isfinite(tenant_idle_ttl_s)
            and tenant_idle_ttl_s > 0
        ):
            raise ConfigurationError(
                f"tenant_idle_ttl_s must be a finite number of seconds > 0 or None, got "
                f"{tenant_idle_ttl_s!r}"
            )
        if max_waiting is not None and max_waiting < 0:
            raise ConfigurationError(f"max_waiting must be >= 0 or None, got {max_waiting}")
        if default_concurrency_limit < 1:
            raise ConfigurationError(
                f"default_concurrency_limit must be >= 1, got {default_concurrency_limit}"
            )
        self._rand = rand
        self._max_waiting = max_waiting
        self._pools: dict[str, PoolState] = {}
        for backend, specs in pools.items():
            self._add_pools(backend, specs)
        self._router = Router(self._pools)
        # Live jobs, keyed by (tenant id, id): under their id, or under the pair when another
        # tenant's live job has the id (ids are UUIDs: two tenants share one only by choice)
        self._jobs: dict[str, Entry] = {}
        self._shared_jobs: dict[tuple[str, str], Entry] = {}
        self._runs: dict[tuple[str, str, int], _Run] = {}  # by (tenant id, job id, attempt)
        self._queues = ReadyQueues(fair_share_resolution_s)
        self._waiting = 0
        self._tenant_specs = {t.id: t for t in tenants}
        self._default_tenant = default_tenant
        self._tenants: dict[str, TenantState] = {}
        self._cgroup_limits = dict(concurrency_limits or {})
        self._default_cgroup_limit = default_concurrency_limit
        self._limits: dict[LimitKey, _Limit] = {}
        self._guard = None if guard is None or not guard.min_share else _Guard(guard)
        # Counters by status (then submitted, rejected): one per (tenant, level, backend), in the
        # tenant's TenantCounters (tenant "": rejected jobs without a valid tenant); the cells of
        # dropped tenants are summed in _retired; rejections without a tenant or a level apart.
        self._counters: dict[str, TenantCounters] = {}
        self._retired: dict[CellKey, list[int]] = {}
        self._rejected_unleveled = 0
        # Tenants with waiting or running jobs: how many, and their weights' sum (fair share).
        self._active_count = 0
        self._active_weight = 0.0
        # Tenants without live jobs, oldest idle first: tenant id -> when it became idle. A
        # sweep drops those idle for tenant_idle_ttl_s (see _sweep).
        self._idle: dict[str, float] = {}
        self._idle_ttl = tenant_idle_ttl_s
        self._sweep_armed = tenant_idle_ttl_s is None  # (never armed without a ttl)
        # Per handle() call: the clock readings, the wall clock's datetime, where decisions go.
        self._now = 0.0
        self._wall = 0.0
        self._now_dt = _dt.datetime.fromtimestamp(0.0, _UTC)
        self._out: list[Decision] = []
        self._last_run: _Run | None = None  # the run try_start just made, for charge()
        self._hold_released = False
        self._hold_seq = 0
        self.release_epoch = 0  # bumped when held capacity is released (drain re-offers heads)

    # ---- the one entry point ---------------------------------------------------------------

    def handle(self, event: Event, now: float, wall: float | None = None) -> list[Decision]:
        """Apply one event at monotonic time ``now`` (seconds) and wall-clock time ``wall``
        (UTC seconds; ``now`` when not given); return decisions in the order the engine must
        carry them out."""
        self._now = now
        if wall is None:
            wall = now
        if wall != self._wall:
            self._wall = wall
            self._now_dt = _dt.datetime.fromtimestamp(wall, _UTC)
        out: list[Decision] = []
        self._out = out
        kind = type(event)
        if kind is RunEnded:
            self._run_ended(event)  # type: ignore[arg-type]
        elif kind is Submit:
            if not self._submit(event):  # type: ignore[arg-type]
                return out
        elif kind is Cancel:
            self._cancel(event)  # type: ignore[arg-type]
        elif kind is TimerFired:
            self._timer(event)  # type: ignore[arg-type]
        elif kind is PoolsChanged:
            self._pools_changed(event)  # type: ignore[arg-type]
        elif kind is TenantChanged:
            self._tenant_changed(event.tenant)  # type: ignore[union-attr]
        elif kind is ConcurrencyLimitChanged:
            self._limit_changed(event)  # type: ignore[arg-type]
        elif kind is Rejected:
            self._count_rejected(event.jobs, event.reason)  # type: ignore[union-attr]
            if not self._sweep_armed:
                self._arm_sweep()
        else:
            raise TypeError(f"SchedulingCore.handle: unknown event {event!r}")
        self._dispatch()
        return out

    def _dispatch(self) -> None:
        queues = self._queues
        guard = self._guard
        if guard is not None:
            for rank in guard.owed(queues.counts):
                queues.dispatch_level(rank, self, limit=1)
        self._hold_released = False
        queues.dispatch(self)
        while self._hold_released:
            # a held job started or left during the pass: capacity it held is free for heads
            # that were declined before that happened
            self._hold_released = False
            queues.dispatch(self)

    # ---- queries (no decisions) --------------------------------------------------------------

    def get(self, tenant_id: str, job_id: str) -> Job | None:
        """The current snapshot of a tenant's live job, or None if it is not live here."""
        entry = self._entry(tenant_id, job_id)
        return None if entry is None else entry.job

    def owners(self, job_id: str) -> list[str]:
        """The tenants with a live job with this id (usually none or one)."""
        entry = self._jobs.get(job_id)
        found = [] if entry is None else [entry.tenant]
        if self._shared_jobs:
            found += [tenant for tenant, shared in self._shared_jobs if shared == job_id]
        return found

    def waiting_reason(self, tenant_id: str, job_id: str) -> str | None:
        """Why a tenant's pending or queued job is not running now; None for any other."""
        entry = self._entry(tenant_id, job_id)
        if entry is None:
            return None
        if entry.status is _PENDING:
            return entry.job.waiting_reason
        if entry.status is _QUEUED:
            return self._queued_reason(entry)
        return None

    def _queued_reason(self, entry: Entry, cache: dict[Any, Any] | None = None) -> str:
        """Why a queued job waits. ``cache`` (one stats build's) keeps what is the same for
        every job of a level and pool group."""
        if entry.held is not None:
            return f"capacity_held:{entry.held.name}"
        queue = self._queues.queue_of(entry)
        tenant_queue = queue.tenants.get(entry.tenant)
        if tenant_queue is not None:
            parked = tenant_queue.parked.get(entry.subkey)
            if parked is not None:
                return parked
        parked = queue.parked.get(entry.tenant)
        if parked is not None:
            return parked
        above = None if cache is None else cache.get((entry.rank, entry.group))
        if above is None:
            guard = self._guard
            above = (
                "higher_priority_backlog"
                if self._queues.competes_above(entry)
                else "priority_guard"
                if guard is not None
                and any(rank > entry.rank for rank in guard.owed(self._queues.counts))
                else ""
            )
            if cache is not None:
                cache[(entry.rank, entry.group)] = above
        if above:
            return above
        mine = None if tenant_queue is None else tenant_queue.key
        top = queue.top()  # (drops stale keys)
        if mine is not None and top is not None and top[2] is not tenant_queue and top[0] < mine[0]:
            return "fair_share"
        for _, pool in entry.placement:
            if pool.stopping:
                return f"stopping_runs:{pool.name}"
        return "no_capacity"

    @property
    def waiting(self) -> int:
        """Pending plus queued jobs."""
        return self._waiting

    @property
    def live_jobs(self) -> int:
        """Jobs admitted and not yet terminal."""
        return len(self._jobs) + len(self._shared_jobs)

    @property
    def active_runs(self) -> int:
        """Executions dispatched whose end has not been reported (they hold reservations)."""
        return len(self._runs)

    def pool_states(self) -> Mapping[str, PoolState]:
        """Every pool's state, by name (read-only use: for checks and stats)."""
        return self._pools

    def live_entries(self) -> Iterable[Entry]:
        """The core's record of every live job (read-only use: for checks)."""
        return [*self._jobs.values(), *self._shared_jobs.values()]

    def queued_in_order(self) -> list[list[Job]]:
        """Queued jobs per level (for checks)."""
        levels: list[list[Job]] = [[] for _ in range(LEVELS)]
        for entry in self._queues.entries():
            levels[entry.rank].append(entry.job)
        return levels

    def tenant(self, tenant_id: str) -> Tenant | None:
        """The spec a tenant is scheduled with (configured, or the default), or None."""
        state = self._tenants.get(tenant_id)
        if state is not None:
            return state.spec
        return self._tenant_specs.get(tenant_id)

    def concurrency_usage(self, group: str) -> tuple[int, int]:
        """(runs holding a slot of the concurrency group, its limit)."""
        state = self._limits.get(("group", group))
        if state is None or state.max_running is None:
            return (0, self._cgroup_limits.get(group, self._default_cgroup_limit))
        return (state.running, state.max_running)

    def limit_usage(self, tool: str) -> tuple[int, int | None, float | None]:
        """(runs of a backend limit such as a tool's, its max_concurrency, tokens left)."""
        state = self._limits.get(("tool", tool))
        if state is None:
            return (0, None, None)
        return (state.running, state.max_running, state.tokens if state.rate else None)

    def stats(self) -> Stats:
        """Counts by status, per priority, tenant and backend; pools; waiting reasons (in one
        go; ``stats_builder`` builds the same in steps)."""
        return self.stats_builder().result()

    def stats_builder(self) -> StatsBuilder:
        """A ``StatsBuilder`` over the state as it is now, to build the Stats in steps of
        bounded work (O(tenants + waiting jobs) in all)."""
        return StatsBuilder(
            self._counters,
            self._retired,
            self._rejected_unleveled,
            list(self.live_entries()) if self._waiting else [],
            self._tenant_stats,
            self._reason_of,
            self._pool_stats,
        )

    def tenant_stats(self, tenant_id: str) -> TenantStats:
        """One tenant's stats, from its own counters (O(1) in the number of tenants); zeros
        with its weight and quota for a tenant with no counters."""
        counters = self._counters.get(tenant_id)
        if counters is not None:
            return self._tenant_stats(tenant_id, counters)
        spec = self.tenant(tenant_id)
        if spec is None:
            return TenantStats()
        return TenantStats(weight=spec.weight, quota=spec.quota, budget_usd=spec.quota.budget_usd)

    def _reason_of(self, entry: Entry, cache: dict[Any, Any]) -> str | None:
        status = entry.status
        if status is _PENDING:
            return entry.job.waiting_reason or "pending"
        if status is _QUEUED:
            return self._queued_reason(entry, cache)
        return None

    def _pool_stats(self) -> dict[str, PoolStats]:
        return {
            name: PoolStats(
                backend=pool.backend,
                capacity=pool.spec,
                used=pool_usage(pool.usage(), pool.stopping),
            )
            for name, pool in self._pools.items()
        }

    def _tenant_stats(self, tenant_id: str, counters: TenantCounters) -> TenantStats:
        counter, by_priority = counters.total()
        base = counts(counter)
        fields = {name: getattr(base, name) for name in base.__struct_fields__}
        state = self._tenants.get(tenant_id)
        if state is None:
            return TenantStats(
                **fields, by_priority=by_priority, rejections=dict(counters.rejections)
            )
        active_weight = self._active_weight
        return TenantStats(
            **fields,
            weight=state.weight,
            quota=state.quota,
            usage=TenantUsage(**state.usage.as_dict()),  # type: ignore[arg-type]
            dominant_share=dominant_share(state, Capacity(list(self._pools.values())))
            * state.weight,
            fair_share=state.weight / active_weight if active_weight and state.active else 0.0,
            by_priority=by_priority,
            rejections=dict(counters.rejections),
            spend_usd=state.spend_period,
            spend_total_usd=state.spend_total,
            committed_usd=max(0.0, state.committed),
            budget_usd=state.quota.budget_usd,
        )

    # ---- what a GroupQueue asks while it picks (the Selector protocol) ----------------------

    def charge(self, head: Entry, queue: TenantQueue) -> float:
        """What the dispatch of ``head`` (just started) costs its tenant in virtual time: its
        dominant share of the group's capacity times the expected run time, over the tenant's
        weight. Corrected with the real run time when the run ends."""
        run = self._last_run
        needs = head.needs
        group = queue.queue
        share = group.capacity.slot_share if needs is NO_NEEDS else job_share(needs, group.capacity)
        weight = head.tenant_state.weight
        charged = share * group.expected_run_s / weight
        if run is not None:
            run.queue, run.charged, run.share, run.weight = queue, charged, share, weight
        return charged

    def _holding_back(self, head: Entry) -> tuple[str, str, LimitKey | None] | None:
        """The first limit that holds a head back now, as (scope, reason, limit key) with scope
        "tenant", "namespace" or "limit"; None if none does. No side effects."""
        state = head.tenant_state
        if state.quota is not UNLIMITED:
            reason = quota_gate(state.quota, state.running, state.usage, head.needs)
            if reason is not None:
                return ("tenant", f"tenant_{reason}", None)
        if state.namespaces:
            namespace = state.namespaces.get(head.namespace)
            if namespace is not None and namespace.quota is not UNLIMITED:
                reason = quota_gate(namespace.quota, namespace.running, namespace.usage, head.needs)
                if reason is not None:
                    return ("namespace", f"namespace_{reason}", None)
        for key in head.limits:
            reason = self._limits[key].reason(self._now)
            if reason is not None:
                return ("limit", reason, key)
        return None

    def gate(self, head: Entry, queue: TenantQueue) -> tuple[str, str] | None:
        """The limit holding a head back, recording where it is parked; None if none does."""
        found = self._holding_back(head)
        if found is None:
            return None
        scope, reason, key = found
        if scope == "tenant":
            held = queue.queue.held
            if held is not None and held.tenant == head.tenant:
                self._unhold(held)  # a parked tenant holds no capacity
            head.tenant_state.parked_in.add(queue.queue)
            return (TENANT, reason)
        self._unhold_fifo(queue, head)
        if key is None:
            head.tenant_state.namespaces[head.namespace].parked.append((queue, head.subkey))
            return (FIFO, reason)
        limit = self._limits[key]
        limit.parked.append((queue, head.subkey))
        if reason.startswith("tool_rate") and not limit.timer_armed:
            limit.timer_armed = True
            self._out.append(ArmTimer(limit.next_token_at(self._now), (_LIMIT_KEY, "", key[1], 0)))
        return (FIFO, reason)

    def _release_stopped_holds(self) -> None:
        """A start used up some of a quota or limit: capacity held for a head that it now holds
        back is released at once (drain parks that head when it next offers it; until then the
        held capacity would sit idle while others could use it)."""
        for queue in self._queues.groups():
            held = queue.held
            if held is not None and self._holding_back(held) is not None:
                self._unhold(held)

    def try_start(self, entry: Entry) -> bool:
        """Reserve a pool for the job and dispatch it there: among its pools that fit now, the
        cheapest for its needs, then the least loaded (capacity held for other jobs of its level
        or higher is left alone)."""
        placement = entry.placement
        needs, rank = entry.needs, entry.rank
        if len(placement) == 1:
            rate, pool = placement[0]
            reservation = pool.try_reserve(needs, rank, entry)
            if reservation is None:
                return False
        else:
            chosen = self._place(entry)
            if chosen is None:
                return False
            rate, pool = chosen
            reservation = pool.try_reserve(needs, rank, entry)
            if reservation is None:  # pragma: no cover - _place checked the fit
                return False
        name = pool.name
        if entry.held is not None:
            self._hold_released = True
            self.release_epoch += 1
            entry.held.unhold(entry)
            entry.held = None
            self._queues.queue_of(entry).held = None
        entry.rate = rate
        job = entry.job
        number = job.attempt + 1
        at = self._now_dt
        attempt = Attempt(number=number, backend=entry.backend, pool=name, started_at=at)
        job = replace(
            job,
            status=_RUNNING,
            pool=name,
            attempt=number,
            attempts=(*job.attempts, attempt),
            started_at=at,
            waiting_reason=None,
            next_attempt_at=None,
        )
        tenant = entry.tenant_state
        tenant.reserve(reservation, entry.namespace)
        limits: tuple[_Limit, ...] = ()
        if entry.limits:
            limits = tuple(self._limits[key] for key in entry.limits)
            for limit in limits:
                limit.running += 1
                if limit.rate is not None:
                    limit.tokens -= 1.0
        if tenant.limited or limits:
            self._release_stopped_holds()
        if self._guard is not None:
            self._guard.record(entry.rank)
        run = self._runs[(entry.tenant, job.id, number)] = _Run(
            reservation,
            entry,
            entry.backend,
            tenant,
            entry.namespace,
            limits,
            self._now,
            rate,
        )
        self._last_run = run
        queue_time_ms = (self._now - entry.since) * 1000.0
        self._move(entry, _RUNNING, job)
        self._out.append(Dispatch(job, entry.backend, name, queue_time_ms))
        timeout_ms = job.resources.timeout_ms
        if timeout_ms is not None:
            self._out.append(
                ArmTimer(
                    self._now + timeout_ms / 1000.0, (_TIMEOUT_KEY, entry.tenant, job.id, number)
                )
            )
        return True

    # ---- admission ---------------------------------------------------------------------------

    def _submit(self, event: Submit) -> bool:
        jobs = event.jobs
        count = len(jobs)
        if len(event.routes) != count:
            raise ValueError("Submit: one route per job is required")
        rejection = check_max_waiting(self._waiting, self._max_waiting, count) or (
            check_duplicates(jobs, self._jobs, self._shared_jobs)
            if count > 1 or self._entry(jobs[0].tenant_id, jobs[0].id) is not None
            else None
        )
        plans: list[Plan] = []
        limited = False  # does any tenant of the batch have a quota or namespace limits?
        if rejection is None:
            router = self._router
            for index, job in enumerate(jobs):
                needs = needs_of(job.resources)
                choice = router.choose(needs, event.routes[index], job)
                if not isinstance(choice, Choice):
                    rejection = (choice, index, "unschedulable")
                    break
                tenant = self._tenant_state(job.tenant_id)
                if tenant is None:
                    rejection = unknown_tenant(job.tenant_id, index)
                    break
                limited = limited or tenant.limited
                plans.append((job, needs, choice, tenant))
        if rejection is None and limited:
            rejection = (
                check_quotas(plans)
                or check_queue_caps(plans)
                or check_budgets(plans, self._now)
                or check_rate(plans, self._now)
            )
        if rejection is not None:
            self._reject(jobs, rejection)
            return False
        now, at = self._now, self._now_dt
        queues, out = self._queues, self._out
        backend_limits = event.limits
        for index, (job, needs, choice, tenant) in enumerate(plans):
            backend, estimate = choice.backend, choice.estimate
            job = replace(
                job,
                status=_QUEUED,
                backend=backend,
                submitted_at=at,
                queued_at=at,
                estimated_cost_usd=estimate,
            )
            keys = self._limit_keys(job, backend_limits[index] if backend_limits else ())
            subkey = tenant.last_subkey  # one tuple for a tenant's jobs in the same FIFO
            if subkey is None or subkey[0] != job.namespace or subkey[1] != keys:
                subkey = tenant.last_subkey = (job.namespace, keys)
            entry = Entry(
                job=job,
                tenant=job.tenant_id,
                tenant_state=tenant,
                namespace=job.namespace,
                limits=keys,
                subkey=subkey,
                rank=_PRIORITY_RANK[job.priority],  # (Priority.rank without the property)
                needs=needs,
                backend=backend,
                group=choice.group,
                status=_QUEUED,
                since=now,
                submitted=now,
                placement=choice.placement,
                estimate=estimate,
            )
            if estimate is not None:
                tenant.committed += estimate
            last = tenant.last_cell  # a tenant's jobs mostly share one (level, backend)
            if last is not None and last[0] == entry.rank and last[1] == backend:
                counter = entry.counter = last[2]
            else:
                counter = entry.counter = tenant.counters.cell(entry.rank, backend)
                tenant.last_cell = (entry.rank, backend, counter)
            if job.id in self._jobs:  # another tenant's live job has this id
                self._shared_jobs[(entry.tenant, job.id)] = entry
            else:
                self._jobs[job.id] = entry
            counter[SUBMITTED] += 1
            counter[QUEUED_SLOT] += 1
            tenant.waiting += 1
            if not tenant.active:
                self._check_active(tenant)
            if tenant.limited:
                namespace = tenant.namespaces.get(entry.namespace)
                if namespace is not None:
                    namespace.waiting += 1
            queues.push(entry, self._group_pools)
            out.append(Record(job, None))
        self._waiting += count
        if not self._sweep_armed:
            self._arm_sweep()
        return True

    def _reject(self, jobs: Sequence[Job], rejection: Rejection) -> None:
        error, index, reason = rejection
        self._out.append(Reject(error, index))
        self._count_rejected(jobs, reason)

    def _tenant_state(self, tenant_id: str) -> TenantState | None:
        state = self._tenants.get(tenant_id)
        if state is not None:
            return state
        spec = self._tenant_specs.get(tenant_id)
        if spec is None:
            if self._default_tenant is None:
                return None
            spec = replace(self._default_tenant, id=tenant_id)
        state = self._tenants[tenant_id] = TenantState(
            spec, self._now, self._tenant_counters(tenant_id)
        )
        return state

    def _entry(self, tenant_id: str, job_id: str) -> Entry | None:
        """A tenant's live job, or None."""
        entry = self._jobs.get(job_id)
        if entry is not None and entry.tenant == tenant_id:
            return entry
        return self._shared_jobs.get((tenant_id, job_id)) if self._shared_jobs else None

    def _tenant_counters(self, tenant_id: str) -> TenantCounters:
        counters = self._counters.get(tenant_id)
        if counters is None:
            counters = self._counters[tenant_id] = TenantCounters()
        return counters

    def _place(self, entry: Entry) -> tuple[float, PoolState] | None:
        best: tuple[float, PoolState] | None = None
        best_load = 2.0
        for rate, pool in entry.placement:
            if best is not None and rate > best[0]:
                break  # sorted by rate: the rest cost more
            if not pool.fits_now(entry.needs, entry.rank, entry):
                continue
            load = pool.used_slots / pool.cap_slots if pool.cap_slots else 1.0
            if best is None or load < best_load:
                best, best_load = (rate, pool), load
        return best

    def hold(self, head: Entry, queue: GroupQueue) -> None:
        """Hold capacity for a head that is first in line and does not fit: on the cheapest of
        its pools that could ever hold it, later jobs of its level or lower only get what is
        left beyond it, so it starts as soon as the runs there now have freed enough."""
        for _, pool in head.placement:
            if pool.could_ever_hold(head.needs):
                self._hold_seq += 1
                pool.hold_for(head, head.rank, head.needs, self._hold_seq)
                head.held = pool
                queue.held = head
                return

    def _unhold_fifo(self, queue: TenantQueue, head: Entry) -> None:
        """A FIFO is parked: the capacity held for one of its jobs is released."""
        held = queue.queue.held
        if held is not None and held.tenant == head.tenant and held.subkey == head.subkey:
            self._unhold(held)

    def release_hold_of_other_than(self, head: Entry, queue: GroupQueue) -> None:
        """The head of a tenant is offered: capacity held for another job of that tenant (no
        longer its head) is released, or the two would wait for each other."""
        held = queue.held
        if held is not None and held is not head and held.tenant == head.tenant:
            self._unhold(held)

    def _unhold(self, entry: Entry) -> None:
        if entry.held is not None:
            self._hold_released = True
            self.release_epoch += 1
            entry.held.unhold(entry)
            entry.held = None
            queue = self._queues.levels[entry.rank].get(entry.group)
            if queue is not None and queue.held is entry:
                queue.held = None

    def _group_pools(self, group: tuple[str, ...]) -> list[PoolState]:
        return [self._pools[name] for name in group]

    def _limit_keys(self, job: Job, specs: Sequence[Limit]) -> tuple[LimitKey, ...]:
        """The limits a job is subject to (creating or updating their state)."""
        group = job.constraints.concurrency_group
        if group is None and not specs:
            return ()
        keys: list[LimitKey] = []
        if group is not None:
            key = ("group", group)
            if key not in self._limits:
                limit = self._cgroup_limits.get(group, self._default_cgroup_limit)
                self._limits[key] = _Limit(key, limit)
            keys.append(key)
        for spec in specs:
            if spec.max_concurrency is None and spec.rate is None:
                continue
            key = ("tool", spec.name)
            state = self._limits.get(key)
            if state is None:
                state = self._limits[key] = _Limit(key, spec.max_concurrency)
            else:
                state.max_running = spec.max_concurrency
            state.set_rate(spec.rate, spec.burst, self._now)
            keys.append(key)
        return tuple(keys)

    # ---- the end of a run --------------------------------------------------------------------

    def _run_ended(self, event: RunEnded) -> None:
        run = self._runs.pop((event.tenant_id, event.job_id, event.attempt), None)
        if run is None:
            return  # already reported: ending a run is idempotent
        pool = run.reservation.pool
        pool.release(run.reservation)
        if run.stopping:
            pool.stopping -= 1
        self._released(run)
        entry = run.entry
        if entry.status is _RUNNING and entry.job.attempt == event.attempt:
            outcome = event.outcome
            if type(outcome) is Succeeded:
                self._finish(entry, Status.SUCCEEDED, result=outcome.result)
            elif type(outcome) is Failed:
                self._attempt_failed(entry, outcome.error, outcome.retryable, Status.FAILED)
            else:
                error = JobError(
                    type="StoppedError",
                    message="the run was stopped by its backend before it finished",
                    attempt=event.attempt,
                )
                self._attempt_failed(entry, error, True, Status.FAILED)
        # (else the job already moved on, by timeout or cancel: only the capacity came back)
        tenant = run.tenant
        if not tenant.running and not tenant.waiting:  # its last live job: it goes idle
            self._check_active(tenant)

    def _released(self, run: _Run) -> None:
        """A run gave its capacity back: its charge is corrected with its real run time, and its
        tenant, namespace and concurrency group may let parked jobs go."""
        tenant = run.tenant
        tenant.release(run.reservation, run.namespace)
        if run.rate:
            tenant.spend(run.rate * (self._now - run.started) / 3600.0, self._now)
        queue = run.queue
        if queue is not None:
            run_s = self._now - run.started
            queue.queue.adjust(
                queue,
                run.share * run_s / run.weight - run.charged,
                run_s,
                run.share,
                run.weight,
            )
        for limit in run.limits:
            limit.running -= 1
            self._unpark_fifos(limit.parked)
        if tenant.limited:  # (only a limited tenant has namespace limits or is parked)
            namespace = tenant.namespaces.get(run.namespace)
            if namespace is not None:
                self._unpark_fifos(namespace.parked)
            if tenant.parked_in:
                self._refresh_tenant(tenant)

    def _refresh_tenant(self, tenant: TenantState) -> None:
        """Unpark the tenant where it was parked."""
        if tenant.parked_in:
            for queue in tenant.parked_in:
                queue.unpark(tenant.spec.id)
            tenant.parked_in.clear()

    def _unpark_fifos(self, parked: list[tuple[TenantQueue, SubKey]]) -> None:
        if not parked:
            return
        waiting = parked[:]
        parked.clear()
        for tenant_queue, sub in waiting:
            if tenant_queue.unpark(sub):
                group_queue = tenant_queue.queue
                group_queue.parked.pop(tenant_queue.tenant, None)  # its head may have changed
                group_queue.activate(tenant_queue.tenant)

    def _attempt_failed(
        self, entry: Entry, error: JobError, retryable: bool, final: Status
    ) -> None:
        if error.attempt != entry.job.attempt:
            error = replace(error, attempt=entry.job.attempt)
        policy = entry.job.constraints.retry_policy
        if final is Status.TIMEOUT and not policy.retry_on_timeout:
            retryable = False
        if retryable and entry.job.attempt < policy.max_attempts:
            self._retry(entry, error, final)
        else:
            self._finish(entry, final, error=error)

    def _retry(self, entry: Entry, error: JobError, attempt_status: Status) -> None:
        job = entry.job
        delay_ms = backoff_delay_ms(job.constraints.retry_policy, job.attempt, self._rand)
        ready_at = self._now + delay_ms / 1000.0
        attempts, cost = self._close_attempt(entry, attempt_status, error)
        job = replace(
            job,
            status=_PENDING,
            attempts=attempts,
            cost_usd=job.cost_usd + cost,
            error=error,
            waiting_reason="backoff",
            next_attempt_at=_dt.datetime.fromtimestamp(self._wall + delay_ms / 1000.0, _UTC),
        )
        elapsed_ms = (self._now - entry.since) * 1000.0
        self._move(entry, _PENDING, job)
        self._out.append(Record(job, _RUNNING, elapsed_ms=elapsed_ms, backoff_ms=delay_ms))
        if delay_ms > 0:
            self._out.append(ArmTimer(ready_at, (_READY_KEY, entry.tenant, job.id, job.attempt)))
        else:
            self._enqueue_pending(entry)

    def _finish(
        self,
        entry: Entry,
        status: Status,
        *,
        result: object = None,
        error: JobError | None = None,
        cancel_reason: str | None = None,
    ) -> None:
        job = entry.job
        previous = entry.status
        attempts, cost = job.attempts, 0.0
        if previous is _RUNNING:
            attempts, cost = self._close_attempt(entry, status, error)
        elif previous is _QUEUED:
            self._unhold(entry)
        elif job.waiting_reason == "backoff":  # pending: its backoff timer is not needed
            self._out.append(DisarmTimer((_READY_KEY, entry.tenant, job.id, job.attempt)))
        if entry.estimate is not None:
            entry.tenant_state.committed -= entry.estimate
        job = replace(
            job,
            status=status,
            attempts=attempts,
            cost_usd=job.cost_usd + cost,
            result=result,
            error=None if status is Status.SUCCEEDED else (error or job.error),
            finished_at=self._now_dt,
            waiting_reason=None,
            next_attempt_at=None,
            cancel_reason=cancel_reason,
        )
        now = self._now
        elapsed_ms = (now - entry.since) * 1000.0  # (before _move restarts the state's clock)
        self._move(entry, status, job)
        if self._jobs.get(job.id) is entry:
            del self._jobs[job.id]
        else:
            del self._shared_jobs[(entry.tenant, job.id)]
        self._out.append(
            Record(
                job,
                previous,
                elapsed_ms=elapsed_ms,
                total_ms=(now - entry.submitted) * 1000.0,
            )
        )

    def _close_attempt(
        self, entry: Entry, status: Status, error: JobError | None
    ) -> tuple[tuple[Attempt, ...], float]:
        """The job's attempts with the last one ended now, and what that attempt cost; its
        timeout timer is no longer needed."""
        job = entry.job
        if job.resources.timeout_ms is not None:
            self._out.append(DisarmTimer((_TIMEOUT_KEY, entry.tenant, job.id, job.attempt)))
        cost = entry.rate * (self._now - entry.since) / 3600.0 if entry.rate else 0.0
        last = replace(
            job.attempts[-1], finished_at=self._now_dt, status=status, error=error, cost_usd=cost
        )
        return (*job.attempts[:-1], last), cost

    # ---- timers, cancellation, configuration -----------------------------------------------

    def _timer(self, event: TimerFired) -> None:
        what, tenant_id, job_id, attempt = event.key
        if what == _SWEEP_KEY:
            self._sweep()
            return
        if what == _LIMIT_KEY:  # a rate-limited tool has a token again
            limit = self._limits.get(("tool", job_id))
            if limit is not None:
                limit.timer_armed = False
                self._unpark_fifos(limit.parked)
            return
        entry = self._entry(tenant_id, job_id)
        if entry is None or entry.job.attempt != attempt:
            return  # stale: the job moved on
        if what == _READY_KEY and entry.status is _PENDING:
            self._enqueue_pending(entry)
        elif what == _TIMEOUT_KEY and entry.status is _RUNNING:
            timeout_ms = entry.job.resources.timeout_ms
            error = JobError(
                type="TimeoutError",
                message=f"timed out after {timeout_ms} ms (resources.timeout_ms)",
                attempt=attempt,
            )
            self._stop_run(entry, "timeout")
            self._attempt_failed(entry, error, True, Status.TIMEOUT)

    def _stop_run(self, entry: Entry, reason: str) -> None:
        """Tell the engine to stop a job's current run. Until the run really ends it holds its
        capacity, counted as ``stopping`` on its pool (stats; the waiting reason
        ``stopping_runs:<pool>``), so a run that ignores cancellation stays visible."""
        job = entry.job
        run = self._runs.get((entry.tenant, job.id, job.attempt))
        if run is not None and not run.stopping:
            run.stopping = True
            run.reservation.pool.stopping += 1
        self._out.append(StopRun(entry.tenant, job.id, job.attempt, entry.backend, reason))

    def _enqueue_pending(self, entry: Entry) -> None:
        job = replace(entry.job, status=_QUEUED, queued_at=self._now_dt, waiting_reason=None)
        elapsed_ms = (self._now - entry.since) * 1000.0
        self._move(entry, _QUEUED, job)
        self._queues.push(entry, self._group_pools)
        self._out.append(Record(job, _PENDING, elapsed_ms=elapsed_ms))

    def _cancel(self, event: Cancel) -> None:
        entry = self._entry(event.tenant_id, event.job_id)
        if entry is None:
            return  # unknown or already terminal: nothing changes
        if entry.status is _RUNNING:
            self._stop_run(entry, event.reason)
        elif entry.status is _QUEUED:
            self._queues.discard(entry)
            queue = self._queues.queue_of(entry)
            if queue.parked.pop(entry.tenant, None) is not None:  # its head may have changed
                queue.activate(entry.tenant)
        self._finish(entry, Status.CANCELED, cancel_reason=event.reason)

    def _tenant_changed(self, spec: Tenant) -> None:
        self._tenant_specs[spec.id] = spec
        state = self._tenants.get(spec.id)
        if state is None:
            return
        new = [name for name in spec.namespaces if name not in state.namespaces]
        if state.active:
            self._active_weight += spec.weight - state.weight
        state.update(spec)
        if new:
            self._recount_namespaces(state, new)
        for namespace in state.namespaces.values():
            self._unpark_fifos(namespace.parked)
        self._refresh_tenant(state)

    def _recount_namespaces(self, tenant: TenantState, names: list[str]) -> None:
        """Namespaces that just got limits start from what is there: waiting jobs and runs."""
        wanted = set(names)
        for entry in self.live_entries():
            if (
                entry.tenant_state is tenant
                and entry.namespace in wanted
                and entry.status in _WAITING
            ):
                tenant.namespaces[entry.namespace].waiting += 1
        for run in self._runs.values():
            if run.tenant is tenant and run.namespace in wanted:
                namespace = tenant.namespaces[run.namespace]
                namespace.running += 1
                namespace.usage.add(run.reservation)

    def _limit_changed(self, event: ConcurrencyLimitChanged) -> None:
        if event.limit < 1:
            raise ConfigurationError(
                f"a concurrency limit is >= 1, got {event.limit} for {event.group!r}"
            )
        self._cgroup_limits[event.group] = event.limit
        group = self._limits.get(("group", event.group))
        if group is not None:
            group.max_running = event.limit
            self._unpark_fifos(group.parked)

    def _pools_changed(self, event: PoolsChanged) -> None:
        existing = [p for p in event.pools if p.name in self._pools]
        for spec in existing:
            pool = self._pools[spec.name]
            if pool.backend != event.backend:
                raise ConfigurationError(
                    f"pool {spec.name!r} belongs to backend {pool.backend!r}, not {event.backend!r}"
                )
            pool.set_spec(spec)
        self._add_pools(event.backend, [p for p in event.pools if p.name not in self._pools])
        self._router.forget()
        for queue in self._queues.groups():
            queue.capacity = Capacity(queue.pools)

    def _add_pools(self, backend: str, specs: Iterable[Pool]) -> None:
        for spec in specs:
            if spec.name in self._pools:
                raise ConfigurationError(
                    f"pool name {spec.name!r} is used twice ({self._pools[spec.name].backend!r} "
                    f"and {backend!r}); pool names must be unique across backends"
                )
            self._pools[spec.name] = PoolState(backend, spec)

    # ---- bookkeeping -------------------------------------------------------------------------

    def _check_active(self, tenant: TenantState) -> None:
        """Keep ``tenant.active`` (has waiting or running jobs), the count and weight of the
        active tenants, and the idle list, right after its waiting or running count changed."""
        active = tenant.waiting > 0 or tenant.running > 0
        if active is tenant.active:
            return
        tenant.active = active
        tenant_id = tenant.spec.id
        if active:
            self._active_count += 1
            self._active_weight += tenant.weight
            self._idle.pop(tenant_id, None)
        else:
            self._active_count -= 1
            self._active_weight = self._active_weight - tenant.weight if self._active_count else 0.0
            self._idle[tenant_id] = self._now

    def _arm_sweep(self, soon: bool = False) -> None:
        """Arm the idle-tenant sweep, one ``tenant_idle_ttl_s`` from now (or at once to go on
        with a big sweep). It is armed by the first admitted submit (never with a Reject, which
        comes alone) and re-armed by each sweep while tenants are idle."""
        ttl = self._idle_ttl
        if ttl is None:
            return
        self._sweep_armed = True
        self._out.append(ArmTimer(self._now if soon else self._now + ttl, (_SWEEP_KEY, "", "", 0)))

    def _sweep(self) -> None:
        """Drop the state of tenants idle for ``tenant_idle_ttl_s`` (at most a batch at a
        time): no waiting or running job, no submit-rate debt, nothing spent in the current
        budget period. Their counters are folded into the retired cells (totals stay right);
        their configured spec stays, so they come back as configured."""
        self._sweep_armed = False
        ttl = self._idle_ttl
        if ttl is None:
            return
        horizon = self._now - ttl
        idle = self._idle
        dropped = 0
        while idle and dropped < _SWEEP_BATCH:
            tenant_id, since = next(iter(idle.items()))
            if since > horizon:
                break
            del idle[tenant_id]
            if self._droppable(tenant_id):
                self._drop_tenant(tenant_id)
                dropped += 1
            else:
                idle[tenant_id] = self._now  # look again after another ttl
        if idle:
            self._arm_sweep(soon=dropped >= _SWEEP_BATCH)

    def _droppable(self, tenant_id: str) -> bool:
        """Whether forgetting an idle tenant's state changes no later decision."""
        state = self._tenants.get(tenant_id)
        if state is None:
            return True  # only counters (rejections)
        if state.active:
            return False
        if state.quota.submit_rate is not None:
            state.refill(self._now)
            if state.tokens < state.burst - 1e-9:
                return False  # it still owes tokens: dropping would forgive them
        if state.quota.budget_usd is not None:
            state.roll_period(self._now)
            if state.spend_period > 0.0:
                return False  # spent in this budget period: dropping would refund it
        self._refresh_tenant(state)  # parked with no job left (a quota lowered to 0)
        return True

    def _drop_tenant(self, tenant_id: str) -> None:
        counters = self._counters.pop(tenant_id, None)
        if counters is not None:
            for key, cell in counters.cells.items():
                retired = self._retired.get(key)
                if retired is None:
                    retired = self._retired[key] = new_counter()
                add_counter(retired, cell)
            self._rejected_unleveled += counters.rejected_unleveled
        if self._tenants.pop(tenant_id, None) is not None:
            for queue in self._queues.groups():
                vtime = queue.idle_vtimes.get(tenant_id)
                if vtime is not None and vtime <= queue.clock:  # no standing to remember
                    del queue.idle_vtimes[tenant_id]

    @property
    def tenants_kept(self) -> int:
        """Tenants the core keeps state or counters for now (bounded by the idle sweep)."""
        return len(self._counters)

    def _move(self, entry: Entry, status: Status, job: Job) -> None:
        """The one place a live job changes status: checks the edge, counts, keeps the job."""
        previous = entry.status
        if status not in ALLOWED_TRANSITIONS[previous]:
            check_transition(job.id, previous, status)  # raises, saying which edge
        counter = entry.counter
        counter[SLOT[previous]] -= 1
        counter[SLOT[status]] += 1
        was_waiting, is_waiting = previous in _WAITING, status in _WAITING
        if was_waiting is not is_waiting:
            step = 1 if is_waiting else -1
            self._waiting += step
            tenant = entry.tenant_state
            tenant.waiting += step
            if tenant.limited:
                namespace = tenant.namespaces.get(entry.namespace)
                if namespace is not None:
                    namespace.waiting += step
            if not tenant.running:  # (with a run, the tenant stays active whatever happens)
                self._check_active(tenant)
        entry.status = status
        entry.job = job
        entry.since = self._now

    def _count_rejected(self, jobs: Sequence[object], reason: str) -> None:
        """Count refused submits: in their tenant's counters (its rejections by reason, and its
        level's cell when the job has a valid priority), or apart when the tenant id itself is
        not valid (then in the totals and its level only)."""
        for job in jobs:
            priority = getattr(job, "priority", None)
            raw_tenant = getattr(job, "tenant_id", None)
            tenant_id = raw_tenant if _countable_tenant(raw_tenant) else None
            counters = None if tenant_id is None else self._tenant_counters(tenant_id)
            if isinstance(priority, Priority):
                where = counters or self._tenant_counters("")
                where.cell(priority.rank, None)[REJECTED] += 1
            elif counters is not None:
                counters.rejected_unleveled += 1
            else:
                self._rejected_unleveled += 1
            if counters is not None and tenant_id is not None:
                counters.rejections[reason] = counters.rejections.get(reason, 0) + 1
                state = self._tenants.get(tenant_id)
                if state is None or not state.active:  # remembered until idle long enough
                    self._idle.pop(tenant_id, None)
                    self._idle[tenant_id] = self._now


def _countable_tenant(tenant_id: object) -> bool:
    """Whether a refused job's tenant id is one to count rejections under (a short printable
    ASCII string; anything else is counted apart rather than kept as a key)."""
    return (
        isinstance(tenant_id, str)
        and 0 < len(tenant_id) <= 128
        and tenant_id.isascii()
        and tenant_id.isprintable()
    )

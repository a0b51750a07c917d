"""Counters and stats: how many jobs are in each status, kept as jobs move, and the ``Stats``
snapshot built from them.

Each job counts in one cell, the counter of its (tenant, level, backend), for its whole life:
its transitions move one unit between the cell's slots, so every cell is consistent at every
instant (submitted = waiting + running + finished). A tenant's cells live in its
``TenantCounters``; one tenant's stats sum a handful of cells (O(1) in the number of tenants).

The whole ``Stats`` costs O(tenants + waiting jobs). ``StatsBuilder`` builds it in steps of a
bounded amount of work, so the engine can let dispatch run between them: a tenant's cells are
read at one instant, so totals still add up (they are sums of consistent cells), and a waiting
job's reason is the one it has when its step comes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from .._ir import Priority, Status
from .._stats import Counts, PoolStats, PoolUsage, Stats, TenantStats, TenantUsage
from ._tenants import Capacity, dominant_share

if TYPE_CHECKING:
    from ._capacity import PoolState
    from ._tenants import TenantState

__all__ = [
    "QUEUED_SLOT",
    "REJECTED",
    "SLOT",
    "SLOT_NAMES",
    "SUBMITTED",
    "CellKey",
    "StatsBuilder",
    "TenantCounters",
    "add_counter",
    "counts",
    "new_counter",
    "pool_stats",
    "tenant_stats",
]

#: Counter slots, by status; then cumulative submitted and rejected.
SLOT: Final = {status: i for i, status in enumerate(Status)}
QUEUED_SLOT: Final = SLOT[Status.QUEUED]
SUBMITTED: Final = len(SLOT)
REJECTED: Final = SUBMITTED + 1
_SIZE: Final = REJECTED + 1
#: The names of a counter's slots, in slot order (a stored cell is kept by name).
SLOT_NAMES: Final = (*(status.value for status in SLOT), "submitted", "rejected")
_LEVELS: Final = len(Priority)
#: A cell of a tenant: (level, backend); backend None for rejections (they have none).
CellKey = tuple[int, str | None]


def new_counter() -> list[int]:
    """A counter with every slot at zero."""
    return [0] * _SIZE


def add_counter(total: list[int], counter: list[int]) -> None:
    """``total += counter``, slot by slot."""
    for i, value in enumerate(counter):
        total[i] += value


def counts(counter: list[int]) -> Counts:
    """A counter as the ``Counts`` users see."""
    return Counts(
        pending=counter[SLOT[Status.PENDING]],
        queued=counter[SLOT[Status.QUEUED]],
        running=counter[SLOT[Status.RUNNING]],
        succeeded=counter[SLOT[Status.SUCCEEDED]],
        failed=counter[SLOT[Status.FAILED]],
        timeout=counter[SLOT[Status.TIMEOUT]],
        canceled=counter[SLOT[Status.CANCELED]],
        submitted=counter[SUBMITTED],
        rejected=counter[REJECTED],
    )


class TenantCounters:
    """A tenant's cells, its rejections by reason, and rejections of its jobs that had no valid
    priority (counted in no level). Kept while the tenant is remembered (see the core's idle
    tenant sweep); then folded into the retired cells."""

    __slots__ = ("cells", "rejected_unleveled", "rejections")

    def __init__(self) -> None:
        self.cells: dict[CellKey, list[int]] = {}
        self.rejections: dict[str, int] = {}
        self.rejected_unleveled = 0

    def cell(self, rank: int, backend: str | None) -> list[int]:
        """The counter of (level, backend), created at zero."""
        key = (rank, backend)
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = new_counter()
        return cell

    def total(self) -> tuple[list[int], dict[str, Counts]]:
        """The sum of the cells (its rejections without a level included), and the counts of
        each level that has a cell."""
        total = new_counter()
        total[REJECTED] += self.rejected_unleveled
        by_level: dict[int, list[int]] = {}
        for (rank, _), cell in self.cells.items():
            add_counter(total, cell)
            level = by_level.get(rank)
            if level is None:
                level = by_level[rank] = new_counter()
            add_counter(level, cell)
        by_priority = {p.value: counts(by_level[p.rank]) for p in Priority if p.rank in by_level}
        return total, by_priority


#: What the builder asks the core for one tenant's stats: (tenant id, its counters) -> stats.
TenantStatsOf = Callable[[str, TenantCounters], TenantStats]
#: What the builder asks the core for one live job's waiting reason (None: not waiting now),
#: with a cache the builder keeps for the whole build.
ReasonOf = Callable[[Any, dict[Any, Any]], str | None]


class StatsBuilder:
    """Builds one ``Stats`` in steps (see the module docstring): ``step(n)`` does about ``n``
    units of work and says whether the build is done; ``result()`` then gives the Stats.

    It works from what the core had when it was made (the tenants' counters, the live jobs, the
    cells of tenants dropped so far) and reads each at its own step.
    """

    def __init__(
        self,
        tenants: Mapping[str, TenantCounters],
        retired: Mapping[CellKey, list[int]],
        rejected_unleveled: int,
        live: list[Any],
        tenant_stats: TenantStatsOf,
        reason_of: ReasonOf,
        pools: Callable[[], dict[str, PoolStats]],
    ) -> None:
        self._by_level = [new_counter() for _ in range(_LEVELS)]
        self._by_backend: dict[str, list[int]] = {}
        self._unleveled = rejected_unleveled
        for key, cell in retired.items():
            self._add_cell(key, cell)
        self._tenants: Iterator[tuple[str, TenantCounters]] = iter(list(tenants.items()))
        self._live: Iterator[Any] = iter(live)
        self._tenant_stats = tenant_stats
        self._reason_of = reason_of
        self._pools = pools
        self._by_tenant: dict[str, TenantStats] = {}
        self._reasons: dict[str, int] = {}
        self._cache: dict[Any, Any] = {}
        self._done = False

    def _add_cell(self, key: CellKey, cell: list[int]) -> None:
        rank, backend = key
        add_counter(self._by_level[rank], cell)
        if backend is not None:
            total = self._by_backend.get(backend)
            if total is None:
                total = self._by_backend[backend] = new_counter()
            add_counter(total, cell)

    def step(self, budget: int) -> bool:
        """Do about ``budget`` units of work (a tenant or a waiting job each); True when done."""
        for tenant_id, counters in self._tenants:
            for key, cell in counters.cells.items():
                self._add_cell(key, cell)
            self._unleveled += counters.rejected_unleveled
            if tenant_id:  # "": rejected jobs without a valid tenant (in the totals only)
                self._by_tenant[tenant_id] = self._tenant_stats(tenant_id, counters)
            budget -= 1
            if budget <= 0:
                return False
        reasons, reason_of, cache = self._reasons, self._reason_of, self._cache
        for entry in self._live:
            reason = reason_of(entry, cache)
            if reason is not None:
                reasons[reason] = reasons.get(reason, 0) + 1
            budget -= 1
            if budget <= 0:
                return False
        self._done = True
        return True

    def result(self) -> Stats:
        """The Stats (finishes the build first if it is not done)."""
        while not self._done:
            self.step(1 << 30)
        totals = new_counter()
        for level in self._by_level:
            add_counter(totals, level)
        totals[REJECTED] += self._unleveled
        return Stats(
            totals=counts(totals),
            by_priority={p.value: counts(self._by_level[p.rank]) for p in Priority},
            by_tenant=self._by_tenant,
            by_backend={b: counts(c) for b, c in self._by_backend.items()},
            pools=self._pools(),
            waiting_reasons=self._reasons,
        )


def tenant_stats(
    counters: TenantCounters,
    state: TenantState | None,
    active_weight: float,
    pools: Mapping[str, PoolState],
) -> TenantStats:
    """One tenant's stats: its counters and, while the core keeps its ``state``, its weight,
    quota, usage, shares of ``pools`` (fair share: its weight over ``active_weight``, the sum of
    the active tenants' weights) and spend."""
    counter, by_priority = counters.total()
    base = counts(counter)
    fields = {name: getattr(base, name) for name in base.__struct_fields__}
    if state is None:
        return TenantStats(**fields, by_priority=by_priority, rejections=dict(counters.rejections))
    return TenantStats(
        **fields,
        weight=state.weight,
        quota=state.quota,
        usage=TenantUsage(**state.usage.as_dict()),  # type: ignore[arg-type]
        dominant_share=dominant_share(state, Capacity(list(pools.values()))) * state.weight,
        fair_share=state.weight / active_weight if active_weight and state.active else 0.0,
        by_priority=by_priority,
        rejections=dict(counters.rejections),
        spend_usd=state.spend_period,
        spend_total_usd=state.spend_total,
        committed_usd=max(0.0, state.committed),
        budget_usd=state.quota.budget_usd,
    )


def pool_stats(pools: Mapping[str, PoolState]) -> dict[str, PoolStats]:
    """Every pool's capacity and usage as users see them."""
    return {
        name: PoolStats(
            backend=pool.backend,
            capacity=pool.spec,
            used=PoolUsage(**pool.usage(), stopping=pool.stopping),  # type: ignore[arg-type]
            available=not pool.offline,
        )
        for name, pool in pools.items()
    }

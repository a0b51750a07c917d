"""Which tenants the core knows, and for how long.

``TenantRegistry`` keeps the configured specs (and the default an unknown tenant is admitted
as), the state of each tenant while it is remembered, and its counters. It knows which tenants
are *active* (they have waiting or running jobs: their count and the sum of their weights give
each tenant's fair share) and which are idle, oldest first. A sweep, on a timer, forgets the
tenants idle for ``tenant_idle_ttl_s`` (at most ``SWEEP_BATCH`` per sweep, so no sweep scans
every tenant), unless forgetting one would change a later decision: it owes submit-rate tokens,
or spent in the current period of its budget. A forgotten tenant's counters are folded into the
retired cells, so totals, levels and backends keep counting it; its configured spec stays.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Final

from msgspec.structs import replace

from .._errors import ConfigurationError
from .._ir import Priority, Tenant
from .._stats import TenantStats
from ._counters import REJECTED, CellKey, TenantCounters, add_counter, new_counter, tenant_stats
from ._lifecycle import WAITING
from ._parking import unpark_fifos, unpark_tenant
from ._tenants import TenantState

if TYPE_CHECKING:
    from ._capacity import PoolState
    from ._jobs import LiveJobs
    from ._pauses import Pauses
    from ._queues import ReadyQueues
    from ._runs import Run

__all__ = ["SWEEP_BATCH", "TenantRegistry"]

#: How many idle tenants one sweep drops at most (the next sweep follows at once).
SWEEP_BATCH: Final = 512


class TenantRegistry:
    """The tenants the core knows (see the module docstring). ``counters`` holds each
    remembered tenant's counters (tenant "": rejected jobs without a valid tenant id);
    ``retired`` the cells of forgotten tenants, summed; ``rejected_unleveled`` the rejections
    with neither a valid tenant nor a valid priority."""

    __slots__ = (
        "_default",
        "_idle",
        "_idle_ttl",
        "_pools",
        "_queues",
        "_specs",
        "active_count",
        "active_weight",
        "changed",
        "counters",
        "pauses",
        "rejected_unleveled",
        "retired",
        "states",
        "sweep_armed",
        "sweep_at",
    )

    def __init__(
        self,
        specs: Sequence[Tenant],
        default: Tenant | None,
        idle_ttl_s: float | None,
        queues: ReadyQueues,
        pools: Mapping[str, PoolState],
    ) -> None:
        if idle_ttl_s is not None and not (
            isinstance(idle_ttl_s, int | float)
            and not isinstance(idle_ttl_s, bool)
            and math.isfinite(idle_ttl_s)
            and idle_ttl_s > 0
        ):
            raise ConfigurationError(
                f"tenant_idle_ttl_s must be a finite number of seconds > 0 or None, got "
                f"{idle_ttl_s!r}"
            )
        self._specs = {t.id: t for t in specs}
        self.changed: set[str] = set()  # tenants whose spec was set at run time
        self._default = default
        self._queues = queues  # (a forgotten tenant's standing in them goes too)
        self._pools = pools  # (for dominant shares in stats)
        self.states: dict[str, TenantState] = {}
        self.pauses: Pauses | None = None  # (the core's: a state made anew takes its pauses)
        self.counters: dict[str, TenantCounters] = {}
        self.retired: dict[CellKey, list[int]] = {}
        self.rejected_unleveled = 0
        # tenants with waiting or running jobs: how many, and their weights' sum
        self.active_count = 0
        self.active_weight = 0.0
        # tenants without live jobs, oldest idle first: tenant id -> when it became idle
        self._idle: dict[str, float] = {}
        self._idle_ttl = idle_ttl_s
        self.sweep_armed = idle_ttl_s is None  # (never armed without a ttl)
        self.sweep_at: float | None = None  # when the armed sweep is due

    @property
    def kept(self) -> int:
        """Tenants kept now, with state or only counters (bounded by the idle sweep)."""
        return len(self.counters)

    def spec(self, tenant_id: str) -> Tenant | None:
        """The spec a tenant is scheduled with (configured, or the default), or None."""
        state = self.states.get(tenant_id)
        if state is not None:
            return state.spec
        return self._specs.get(tenant_id)

    def state(self, tenant_id: str, now: float) -> TenantState | None:
        """A tenant's state, made from its spec (or the default) if it has none; None for an
        unknown tenant when there is no default."""
        state = self.states.get(tenant_id)
        if state is not None:
            return state
        spec = self._specs.get(tenant_id)
        if spec is None:
            if self._default is None:
                return None
            spec = replace(self._default, id=tenant_id)
        state = self.states[tenant_id] = TenantState(spec, now, self.counters_of(tenant_id))
        if self.pauses:
            self.pauses.adopt(tenant_id, state)
        return state

    def counters_of(self, tenant_id: str) -> TenantCounters:
        """A tenant's counters (made at zero if it has none)."""
        counters = self.counters.get(tenant_id)
        if counters is None:
            counters = self.counters[tenant_id] = TenantCounters()
        return counters

    def stats(self, tenant_id: str) -> TenantStats:
        """One tenant's stats, from its own counters (O(1) in the number of tenants); zeros
        with its weight and quota for a tenant with no counters."""
        counters = self.counters.get(tenant_id)
        if counters is not None:
            return self.stats_of(tenant_id, counters)
        spec = self.spec(tenant_id)
        if spec is None:
            return TenantStats()
        return TenantStats(weight=spec.weight, quota=spec.quota, budget_usd=spec.quota.budget_usd)

    def stats_of(self, tenant_id: str, counters: TenantCounters) -> TenantStats:
        """The stats of a tenant with these counters."""
        return tenant_stats(counters, self.states.get(tenant_id), self.active_weight, self._pools)

    def check_active(self, tenant: TenantState, now: float) -> None:
        """Keep ``tenant.active`` (has waiting or running jobs), the count and weight of the
        active tenants, and the idle list, right after its waiting or running count changed."""
        active = tenant.waiting > 0 or tenant.running > 0
        if active is tenant.active:
            return
        tenant.active = active
        tenant_id = tenant.spec.id
        if active:
            self.active_count += 1
            self.active_weight += tenant.weight
            self._idle.pop(tenant_id, None)
        else:
            self.active_count -= 1
            self.active_weight = self.active_weight - tenant.weight if self.active_count else 0.0
            self._idle[tenant_id] = now

    def update(self, spec: Tenant, live: LiveJobs, runs: Iterable[Run]) -> None:
        """Take a tenant's new spec (its weight, quota and namespace limits count from the next
        decision). A namespace that just got limits of its own starts from what is there (the
        tenant's ``live`` jobs and ``runs``); the tenant and the FIFOs parked on its namespaces
        compete again (and are gated again under the new limits)."""
        self._specs[spec.id] = spec
        self.changed.add(spec.id)
        state = self.states.get(spec.id)
        if state is None:
            return  # not kept now: it starts from this spec when it comes back
        new = {name for name in spec.namespaces if name not in state.namespaces}
        if state.active:
            self.active_weight += spec.weight - state.weight
        state.update(spec)
        if new:
            for entry in live.entries():
                if (
                    entry.tenant_state is state
                    and entry.namespace in new
                    and entry.status in WAITING
                ):
                    state.namespaces[entry.namespace].waiting += 1
            for run in runs:
                if run.tenant is state and run.namespace in new:
                    namespace = state.namespaces[run.namespace]
                    namespace.running += 1
                    namespace.usage.add(run.reservation)
        for namespace in state.namespaces.values():
            unpark_fifos(namespace.parked)
        unpark_tenant(state)

    def count_rejected(self, jobs: Sequence[object], reason: str, now: float) -> None:
        """Count refused submits: in their tenant's counters (its rejections by reason, and its
        level's cell when the job has a valid priority), or apart when the tenant id itself is
        not valid (then in the totals and its level only)."""
        for job in jobs:
            priority = getattr(job, "priority", None)
            raw_tenant = getattr(job, "tenant_id", None)
            tenant_id = raw_tenant if _countable_tenant(raw_tenant) else None
            counters = None if tenant_id is None else self.counters_of(tenant_id)
            if isinstance(priority, Priority):
                where = counters or self.counters_of("")
                where.cell(priority.rank, None)[REJECTED] += 1
            elif counters is not None:
                counters.rejected_unleveled += 1
            else:
                self.rejected_unleveled += 1
            if counters is not None and tenant_id is not None:
                counters.rejections[reason] = counters.rejections.get(reason, 0) + 1
                state = self.states.get(tenant_id)
                if state is None or not state.active:  # remembered until idle long enough
                    self._idle.pop(tenant_id, None)
                    self._idle[tenant_id] = now

    # ---- export and restore (see _export and _restore) ---------------------------------

    def runtime_specs(self) -> list[Tenant]:
        """The specs set at run time (``update``), which win over the configured ones."""
        return [self._specs[tenant_id] for tenant_id in sorted(self.changed)]

    def idle_since(self) -> list[tuple[str, float]]:
        """The tenants without live jobs, oldest idle first, with when they became idle."""
        return list(self._idle.items())

    def restore_spec(self, spec: Tenant) -> None:
        """Take a spec that was set at run time before a restore (no tenant has state yet)."""
        self._specs[spec.id] = spec
        self.changed.add(spec.id)

    def restore_state(self, tenant_id: str, now: float) -> TenantState:
        """A restored tenant's state: as ``state`` makes it, or from a spec with no limits
        when the tenant is not known any more (its jobs were admitted: they stay)."""
        state = self.state(tenant_id, now)
        if state is None:
            state = TenantState(Tenant(tenant_id), now, self.counters_of(tenant_id))
            self.states[tenant_id] = state
            if self.pauses:
                self.pauses.adopt(tenant_id, state)
        return state

    def restore_idle(self, tenant_id: str, since: float) -> None:
        """A restored tenant became idle at ``since`` (call in the order they did)."""
        self._idle[tenant_id] = since

    def settle(self, tenant: TenantState, now: float) -> None:
        """After a restore: a tenant's activity follows its restored jobs, and a tenant left
        without live jobs is idle from ``now`` (so that the sweep may forget it)."""
        self.check_active(tenant, now)
        if not tenant.active and tenant.spec.id not in self._idle:
            self._idle[tenant.spec.id] = now

    def restore_sweep(self, at: float) -> None:
        """The idle sweep is armed, due at ``at`` (a restored core's)."""
        if self._idle_ttl is not None:
            self.sweep_armed = True
            self.sweep_at = at

    # ---- the idle-tenant sweep ------------------------------------------------------------

    def arm_sweep(self, now: float) -> float | None:
        """When the sweep is due, if it is not armed yet (it is now): one ``tenant_idle_ttl_s``
        from now. None if it is armed already, or there is no ttl."""
        if self.sweep_armed or self._idle_ttl is None:
            return None
        self.sweep_armed = True
        at = self.sweep_at = now + self._idle_ttl
        return at

    def sweep(self, now: float) -> float | None:
        """Forget the tenants idle for ``tenant_idle_ttl_s`` that can be (at most a batch at a
        time). Returns when the next sweep is due (at once after a whole batch), or None when
        no tenant is idle (the next admitted submit arms it again)."""
        self.sweep_armed = False
        self.sweep_at = None
        ttl = self._idle_ttl
        if ttl is None:
            return None
        horizon = now - ttl
        idle = self._idle
        dropped = 0
        while idle and dropped < SWEEP_BATCH:
            tenant_id, since = next(iter(idle.items()))
            if since > horizon:
                break
            del idle[tenant_id]
            if self._droppable(tenant_id, now):
                self._drop(tenant_id)
                dropped += 1
            else:
                idle[tenant_id] = now  # look again after another ttl
        if not idle:
            return None
        self.sweep_armed = True
        at = self.sweep_at = now if dropped >= SWEEP_BATCH else now + ttl
        return at

    def _droppable(self, tenant_id: str, now: float) -> bool:
        """Whether forgetting an idle tenant's state changes no later decision."""
        state = self.states.get(tenant_id)
        if state is None:
            return True  # only counters (rejections)
        if state.active:
            return False
        if state.quota.submit_rate is not None:
            state.refill(now)
            if state.tokens < state.burst - 1e-9:
                return False  # it still owes tokens: dropping would forgive them
        if state.quota.budget_usd is not None:
            state.roll_period(now)
            if state.spend_period > 0.0:
                return False  # spent in this budget period: dropping would refund it
        unpark_tenant(state)  # parked with no job left (a quota lowered to 0)
        return True

    def _drop(self, tenant_id: str) -> None:
        counters = self.counters.pop(tenant_id, None)
        if counters is not None:
            for key, cell in counters.cells.items():
                retired = self.retired.get(key)
                if retired is None:
                    retired = self.retired[key] = new_counter()
                add_counter(retired, cell)
            self.rejected_unleveled += counters.rejected_unleveled
        if self.states.pop(tenant_id, None) is not None:
            self._queues.forget_standing(tenant_id)


def _countable_tenant(tenant_id: object) -> bool:
    """Whether a refused job's tenant id is one to count rejections under (a short printable
    ASCII string; anything else is counted apart rather than kept as a key)."""
    return (
        isinstance(tenant_id, str)
        and 0 < len(tenant_id) <= 128
        and tenant_id.isascii()
        and tenant_id.isprintable()
    )

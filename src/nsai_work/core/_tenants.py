"""Tenants in the core: what each uses, its limits, its submit-rate bucket, and its fair share.

Usage is counted in the same integer units as pools (cpu in thousandths), per tenant, per
namespace and per pool, at reservation and release, so quota checks (I6) and dominant shares
(I5) are exact.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

from .._ir import UNLIMITED, Quota, Tenant
from ._capacity import Needs, PoolState, Reservation, Usage

if TYPE_CHECKING:
    from ._counters import TenantCounters
    from ._parking import ParkedFifos
    from ._queues import GroupQueue

__all__ = [
    "NamespaceState",
    "TenantState",
    "Usage",
    "dominant_share",
    "job_share",
    "quota_gate",
    "quota_never_allows",
]

_MILLI: Final = 1000


def quota_never_allows(quota: Quota, needs: Needs) -> tuple[str, object, object] | None:
    """The first resource one run asks beyond what ``quota`` could ever allow:
    (field, asked, allowed), or None."""
    if quota is UNLIMITED:
        return None
    if quota.max_running == 0:
        return ("max_running", 1, 0)
    if quota.cpu is not None and needs.cpu > round(quota.cpu * _MILLI):
        return ("cpu", needs.cpu / _MILLI, quota.cpu)
    if quota.memory_mb is not None and needs.memory_mb > quota.memory_mb:
        return ("memory_mb", needs.memory_mb, quota.memory_mb)
    if needs.gpu_count and quota.gpus:
        if needs.gpu_type is not None:
            allowed = quota.gpus.get(needs.gpu_type, 0)
            if needs.gpu_count > allowed:
                return (f"gpus.{needs.gpu_type}", needs.gpu_count, allowed)
        elif needs.gpu_count > max(quota.gpus.values()):
            return ("gpus", needs.gpu_count, max(quota.gpus.values()))
    return None


def quota_gate(quota: Quota, running: int, usage: Usage, needs: Needs) -> str | None:
    """Why one more run with ``needs`` would break ``quota`` now (``max_running``,
    ``quota:cpu``...), or None."""
    if quota is UNLIMITED:
        return None
    if quota.max_running is not None and running >= quota.max_running:
        return "max_running"
    if quota.cpu is not None and usage.cpu + needs.cpu > round(quota.cpu * _MILLI):
        return "quota:cpu"
    if quota.memory_mb is not None and usage.memory + needs.memory_mb > quota.memory_mb:
        return "quota:memory_mb"
    if needs.gpu_count and quota.gpus:
        types = (needs.gpu_type,) if needs.gpu_type is not None else tuple(quota.gpus)
        if not any(usage.gpus.get(t, 0) + needs.gpu_count <= quota.gpus.get(t, 0) for t in types):
            return f"quota:gpu:{needs.gpu_type or 'any'}"
    return None


class NamespaceState:
    """One namespace of a tenant that has limits of its own."""

    __slots__ = ("parked", "quota", "running", "usage", "waiting")

    def __init__(self, quota: Quota) -> None:
        self.quota = quota
        self.waiting = 0
        self.running = 0
        self.usage = Usage()
        self.parked: ParkedFifos = []  # the FIFOs parked on its quota (see _parking)


class TenantState:
    """Everything the core knows about one tenant."""

    # What every submit, dispatch and run end reads comes first, so that it shares one or two
    # cache lines (with 1,000 tenants this object is rarely still in cache).
    __slots__ = (  # noqa: RUF023
        "limited",
        "running",
        "usage",
        "waiting",
        "weight",
        "active",
        "counters",
        "quota",
        "committed",
        "last_refill",
        "namespaces",
        "parked_in",
        "period_start",
        "spec",
        "spend_period",
        "spend_total",
        "tokens",
    )

    def __init__(self, spec: Tenant, now: float, counters: TenantCounters) -> None:
        self.spec = spec
        self.weight = spec.weight
        self.quota = spec.quota
        self.waiting = 0
        self.running = 0
        self.usage = Usage()
        self.namespaces: dict[str, NamespaceState] = {
            name: NamespaceState(quota) for name, quota in spec.namespaces.items()
        }
        # False: no quota and no namespace state, so never parked (the hot paths look no
        # further than this flag, which is in the object they already touch)
        self.limited = spec.quota is not UNLIMITED or bool(spec.namespaces)
        self.tokens = float(self.burst)
        self.last_refill = now
        self.counters = counters  # its status counters and rejections (kept by the core)
        self.active = False  # has waiting or running jobs (the core keeps this and its weight)
        self.spend_total = 0.0  # USD, since the scheduler started
        self.spend_period = 0.0  # USD, in the current budget period
        self.period_start = now
        self.committed = 0.0  # estimated maximum cost of admitted, unfinished jobs
        self.parked_in: set[GroupQueue] = set()  # where it is parked (see _parking)

    def update(self, spec: Tenant) -> None:
        """Take a new spec (weight, quota, namespace limits); usage and queues stay."""
        self.spec = spec
        self.weight = spec.weight
        self.quota = spec.quota
        for name, quota in spec.namespaces.items():
            state = self.namespaces.get(name)
            if state is None:
                self.namespaces[name] = NamespaceState(quota)
            else:
                state.quota = quota
        for name, state in self.namespaces.items():
            if name not in spec.namespaces:
                state.quota = UNLIMITED
        self.limited = spec.quota is not UNLIMITED or bool(self.namespaces)
        self.tokens = min(self.tokens, float(self.burst))

    # ---- submit rate --------------------------------------------------------------------------

    @property
    def burst(self) -> int:
        """The bucket's size (``quota.burst``, default ``max(1, submit_rate)``)."""
        quota = self.quota
        if quota.submit_rate is None:
            return 0
        if quota.burst is not None:
            return quota.burst
        return max(1, math.ceil(quota.submit_rate))

    def refill(self, now: float) -> None:
        """Add the tokens earned since the last refill."""
        rate = self.quota.submit_rate
        if rate is None:
            return
        if now > self.last_refill:
            self.tokens = min(float(self.burst), self.tokens + (now - self.last_refill) * rate)
            self.last_refill = now

    # ---- money --------------------------------------------------------------------------------

    def roll_period(self, now: float) -> None:
        """Start a new budget period when the current one is over (fixed windows)."""
        period = self.quota.budget_period_s
        if now >= self.period_start + period:
            self.period_start = now - (now - self.period_start) % period
            self.spend_period = 0.0

    def spend(self, usd: float, now: float) -> None:
        """Record what a run cost."""
        self.roll_period(now)
        self.spend_total += usd
        self.spend_period += usd

    # ---- usage --------------------------------------------------------------------------------

    def reserve(self, reservation: Reservation, namespace: str) -> None:
        """Count a dispatched run."""
        self.running += 1
        self.usage.add(reservation)
        if self.limited:  # (an unlimited tenant has no namespace limits: no dict to look in)
            state = self.namespaces.get(namespace)
            if state is not None:
                state.running += 1
                state.usage.add(reservation)

    def release(self, reservation: Reservation, namespace: str) -> None:
        """Forget a run that has ended."""
        self.running -= 1
        self.usage.remove(reservation)
        if self.limited:
            state = self.namespaces.get(namespace)
            if state is not None:
                state.running -= 1
                state.usage.remove(reservation)


def dominant_share(tenant: TenantState, capacity: Capacity) -> float:
    """The tenant's dominant share of a capacity (the largest of its use over the capacity of
    slots, cpu, memory and each GPU type), divided by its weight."""
    used = tenant.usage
    if not used.slots:
        return 0.0
    share = used.slots / capacity.slots if capacity.slots else 0.0
    if capacity.cpu and used.cpu / capacity.cpu > share:
        share = used.cpu / capacity.cpu
    if capacity.memory and used.memory / capacity.memory > share:
        share = used.memory / capacity.memory
    for gpu_type, count in used.gpus.items():
        total = capacity.gpus.get(gpu_type)
        if total and count / total > share:
            share = count / total
    return share / tenant.weight


def job_share(needs: Needs, capacity: Capacity) -> float:
    """One run's dominant share of a group's capacity (its largest fraction of slots, cpu,
    memory or a GPU type)."""
    share = 1.0 / capacity.slots if capacity.slots else 1.0
    if needs.cpu and capacity.cpu and needs.cpu / capacity.cpu > share:
        share = needs.cpu / capacity.cpu
    if needs.memory_mb and capacity.memory and needs.memory_mb / capacity.memory > share:
        share = needs.memory_mb / capacity.memory
    if needs.gpu_count:
        totals = (
            [capacity.gpus.get(needs.gpu_type, 0)]
            if needs.gpu_type is not None
            else list(capacity.gpus.values())
        )
        total = max(totals, default=0)
        if total and needs.gpu_count / total > share:
            share = needs.gpu_count / total
    return share


class Capacity:
    """The summed capacity of a group of pools (dimensions some pool leaves unlimited are
    left out of shares)."""

    __slots__ = ("cpu", "gpus", "memory", "slot_share", "slots")

    def __init__(self, pools: list[PoolState]) -> None:
        self.slots = sum(p.cap_slots for p in pools)
        self.slot_share = 1.0 / self.slots if self.slots else 1.0  # a slot-only run's share
        self.cpu = (
            0 if any(p.cap_cpu is None for p in pools) else sum(p.cap_cpu or 0 for p in pools)
        )
        self.memory = (
            0 if any(p.cap_memory is None for p in pools) else sum(p.cap_memory or 0 for p in pools)
        )
        gpus: dict[str, int] = {}
        for pool in pools:
            for gpu_type, count in pool.cap_gpus.items():
                gpus[gpu_type] = gpus.get(gpu_type, 0) + count
        self.gpus = gpus

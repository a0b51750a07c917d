"""What ``stats()`` returns: counts by status for the whole scheduler, per priority, per tenant and
per backend, each pool's capacity and use, and why waiting jobs wait.

Counts of pending, queued and running jobs are current; succeeded, failed, timeout, canceled,
submitted and rejected count everything since the scheduler started.
"""

from __future__ import annotations

from msgspec import Struct

from ._ir import UNLIMITED, Pool, Quota

__all__ = ["Counts", "PoolStats", "PoolUsage", "Stats", "TenantStats", "TenantUsage"]


class Counts(Struct, kw_only=True, omit_defaults=True, gc=False):
    """Jobs by status (current for waiting and running, cumulative for the rest)."""

    pending: int = 0
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    timeout: int = 0
    canceled: int = 0
    submitted: int = 0
    rejected: int = 0

    @property
    def waiting(self) -> int:
        """Pending plus queued."""
        return self.pending + self.queued

    @property
    def finished(self) -> int:
        """Jobs that reached a terminal state."""
        return self.succeeded + self.failed + self.timeout + self.canceled


class PoolUsage(Struct, kw_only=True, gc=False):
    """What runs hold on a pool now. ``stopping`` counts the slots (of ``slots``) held by runs
    told to stop (cancel, timeout) that have not ended yet: a sync handler's thread, or an async
    handler that ignores cancellation, keeps its capacity until it really returns."""

    slots: int = 0
    stopping: int = 0
    cpu: float = 0.0
    memory_mb: int = 0
    gpus: dict[str, int] = {}
    custom: dict[str, float] = {}


class PoolStats(Struct, kw_only=True, gc=False):
    """One pool: the backend that offers it, its capacity and what is in use; ``available`` is
    False while its backend is unavailable (it starts nothing then)."""

    backend: str
    capacity: Pool
    used: PoolUsage
    available: bool = True


class Stats(Struct, kw_only=True, gc=False):
    """A snapshot of the scheduler's counters (see the module docstring)."""

    totals: Counts
    by_priority: dict[str, Counts]
    by_tenant: dict[str, TenantStats]
    by_backend: dict[str, Counts]
    pools: dict[str, PoolStats]
    waiting_reasons: dict[str, int]


class TenantUsage(Struct, kw_only=True, frozen=True, gc=False):
    """What a tenant's running jobs hold now (timed-out threads included until they return)."""

    running: int = 0
    cpu: float = 0.0
    memory_mb: int = 0
    gpus: dict[str, int] = {}


class TenantStats(Counts, kw_only=True, gc=False):
    """A tenant's counts, plus its weight, quota and use, its dominant share of all pools
    against its fair share (its weight over the weights of tenants with work), its queued and
    running jobs by priority, its rejections by reason, and money: ``spend_usd`` in the current
    budget period (runs count when they end), ``spend_total_usd`` since start,
    ``committed_usd`` (estimated maximum cost of its admitted, unfinished jobs) and its
    ``budget_usd``."""

    weight: float = 1.0
    quota: Quota = UNLIMITED
    usage: TenantUsage = TenantUsage()
    dominant_share: float = 0.0
    fair_share: float = 0.0
    by_priority: dict[str, Counts] = {}
    rejections: dict[str, int] = {}
    spend_usd: float = 0.0
    spend_total_usd: float = 0.0
    committed_usd: float = 0.0
    budget_usd: float | None = None

"""Waiting reasons: why a pending or queued job is not running now, for ``waiting_reason`` and
the ``waiting_reasons`` of stats.

A pending job waits for its backoff (its Job says so). A queued job's reason is the first of:
no pool of its backend can hold it any more (``pool_removed:<pool>`` or ``no_pool``, see
``_pool_changes``); its backend is unavailable (``backend_unavailable``); capacity is held for
it (``capacity_held:<pool>``); its FIFO or its tenant is parked (the
reason it was parked with); a higher level has queued jobs that may use one of its pools
(``higher_priority_backlog``) or the starvation guard owes a lower level (``priority_guard``);
another tenant is ahead of its own by fair share (``fair_share``); a run told to stop still
holds capacity on one of its pools (``stopping_runs:<pool>``); else ``no_capacity``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._ir import Status

if TYPE_CHECKING:
    from ._limits import StarvationGuard
    from ._pool_changes import Stranded
    from ._queues import Entry, ReadyQueues

__all__ = ["WaitingReasons"]

_PENDING, _QUEUED = Status.PENDING, Status.QUEUED


class WaitingReasons:
    """Reads the queues (and the starvation guard) to say why a job waits."""

    __slots__ = ("_guard", "_queues", "_stranded")

    def __init__(
        self,
        queues: ReadyQueues,
        guard: StarvationGuard | None,
        stranded: dict[tuple[str, str], Stranded],
    ) -> None:
        self._queues = queues
        self._guard = guard
        self._stranded = stranded

    def of(self, entry: Entry, cache: dict[Any, Any]) -> str | None:
        """A live job's waiting reason in stats ("pending" for a pending job without one), or
        None if it is not waiting. ``cache`` is one stats build's (see ``queued``)."""
        status = entry.status
        if status is _PENDING:
            return entry.job.waiting_reason or "pending"
        if status is _QUEUED:
            return self.queued(entry, cache)
        return None

    def queued(self, entry: Entry, cache: dict[Any, Any] | None = None) -> str:
        """Why a queued job waits. ``cache`` keeps, for one stats build, what is the same for
        every job of a level and pool group (whether a higher level competes: a third of the
        cost of the reasons of a large backlog)."""
        if not entry.group:
            stranded = self._stranded.get((entry.tenant, entry.job.id))
            return "no_pool" if stranded is None else stranded.reason
        placement = entry.placement
        if placement and placement[0][1].offline and all(p.offline for _, p in placement):
            return "backend_unavailable"
        if entry.held is not None:
            return f"capacity_held:{entry.held.name}"
        queues = self._queues
        queue = queues.queue_of(entry)
        tenant_queue = queue.tenants.get(entry.tenant)
        if tenant_queue is not None:
            parked = tenant_queue.parked.get(entry.fifo)
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
                if queues.competes_above(entry)
                else "priority_guard"
                if guard is not None
                and any(rank > entry.rank for rank in guard.owed(queues.counts))
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

"""Capacity for queue heads: which of its pools a job's run takes, and capacity held for the
first head in line that does not fit yet.

A head that is first in line in its group queue and fits none of its pools now gets capacity
*held* on the cheapest of its pools that could ever hold it: later jobs of its level or lower
only get what is left beyond it, so it starts as soon as the runs there have freed enough
(backfill without starvation). A group queue holds capacity for one head at a time. The hold
goes when the head starts or leaves the queue, when its tenant or FIFO is parked (a parked
head holds nothing), when a start uses up a quota or limit that now holds the head back, and
when its tenant offers another head (the two would wait for each other).

Every release bumps ``Holds.release_epoch``: a drain in progress then offers the heads it set
aside again, and the core runs one more dispatch pass. This module is the only one that changes
holds (``Entry.held``, ``GroupQueue.held`` and the pools' holds); the queues read them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._capacity import PoolState, Reservation
    from ._limits import Limits
    from ._queues import Entry, GroupQueue, TenantQueue

__all__ = ["Holds", "reserve"]


def reserve(entry: Entry) -> tuple[float, Reservation] | None:
    """Reserve one run of a queued job on the pool it should take now: among its pools that fit,
    the cheapest for its needs, then the least loaded (capacity held for other jobs of its
    level or higher is left alone). Returns the pool's hourly rate for the job and the
    reservation, or None if no pool fits now."""
    placement = entry.placement
    if len(placement) == 1:
        rate, pool = placement[0]
    else:
        chosen = _cheapest_fit(entry)
        if chosen is None:
            return None
        rate, pool = chosen
    reservation = pool.try_reserve(entry.needs, entry.rank, entry)
    return None if reservation is None else (rate, reservation)


def _cheapest_fit(entry: Entry) -> tuple[float, PoolState] | None:
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


class Holds:
    """The holds of all group queues: how they are made and released (see the module
    docstring)."""

    __slots__ = ("_seq", "release_epoch")

    def __init__(self) -> None:
        self._seq = 0  # orders the holds of one level on a pool (see ``Hold``)
        self.release_epoch = 0  # bumped by every release

    def hold(self, head: Entry, queue: GroupQueue) -> None:
        """Hold capacity for a head that is first in line in ``queue`` and does not fit: on the
        cheapest of its pools that could ever hold it."""
        for _, pool in head.placement:
            if pool.could_ever_hold(head.needs):
                self._seq += 1
                pool.hold_for(head, head.rank, head.needs, self._seq)
                head.held = pool
                queue.held = head
                return

    @property
    def seq(self) -> int:
        """The order of the last hold made."""
        return self._seq

    def restore(self, head: Entry, queue: GroupQueue, pool: PoolState, seq: int) -> None:
        """Hold capacity on ``pool`` for a restored head as it was held (``seq``: its order)."""
        pool.hold_for(head, head.rank, head.needs, seq)
        head.held = pool
        queue.held = head
        self._seq = max(self._seq, seq)

    def restore_seq(self, seq: int) -> None:
        """Continue the order of holds from ``seq`` (a restored core's)."""
        self._seq = max(self._seq, seq)

    def release(self, entry: Entry, queue: GroupQueue) -> None:
        """Release the capacity held for a job of ``queue``, if any (it starts, leaves, or is
        held back)."""
        if entry.held is not None:
            self.release_epoch += 1
            entry.held.unhold(entry)
            entry.held = None
            if queue.held is entry:
                queue.held = None

    def release_held_back(self, queues: Iterable[GroupQueue], limits: Limits, now: float) -> None:
        """A start used up some of a quota or limit: capacity held for a head that it now holds
        back is released at once (drain parks that head when it next offers it; until then the
        held capacity would sit idle while others could use it)."""
        for queue in queues:
            held = queue.held
            if held is not None and limits.holding_back(held, now) is not None:
                self.release(held, queue)

    def release_tenant(self, queue: GroupQueue, tenant_id: str) -> None:
        """A tenant is parked in ``queue``: the capacity held there for its head is released."""
        held = queue.held
        if held is not None and held.tenant == tenant_id:
            self.release(held, queue)

    def release_fifo(self, queue: TenantQueue, head: Entry) -> None:
        """The FIFO of ``head`` is parked: the capacity held for one of its jobs is released."""
        group = queue.queue
        held = group.held
        if held is not None and held.tenant == head.tenant and held.fifo == head.fifo:
            self.release(held, group)

    def release_other_than(self, head: Entry, queue: GroupQueue) -> None:
        """The head of a tenant is offered: capacity held for another job of that tenant (no
        longer its head) is released, or the two would wait for each other."""
        held = queue.held
        if held is not None and held is not head and held.tenant == head.tenant:
            self.release(held, queue)

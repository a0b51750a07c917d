"""Ready queues: queued jobs by priority level, pool group, tenant, and (namespace, concurrency
group), with weighted dominant-resource fair share between tenants.

- ``ReadyQueues.levels[rank][group]`` is a ``GroupQueue``: the queued jobs of one priority level
  that may use the same pools. Levels are served in strict priority order.
- In a GroupQueue, each tenant has a ``TenantQueue`` and a virtual time: the dominant-resource
  time it was served here, divided by its weight (dominant-resource fair queuing). Keys order
  the tenants by ``(virtual time rounded down to the fair-share resolution, enqueue sequence of
  their head)``: the next job is the head of the least-served tenant, and among tenants within
  the same resolution step the oldest head goes first. Picking it costs O(log tenants), never a
  scan of queued jobs. A dispatch charges the job's dominant share of the group's capacity times its
  expected run time; when the run ends the core corrects the charge with the real run time. A
  tenant that comes back after being idle starts at the group's virtual clock (no banked
  credit), so backlogged tenants get dispatched resource-time in proportion to their weights.
- In a TenantQueue, jobs wait in one FIFO per (namespace, concurrency group); the tenant's head
  is the oldest head among the FIFOs that are not parked.
- Parking: a tenant at one of its limits leaves the keys (``GroupQueue.parked``); a FIFO whose
  namespace or concurrency group is at its limit leaves the tenant's heads
  (``TenantQueue.parked``). ``_parking`` parks and unparks them (the core calls it); the queues
  only read what is parked.
- Holds: ``GroupQueue.held`` is the head capacity is held for; ``_holds`` makes and releases
  holds (the drain asks its ``Holds`` for them).
- A head that does not fit the free capacity now is skipped for this pass and keeps its place
  (backfill over queue heads; the resources release adds holding capacity for it).

Canceled entries are dropped lazily when they reach the head of their FIFO.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from heapq import heapify, heappop, heappush, heapreplace
from typing import TYPE_CHECKING, Protocol

from msgspec import Struct

from .._errors import ConfigurationError
from .._ir import Job, Status
from ._capacity import Needs, PoolState
from ._tenants import Capacity

if TYPE_CHECKING:
    from ._holds import Holds
    from ._messages import Decision
    from ._tenants import TenantState

__all__ = [
    "DEFAULT_FAIR_SHARE_RESOLUTION_S",
    "LEVELS",
    "Entry",
    "GroupQueue",
    "LimitKey",
    "ReadyQueues",
    "Selector",
    "SubKey",
    "TenantQueue",
    "check_resolution",
]

#: Number of strict priority levels (realtime, interactive, batch, offline).
LEVELS = 4
#: Fair share's default resolution: 1 ms of a pool group's whole capacity (per unit of weight).
#: Tenants whose virtual times fall in the same step are served oldest head first.
DEFAULT_FAIR_SHARE_RESOLUTION_S = 0.001


def check_resolution(value: object) -> None:
    """Raise ``ConfigurationError`` unless ``value`` is a fair-share resolution: a finite number
    of seconds > 0."""
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(
            f"fair_share_resolution_s must be a finite number of seconds > 0, got {value!r}"
        )


_QUEUED = Status.QUEUED
#: A limit a job is subject to: ("group", concurrency group) or ("tool", tool name).
LimitKey = tuple[str, str]
#: A FIFO of a tenant: (namespace, the limits its jobs are subject to).
SubKey = tuple[str, tuple[LimitKey, ...]]
#: What ``Selector.gate`` answers when it parked a head: its tenant (in this group) or its FIFO.
TENANT, FIFO = "tenant", "fifo"


class Entry(Struct, kw_only=True, gc=False):
    """The core's record of one live (non-terminal) job.

    Not tracked by the garbage collector (it holds no cycles), so a large backlog costs the
    collector nothing. ``status`` and ``seq`` come first: peeking at a tenant's next head reads
    only them, and they then share the cache line of the object's header.
    """

    status: Status
    seq: int = 0
    limits: tuple[LimitKey, ...]  # its concurrency group and backend limits (ALTAR tools)
    tenant_state: TenantState
    job: Job
    tenant: str
    namespace: str
    rank: int
    needs: Needs
    backend: str
    group: tuple[str, ...]
    since: float  # when the current status began
    submitted: float
    placement: tuple[tuple[float, PoolState], ...] = ()  # its pools, cheapest first, $/h
    estimate: float | None = None  # estimated maximum cost of one attempt (USD)
    rate: float = 0.0  # $/h of the current attempt's pool
    held: PoolState | None = None  # the pool holding capacity for it, if any
    counter: list[int] = []  # its (tenant, level, backend) counter, by status

    @property
    def fifo(self) -> SubKey:
        """The key of the FIFO it waits in, within its tenant's queue: (namespace, limits)."""
        return (self.namespace, self.limits)


class Selector(Protocol):
    """What a GroupQueue asks the core while it picks jobs. Decisions go to ``out``, the list
    of the ``handle`` call the pick is part of."""

    def gate(self, head: Entry, queue: TenantQueue, out: list[Decision]) -> str | None:
        """If a limit holds the head back: park it and say where, TENANT (the tenant, in this
        group) or FIFO (the head's FIFO); else None."""
        ...

    def try_start(self, head: Entry, queue: TenantQueue, out: list[Decision]) -> float | None:
        """Start the head if it fits the free capacity now, and return the virtual time the
        dispatch costs its tenant (estimated); None if it does not fit."""
        ...


#: A tenant's place among its GroupQueue's keys: (virtual time rounded down to a multiple of the
#: fair-share resolution, seq of its head, its queue). A seq belongs to one job of one queue, so
#: keys equal in their first two items hold the same queue (compared by identity): queues are
#: never ordered.
Key = tuple[float, int, "TenantQueue"]
_NEVER = float("-inf")  # the virtual time of a tenant never served here


class TenantQueue:
    """One tenant's queued jobs in one GroupQueue: one FIFO per (namespace, limits), and the
    heads of those that are not parked in a heap by sequence number. ``vtime`` is the tenant's
    virtual time in the GroupQueue and ``key`` its live key (None when it has none); keys in the
    heap that are not their queue's live key are stale.
    """

    # what a dispatch and a run end read first, so that it shares a cache line
    __slots__ = (  # noqa: RUF023
        "key",
        "vtime",
        "count",
        "live",
        "queue",
        "fifos",
        "heads",
        "parked",
        "tenant",
    )

    def __init__(self, tenant: str, queue: GroupQueue, vtime: float = _NEVER) -> None:
        self.tenant = tenant
        self.queue = queue
        self.vtime = vtime
        self.key: Key | None = None
        self.live = True  # False once its GroupQueue dropped it (it emptied)
        self.fifos: dict[SubKey, deque[Entry]] = {}
        # (seq of its head, its key, the FIFO) per FIFO that is not parked
        self.heads: list[tuple[int, SubKey, deque[Entry]]] = []
        self.parked: dict[SubKey, str] = {}
        self.count = 0

    def push(self, entry: Entry) -> None:
        """Append at the tail of its FIFO."""
        sub = entry.fifo
        fifo = self.fifos.get(sub)
        if fifo is None:
            fifo = self.fifos[sub] = deque()
            if sub not in self.parked:
                heappush(self.heads, (entry.seq, sub, fifo))
        fifo.append(entry)
        self.count += 1

    def peek(self) -> Entry | None:
        """The oldest live head among the FIFOs that are not parked."""
        heads = self.heads
        while heads:
            seq, sub, fifo = heads[0]
            while fifo and fifo[0].status is not _QUEUED:
                fifo.popleft()
            if not fifo:
                heappop(heads)
                del self.fifos[sub]
                continue
            head = fifo[0]
            if head.seq != seq:
                heapreplace(heads, (head.seq, sub, fifo))
                continue
            return head
        return None

    def pop(self) -> None:
        """Remove the head ``peek`` just returned (it started) from its FIFO; that FIFO's entry
        among the heads moves to its next job (``peek`` drops it if it has none)."""
        heads = self.heads
        _, sub, fifo = heads[0]
        fifo.popleft()
        self.count -= 1
        if fifo:
            heapreplace(heads, (fifo[0].seq, sub, fifo))

    def withdraw_head(self) -> None:
        """Take the FIFO whose head ``peek`` just returned out of the heads (it is parked)."""
        heappop(self.heads)

    def restore(self, sub: SubKey) -> bool:
        """Put a FIFO that is no longer parked back among the heads; True if it has jobs (an
        empty one is dropped)."""
        fifo = self.fifos.get(sub)
        while fifo and fifo[0].status is not _QUEUED:
            fifo.popleft()  # (canceled while parked)
        if not fifo:
            self.fifos.pop(sub, None)
            return False
        heappush(self.heads, (fifo[0].seq, sub, fifo))
        return True

    def entries(self) -> Iterator[Entry]:
        """Every live queued entry."""
        for fifo in self.fifos.values():
            for entry in fifo:
                if entry.status is _QUEUED:
                    yield entry


class GroupQueue:
    """Queued jobs of one priority level that may use the same pools."""

    __slots__ = (
        "capacity",
        "clock",
        "count",
        "expected_run_s",
        "group",
        "heap",
        "held",
        "idle_vtimes",
        "parked",
        "pools",
        "rank",
        "runs_seen",
        "step",
        "tenants",
    )

    def __init__(
        self, rank: int, group: tuple[str, ...], pools: list[PoolState], step: float
    ) -> None:
        self.rank = rank
        self.group = group
        self.pools = pools
        self.capacity = Capacity(pools)
        self.tenants: dict[str, TenantQueue] = {}
        self.heap: list[Key] = []  # the tenants' keys (and stale ones, dropped when met)
        self.parked: dict[str, str] = {}
        self.count = 0
        # the virtual times of tenants served here whose queue went away when it emptied
        self.idle_vtimes: dict[str, float] = {}
        self.clock = 0.0  # the virtual time of the last tenant served (when it was served)
        self.expected_run_s = 1.0  # moving average of run times here (for charges)
        self.runs_seen = 0
        self.held: Entry | None = None  # the head capacity is held for, if any
        self.step = step  # the fair-share resolution, in virtual time

    def any_free_slot(self) -> bool:
        """Whether one of the group's pools could start one more run."""
        for pool in self.pools:
            if pool.used_slots < pool.cap_slots and not pool.overcommitted:
                return True
        return False

    def push(self, entry: Entry) -> TenantQueue:
        """Enqueue; the tenant gets a key if it had none (and is not parked)."""
        tenant = entry.tenant
        queue = self.tenants.get(tenant)
        if queue is None:
            vtime = self.idle_vtimes.pop(tenant, _NEVER) if self.idle_vtimes else _NEVER
            queue = self.tenants[tenant] = TenantQueue(tenant, self, vtime)
        queue.push(entry)
        self.count += 1
        if queue.key is None and tenant not in self.parked:
            self._rekey(queue)
        return queue

    def activate(self, tenant: str) -> None:
        """(Re)key a tenant at its virtual time, if it has a head that is not parked. A tenant
        that was not waiting here starts no earlier than the group's clock."""
        if tenant in self.parked:
            return
        queue = self.tenants.get(tenant)
        if queue is not None:
            self._rekey(queue)

    def _rekey(self, queue: TenantQueue) -> None:
        """Push a new key for a tenant that is not parked (``activate`` without the lookups)."""
        head = queue.peek()
        if head is None:
            queue.key = None
            if not queue.count and not queue.parked:
                self._forget(queue)
            return
        vtime = queue.vtime
        if queue.key is None and vtime < self.clock:
            vtime = queue.vtime = self.clock
        self._push_key(queue, vtime, head)
        if len(self.heap) > 2 * len(self.tenants) + 16:  # drop stale keys
            self.heap = [q.key for q in self.tenants.values() if q.key is not None]
            heapify(self.heap)

    def rekey_if_keyed_at(self, entry: Entry) -> None:
        """A queued job left (canceled): if its tenant's key was made for it, the tenant is
        keyed at its new head now, so that no key names a job that is not queued."""
        queue = self.tenants.get(entry.tenant)
        if queue is not None and queue.key is not None and queue.key[1] == entry.seq:
            self._rekey(queue)

    def add(self, entry: Entry) -> TenantQueue:
        """Enqueue a restored job without keying its tenant (``Restore`` sets the keys as they
        were); its tenant's queue is made if it has none."""
        tenant = entry.tenant
        queue = self.tenants.get(tenant)
        if queue is None:
            vtime = self.idle_vtimes.pop(tenant, _NEVER)
            queue = self.tenants[tenant] = TenantQueue(tenant, self, vtime)
        queue.push(entry)
        self.count += 1
        return queue

    def set_key(self, queue: TenantQueue, vtime: float, seq: int) -> None:
        """Give a restored tenant the key it had: ``vtime`` and its head's ``seq``."""
        key = queue.key = (vtime, seq, queue)
        heappush(self.heap, key)

    def _push_key(self, queue: TenantQueue, vtime: float, head: Entry) -> None:
        """Give a tenant a new key: its virtual time rounded down to the fair-share resolution,
        and its head's sequence number (the key it had, if any, is stale from now on)."""
        key = queue.key = (vtime - vtime % self.step, head.seq, queue)
        heappush(self.heap, key)

    def top(self) -> Key | None:
        """The live key of the tenant that would be offered next (dropping stale keys)."""
        heap = self.heap
        while heap and heap[0][2].key is not heap[0]:
            heappop(heap)
        return heap[0] if heap else None

    def _forget(self, queue: TenantQueue) -> None:
        """Drop an empty tenant queue, keeping the tenant's virtual time; any key of it left in
        the heap is stale from now on."""
        del self.tenants[queue.tenant]
        queue.key = None
        queue.live = False
        if queue.vtime != _NEVER:
            self.idle_vtimes[queue.tenant] = queue.vtime

    def adjust(
        self, queue: TenantQueue, delta: float, run_s: float, share: float, weight: float
    ) -> None:
        """Correct a tenant's charge once a run's real time is known. The virtual time is exact
        at once; the key follows lazily: an extra charge is picked up when the key next
        reaches the top (a key too low is corrected before it wins), a refund re-keys when the
        key has become more than one resolution step plus two typical jobs' charges too high
        (so it never holds a tenant back by more than that; the refund of a single run, the
        common case, waits for the tenant's next dispatch and costs no key operation)."""
        if self.runs_seen:
            self.expected_run_s += (run_s - self.expected_run_s) * 0.2
        else:  # the first real run time replaces the prior
            self.expected_run_s = run_s
        self.runs_seen += 1
        if not delta:
            return
        if not queue.live:  # it emptied since: its tenant may have a new queue here
            tenant = queue.tenant
            found = self.tenants.get(tenant)
            if found is None:
                if tenant in self.idle_vtimes:
                    self.idle_vtimes[tenant] += delta
                return
            queue = found
        if queue.vtime == _NEVER:
            return
        vtime = queue.vtime = queue.vtime + delta
        if delta < 0:
            key = queue.key
            if key is not None and key[0] - vtime > (
                self.step + 2.0 * share * self.expected_run_s / weight
            ):
                self.activate(queue.tenant)

    def drain(self, selector: Selector, holds: Holds, out: list[Decision], limit: int = -1) -> int:
        """Start heads, least-served tenant first, until the pools are full, every tenant is
        parked or declined, or ``limit`` jobs started (decisions go to ``out``); capacity is
        held for the first head in line that does not fit. Returns how many started."""
        declined: list[Key] = []
        started = 0
        first = True  # the first head offered in a pass is first in line
        epoch = holds.release_epoch
        # how far a tenant's virtual time may pass its key before it is re-keyed: the key's
        # resolution step plus a typical job's charge (one slot for the expected run time,
        # weight 1)
        reach = self.step + self.capacity.slot_share * self.expected_run_s
        while self.heap and started != limit:
            if declined and holds.release_epoch != epoch:
                # held capacity was released during this pass: heads set aside get another
                # chance, in their order, before the tenants after them
                epoch = holds.release_epoch
                for item in declined:
                    heappush(self.heap, item)
                declined.clear()
            # the next tenant, taken off the heap (a key that stays is put back below)
            key = heappop(self.heap)
            vtime, seq, queue = key
            if queue.key is not key:
                continue  # stale
            head = queue.peek()
            if head is None:
                queue.key = None
                if not queue.count and not queue.parked:
                    self._forget(queue)
                continue
            actual = queue.vtime
            if head.seq != seq or actual > vtime + reach:
                # a new head, or a charge corrected upwards past the key's step by more than
                # about one typical job: re-key (a smaller correction is kept exactly in vtime
                # and counts from the next key on, so the order is never off by more than one
                # step and one job)
                self._push_key(queue, actual, head)
                continue
            if self.held is not None:
                holds.release_other_than(head, self)
                if declined and holds.release_epoch != epoch:
                    heappush(self.heap, key)
                    continue  # capacity was freed: heads set aside go first (top of the loop)
            if head.limits or head.tenant_state.limited:  # (nothing to check otherwise)
                parked = selector.gate(head, queue, out)
                if parked is not None:
                    if parked == FIFO:
                        heappush(self.heap, key)  # offered again at once: re-keyed at its head
                    continue
            charge = selector.try_start(head, queue, out)
            if charge is not None:
                started += 1
                queue.pop()
                self.count -= 1
                if actual > self.clock:
                    self.clock = actual
                queue.vtime = actual + charge
                following = queue.peek()
                if following is None:
                    queue.key = None
                    if not queue.count and not queue.parked:
                        self._forget(queue)
                else:
                    self._push_key(queue, queue.vtime, following)
            else:
                if first and self.held is None:
                    holds.hold(head, self)
                declined.append(key)
            first = False
            if not self.any_free_slot():
                break
        for key in declined:
            heappush(self.heap, key)
        return started

    def entries(self) -> Iterator[Entry]:
        """Every live queued entry (for stats and checks; O(queued))."""
        for queue in self.tenants.values():
            yield from queue.entries()


class ReadyQueues:
    """All queued jobs: ``levels[rank][group]``."""

    __slots__ = ("counts", "levels", "next_seq", "step")

    def __init__(self, step: float) -> None:
        self.levels: list[dict[tuple[str, ...], GroupQueue]] = [{} for _ in range(LEVELS)]
        self.counts = [0] * LEVELS
        self.next_seq = 0
        self.step = step  # the fair-share resolution (virtual time)

    def push(
        self,
        entry: Entry,
        pools: Callable[[tuple[str, ...]], list[PoolState]],
    ) -> GroupQueue:
        """Enqueue at the tail of its FIFO with a fresh sequence number."""
        self.next_seq += 1
        entry.seq = self.next_seq
        level = self.levels[entry.rank]
        queue = level.get(entry.group)
        if queue is None:
            queue = level[entry.group] = GroupQueue(
                entry.rank, entry.group, pools(entry.group), self.step
            )
        queue.push(entry)
        self.counts[entry.rank] += 1
        return queue

    def group(
        self, rank: int, group: tuple[str, ...], pools: Callable[[tuple[str, ...]], list[PoolState]]
    ) -> GroupQueue:
        """The GroupQueue of a level and pool group, made if there is none."""
        level = self.levels[rank]
        queue = level.get(group)
        if queue is None:
            queue = level[group] = GroupQueue(rank, group, pools(group), self.step)
        return queue

    def add(self, entry: Entry, pools: Callable[[tuple[str, ...]], list[PoolState]]) -> GroupQueue:
        """Enqueue a restored job at the tail of its FIFO with a fresh sequence number, without
        keying its tenant (see ``GroupQueue.add``)."""
        self.next_seq += 1
        entry.seq = self.next_seq
        queue = self.group(entry.rank, entry.group, pools)
        queue.add(entry)
        self.counts[entry.rank] += 1
        return queue

    def discard(self, entry: Entry) -> None:
        """Forget a queued entry that is leaving QUEUED (its record is dropped lazily)."""
        queue = self.levels[entry.rank][entry.group]
        queue.count -= 1
        tenant_queue = queue.tenants.get(entry.tenant)
        if tenant_queue is not None:
            tenant_queue.count -= 1
        self.counts[entry.rank] -= 1

    def dispatch_level(
        self, rank: int, selector: Selector, holds: Holds, out: list[Decision], limit: int = -1
    ) -> int:
        """Offer one level's queued jobs; returns how many started."""
        started = 0
        for queue in self.levels[rank].values():
            if queue.count and queue.any_free_slot():
                rest = limit - started if limit > 0 else -1
                started += queue.drain(selector, holds, out, rest)
                if started == limit:
                    break
        self.counts[rank] -= started
        return started

    def dispatch(self, selector: Selector, holds: Holds, out: list[Decision]) -> None:
        """Offer queued jobs: levels in strict priority order, then each pool group of a level
        with a free slot, tenants by fair share."""
        for rank in range(LEVELS):
            if self.counts[rank]:
                self.dispatch_level(rank, selector, holds, out)

    def queue_of(self, entry: Entry) -> GroupQueue:
        """The GroupQueue of a queued entry."""
        return self.levels[entry.rank][entry.group]

    def competes_above(self, entry: Entry) -> bool:
        """Whether a higher level has queued jobs that may use one of this job's pools."""
        mine = set(entry.group)
        for rank in range(entry.rank):
            if not self.counts[rank]:
                continue
            for group, queue in self.levels[rank].items():
                if queue.count and not mine.isdisjoint(group):
                    return True
        return False

    def forget_standing(self, tenant: str) -> None:
        """A tenant is forgotten: its virtual time goes from the groups where it gives it no
        standing (no more than the group's clock)."""
        for queue in self.groups():
            vtime = queue.idle_vtimes.get(tenant)
            if vtime is not None and vtime <= queue.clock:
                del queue.idle_vtimes[tenant]

    def groups(self) -> Iterator[GroupQueue]:
        """Every GroupQueue, highest level first."""
        for level in self.levels:
            yield from level.values()

    def entries(self) -> Iterator[Entry]:
        """Every live queued entry, highest level first."""
        for queue in self.groups():
            yield from queue.entries()

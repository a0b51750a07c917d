"""Ready queues: queued jobs by priority level, pool group, tenant, and (namespace, concurrency
group), with weighted dominant-resource fair share between tenants.

- ``ReadyQueues.levels[rank][group]`` is a ``GroupQueue``: the queued jobs of one priority level
  that may use the same pools. Levels are served in strict priority order.
- In a GroupQueue, each tenant has a ``TenantQueue`` and a virtual time: the dominant-resource
  time it was served here, divided by its weight (dominant-resource fair queuing). A heap orders
  the tenants by ``(virtual time, enqueue sequence of their head)``: the next job is the head of
  the least-served tenant, oldest first on ties. Picking it costs O(log tenants), never a scan of
  queued jobs. A dispatch charges the job's dominant share of the group's capacity times its
  expected run time; when the run ends the core corrects the charge with the real run time. A
  tenant that comes back after being idle starts at the group's virtual clock (no banked
  credit), so backlogged tenants get dispatched resource-time in proportion to their weights.
- In a TenantQueue, jobs wait in one FIFO per (namespace, concurrency group); the tenant's head
  is the oldest head among the FIFOs that are not parked.
- Parking: a tenant at one of its limits leaves the heap (``GroupQueue.parked``); a FIFO whose
  namespace or concurrency group is at its limit leaves the tenant's heads
  (``TenantQueue.parked``). The core unparks them when what blocked them is released, so a
  blocked tenant costs nothing per dispatch.
- A head that does not fit the free capacity now is skipped for this pass and keeps its place
  (backfill over queue heads; the resources release adds holding capacity for it).

Canceled entries are dropped lazily when they reach the head of their FIFO.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from heapq import heapify, heappop, heappush, heapreplace
from typing import TYPE_CHECKING, Protocol

from msgspec import Struct

from .._ir import Job, Status
from ._capacity import Needs, PoolState
from ._tenants import Capacity

if TYPE_CHECKING:
    from ._tenants import TenantState

__all__ = [
    "LEVELS",
    "Entry",
    "GroupQueue",
    "LimitKey",
    "ReadyQueues",
    "Selector",
    "SubKey",
    "TenantQueue",
]

#: Number of strict priority levels (realtime, interactive, batch, offline).
LEVELS = 4
_QUEUED = Status.QUEUED
#: A limit a job is subject to: ("group", concurrency group) or ("tool", tool name).
LimitKey = tuple[str, str]
#: A FIFO of a tenant: (namespace, the limits its jobs are subject to).
SubKey = tuple[str, tuple[LimitKey, ...]]
#: What ``Selector.gate`` answers to park: the tenant (in this group) or the head's FIFO.
TENANT, FIFO = "tenant", "fifo"


class Entry(Struct, gc=False):
    """The core's record of one live (non-terminal) job.

    Not tracked by the garbage collector (it holds no cycles), so a large backlog costs the
    collector nothing.
    """

    job: Job
    tenant: str
    tenant_state: TenantState
    namespace: str
    limits: tuple[LimitKey, ...]  # its concurrency group and backend limits (ALTAR tools)
    subkey: SubKey  # (namespace, limits): the FIFO it waits in, within its tenant's queue
    rank: int
    needs: Needs
    backend: str
    group: tuple[str, ...]
    status: Status
    since: float  # when the current status began
    submitted: float
    placement: tuple[tuple[float, PoolState], ...] = ()  # its pools, cheapest first, $/h
    estimate: float | None = None  # estimated maximum cost of one attempt (USD)
    rate: float = 0.0  # $/h of the current attempt's pool
    held: PoolState | None = None  # the pool holding capacity for it, if any
    seq: int = 0
    counter: list[int] = []  # its (tenant, level, backend) counter, by status


class Selector(Protocol):
    """What a GroupQueue asks the core while it picks jobs."""

    def charge(self, head: Entry, queue: GroupQueue) -> float:
        """The virtual time a dispatch of ``head`` costs its tenant (estimated)."""
        ...

    def gate(self, head: Entry, queue: TenantQueue) -> tuple[str, str] | None:
        """(TENANT or FIFO, reason) if a limit holds the head back (and record the parking),
        else None."""
        ...

    def try_start(self, head: Entry) -> bool:
        """Start the head if it fits the free capacity now."""
        ...

    def hold(self, head: Entry, queue: GroupQueue) -> None:
        """Hold capacity for a head that is first in line and does not fit."""
        ...

    def release_hold_of_other_than(self, head: Entry, queue: GroupQueue) -> None:
        """Release capacity held for another job of the head's tenant."""
        ...

    @property
    def release_epoch(self) -> int:
        """Bumped whenever held capacity is released."""
        ...


class TenantQueue:
    """One tenant's queued jobs in one GroupQueue.

    ``only`` is the tenant's FIFO when it has exactly one and it is not parked (the common
    case): its head is the tenant's head, with no look at ``heads``.
    """

    __slots__ = ("count", "fifos", "heads", "only", "parked", "queue", "tenant")

    def __init__(self, tenant: str, queue: GroupQueue) -> None:
        self.tenant = tenant
        self.queue = queue
        self.fifos: dict[SubKey, deque[Entry]] = {}
        self.heads: list[tuple[int, SubKey]] = []
        self.parked: dict[SubKey, str] = {}
        self.only: deque[Entry] | None = None
        self.count = 0

    def push(self, entry: Entry) -> None:
        """Append at the tail of its FIFO."""
        sub = entry.subkey
        fifo = self.fifos.get(sub)
        if fifo is None:
            fifo = self.fifos[sub] = deque()
            if sub not in self.parked:
                heappush(self.heads, (entry.seq, sub))
            self._find_only()
        fifo.append(entry)
        self.count += 1

    def _find_only(self) -> None:
        fifos = self.fifos
        self.only = next(iter(fifos.values())) if len(fifos) == 1 and not self.parked else None

    def peek(self) -> Entry | None:
        """The oldest live head among the FIFOs that are not parked."""
        only = self.only
        if only is not None:
            while only and only[0].status is not _QUEUED:
                only.popleft()
            if only:
                return only[0]
        heads, fifos = self.heads, self.fifos
        while heads:
            seq, sub = heads[0]
            fifo = fifos[sub]
            while fifo and fifo[0].status is not _QUEUED:
                fifo.popleft()
            if not fifo:
                heappop(heads)
                del fifos[sub]
                self._find_only()
                continue
            head = fifo[0]
            if head.seq != seq:
                heapreplace(heads, (head.seq, sub))
                continue
            return head
        return None

    def pop(self, head: Entry) -> None:
        """Remove the head ``peek`` returned (it started)."""
        (self.only or self.fifos[head.subkey]).popleft()
        self.count -= 1

    def park(self, sub: SubKey, reason: str) -> None:
        """Take the FIFO whose head ``peek`` just returned out of the heads."""
        heappop(self.heads)
        self.parked[sub] = reason
        self.only = None

    def unpark(self, sub: SubKey) -> bool:
        """Put a parked FIFO back; True if it has jobs."""
        if self.parked.pop(sub, None) is None:
            return False
        fifo = self.fifos.get(sub)
        if not fifo:
            self.fifos.pop(sub, None)
            self._find_only()
            return False
        heappush(self.heads, (fifo[0].seq, sub))
        self._find_only()
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
        "keys",
        "parked",
        "pools",
        "rank",
        "runs_seen",
        "tenants",
        "vtimes",
    )

    def __init__(self, rank: int, group: tuple[str, ...], pools: list[PoolState]) -> None:
        self.rank = rank
        self.group = group
        self.pools = pools
        self.capacity = Capacity(pools)
        self.tenants: dict[str, TenantQueue] = {}
        self.heap: list[tuple[float, int, str]] = []
        self.keys: dict[str, tuple[float, int, str]] = {}
        self.parked: dict[str, str] = {}
        self.count = 0
        self.vtimes: dict[str, float] = {}
        self.clock = 0.0  # the virtual time of the last tenant served
        self.expected_run_s = 1.0  # moving average of run times here (for charges)
        self.runs_seen = 0
        self.held: Entry | None = None  # the head capacity is held for, if any

    def any_free_slot(self) -> bool:
        """Whether one of the group's pools could start one more run."""
        for pool in self.pools:
            if pool.used_slots < pool.cap_slots and not pool.overcommitted:
                return True
        return False

    def push(self, entry: Entry) -> TenantQueue:
        """Enqueue; the tenant joins the heap if it was not in it (and is not parked)."""
        queue = self.tenants.get(entry.tenant)
        if queue is None:
            queue = self.tenants[entry.tenant] = TenantQueue(entry.tenant, self)
        queue.push(entry)
        self.count += 1
        if entry.tenant not in self.keys and entry.tenant not in self.parked:
            self.activate(entry.tenant)
        return queue

    def activate(self, tenant: str) -> None:
        """(Re)key a tenant at its virtual time, if it has a head that is not parked. A tenant
        that was not waiting here starts no earlier than the group's clock."""
        if tenant in self.parked:
            return
        queue = self.tenants.get(tenant)
        head = None if queue is None else queue.peek()
        if head is None:
            self.keys.pop(tenant, None)
            return
        vtime = self.vtimes.get(tenant, self.clock)
        if tenant not in self.keys and vtime < self.clock:
            vtime = self.clock
        self.vtimes[tenant] = vtime
        key = (vtime, head.seq, tenant)
        self.keys[tenant] = key
        heappush(self.heap, key)
        if len(self.heap) > 2 * len(self.keys) + 16:  # drop stale keys now and then
            self.heap = list(self.keys.values())
            heapify(self.heap)

    def adjust(self, tenant: str, delta: float, run_s: float, share: float, weight: float) -> None:
        """Correct a tenant's charge once a run's real time is known. The virtual time is exact
        at once; the heap key follows lazily: an extra charge is picked up when the key next
        reaches the top (a key too low is corrected before it wins), a refund re-keys when the
        key has become more than two typical jobs' charges too high (so it never holds a tenant
        back by more than about two jobs; the refund of a single run, the common case, waits
        for the tenant's next dispatch and costs no heap operation)."""
        if self.runs_seen:
            self.expected_run_s += (run_s - self.expected_run_s) * 0.2
        else:  # the first real run time replaces the prior
            self.expected_run_s = run_s
        self.runs_seen += 1
        if not delta or tenant not in self.vtimes:
            return
        vtime = self.vtimes[tenant] = self.vtimes[tenant] + delta
        if delta < 0:
            key = self.keys.get(tenant)
            if key is not None and key[0] - vtime > 2.0 * share * self.expected_run_s / weight:
                self.activate(tenant)

    def unpark(self, tenant: str) -> None:
        """A tenant parked here may compete again."""
        if self.parked.pop(tenant, None) is not None:
            self.activate(tenant)

    def drain(self, selector: Selector, limit: int = -1) -> int:
        """Start heads, least-served tenant first, until the pools are full, every tenant is
        parked or declined, or ``limit`` jobs started. Returns how many started."""
        heap, keys, tenants = self.heap, self.keys, self.tenants
        declined: list[tuple[float, int, str]] = []
        started = 0
        first = True  # the first head offered in a pass is first in line
        epoch = selector.release_epoch
        # a typical job's charge (one slot for the expected run time, weight 1): how far a key
        # may lag its tenant's virtual time before it is re-keyed
        slack = self.capacity.slot_share * self.expected_run_s
        pools = self.pools
        pool = pools[0] if len(pools) == 1 else None  # one pool (the usual case): no call to ask
        while heap and started != limit:
            if declined and selector.release_epoch != epoch:
                # held capacity was released during this pass: heads set aside get another
                # chance, in their order, before the tenants after them
                epoch = selector.release_epoch
                for item in declined:
                    heappush(heap, item)
                declined.clear()
            key = heap[0]
            vtime, seq, tenant = key
            if keys.get(tenant) is not key:
                heappop(heap)  # stale
                continue
            queue = tenants[tenant]
            head = queue.peek()
            if head is None:
                heappop(heap)
                del keys[tenant]
                if not queue.count and not queue.parked:
                    del tenants[tenant]
                continue
            actual = self.vtimes[tenant]
            if head.seq != seq or actual > vtime + slack:
                # a new head, or a charge corrected upwards by more than about one typical job:
                # re-key (a smaller correction is kept exactly in vtimes and counts from the
                # next key on, so the order is never off by more than one job)
                key = keys[tenant] = (actual, head.seq, tenant)
                heapreplace(heap, key)
                continue
            if self.held is not None:
                selector.release_hold_of_other_than(head, self)
                if declined and selector.release_epoch != epoch:
                    continue  # capacity was freed: heads set aside go first (top of the loop)
            held = (
                selector.gate(head, queue)
                if head.limits or head.tenant_state.limited  # nothing to check otherwise
                else None
            )
            if held is not None:
                scope, reason = held
                if scope == TENANT:
                    heappop(heap)
                    del keys[tenant]
                    self.parked[tenant] = reason
                else:
                    queue.park(head.subkey, reason)
                continue
            if selector.try_start(head):
                started += 1
                queue.pop(head)
                self.count -= 1
                if vtime > self.clock:
                    self.clock = vtime
                vtime = self.vtimes[tenant] = actual + selector.charge(head, self)
                following = queue.peek()
                if following is None:
                    heappop(heap)
                    del keys[tenant]
                    if not queue.count and not queue.parked:
                        del tenants[tenant]
                else:
                    key = keys[tenant] = (vtime, following.seq, tenant)
                    heapreplace(heap, key)
            else:
                if first and self.held is None:
                    selector.hold(head, self)
                declined.append(heappop(heap))
            first = False
            if pool is not None:
                if pool.used_slots >= pool.cap_slots or pool.overcommitted:
                    break
            elif not self.any_free_slot():
                break
        for key in declined:
            heappush(heap, key)
        return started

    def entries(self) -> Iterator[Entry]:
        """Every live queued entry (for stats and checks; O(queued))."""
        for queue in self.tenants.values():
            yield from queue.entries()


class ReadyQueues:
    """All queued jobs: ``levels[rank][group]``."""

    __slots__ = ("counts", "levels", "next_seq")

    def __init__(self) -> None:
        self.levels: list[dict[tuple[str, ...], GroupQueue]] = [{} for _ in range(LEVELS)]
        self.counts = [0] * LEVELS
        self.next_seq = 0

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
            queue = level[entry.group] = GroupQueue(entry.rank, entry.group, pools(entry.group))
        queue.push(entry)
        self.counts[entry.rank] += 1
        return queue

    def discard(self, entry: Entry) -> None:
        """Forget a queued entry whose status already left QUEUED (dropped lazily)."""
        queue = self.levels[entry.rank][entry.group]
        queue.count -= 1
        tenant_queue = queue.tenants.get(entry.tenant)
        if tenant_queue is not None:
            tenant_queue.count -= 1
        self.counts[entry.rank] -= 1

    def dispatch_level(self, rank: int, selector: Selector, limit: int = -1) -> int:
        """Offer one level's queued jobs; returns how many started."""
        started = 0
        for queue in self.levels[rank].values():
            if queue.count and queue.any_free_slot():
                started += queue.drain(selector, limit - started if limit > 0 else -1)
                if started == limit:
                    break
        self.counts[rank] -= started
        return started

    def dispatch(self, selector: Selector) -> None:
        """Offer queued jobs: levels in strict priority order, then each pool group of a level
        with a free slot, tenants by fair share."""
        for rank in range(LEVELS):
            if self.counts[rank]:
                self.dispatch_level(rank, selector)

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

    def groups(self) -> Iterator[GroupQueue]:
        """Every GroupQueue, highest level first."""
        for level in self.levels:
            yield from level.values()

    def entries(self) -> Iterator[Entry]:
        """Every live queued entry, highest level first."""
        for queue in self.groups():
            yield from queue.entries()

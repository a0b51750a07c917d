"""Ready queues: queued jobs by priority level, pool group and tenant.

Each (level, pool group) keeps one FIFO per tenant and a heap of the tenants' heads, so picking
the next job looks only at heads and costs O(log tenants), never a scan of queued jobs. The heap
key is the head's enqueue sequence number (oldest head first, across tenants); the tenancy issue
replaces that key with a fair-share one. Canceled entries are dropped lazily when they reach the
head of their FIFO.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from heapq import heappop, heappush, heapreplace

from msgspec import Struct

from .._ir import Job, Status
from ._capacity import Needs, PoolState

__all__ = ["LEVELS", "Entry", "GroupQueue", "ReadyQueues"]

#: Number of strict priority levels (realtime, interactive, batch, offline).
LEVELS = 4


class Entry(Struct, gc=False):
    """The core's record of one live (non-terminal) job.

    Not tracked by the garbage collector (it holds no cycles), so a large backlog costs the
    collector nothing.
    """

    job: Job
    tenant: str
    rank: int
    needs: Needs
    backend: str
    group: tuple[str, ...]
    status: Status
    since: float  # when the current status began
    submitted: float
    seq: int = 0
    counters: tuple[list[int], ...] = ()


class GroupQueue:
    """Queued jobs of one priority level that may use the same pools."""

    __slots__ = ("count", "group", "heads", "pools", "tenants")

    def __init__(self, group: tuple[str, ...], pools: list[PoolState]) -> None:
        self.group = group
        self.pools = pools
        self.tenants: dict[str, deque[Entry]] = {}
        self.heads: list[tuple[int, str]] = []
        self.count = 0

    def push(self, entry: Entry) -> None:
        """Append at the tail of its tenant's FIFO."""
        fifo = self.tenants.get(entry.tenant)
        if fifo is None:
            fifo = self.tenants[entry.tenant] = deque()
            heappush(self.heads, (entry.seq, entry.tenant))
        fifo.append(entry)
        self.count += 1

    def any_free_slot(self) -> bool:
        """Whether one of the group's pools could start one more run."""
        for pool in self.pools:  # noqa: SIM110 - faster than any() over a generator (hot path)
            if pool.used_slots < pool.cap_slots:
                return True
        return False

    def drain(self, try_start: Callable[[Entry], bool]) -> int:
        """Offer heads, oldest first, to ``try_start`` until the pools are full or every head
        was declined; a declined head keeps its place. Returns how many started."""
        heads, tenants = self.heads, self.tenants
        declined: list[tuple[int, str]] = []
        started = 0
        while heads:
            seq, tenant = heads[0]
            fifo = tenants[tenant]
            while fifo and fifo[0].status is not Status.QUEUED:
                fifo.popleft()
            if not fifo:
                heappop(heads)
                del tenants[tenant]
                continue
            head = fifo[0]
            if head.seq != seq:  # the old head was canceled: re-key on the live one
                heapreplace(heads, (head.seq, tenant))
                continue
            if try_start(head):
                started += 1
                fifo.popleft()
                self.count -= 1
                while fifo and fifo[0].status is not Status.QUEUED:
                    fifo.popleft()
                if fifo:
                    heapreplace(heads, (fifo[0].seq, tenant))
                else:
                    heappop(heads)
                    del tenants[tenant]
            else:
                declined.append(heappop(heads))
            if not self.any_free_slot():
                break
        for item in declined:
            heappush(heads, item)
        return started

    def entries(self) -> Iterator[Entry]:
        """Every live queued entry (for stats and checks; O(queued))."""
        for fifo in self.tenants.values():
            for entry in fifo:
                if entry.status is Status.QUEUED:
                    yield entry


class ReadyQueues:
    """All queued jobs: ``levels[rank][group]``."""

    __slots__ = ("counts", "levels", "next_seq")

    def __init__(self) -> None:
        self.levels: list[dict[tuple[str, ...], GroupQueue]] = [{} for _ in range(LEVELS)]
        self.counts = [0] * LEVELS
        self.next_seq = 0

    def push(self, entry: Entry, pools: Callable[[tuple[str, ...]], list[PoolState]]) -> None:
        """Enqueue at the tail of its (level, group, tenant) FIFO with a fresh sequence number."""
        self.next_seq += 1
        entry.seq = self.next_seq
        level = self.levels[entry.rank]
        queue = level.get(entry.group)
        if queue is None:
            queue = level[entry.group] = GroupQueue(entry.group, pools(entry.group))
        queue.push(entry)
        self.counts[entry.rank] += 1

    def discard(self, entry: Entry) -> None:
        """Forget a queued entry whose status already left QUEUED (dropped lazily)."""
        self.levels[entry.rank][entry.group].count -= 1
        self.counts[entry.rank] -= 1

    def dispatch(self, try_start: Callable[[Entry], bool]) -> None:
        """Offer queued jobs to ``try_start``: levels in strict priority order, then each pool
        group of a level with a free slot, heads oldest first."""
        for rank in range(LEVELS):
            if not self.counts[rank]:
                continue
            for queue in self.levels[rank].values():
                if queue.count and queue.any_free_slot():
                    self.counts[rank] -= queue.drain(try_start)

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

    def entries(self) -> Iterator[Entry]:
        """Every live queued entry, highest level first."""
        for level in self.levels:
            for queue in level.values():
                yield from queue.entries()

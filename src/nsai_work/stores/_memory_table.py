"""The memory store's table (the seed's "ETS registry"): jobs by (tenant id, id), and ordered
indexes that serve every listing a page at a time, whatever its filters. ``MemoryStore``
(stores/memory.py) puts the Store Protocol over it; the engine writes to it directly, at once.

Jobs are keyed by (tenant_id, id) because two tenants may use the same id: one tenant's ids tell
it nothing about another's, and cannot block them. Ids are UUIDs, so two tenants share one only
when a caller chose it: a job is stored under its id, and under the pair (tenant id, id) only
when another tenant's job already holds that id. Every lookup checks the tenant.

Listing
-------
Each job gets a submission sequence number, its *seq*: listings are newest (largest seq) first,
and the cursor is the seq of the last job of the previous page. The jobs of a tenant are held in
*cells*, one per (namespace, kind) pair it has jobs of (a *leaf*), and each cell holds one
*index* per status: a sorted list of seqs, kept in chunks (``_ordered_index``). A listing by
namespace and kind reads one leaf; one by status reads that status's index of each cell it
reads, one without merges the (at most 7) indexes of each. Every job is in its leaf.

A listing that leaves the namespace or the kind open (or both) spans several leaves. While they
are at most ``_FANOUT``, it merges them: O(_FANOUT) bisections more. Past that, the tenant keeps
a *coarse* cell for it, (namespace, None), (None, kind) or (None, None), holding the jobs of
those leaves: each job is then in its leaf and in up to 3 coarse cells. A coarse cell is built
(from its leaves: m jobs in k leaves, O(m log k)) when its leaves go past ``_FANOUT``, and
dropped when it is empty, so each job is copied into each coarse cell at most once. The
one exception: while a tenant's jobs all have one namespace, (namespace, None) holds what
(None, None) holds and is read from it; the tenant's second namespace builds it. The same goes
for a kind. So a tenant with at most ``_FANOUT`` (namespace, kind) pairs, or with one namespace
and any number of kinds, keeps each job in 1 or 2 indexes, and one with many namespaces and many
kinds in up to 4.

Indexing waits for a reader
---------------------------
A status move is not applied to the indexes at once: ``insert`` and a ``put`` that changes the
status only note the job's seq (and, on its first move since it was last indexed, the status
position the indexes have it at), and the indexes catch up later, a few notes at a time, never
in one long pause of the engine's loop:

- a reader catches up first: ``list`` and ``keys_with_status`` index every noted job (the
  memory store's ``list`` indexes them in slices of ``INDEX_SLICE``, yielding to the loop
  between slices, so that only the last slice is indexed while the page is read);
- past ``UNINDEXED_MAX`` notes, each new note also indexes the two oldest.

Indexing a noted job moves it from the index it is in (if any) to its current status's. So a
job that moves several times between two readers costs one index move, and one submitted,
finished and pruned between them (a short job, when nobody lists) none: in a stream of no-op
jobs the indexes were 5% of the engine's instructions per job, and more of its time. A leaf
lives while it has jobs (``_Leaf.size``), indexed or not, and a coarse cell while a leaf it
spans does.

Cost, with n the number of jobs and c the cells a job is in (1 to 4, as above):

- ``insert``: a note; the first job of a new (namespace, kind) may build coarse cells (above):
  O(log n) amortized over the jobs they hold;
- ``put`` that changes the status: a note (a ``put`` that keeps the status touches nothing);
- indexing a noted job: c removals and c insertions, O(log n) each (plus moving at most
  ``2 * LOAD`` pointers within a chunk), mostly appends as jobs come in seq order;
- pruning a finished job: c removals, O(log n) each, or none when it was never indexed;
- ``list``: the noted jobs first, then a bisection for the cursor in each index it reads (at
  most ``7 * _FANOUT``), then a step per job returned: O(log n + limit) for any combination of
  tenant, namespace, status and kind, never a walk over jobs that do not match;
- ``get``: dict lookups, O(1); ``owners``: O(tenants that share the id).

Paging while jobs change
------------------------
A page is the jobs that match the filters *when it is read* and were submitted before the job
the cursor names (seq below the cursor), newest first. So across the pages of one listing: no
job appears twice (each page's seqs are below the last page's); a job that matches the filters
from the first page to the last, and was submitted before the first page, appears exactly once;
a job submitted after the first page does not appear; a job that starts or stops matching
meanwhile (a status change) appears if and only if it matches when the page that covers its
place is read; a pruned job drops out, and a cursor stays valid when the job it names was pruned
(it is a place in the order, not a reference to the job).

Retention
---------
Finished jobs are kept for ``finished_ttl_s`` seconds and at most ``finished_max`` of them (the
oldest finished go first), so memory stays bounded however long the scheduler runs; a pruned job
is gone (``get`` raises NotFoundError). Nothing survives the process: use SQLite or Postgres for
that (later releases).
"""

from __future__ import annotations

import datetime as _dt
from collections import deque
from collections.abc import Iterator
from itertools import chain
from typing import Final

from .._errors import ConflictError, ValidationError
from .._ir import TERMINAL_STATUSES, Job, Status
from .._validate import check_status
from ._ordered_index import Cell, cell_add, cell_remove, index_of, index_page

__all__ = ["JobKey", "JobTable"]

#: (tenant id, job id)
JobKey = tuple[str, str]
#: Where a job is stored: its id, or (tenant id, id) when another tenant's job holds the id.
_Slot = str | JobKey

#: A coarse cell's key: (namespace, None), (None, kind) or (None, None).
_CellKey = tuple[str | None, str | None]
#: The coarse cell of all a tenant's jobs.
_ALL: Final[_CellKey] = (None, None)
#: Where a cell (``Cell``) keeps the index of each status.
_AT: Final = {status: at for at, status in enumerate(Status)}
#: A listing merges at most this many leaves; past it, a coarse cell holds them (docstring).
_FANOUT = 4
#: A tenant with at most this many leaves finds a namespace's (or kind's) by a scan of them.
_SCAN = 8
#: The status position of a job in no index yet (noted at its insert, not indexed since).
_NOWHERE: Final = -1
#: Past this many notes, each new note also indexes the two oldest (module docstring): in a steady
#: stream with no reader, a job is then mostly indexed once, finished, before it is pruned (the
#: default ``finished_max`` keeps as many finished jobs).
UNINDEXED_MAX = 100_000
#: How many noted jobs a reader of the memory store indexes between two yields to the loop
#: (about 0.2 ms of work).
INDEX_SLICE = 256


class _Leaf:
    """The jobs of one (namespace, kind) of a tenant: the cells they are in (their own, then
    the coarse cells that span it) and how many there are, indexed or not (the leaf lives
    while it has one)."""

    __slots__ = ("cells", "size")

    def __init__(self, cells: list[Cell]) -> None:
        self.cells = cells
        self.size = 0


class _Tenant:
    """One tenant's cells (module docstring): its leaves, its coarse cells and, once it has more
    than ``_SCAN`` leaves, which kinds each namespace has and which namespaces each kind has
    (with fewer, a scan of the leaves says)."""

    __slots__ = ("coarse", "kinds", "leaves", "namespaces")

    def __init__(self) -> None:
        #: (namespace, kind) -> its leaf: the cells a job of this pair is in (its own, then
        #: the coarse cells it is in, kept with the leaf, so a transition needs one lookup)
        self.leaves: dict[tuple[str, str], _Leaf] = {}
        self.coarse: dict[_CellKey, Cell] = {}
        self.kinds: dict[str, list[str]] | None = None  # namespace -> kinds it has leaves of
        self.namespaces: dict[str, list[str]] | None = None  # kind -> namespaces it has leaves in

    def kinds_in(self, namespace: str) -> list[str]:
        """The kinds of the namespace's leaves."""
        if self.kinds is None:
            return [kind for of, kind in self.leaves if of == namespace]
        return self.kinds.get(namespace, [])

    def namespaces_of(self, kind: str) -> list[str]:
        """The namespaces of the kind's leaves."""
        if self.namespaces is None:
            return [namespace for namespace, of in self.leaves if of == kind]
        return self.namespaces.get(kind, [])

    def add_leaf(self, namespace: str, kind: str) -> _Leaf:
        """Before the first job of this (namespace, kind): build the coarse cells that go past
        ``_FANOUT`` leaves with it, or that stop reading another's; returns the new leaf."""
        kinds, namespaces = self.kinds_in(namespace), self.namespaces_of(kind)
        if self.kinds is None:
            all_namespaces = list(dict.fromkeys(of for of, _ in self.leaves))
            all_kinds = list(dict.fromkeys(of for _, of in self.leaves))
        else:
            assert self.namespaces is not None
            all_namespaces, all_kinds = list(self.kinds), list(self.namespaces)
        if len(self.leaves) >= _FANOUT:
            self._build(_ALL)
        if not kinds and len(all_namespaces) == 1:  # the one namespace so far stops being one
            if len(self.kinds_in(all_namespaces[0])) > _FANOUT:
                self._build((all_namespaces[0], None))
        elif len(kinds) >= _FANOUT and len(all_namespaces) > 1:
            self._build((namespace, None))
        if not namespaces and len(all_kinds) == 1:
            if len(self.namespaces_of(all_kinds[0])) > _FANOUT:
                self._build((None, all_kinds[0]))
        elif len(namespaces) >= _FANOUT and len(all_kinds) > 1:
            self._build((None, kind))
        coarse = self.coarse
        spanning = [coarse[key] for key in (_ALL, (namespace, None), (None, kind)) if key in coarse]
        leaf = self.leaves[(namespace, kind)] = _Leaf([[None] * len(_AT), *spanning])
        if self.kinds is not None and self.namespaces is not None:
            self.kinds.setdefault(namespace, []).append(kind)
            self.namespaces.setdefault(kind, []).append(namespace)
        elif len(self.leaves) > _SCAN:
            self.kinds, self.namespaces = {}, {}
            for of_namespace, of_kind in self.leaves:
                self.kinds.setdefault(of_namespace, []).append(of_kind)
                self.namespaces.setdefault(of_kind, []).append(of_namespace)
        return leaf

    def drop_leaf(self, namespace: str, kind: str) -> None:
        """After the last job of this (namespace, kind) went: forget the leaf, and the coarse
        cells that span no leaf any more."""
        del self.leaves[(namespace, kind)]
        if self.kinds is not None and self.namespaces is not None:
            for of, key, other in (
                (self.kinds, namespace, kind),
                (self.namespaces, kind, namespace),
            ):
                left = of[key]
                left.remove(other)
                if not left:
                    del of[key]
        coarse = self.coarse
        if not self.leaves:
            coarse.clear()
            return
        if not self.kinds_in(namespace):
            coarse.pop((namespace, None), None)
        if not self.namespaces_of(kind):
            coarse.pop((None, kind), None)

    def _build(self, key: _CellKey) -> None:
        """A coarse cell, from the leaves it spans (unless it is kept already)."""
        if key in self.coarse:
            return
        namespace, kind = key
        spanned = [
            leaf.cells
            for (of_namespace, of_kind), leaf in self.leaves.items()
            if namespace in (None, of_namespace) and kind in (None, of_kind)
        ]
        cell: Cell = [None] * len(_AT)
        for at in range(len(_AT)):
            seqs = sorted(chain.from_iterable(chain.from_iterable(c[0][at] or () for c in spanned)))
            cell[at] = index_of(seqs) if seqs else None
        self.coarse[key] = cell
        for cells in spanned:
            cells.append(cell)

    def cells_for(self, namespace: str | None, kind: str | None) -> list[Cell]:
        """The cells a listing with these filters reads: one, or the leaves it spans (at most
        ``_FANOUT``); none when no job of the tenant can match."""
        if namespace is not None and kind is not None:
            leaf = self.leaves.get((namespace, kind))
            return [] if leaf is None else leaf.cells[:1]
        cell = self.coarse.get((namespace, kind))
        if cell is not None:
            return [cell]
        if namespace is not None:
            spanned = [(namespace, of) for of in self.kinds_in(namespace)]
        elif kind is not None:
            spanned = [(of, kind) for of in self.namespaces_of(kind)]
        else:
            spanned = list(self.leaves)
        if len(spanned) > _FANOUT:  # the tenant's only namespace (or kind): all its jobs
            return [self.coarse[_ALL]]
        return [self.leaves[pair].cells[0] for pair in spanned]


class JobTable:
    """Jobs in dicts, listed through ordered indexes. Not thread-safe: the engine's loop is its
    only user."""

    def __init__(self, *, finished_ttl_s: float = 3600.0, finished_max: int = 100_000) -> None:
        if finished_ttl_s < 0:
            raise ValidationError(
                f"finished_ttl_s must be >= 0, got {finished_ttl_s}", path="$.finished_ttl_s"
            )
        if finished_max < 0:
            raise ValidationError(
                f"finished_max must be >= 0, got {finished_max}", path="$.finished_max"
            )
        self.finished_ttl_s = finished_ttl_s
        self.finished_max = finished_max
        self._jobs: dict[str, Job] = {}
        self._shared: dict[JobKey, Job] = {}
        self._shared_ids: dict[str, set[str]] = {}  # id -> tenants whose job with it is in _shared
        self._next_seq = 0
        #: where each job is: its seq and its leaf
        self._place: dict[_Slot, tuple[int, _Leaf]] = {}
        self._slot_at: dict[int, _Slot] = {}
        #: the jobs inserted or moved since they were last indexed: seq -> the status position
        #: the indexes have it at (``_NOWHERE``: none yet) ...
        self._unindexed: dict[int, int] = {}
        #: ... and their seqs in the order they were noted (a seq no longer in ``_unindexed``
        #: is skipped: it was indexed, or pruned, since)
        self._notes: deque[int] = deque()
        self._tenants: dict[str, _Tenant] = {}
        self._finished: deque[tuple[float, str, str]] = deque()  # (when, tenant, id)
        #: ``job_with_id(job_id)``: the job stored under this id alone, or None (whose tenant
        #: is the first that used the id; read-only: for lookups of many ids)
        self.job_with_id = self._jobs.get
        #: ``is_shared(job_id)``: whether more than one tenant has a job with this id (then a
        #: lookup needs the tenant)
        self.is_shared = self._shared_ids.__contains__

    # ---- writes -----------------------------------------------------------------------------

    def insert(self, job: Job) -> None:
        """Add a newly admitted job."""
        job_id, tenant_id = job.id, job.tenant_id
        holder = self._jobs.get(job_id)
        slot: _Slot
        if holder is None:
            slot = job_id
            self._jobs[job_id] = job
        else:
            slot = (tenant_id, job_id)
            if holder.tenant_id == tenant_id or slot in self._shared:
                raise ConflictError(f"duplicate job id {job_id!r} for tenant {tenant_id!r}")
            self._shared[slot] = job
            self._shared_ids.setdefault(job_id, set()).add(tenant_id)
        self._next_seq = seq = self._next_seq + 1
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            tenant = self._tenants[tenant_id] = _Tenant()
        leaf = tenant.leaves.get((job.namespace, job.kind))
        if leaf is None:
            leaf = tenant.add_leaf(job.namespace, job.kind)
        leaf.size += 1
        self._place[slot] = (seq, leaf)
        self._slot_at[seq] = slot
        self._unindexed[seq] = _NOWHERE
        notes = self._notes
        notes.append(seq)
        if len(notes) > UNINDEXED_MAX:
            self.index_noted(2)

    def put(self, job: Job, now: float) -> None:
        """Store a job's new snapshot (a transition); a terminal one starts its retention.

        A snapshot keeps the job's tenant, namespace and kind: only a new status moves it
        between indexes."""
        job_id, status, jobs = job.id, job.status, self._jobs
        slot: _Slot = job_id
        old = jobs.get(job_id)
        if old is not None and old.tenant_id == job.tenant_id:
            jobs[job_id] = job
        else:
            slot = (job.tenant_id, job_id)
            old = self._shared[slot]
            self._shared[slot] = job
        if old.status is not status:
            seq = self._place[slot][0]
            unindexed = self._unindexed
            if seq not in unindexed:
                unindexed[seq] = _AT[old.status]
                notes = self._notes
                notes.append(seq)
                if len(notes) > UNINDEXED_MAX:
                    self.index_noted(2)
            if status in TERMINAL_STATUSES:
                finished = self._finished
                finished.append((now, job.tenant_id, job_id))
                if len(finished) > self.finished_max or finished[0][0] < now - self.finished_ttl_s:
                    self.prune(now)

    def prune(self, now: float) -> int:
        """Drop finished jobs past their TTL or beyond the cap; returns how many went."""
        finished = self._finished
        dropped = 0
        horizon = now - self.finished_ttl_s
        while finished and (len(finished) > self.finished_max or finished[0][0] < horizon):
            _, tenant_id, job_id = finished.popleft()
            self._remove(tenant_id, job_id)
            dropped += 1
        return dropped

    def prune_finished(self, finished_before: _dt.datetime, keep_max: int) -> int:
        """Drop finished jobs that finished before ``finished_before`` (their ``finished_at``),
        then all but the ``keep_max`` that finished last; returns how many went. O(f log f) in
        the f finished jobs (the engine prunes as jobs finish instead; this is the Store
        Protocol's prune)."""
        done = [
            job
            for status in TERMINAL_STATUSES
            for tenant_id, job_id in self.keys_with_status(status)
            if (job := self.get(tenant_id, job_id)) is not None
        ]
        oldest = _dt.datetime.min.replace(tzinfo=_dt.UTC)
        done.sort(key=lambda job: job.finished_at or oldest)
        expired = sum(1 for job in done if (job.finished_at or oldest) < finished_before)
        drop = max(expired, len(done) - keep_max)
        for job in done[:drop]:
            self._remove(job.tenant_id, job.id)
        return drop

    def in_order(self) -> Iterator[Job]:
        """Every job, in submission order (O(n): for recovery, not for serving)."""
        job_at = self._job_at
        for seq in list(self._slot_at):
            yield job_at(seq)

    def remove(self, tenant_id: str, job_id: str) -> None:
        """Drop a job (nothing if there is none)."""
        self._remove(tenant_id, job_id)

    def _remove(self, tenant_id: str, job_id: str) -> None:
        job = self._jobs.get(job_id)
        slot: _Slot = job_id
        if job is not None and job.tenant_id == tenant_id:
            del self._jobs[job_id]
        else:
            slot = (tenant_id, job_id)
            job = self._shared.pop(slot, None)
            if job is None:
                return
            sharing = self._shared_ids[job_id]
            sharing.discard(tenant_id)
            if not sharing:
                del self._shared_ids[job_id]
        seq, leaf = self._place.pop(slot)
        del self._slot_at[seq]
        indexed_at = self._unindexed.pop(seq, _AT[job.status])
        if indexed_at != _NOWHERE:
            for cell in leaf.cells:
                cell_remove(cell, indexed_at, seq)
        leaf.size -= 1
        if not leaf.size:  # the last job of its leaf
            tenant = self._tenants[tenant_id]
            tenant.drop_leaf(job.namespace, job.kind)
            if not tenant.leaves:
                del self._tenants[tenant_id]

    # ---- reads ------------------------------------------------------------------------------

    def get(self, tenant_id: str, job_id: str) -> Job | None:
        """A tenant's job's latest snapshot, or None."""
        job = self._jobs.get(job_id)
        if job is not None and job.tenant_id == tenant_id:
            return job
        return self._shared.get((tenant_id, job_id)) if self._shared else None

    def find(self, job_id: str) -> list[Job]:
        """Every job with this id, by tenant id (usually none or one)."""
        job = self._jobs.get(job_id)
        found = [] if job is None else [job]
        sharing = self._shared_ids.get(job_id)
        if sharing:
            shared = self._shared
            found += [shared[tenant_id, job_id] for tenant_id in sharing]
            found.sort(key=_tenant_of)
        return found

    def owners(self, job_id: str) -> list[str]:
        """The tenants that have a job with this id (usually none or one)."""
        job = self._jobs.get(job_id)
        found = [] if job is None else [job.tenant_id]
        sharing = self._shared_ids.get(job_id)
        if sharing:
            found += sharing
        return found

    def __contains__(self, key: object) -> bool:
        """``(tenant_id, job_id) in store``."""
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        return self.get(key[0], key[1]) is not None

    def __len__(self) -> int:
        return len(self._jobs) + len(self._shared)

    def keys_with_status(self, status: Status) -> list[JobKey]:
        """(tenant id, job id) of the stored jobs in ``status``, tenant by tenant, oldest first:
        O(tenants + jobs found)."""
        self.index_noted()
        at, slot_at = _AT[status], self._slot_at
        found: list[JobKey] = []
        for tenant_id, tenant in self._tenants.items():
            for cell in tenant.cells_for(None, None):
                for seq in chain.from_iterable(cell[at] or ()):
                    slot = slot_at[seq]
                    found.append(slot if isinstance(slot, tuple) else (tenant_id, slot))
        return found

    def list(
        self,
        tenant_id: str,
        *,
        namespace: str | None = None,
        status: Status | None = None,
        kind: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """A page of a tenant's jobs, newest (last submitted) first, after ``cursor`` (the
        ``next_cursor`` of the previous page); returns (jobs, next cursor or None).

        The filters combine: a job is listed when it matches each one given. A page costs
        O(log n + limit); the module docstring says what a listing shows of jobs that change
        between its pages."""
        if status is not None:
            status = check_status(status)
        if not isinstance(limit, int) or limit < 1:
            raise ValidationError(f"limit is an int >= 1, got {limit!r}", path="$.limit")
        before = None if cursor is None else _parse_cursor(cursor)
        self.index_noted()
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            return [], None
        cells = tenant.cells_for(namespace, kind)
        if status is None:
            indexes = [index for cell in cells for index in cell if index]
        else:
            at = _AT[status]
            indexes = [index for cell in cells if (index := cell[at])]
        wanted = limit + 1  # one more tells whether there is a next page
        parts = [index_page(index, before, wanted) for index in indexes]
        if len(parts) == 1:
            seqs = parts[0]
        else:  # the newest of each index's newest
            seqs = sorted(chain.from_iterable(parts), reverse=True)[:wanted]
        job_at = self._job_at
        if len(seqs) > limit:
            return [job_at(seq) for seq in seqs[:limit]], str(seqs[limit - 1])
        return [job_at(seq) for seq in seqs], None

    @property
    def noted(self) -> int:
        """How many notes wait to be indexed (some may be of jobs indexed or pruned since)."""
        return len(self._notes)

    def index_noted(self, count: int | None = None) -> None:
        """Index the jobs of the oldest ``count`` notes (all when None): each leaves the index
        it is in (if any) for its status's."""
        notes, unindexed = self._notes, self._unindexed
        slot_at, place, jobs, shared = self._slot_at, self._place, self._jobs, self._shared
        for _ in range(len(notes) if count is None else min(count, len(notes))):
            seq = notes.popleft()
            was = unindexed.pop(seq, None)
            if was is None:
                continue  # indexed or pruned since
            slot = slot_at[seq]
            at = _AT[(jobs[slot] if isinstance(slot, str) else shared[slot]).status]
            if at != was:
                for cell in place[slot][1].cells:
                    if was != _NOWHERE:
                        cell_remove(cell, was, seq)
                    cell_add(cell, at, seq)

    def _job_at(self, seq: int) -> Job:
        slot = self._slot_at[seq]
        return self._jobs[slot] if isinstance(slot, str) else self._shared[slot]


def _parse_cursor(cursor: object) -> int:
    """The seq a cursor names (``list`` gives it as decimal digits)."""
    if isinstance(cursor, str) and cursor.isascii() and cursor.isdigit() and len(cursor) <= 19:
        return int(cursor)
    shown = repr(cursor)
    if len(shown) > 60:
        shown = f"{shown[:60]}..."
    raise ValidationError(
        f"cursor {shown} is not a cursor this store gave: pass the next_cursor of the previous "
        f"page (a string of digits), or None for the first page",
        path="$.cursor",
    )


def _tenant_of(job: Job) -> str:
    return job.tenant_id

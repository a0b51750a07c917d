"""The Store seam: what the engine asks of a place that keeps jobs.

Every method is a coroutine; writes come in batches (``WriteBatch``), one transaction each. See
docs/design.md, "Durable state", for how the engine uses it (group commit, recovery, the one
scheduler and its clients), and ``work.testing.check_store`` for the contract in executable
form. ``MemoryStore`` is the reference implementation; ``SqliteStore`` and ``PostgresStore``
keep jobs across restarts.
"""

from __future__ import annotations

import builtins
import datetime as _dt
from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

from msgspec import Struct

from .._ir import Job, Status
from ._schedules import ScheduleState

__all__ = [
    "Inbox",
    "JobKey",
    "Lease",
    "ListQuery",
    "Quarantined",
    "Recovered",
    "Role",
    "ScheduleState",
    "Store",
    "WriteBatch",
]

#: (tenant id, job id): a job's identity.
JobKey = tuple[str, str]

#: ``"scheduler"``: the one process that runs jobs (holds the lease, loads, writes
#: transitions). ``"client"``: any number of processes that submit, read and wait.
Role = Literal["scheduler", "client"]


class ListQuery(Struct, frozen=True, kw_only=True):
    """A page of one tenant's jobs, newest (last submitted) first, narrowed by any of
    namespace, status and kind, after ``cursor`` (an opaque string a previous page returned)."""

    tenant_id: str
    namespace: str | None = None
    status: Status | None = None
    kind: str | None = None
    limit: int = 100
    cursor: str | None = None


class WriteBatch(Struct, kw_only=True):
    """What one commit writes, in one transaction (all of it, or none).

    ``inserts`` are new jobs: a (tenant_id, id) the store already holds makes the whole batch
    fail with ``ConflictError`` naming it. ``updates`` are the latest snapshots of jobs the store
    holds (written in full, in order; an unknown key is a ``StoreError``). ``state`` is the
    core's exported state (opaque bytes; None: unchanged). ``deletes`` are keys of finished
    jobs to drop (an unknown key is ignored)."""

    inserts: list[Job] = []
    updates: list[Job] = []
    state: bytes | None = None
    deletes: list[JobKey] = []


class Inbox(Struct, kw_only=True):
    """What clients asked of the scheduler: jobs to admit, oldest first, and cancel requests
    as ((tenant_id, id), reason)."""

    jobs: list[Job] = []
    cancels: list[tuple[JobKey, str]] = []


class Quarantined(Struct, frozen=True, kw_only=True):
    """A stored row that could not be read back as a job: set aside, not recovered."""

    tenant_id: str
    job_id: str
    reason: str


class Recovered(Struct, kw_only=True):
    """What a starting scheduler needs: every non-terminal job in submission order, the core's
    state as last committed (None if never written), and the rows set aside as unreadable."""

    jobs: list[Job]
    state: bytes | None = None
    quarantined: list[Quarantined] = []


class Lease(Struct, frozen=True, kw_only=True):
    """Who holds a store's scheduler lease: its process, host, since when, and the fencing
    token bumped at every acquisition (a write under an older token is refused)."""

    pid: int
    host: str
    since: _dt.datetime
    fence: int


@runtime_checkable
class Store(Protocol):
    """A place that keeps jobs. Not thread-safe: one event loop uses a store object."""

    #: The store's URL, without a password.
    url: str
    #: False when nothing survives the process (the memory store): the engine then applies
    #: each write at once instead of batching them.
    durable: bool

    async def open(self, role: Role = "scheduler") -> None:
        """Connect and apply migrations; as ``"scheduler"``, take the lease (``StoreError``
        naming the holder when another process has it). Idempotent."""
        ...

    async def close(self) -> None:
        """Release the lease and the connections. Idempotent."""
        ...

    async def write(self, batch: WriteBatch) -> None:
        """Commit ``batch`` in one transaction; returns once it is durable."""
        ...

    async def load(self) -> Recovered:
        """Every non-terminal job in submission order, the core's state, the rows set aside."""
        ...

    async def get_many(self, keys: Sequence[JobKey]) -> list[Job | None]:
        """The stored snapshot of each (tenant_id, id), None where there is none; from the
        primary key."""
        ...

    async def owners(self, job_id: str) -> list[str]:
        """The tenants that have a job with this id (usually none or one)."""
        ...

    async def find_many(self, job_ids: Sequence[str]) -> dict[str, list[Job]]:
        """Every stored job with each of these ids, whatever its tenant, in one query: id ->
        its jobs, by tenant id (ids no job has are left out). What a caller who names jobs by
        id alone needs: their owners and their snapshots at once."""
        ...

    async def list(self, query: ListQuery) -> tuple[list[Job], str | None]:
        """A page and the cursor of the next (None: last page); O(page + log n) from an index.
        A cursor that this store did not make is a ``ValidationError`` at ``$.cursor``."""
        ...

    async def prune(self, finished_before: _dt.datetime, keep_max: int) -> int:
        """Drop finished jobs that finished before ``finished_before``, and the oldest finished
        beyond ``keep_max``; returns how many went."""
        ...

    async def submit(
        self, jobs: Sequence[Job], *, now: _dt.datetime | None = None
    ) -> builtins.list[str | None]:
        """As a client: commit new jobs for the scheduler to admit (``ConflictError`` for a
        (tenant_id, id) the store holds). The unique keys of those that have one are claimed
        at ``now`` (default: the wall clock) in the same transaction, as ``claim_unique``
        does: returns, per job, None (committed) or the id of the job that holds its key
        (a duplicate: not committed)."""
        ...

    async def claim_unique(
        self, jobs: Sequence[Job], now: _dt.datetime
    ) -> builtins.list[str | None]:
        """As the scheduler, before admitting ``jobs`` (each has a ``constraints.unique_key``):
        claim each (tenant_id, unique_key) for its job, in one transaction, unless a claim
        holds it (``stores/_unique.py``: its job's stored status is among the claim's states,
        or the job is not stored yet, and ``now`` is within its period). Returns, per job, None
        (claimed) or the holder's job id. A later job of the same call with the key of an
        earlier one is its duplicate. Enforced by the store (a key in a table, a row lock), so
        concurrent claims from any processes make one winner."""
        ...

    async def release_unique(self, keys: Sequence[JobKey]) -> None:
        """Drop the claims made for these jobs (a submit that claimed, then failed)."""
        ...

    async def add_schedule(self, state: ScheduleState) -> ScheduleState:
        """Keep a cron schedule's state unless the store has one for its (tenant_id, name)
        already; returns the state the store keeps (the existing one wins: a schedule declared
        again after a restart goes on from where it was)."""
        ...

    async def schedules(self, tenant_id: str | None = None) -> builtins.list[ScheduleState]:
        """The schedules' states (of one tenant, or all), by tenant then name."""
        ...

    async def advance_schedule(
        self,
        tenant_id: str,
        name: str,
        expected: _dt.datetime,
        settled_through: _dt.datetime,
        last_fire: _dt.datetime | None,
    ) -> bool:
        """Compare-and-set: move the schedule's ``settled_through`` from ``expected`` to
        ``settled_through`` (and its ``last_fire`` to ``last_fire`` unless None) only if it is
        ``expected`` now and the schedule is not paused. False: it is not (another process
        settled these fires, or it was paused or removed): re-read it."""
        ...

    async def pause_schedule(
        self, tenant_id: str, name: str, paused: bool, now: _dt.datetime
    ) -> ScheduleState | None:
        """Pause or resume a schedule; a resume also settles every fire up to ``now`` (the
        fires of the pause are skipped). The state then, None if the store has no such
        schedule."""
        ...

    async def remove_schedule(self, tenant_id: str, name: str) -> bool:
        """Drop a schedule's state (False: there was none)."""
        ...

    async def request_cancel(self, key: JobKey, reason: str) -> bool:
        """As a client: ask the scheduler to cancel a job (False: no such job, or it is
        terminal). The request is kept with the job until the scheduler writes it terminal."""
        ...

    async def inbox(self, limit: int = 1000) -> Inbox:
        """As the scheduler: at most ``limit`` jobs clients committed that the scheduler has
        not written since (oldest first), and the cancel requests of non-terminal jobs. Both
        come again until the scheduler's writes settle them, so a crash loses none."""
        ...

    async def wait_for_change(self, timeout: float) -> bool:
        """Wait until a client may have committed something (True) or ``timeout`` seconds
        passed (False)."""
        ...

    async def lease(self) -> Lease | None:
        """The current holder of the scheduler lease, or None."""
        ...

"""``MemoryStore``: the Store Protocol over a ``JobTable`` in this process (the default).

Nothing survives the process (``durable`` is False): the engine writes to the table directly
and at once, so the default pays no batching; the Protocol's coroutines serve reads, and make
this the reference implementation that ``work.testing.check_store`` runs against. One object
plays both roles: its own ``submit`` goes to its own ``inbox``.
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as _dt
import hashlib
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence

from msgspec.structs import replace

from .._errors import ConflictError, StoreError, ValidationError
from .._ir import TERMINAL_STATUSES, Job
from ._memory_table import INDEX_SLICE, JobTable
from ._protocol import Inbox, JobKey, Lease, ListQuery, Recovered, Role, WriteBatch
from ._schedules import ScheduleState
from ._unique import Claim, claims_of, holds

__all__ = ["MemoryStore"]


class MemoryStore:
    """Jobs in this process's memory; finished ones kept ``finished_ttl_s`` seconds and at most
    ``finished_max`` of them."""

    url = "memory://"
    durable = False

    def __init__(self, *, finished_ttl_s: float = 3600.0, finished_max: int = 100_000) -> None:
        self.table = JobTable(finished_ttl_s=finished_ttl_s, finished_max=finished_max)
        self._role: Role | None = None
        self._lease: Lease | None = None
        self._fence = 0
        self._state: bytes | None = None
        self._not_admitted: dict[JobKey, None] = {}  # client submits, oldest first
        self._cancels: dict[JobKey, str] = {}
        self._changes = 0  # client submits and cancel requests so far ...
        self._seen = 0  # ... and how many of them wait_for_change has reported
        self._changed = asyncio.Event()
        self._cursor_key = secrets.token_bytes(16)
        self._claims: dict[tuple[str, str], Claim] = {}  # (tenant_id, unique_key) -> claim
        self._schedules: dict[tuple[str, str], ScheduleState] = {}  # (tenant_id, name) ->

    # ---- lifecycle ------------------------------------------------------------------------

    async def open(self, role: Role = "scheduler") -> None:
        """Start serving (idempotent); as ``"scheduler"``, hold the lease."""
        if role not in ("scheduler", "client"):
            raise ValueError(f"role is 'scheduler' or 'client', got {role!r}")
        if self._role == "scheduler" or self._role == role:
            return
        self._role = role
        if role == "scheduler":
            self._fence += 1
            self._lease = Lease(
                pid=os.getpid(),
                host=socket.gethostname(),
                since=_dt.datetime.now(_dt.UTC),
                fence=self._fence,
            )

    async def close(self) -> None:
        """Stop serving (idempotent); the jobs stay in the object."""
        self._role = None
        self._lease = None

    def _require(self, scheduler: bool = False) -> None:
        if self._role is None:
            raise StoreError("the memory store is not open: call open() first")
        if scheduler and self._role != "scheduler":
            raise StoreError("only the scheduler writes to a store; this one is open as a client")

    # ---- the scheduler's writes and recovery -----------------------------------------------

    async def write(self, batch: WriteBatch) -> None:
        """Apply ``batch`` whole, or nothing of it (checked before anything changes)."""
        self._require(scheduler=True)
        table = self.table
        seen: set[JobKey] = set()
        for job in batch.inserts:
            key = (job.tenant_id, job.id)
            if key in seen or table.get(*key) is not None:
                raise ConflictError(
                    f"duplicate job id {job.id!r} for tenant {job.tenant_id!r}: the batch is "
                    f"not written"
                )
            seen.add(key)
        for job in batch.updates:
            key = (job.tenant_id, job.id)
            if key not in seen and table.get(*key) is None:
                raise StoreError(
                    f"update of job {job.id!r} (tenant {job.tenant_id!r}) that the "
                    f"store does not hold: the batch is not written"
                )
        now = time.monotonic()
        for job in batch.inserts:
            table.insert(job)
        for job in batch.updates:
            key = (job.tenant_id, job.id)
            table.put(job, now)
            self._not_admitted.pop(key, None)
            if job.status in TERMINAL_STATUSES:
                self._cancels.pop(key, None)
        for key in batch.deletes:
            table.remove(*key)
            self._not_admitted.pop(key, None)
            self._cancels.pop(key, None)
        if batch.state is not None:
            self._state = batch.state

    async def load(self) -> Recovered:
        """Every admitted non-terminal job in submission order, and the last state."""
        self._require(scheduler=True)
        waiting = self._not_admitted
        jobs = [
            job
            for job in self.table.in_order()
            if job.status not in TERMINAL_STATUSES and (job.tenant_id, job.id) not in waiting
        ]
        return Recovered(jobs=jobs, state=self._state)

    async def prune(self, finished_before: _dt.datetime, keep_max: int) -> int:
        """Drop finished jobs past ``finished_before``, and the oldest beyond ``keep_max``."""
        self._require(scheduler=True)
        return self.table.prune_finished(finished_before, keep_max)

    # ---- reads -----------------------------------------------------------------------------

    async def get_many(self, keys: Sequence[JobKey]) -> list[Job | None]:
        """Each job by (tenant_id, id), or None."""
        self._require()
        get = self.table.get
        return [get(tenant_id, job_id) for tenant_id, job_id in keys]

    async def owners(self, job_id: str) -> list[str]:
        """The tenants with a job with this id."""
        self._require()
        return self.table.owners(job_id)

    async def find_many(self, job_ids: Sequence[str]) -> dict[str, list[Job]]:
        """Every job with each of these ids, by tenant id (ids no job has left out)."""
        self._require()
        find = self.table.find
        return {job_id: found for job_id in job_ids if (found := find(job_id))}

    async def list(self, query: ListQuery) -> tuple[list[Job], str | None]:
        """A page from the table's ordered indexes; the cursor is bound to the query. The
        moves noted since the last reader are indexed first, ``INDEX_SLICE`` at a time with the
        loop free between slices (``_memory_table``: the engine's loop never waits for more)."""
        self._require()
        before = None if query.cursor is None else self._seq_of_cursor(query)
        table = self.table
        for _ in range(table.noted // INDEX_SLICE):  # (then what is left at once: writers
            if table.noted <= INDEX_SLICE:  # noting faster than the slices cannot hold it)
                break
            table.index_noted(INDEX_SLICE)
            await asyncio.sleep(0)
        jobs, after = table.list(
            query.tenant_id,
            namespace=query.namespace,
            status=query.status,
            kind=query.kind,
            limit=query.limit,
            cursor=before,
        )
        return jobs, None if after is None else self._cursor(query, after)

    def _signature(self, query: ListQuery, seq: str) -> str:
        text = "\0".join(
            (query.tenant_id, query.namespace or "", query.status or "", query.kind or "", seq)
        )
        return hashlib.blake2b(text.encode(), key=self._cursor_key, digest_size=8).hexdigest()

    def _cursor(self, query: ListQuery, seq: str) -> str:
        return f"{seq}.{self._signature(query, seq)}"

    def _seq_of_cursor(self, query: ListQuery) -> str:
        cursor = query.cursor
        seq, _, signature = (cursor or "").partition(".")
        if not seq.isdigit() or not secrets.compare_digest(signature, self._signature(query, seq)):
            shown = repr(cursor) if len(repr(cursor)) <= 60 else f"{repr(cursor)[:60]}..."
            raise ValidationError(
                f"cursor {shown} is not one this store gave for this listing: pass the "
                f"next_cursor of the previous page of the same listing, or None",
                path="$.cursor",
            )
        return seq

    # ---- unique keys -----------------------------------------------------------------------

    async def claim_unique(
        self, jobs: Sequence[Job], now: _dt.datetime
    ) -> builtins.list[str | None]:
        """Claim each job's unique key unless a job that holds it: None where claimed, else
        the holder's id. Claims and inserts happen in one step of the loop here (no await
        between), so a claim whose job the table does not hold (pruned, or never admitted)
        holds nothing."""
        self._require()
        return self._claim(jobs, now)

    def _claim(self, jobs: Sequence[Job], now: _dt.datetime) -> builtins.list[str | None]:
        claims, get, made = self._claims, self.table.get, {}
        holders: builtins.list[str | None] = []
        for claim in claims_of(jobs, now):
            slot = (claim.tenant_id, claim.unique_key)
            held = claims.get(slot)
            if held is not None:
                job = get(held.tenant_id, held.job_id)
                in_call = slot in made
                if (job is not None or in_call) and holds(
                    None if job is None else job.status, held.states, held.expires_at, now
                ):
                    holders.append(held.job_id)
                    continue
            claims[slot] = made[slot] = claim
            holders.append(None)
        return holders

    async def release_unique(self, keys: Sequence[JobKey]) -> None:
        """Drop the claims these jobs made (their submit failed after claiming)."""
        self._require()
        gone = set(keys)
        for slot, claim in list(self._claims.items()):
            if (claim.tenant_id, claim.job_id) in gone:
                del self._claims[slot]

    # ---- cron schedules ----------------------------------------------------------------------

    async def add_schedule(self, state: ScheduleState) -> ScheduleState:
        """Keep a schedule's state unless one is kept for its (tenant_id, name): the kept one."""
        self._require()
        return self._schedules.setdefault((state.tenant_id, state.name), state)

    async def schedules(self, tenant_id: str | None = None) -> builtins.list[ScheduleState]:
        """The schedules' states (of one tenant, or all), by tenant then name."""
        self._require()
        return [
            state
            for key, state in sorted(self._schedules.items())
            if tenant_id is None or key[0] == tenant_id
        ]

    async def advance_schedule(
        self,
        tenant_id: str,
        name: str,
        expected: _dt.datetime,
        settled_through: _dt.datetime,
        last_fire: _dt.datetime | None,
    ) -> bool:
        """Compare-and-set of a schedule's ``settled_through`` (unless paused)."""
        self._require()
        state = self._schedules.get((tenant_id, name))
        if state is None or state.paused or state.settled_through != expected:
            return False
        self._schedules[tenant_id, name] = replace(
            state,
            settled_through=settled_through,
            last_fire=state.last_fire if last_fire is None else last_fire,
        )
        return True

    async def pause_schedule(
        self, tenant_id: str, name: str, paused: bool, now: _dt.datetime
    ) -> ScheduleState | None:
        """Pause or resume (settling the pause's fires); the state then, or None."""
        self._require()
        state = self._schedules.get((tenant_id, name))
        if state is None:
            return None
        settled = state.settled_through if paused else max(state.settled_through, now)
        state = replace(state, paused=paused, settled_through=settled)
        self._schedules[tenant_id, name] = state
        return state

    async def remove_schedule(self, tenant_id: str, name: str) -> bool:
        """Drop a schedule's state (False: none)."""
        self._require()
        return self._schedules.pop((tenant_id, name), None) is not None

    # ---- clients ---------------------------------------------------------------------------

    async def submit(
        self, jobs: Sequence[Job], *, now: _dt.datetime | None = None
    ) -> builtins.list[str | None]:
        """Add jobs for the scheduler to admit (all, or none on a duplicate id), claiming
        their unique keys at ``now`` (default: the wall clock): None for each job added, the
        holder's id for a duplicate (not added)."""
        self._require()
        table = self.table
        keys = [(job.tenant_id, job.id) for job in jobs]
        seen: set[JobKey] = set()
        for key in keys:
            if key in seen or table.get(*key) is not None:
                raise ConflictError(
                    f"duplicate job id {key[1]!r} for tenant {key[0]!r}: nothing is submitted"
                )
            seen.add(key)
        holders = _claimed(self._claim, jobs, now)
        for key, job, holder in zip(keys, jobs, holders, strict=True):
            if holder is None:
                table.insert(job)
                self._not_admitted[key] = None
        self._changed_now()
        return holders

    async def request_cancel(self, key: JobKey, reason: str) -> bool:
        """Ask the scheduler to cancel a non-terminal job (False: unknown or terminal)."""
        self._require()
        job = self.table.get(*key)
        if job is None or job.status in TERMINAL_STATUSES:
            return False
        self._cancels.setdefault(key, reason)
        self._changed_now()
        return True

    async def inbox(self, limit: int = 1000) -> Inbox:
        """Client submits not written by the scheduler yet, and pending cancel requests."""
        self._require(scheduler=True)
        self._seen = self._changes
        get = self.table.get
        jobs = [job for key in list(self._not_admitted)[:limit] if (job := get(*key))]
        return Inbox(jobs=jobs, cancels=list(self._cancels.items()))

    async def wait_for_change(self, timeout: float) -> bool:
        """True once a submit or cancel request came since the last ``inbox`` or True."""
        self._require()
        if self._changes == self._seen:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                return False
        self._seen = self._changes
        return True

    def _changed_now(self) -> None:
        self._changes += 1
        self._changed.set()

    async def lease(self) -> Lease | None:
        """This object's lease while it is open as the scheduler."""
        return self._lease


def _claimed(
    claim: Callable[[Sequence[Job], _dt.datetime], list[str | None]],
    jobs: Sequence[Job],
    now: _dt.datetime | None,
) -> builtins.list[str | None]:
    """For each job, the holder of its unique key (None: claimed, or it has no key)."""
    unique = [job for job in jobs if job.constraints.unique_key is not None]
    if not unique:
        return [None] * len(jobs)
    got = iter(claim(unique, now or _dt.datetime.now(_dt.UTC)))
    return [None if job.constraints.unique_key is None else next(got) for job in jobs]

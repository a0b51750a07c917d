"""Live jobs: the core's record of every admitted job that is not terminal yet, and the one
place such a job changes status.

A job is kept under its id, or under (tenant id, id) when another tenant's live job already has
the id (ids are UUIDs: two tenants share one only by choice), so the common case costs what an
id-keyed table costs. A job counts in one cell, the counter of its (tenant, level, backend),
for its whole life; a status move checks the lifecycle's edge, moves one unit between the
cell's slots, and keeps the counts of waiting jobs (the core's, its tenant's, its namespace's)
and its tenant's activity up to date.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from msgspec.structs import replace

from .._ir import TERMINAL_STATUSES, Job, Status
from ._counters import QUEUED_SLOT, SLOT, SUBMITTED
from ._lifecycle import ALLOWED_TRANSITIONS, WAITING, check_transition

if TYPE_CHECKING:
    from ._messages import HandleReported
    from ._queues import Entry
    from ._registry import TenantRegistry

__all__ = ["LiveJobs"]

_QUEUED = Status.QUEUED


class LiveJobs:
    """The live jobs by (tenant id, id) (see the module docstring), and how many wait (pending
    plus queued)."""

    __slots__ = ("_tenants", "by_id", "shared", "waiting")

    def __init__(self, tenants: TenantRegistry) -> None:
        self.by_id: dict[str, Entry] = {}
        self.shared: dict[tuple[str, str], Entry] = {}  # ids another tenant's live job has
        self.waiting = 0
        self._tenants = tenants

    def __len__(self) -> int:
        return len(self.by_id) + len(self.shared)

    def get(self, tenant_id: str, job_id: str) -> Entry | None:
        """A tenant's live job, or None."""
        entry = self.by_id.get(job_id)
        if entry is not None and entry.tenant == tenant_id:
            return entry
        return self.shared.get((tenant_id, job_id)) if self.shared else None

    def owners(self, job_id: str) -> list[str]:
        """The tenants with a live job with this id (usually none or one)."""
        entry = self.by_id.get(job_id)
        found = [] if entry is None else [entry.tenant]
        if self.shared:
            found += [tenant for tenant, shared_id in self.shared if shared_id == job_id]
        return found

    def entries(self) -> list[Entry]:
        """Every live job's record."""
        return [*self.by_id.values(), *self.shared.values()]

    def admit(self, entry: Entry, now: float) -> None:
        """Keep a job just admitted (queued, or pending when it waits for its dependencies or
        its ``run_at``): counted as submitted and in its status, and waiting."""
        tenant = entry.tenant_state
        counter = entry.counter = tenant.counters.cell(entry.rank, entry.backend)
        job_id = entry.job.id
        if job_id in self.by_id:  # another tenant's live job has this id
            self.shared[(entry.tenant, job_id)] = entry
        else:
            self.by_id[job_id] = entry
        counter[SUBMITTED] += 1
        counter[QUEUED_SLOT if entry.status is _QUEUED else SLOT[entry.status]] += 1
        self.waiting += 1
        tenant.waiting += 1
        if not tenant.active:
            self._tenants.check_active(tenant, now)
        if tenant.limited:
            namespace = tenant.namespaces.get(entry.namespace)
            if namespace is not None:
                namespace.waiting += 1

    def restore(self, entry: Entry, now: float) -> None:
        """Keep a restored job in its status (``entry.status``): counted as submitted and in
        that status, and as waiting if it waits (its tenant's usage is its run's to count)."""
        tenant = entry.tenant_state
        counter = entry.counter = tenant.counters.cell(entry.rank, entry.backend)
        job_id = entry.job.id
        if job_id in self.by_id:
            self.shared[(entry.tenant, job_id)] = entry
        else:
            self.by_id[job_id] = entry
        counter[SUBMITTED] += 1
        counter[SLOT[entry.status]] += 1
        if entry.status in WAITING:
            self.waiting += 1
            tenant.waiting += 1
            namespace = tenant.namespaces.get(entry.namespace)
            if namespace is not None:
                namespace.waiting += 1
        self._tenants.check_active(tenant, now)

    def note_handle(self, event: HandleReported) -> Job | None:
        """Record the event's handle on the job's running attempt; the job's new snapshot, or
        None when that attempt is not running (it ended, or the id is unknown) or the handle
        is the one it has."""
        attempt, handle = event.attempt, event.handle
        entry = self.get(event.tenant_id, event.job_id)
        if entry is None or entry.status is not Status.RUNNING:
            return None
        job = entry.job
        if job.attempt != attempt or not job.attempts or job.attempts[-1].handle == handle:
            return None
        last = replace(job.attempts[-1], handle=handle)
        entry.job = replace(job, attempts=(*job.attempts[:-1], last))
        return entry.job

    def swap(self, old: Entry, new: Entry) -> None:
        """Keep ``new`` as the record of ``old``'s job (placed again on changed pools)."""
        job_id = old.job.id
        if self.by_id.get(job_id) is old:
            self.by_id[job_id] = new
        else:
            self.shared[(old.tenant, job_id)] = new

    def in_order(self) -> list[Entry]:
        """Every live job's record, in the order they were admitted (or restored)."""
        if not self.shared:
            return list(self.by_id.values())
        # (ids two tenants share: merged by admission time, jobs kept by id first on a tie)
        return sorted(self.entries(), key=lambda entry: entry.submitted)

    def move(self, entry: Entry, status: Status, job: Job, now: float) -> None:
        """The one place a live job changes status (to ``job``, its new snapshot): checks the
        edge, counts; a job that reaches a terminal status is no longer kept."""
        previous = entry.status
        if status not in ALLOWED_TRANSITIONS[previous]:
            check_transition(job.id, previous, status)  # raises, saying which edge
        counter = entry.counter
        counter[SLOT[previous]] -= 1
        counter[SLOT[status]] += 1
        was_waiting, is_waiting = previous in WAITING, status in WAITING
        if was_waiting is not is_waiting:
            step = 1 if is_waiting else -1
            self.waiting += step
            tenant = entry.tenant_state
            tenant.waiting += step
            if tenant.limited:
                namespace = tenant.namespaces.get(entry.namespace)
                if namespace is not None:
                    namespace.waiting += step
            if not tenant.running:  # (with a run, the tenant stays active whatever happens)
                self._tenants.check_active(tenant, now)
        entry.status = status
        entry.job = job
        entry.since = now
        if status in TERMINAL_STATUSES:
            if self.by_id.get(job.id) is entry:
                del self.by_id[job.id]
            else:
                del self.shared[(entry.tenant, job.id)]

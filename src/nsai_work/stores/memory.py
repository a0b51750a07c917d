"""The memory store (the seed's "ETS registry"): jobs by (tenant id, id), with indexes by
tenant, by (tenant, namespace) and by status that stay right through every transition.

Jobs are keyed by (tenant_id, id) because two tenants may use the same id: one tenant's ids tell
it nothing about another's, and cannot block them. Ids are UUIDs, so two tenants share one only
when a caller chose it: a job is stored under its id, and under the pair (tenant id, id) only
when another tenant's job already holds that id. Every lookup checks the tenant.

Finished jobs are kept for ``finished_ttl_s`` seconds and at most ``finished_max`` of them (the
oldest finished go first), so memory stays bounded however long the scheduler runs; a pruned job
is gone (``get`` raises NotFoundError). Nothing survives the process: use SQLite or Postgres for
that (later releases).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable
from itertools import islice

from .._errors import ConflictError, ValidationError
from .._ir import TERMINAL_STATUSES, Job, Status

__all__ = ["JobKey", "MemoryStore"]

#: (tenant id, job id)
JobKey = tuple[str, str]


class MemoryStore:
    """Jobs in dicts. Not thread-safe: the engine's loop is its only user."""

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
        # A job's slot: its id, or (tenant id, id) when another tenant's job holds the id.
        self._jobs: dict[str, Job] = {}
        self._shared: dict[JobKey, Job] = {}
        self._shared_ids: dict[str, int] = {}  # id -> how many jobs are in _shared under it
        self._next_seq = 0
        # tenant -> {job id: insertion sequence}: the sequence orders listings (newest first)
        # whatever the ids look like, and is the listing cursor.
        self._by_tenant: dict[str, dict[str, int]] = {}
        self._by_namespace: dict[tuple[str, str], dict[str, None]] = {}
        self._by_status: dict[Status, dict[str | JobKey, None]] = {s: {} for s in Status}
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
        slot: str | JobKey
        if holder is None:
            slot = job_id
            self._jobs[job_id] = job
        else:
            slot = (tenant_id, job_id)
            if holder.tenant_id == tenant_id or slot in self._shared:
                raise ConflictError(f"duplicate job id {job_id!r} for tenant {tenant_id!r}")
            self._shared[slot] = job
            self._shared_ids[job_id] = self._shared_ids.get(job_id, 0) + 1
        tenant = self._by_tenant.get(tenant_id)
        if tenant is None:
            tenant = self._by_tenant[tenant_id] = {}
        self._next_seq += 1
        tenant[job_id] = self._next_seq
        key = (tenant_id, job.namespace)
        namespace = self._by_namespace.get(key)
        if namespace is None:
            namespace = self._by_namespace[key] = {}
        namespace[job_id] = None
        self._by_status[job.status][slot] = None

    def put(self, job: Job, now: float) -> None:
        """Store a job's new snapshot (a transition); a terminal one starts its retention."""
        job_id, status, jobs = job.id, job.status, self._jobs
        slot: str | JobKey = job_id
        old = jobs.get(job_id)
        if old is not None and old.tenant_id == job.tenant_id:
            jobs[job_id] = job
        else:
            slot = (job.tenant_id, job_id)
            old = self._shared[slot]
            self._shared[slot] = job
        if old.status is not status:
            by_status = self._by_status
            del by_status[old.status][slot]
            by_status[status][slot] = None
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

    def _remove(self, tenant_id: str, job_id: str) -> None:
        job = self._jobs.get(job_id)
        slot: str | JobKey = job_id
        if job is not None and job.tenant_id == tenant_id:
            del self._jobs[job_id]
        else:
            slot = (tenant_id, job_id)
            job = self._shared.pop(slot, None)
            if job is None:
                return
            left = self._shared_ids[job_id] - 1
            if left:
                self._shared_ids[job_id] = left
            else:
                del self._shared_ids[job_id]
        tenant = self._by_tenant[tenant_id]
        del tenant[job_id]
        if not tenant:
            del self._by_tenant[tenant_id]
        key = (tenant_id, job.namespace)
        namespace = self._by_namespace[key]
        del namespace[job_id]
        if not namespace:
            del self._by_namespace[key]
        del self._by_status[job.status][slot]

    # ---- reads ------------------------------------------------------------------------------

    def get(self, tenant_id: str, job_id: str) -> Job | None:
        """A tenant's job's latest snapshot, or None."""
        job = self._jobs.get(job_id)
        if job is not None and job.tenant_id == tenant_id:
            return job
        return self._shared.get((tenant_id, job_id)) if self._shared else None

    def owners(self, job_id: str) -> list[str]:
        """The tenants that have a job with this id (usually none or one)."""
        job = self._jobs.get(job_id)
        found = [] if job is None else [job.tenant_id]
        if job_id in self._shared_ids:
            found += [tenant for tenant, shared in self._shared if shared == job_id]
        return found

    def __contains__(self, key: object) -> bool:
        """``(tenant_id, job_id) in store``."""
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        return self.get(key[0], key[1]) is not None

    def __len__(self) -> int:
        return len(self._jobs) + len(self._shared)

    def count(self, status: Status) -> int:
        """How many stored jobs have this status."""
        return len(self._by_status[status])

    def keys_with_status(self, status: Status) -> list[JobKey]:
        """(tenant id, job id) of the stored jobs in ``status``."""
        return [
            slot if isinstance(slot, tuple) else (self._jobs[slot].tenant_id, slot)
            for slot in self._by_status[status]
        ]

    def list(
        self,
        tenant_id: str,
        *,
        namespace: str | None = None,
        status: Status | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """A page of a tenant's jobs, newest (last submitted) first, after ``cursor`` (the
        ``next_cursor`` of the previous page); returns (jobs, next cursor or None)."""
        if cursor is not None:
            after = _parse_cursor(cursor)
        order = self._by_tenant.get(tenant_id, {})
        candidates: Iterable[str] = order
        if namespace is not None:
            candidates = self._by_namespace.get((tenant_id, namespace), {})
        if status is not None:  # walk the smaller of the status index and the candidates
            with_status = self._by_status[status]
            if len(with_status) < len(candidates):  # type: ignore[arg-type]  # (a dict)
                mine = candidates
                candidates = (i for i in self._ids_of(tenant_id, with_status) if i in mine)
            else:
                candidates = (i for i in candidates if self._status_of(tenant_id, i) is status)
        if cursor is not None:
            candidates = (i for i in candidates if order[i] < after)
        page = heapq.nlargest(limit + 1, candidates, key=order.__getitem__)
        jobs = [self.get(tenant_id, i) for i in islice(page, limit)]
        more = len(page) > limit
        found = [job for job in jobs if job is not None]
        return found, (str(order[found[-1].id]) if more and found else None)

    def _ids_of(self, tenant_id: str, slots: Iterable[str | JobKey]) -> Iterable[str]:
        """The ids of a tenant's jobs among these slots."""
        for slot in slots:
            if isinstance(slot, tuple):
                if slot[0] == tenant_id:
                    yield slot[1]
            elif self._jobs[slot].tenant_id == tenant_id:
                yield slot

    def _status_of(self, tenant_id: str, job_id: str) -> Status | None:
        job = self.get(tenant_id, job_id)
        return None if job is None else job.status


def _parse_cursor(cursor: str) -> int:
    if not cursor.isdigit():
        raise ValidationError(
            f"cursor must be the next_cursor of a previous page, got {cursor!r}", path="$.cursor"
        )
    return int(cursor)

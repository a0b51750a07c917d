"""The memory store (the seed's "ETS registry"): jobs by (tenant id, id), with indexes by
tenant, by (tenant, namespace), by status and by id (the tenants that have a job with that id)
that stay right through every transition.

Jobs are keyed by (tenant_id, id) because two tenants may use the same id: one tenant's ids tell
it nothing about another's, and cannot block them.

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
        self._jobs: dict[JobKey, Job] = {}
        self._next_seq = 0
        # tenant -> {job id: insertion sequence}: the sequence orders listings (newest first)
        # whatever the ids look like, and is the listing cursor.
        self._by_tenant: dict[str, dict[str, int]] = {}
        self._by_namespace: dict[tuple[str, str], dict[str, None]] = {}
        self._by_status: dict[Status, dict[JobKey, None]] = {status: {} for status in Status}
        # job id -> the first tenant that has it; the rare others in _more_owners
        self._owner: dict[str, str] = {}
        self._more_owners: dict[str, list[str]] = {}
        self._finished: deque[tuple[float, JobKey]] = deque()

    # ---- writes -----------------------------------------------------------------------------

    def insert(self, job: Job) -> None:
        """Add a newly admitted job."""
        job_id, tenant_id = job.id, job.tenant_id
        key = (tenant_id, job_id)
        if key in self._jobs:
            raise ConflictError(f"duplicate job id {job_id!r} for tenant {tenant_id!r}")
        self._jobs[key] = job
        owner = self._owner.setdefault(job_id, tenant_id)
        if owner != tenant_id:
            self._more_owners.setdefault(job_id, []).append(tenant_id)
        tenant = self._by_tenant.get(tenant_id)
        if tenant is None:
            tenant = self._by_tenant[tenant_id] = {}
        self._next_seq += 1
        tenant[job_id] = self._next_seq
        namespace_key = (tenant_id, job.namespace)
        namespace = self._by_namespace.get(namespace_key)
        if namespace is None:
            namespace = self._by_namespace[namespace_key] = {}
        namespace[job_id] = None
        self._by_status[job.status][key] = None

    def put(self, job: Job, now: float) -> None:
        """Store a job's new snapshot (a transition); a terminal one starts its retention."""
        key, status, jobs = (job.tenant_id, job.id), job.status, self._jobs
        old = jobs[key].status
        jobs[key] = job
        if old is not status:
            by_status = self._by_status
            del by_status[old][key]
            by_status[status][key] = None
            if status in TERMINAL_STATUSES:
                finished = self._finished
                finished.append((now, key))
                if len(finished) > self.finished_max or finished[0][0] < now - self.finished_ttl_s:
                    self.prune(now)

    def prune(self, now: float) -> int:
        """Drop finished jobs past their TTL or beyond the cap; returns how many went."""
        finished = self._finished
        dropped = 0
        horizon = now - self.finished_ttl_s
        while finished and (len(finished) > self.finished_max or finished[0][0] < horizon):
            _, key = finished.popleft()
            self._remove(key)
            dropped += 1
        return dropped

    def _remove(self, key: JobKey) -> None:
        job = self._jobs.pop(key, None)
        if job is None:
            return
        tenant_id, job_id = key
        more = self._more_owners.get(job_id)
        if more is None:
            del self._owner[job_id]
        else:
            if self._owner[job_id] == tenant_id:
                self._owner[job_id] = more.pop()
            else:
                more.remove(tenant_id)
            if not more:
                del self._more_owners[job_id]
        tenant = self._by_tenant[tenant_id]
        del tenant[job_id]
        if not tenant:
            del self._by_tenant[tenant_id]
        namespace_key = (tenant_id, job.namespace)
        namespace = self._by_namespace[namespace_key]
        del namespace[job_id]
        if not namespace:
            del self._by_namespace[namespace_key]
        del self._by_status[job.status][key]

    # ---- reads ------------------------------------------------------------------------------

    def get(self, tenant_id: str, job_id: str) -> Job | None:
        """A tenant's job's latest snapshot, or None."""
        return self._jobs.get((tenant_id, job_id))

    def owners(self, job_id: str) -> list[str]:
        """The tenants that have a job with this id (usually none or one)."""
        owner = self._owner.get(job_id)
        if owner is None:
            return []
        return [owner, *self._more_owners.get(job_id, ())]

    def __contains__(self, key: object) -> bool:
        """``(tenant_id, job_id) in store``."""
        return key in self._jobs

    def __len__(self) -> int:
        return len(self._jobs)

    def count(self, status: Status) -> int:
        """How many stored jobs have this status."""
        return len(self._by_status[status])

    def keys_with_status(self, status: Status) -> list[JobKey]:
        """(tenant id, job id) of the stored jobs in ``status``."""
        return list(self._by_status[status])

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
        order = self._by_tenant.get(tenant_id, {})
        candidates: Iterable[str]
        if namespace is not None:
            candidates = self._by_namespace.get((tenant_id, namespace), {})
        else:
            candidates = order
        if status is not None:
            by_status = self._by_status[status]
            if len(by_status) < len(candidates):
                candidates = (
                    job_id
                    for owner, job_id in by_status
                    if owner == tenant_id
                    and (namespace is None or self._jobs[owner, job_id].namespace == namespace)
                )
            else:
                candidates = (i for i in candidates if (tenant_id, i) in by_status)
        if cursor is not None:
            after = _parse_cursor(cursor)
            candidates = (i for i in candidates if order[i] < after)
        page = heapq.nlargest(limit + 1, candidates, key=order.__getitem__)
        jobs = [self._jobs[tenant_id, i] for i in islice(page, limit)]
        more = len(page) > limit
        return jobs, (str(order[jobs[-1].id]) if more and jobs else None)


def _parse_cursor(cursor: str) -> int:
    if not cursor.isdigit():
        raise ValidationError(
            f"cursor must be the next_cursor of a previous page, got {cursor!r}", path="$.cursor"
        )
    return int(cursor)

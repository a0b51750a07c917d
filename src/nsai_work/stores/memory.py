"""The memory store (the seed's "ETS registry"): jobs by id, with indexes by tenant, by
(tenant, namespace) and by status that stay right through every transition.

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

__all__ = ["MemoryStore"]


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
        self._jobs: dict[str, Job] = {}
        self._next_seq = 0
        # tenant -> {job id: insertion sequence}: the sequence orders listings (newest first)
        # whatever the ids look like, and is the listing cursor.
        self._by_tenant: dict[str, dict[str, int]] = {}
        self._by_namespace: dict[tuple[str, str], dict[str, None]] = {}
        self._by_status: dict[Status, dict[str, None]] = {status: {} for status in Status}
        self._finished: deque[tuple[float, str]] = deque()

    # ---- writes -----------------------------------------------------------------------------

    def insert(self, job: Job) -> None:
        """Add a newly admitted job."""
        job_id = job.id
        if job_id in self._jobs:
            raise ConflictError(f"duplicate job id {job_id!r}")
        self._jobs[job_id] = job
        tenant = self._by_tenant.get(job.tenant_id)
        if tenant is None:
            tenant = self._by_tenant[job.tenant_id] = {}
        self._next_seq += 1
        tenant[job_id] = self._next_seq
        key = (job.tenant_id, job.namespace)
        namespace = self._by_namespace.get(key)
        if namespace is None:
            namespace = self._by_namespace[key] = {}
        namespace[job_id] = None
        self._by_status[job.status][job_id] = None

    def put(self, job: Job, now: float) -> None:
        """Store a job's new snapshot (a transition); a terminal one starts its retention."""
        job_id, status, jobs = job.id, job.status, self._jobs
        old = jobs[job_id].status
        jobs[job_id] = job
        if old is not status:
            by_status = self._by_status
            del by_status[old][job_id]
            by_status[status][job_id] = None
            if status in TERMINAL_STATUSES:
                finished = self._finished
                finished.append((now, job_id))
                if len(finished) > self.finished_max or finished[0][0] < now - self.finished_ttl_s:
                    self.prune(now)

    def prune(self, now: float) -> int:
        """Drop finished jobs past their TTL or beyond the cap; returns how many went."""
        finished = self._finished
        dropped = 0
        horizon = now - self.finished_ttl_s
        while finished and (len(finished) > self.finished_max or finished[0][0] < horizon):
            _, job_id = finished.popleft()
            self._remove(job_id)
            dropped += 1
        return dropped

    def _remove(self, job_id: str) -> None:
        job = self._jobs.pop(job_id, None)
        if job is None:
            return
        tenant = self._by_tenant[job.tenant_id]
        del tenant[job_id]
        if not tenant:
            del self._by_tenant[job.tenant_id]
        key = (job.tenant_id, job.namespace)
        namespace = self._by_namespace[key]
        del namespace[job_id]
        if not namespace:
            del self._by_namespace[key]
        del self._by_status[job.status][job_id]

    # ---- reads ------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        """The job's latest snapshot, or None."""
        return self._jobs.get(job_id)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def __len__(self) -> int:
        return len(self._jobs)

    def count(self, status: Status) -> int:
        """How many stored jobs have this status."""
        return len(self._by_status[status])

    def ids_with_status(self, status: Status) -> list[str]:
        """Ids of the stored jobs in ``status``."""
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
                    i
                    for i in by_status
                    if i in order and (namespace is None or self._jobs[i].namespace == namespace)
                )
            else:
                candidates = (i for i in candidates if i in by_status)
        if cursor is not None:
            after = _parse_cursor(cursor)
            candidates = (i for i in candidates if order[i] < after)
        page = heapq.nlargest(limit + 1, candidates, key=order.__getitem__)
        jobs = [self._jobs[i] for i in islice(page, limit)]
        more = len(page) > limit
        return jobs, (str(order[jobs[-1].id]) if more and jobs else None)


def _parse_cursor(cursor: str) -> int:
    if not cursor.isdigit():
        raise ValidationError(
            f"cursor must be the next_cursor of a previous page, got {cursor!r}", path="$.cursor"
        )
    return int(cursor)

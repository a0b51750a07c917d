"""The memory store (the seed's "ETS registry"): jobs by (tenant id, id), with indexes by
tenant, namespace and status, and by id (the tenants that have a job with that id), that stay
right through every transition.

Jobs are keyed by (tenant_id, id) because two tenants may use the same id: one tenant's ids tell
it nothing about another's, and cannot block them. The store keeps each tenant's jobs and
indexes together, so a transition touches one tenant's dicts by plain string keys.

Finished jobs are kept for ``finished_ttl_s`` seconds and at most ``finished_max`` of them (the
oldest finished go first), so memory stays bounded however long the scheduler runs; a pruned job
is gone (``get`` raises NotFoundError). Nothing survives the process: use SQLite or Postgres for
that (later releases).
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from itertools import islice

from .._errors import ConflictError, ValidationError
from .._ir import TERMINAL_STATUSES, Job, Status

__all__ = ["JobKey", "MemoryStore"]

#: (tenant id, job id)
JobKey = tuple[str, str]


class _TenantJobs:
    """One tenant's jobs and their indexes."""

    __slots__ = ("by_namespace", "by_status", "jobs", "order")

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        # job id -> insertion sequence: orders listings (newest first) whatever the ids look
        # like, and is the listing cursor
        self.order: dict[str, int] = {}
        self.by_namespace: defaultdict[str, dict[str, None]] = defaultdict(dict)
        self.by_status: defaultdict[Status, dict[str, None]] = defaultdict(dict)


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
        self._tenants: dict[str, _TenantJobs] = {}
        self._count = 0
        self._next_seq = 0
        # job id -> the first tenant that has it; the rare others in _more_owners
        self._owner: dict[str, str] = {}
        self._more_owners: dict[str, list[str]] = {}
        #: ``first_owner(job_id)``: the first tenant with a job of this id, or None; and
        #: ``shared_ids``, the ids other tenants have too (read-only: for lookups of many ids)
        self.first_owner = self._owner.get
        self.shared_ids: Mapping[str, object] = self._more_owners
        self._finished: deque[tuple[float, str, str]] = deque()  # (when, tenant, id)

    # ---- writes -----------------------------------------------------------------------------

    def insert(self, job: Job) -> None:
        """Add a newly admitted job."""
        job_id, tenant_id = job.id, job.tenant_id
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            tenant = self._tenants[tenant_id] = _TenantJobs()
        elif job_id in tenant.jobs:
            raise ConflictError(f"duplicate job id {job_id!r} for tenant {tenant_id!r}")
        tenant.jobs[job_id] = job
        owner = self._owner.setdefault(job_id, tenant_id)
        if owner != tenant_id:
            self._more_owners.setdefault(job_id, []).append(tenant_id)
        self._next_seq += 1
        tenant.order[job_id] = self._next_seq
        tenant.by_namespace[job.namespace][job_id] = None
        tenant.by_status[job.status][job_id] = None
        self._count += 1

    def put(self, job: Job, now: float) -> None:
        """Store a job's new snapshot (a transition); a terminal one starts its retention."""
        tenant, job_id, status = self._tenants[job.tenant_id], job.id, job.status
        jobs = tenant.jobs
        old = jobs[job_id].status
        jobs[job_id] = job
        if old is not status:
            by_status = tenant.by_status
            del by_status[old][job_id]
            by_status[status][job_id] = None
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
        tenant = self._tenants.get(tenant_id)
        job = None if tenant is None else tenant.jobs.pop(job_id, None)
        if tenant is None or job is None:
            return
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
        del tenant.order[job_id]
        namespace = tenant.by_namespace[job.namespace]
        del namespace[job_id]
        if not namespace:
            del tenant.by_namespace[job.namespace]
        del tenant.by_status[job.status][job_id]
        self._count -= 1
        if not tenant.jobs:
            del self._tenants[tenant_id]

    # ---- reads ------------------------------------------------------------------------------

    def get(self, tenant_id: str, job_id: str) -> Job | None:
        """A tenant's job's latest snapshot, or None."""
        tenant = self._tenants.get(tenant_id)
        return None if tenant is None else tenant.jobs.get(job_id)

    def owners(self, job_id: str) -> list[str]:
        """The tenants that have a job with this id (usually none or one)."""
        owner = self._owner.get(job_id)
        if owner is None:
            return []
        return [owner, *self._more_owners.get(job_id, ())]

    def __contains__(self, key: object) -> bool:
        """``(tenant_id, job_id) in store``."""
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        tenant = self._tenants.get(key[0])
        return tenant is not None and key[1] in tenant.jobs

    def __len__(self) -> int:
        return self._count

    def count(self, status: Status) -> int:
        """How many stored jobs have this status (O(tenants); the core keeps live counts)."""
        return sum(len(tenant.by_status.get(status, ())) for tenant in self._tenants.values())

    def get_many(self, tenant_ids: Iterable[str], job_ids: Iterable[str]) -> list[Job | None]:
        """``get`` of each (tenant id, job id) pair, in order (one call for a batch)."""
        tenants = self._tenants
        found: list[Job | None] = []
        for tenant_id, job_id in zip(tenant_ids, job_ids, strict=True):
            tenant = tenants.get(tenant_id)
            found.append(None if tenant is None else tenant.jobs.get(job_id))
        return found

    def keys_with_status(self, status: Status) -> list[JobKey]:
        """(tenant id, job id) of the stored jobs in ``status`` (O(tenants + those jobs))."""
        return [
            (tenant_id, job_id)
            for tenant_id, tenant in self._tenants.items()
            for job_id in tenant.by_status.get(status, ())
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
        tenant = self._tenants.get(tenant_id)
        if cursor is not None:
            after = _parse_cursor(cursor)
        if tenant is None:
            return [], None
        order = tenant.order
        pool: Mapping[str, object] = (
            order if namespace is None else tenant.by_namespace.get(namespace, {})
        )
        candidates: Iterable[str] = pool
        if status is not None:  # walk the smaller of the two indexes, look up in the other
            with_status = tenant.by_status.get(status, {})
            small, big = (
                (with_status, pool) if len(with_status) < len(pool) else (pool, with_status)
            )
            candidates = (i for i in small if i in big)
        if cursor is not None:
            candidates = (i for i in candidates if order[i] < after)
        page = heapq.nlargest(limit + 1, candidates, key=order.__getitem__)
        jobs = [tenant.jobs[i] for i in islice(page, limit)]
        more = len(page) > limit
        return jobs, (str(order[jobs[-1].id]) if more and jobs else None)


def _parse_cursor(cursor: str) -> int:
    if not cursor.isdigit():
        raise ValidationError(
            f"cursor must be the next_cursor of a previous page, got {cursor!r}", path="$.cursor"
        )
    return int(cursor)

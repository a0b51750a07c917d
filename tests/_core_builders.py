"""Builders for tests of the pure scheduling core: jobs, pools, routes, and a small driver that
feeds events at a fake clock and keeps what the core decided."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from nsai_work._ir import Constraints, Job, Pool, Priority, Resources, RetryPolicy, Status
from nsai_work.core import (
    ArmTimer,
    Cancel,
    Decision,
    Dispatch,
    Event,
    Outcome,
    Record,
    Route,
    RunEnded,
    SchedulingCore,
    Submit,
    TimerFired,
)

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
D = TypeVar("D")

#: No retries, no jitter: what most tests want unless they test retries.
ONE_SHOT = RetryPolicy(max_attempts=1, jitter=False)


def make_job(
    job_id: str,
    *,
    tenant: str = "acme",
    priority: Priority | str = Priority.BATCH,
    cpu: float | None = None,
    memory_mb: int | None = None,
    gpu: str | None = None,
    gpu_count: int = 0,
    timeout_ms: int | None = None,
    policy: RetryPolicy = ONE_SHOT,
) -> Job:
    """A job with a fixed id and creation time (so runs of the core are reproducible)."""
    return Job(
        kind="step",
        tenant_id=tenant,
        priority=Priority(priority),
        resources=Resources(
            cpu=cpu, memory_mb=memory_mb, gpu=gpu, gpu_count=gpu_count, timeout_ms=timeout_ms
        ),
        constraints=Constraints(retry_policy=policy),
        id=job_id,
        created_at=T0,
    )


def route(backend: str, *pools: str) -> Route:
    """A one-backend route."""
    return ((backend, pools),)


def key_of(core: SchedulingCore, job_id: str, tenant: str = "acme") -> tuple[str, str]:
    """The (tenant id, job id) of a live job with this id (tests use ids no two tenants
    share), or ``(tenant, job_id)`` when none is live."""
    for entry in core.live_entries():
        if entry.job.id == job_id:
            return (entry.tenant, entry.job.id)
    return (tenant, job_id)


def of_type(decisions: Iterable[Decision], kind: type[D]) -> list[D]:
    """The decisions of one kind, in order."""
    return [d for d in decisions if isinstance(d, kind)]


def records_of(decisions: Iterable[Decision], job_id: str) -> list[Record]:
    """The Records of one job, in order."""
    return [d for d in decisions if isinstance(d, Record) and d.job.id == job_id]


def dispatched_ids(decisions: Iterable[Decision]) -> list[str]:
    """Ids of the jobs dispatched, in order."""
    return [d.job.id for d in decisions if isinstance(d, Dispatch)]


class Driver:
    """A fake engine around one core: a settable clock, and helpers for each event."""

    def __init__(
        self,
        pools: Mapping[str, Sequence[Pool]],
        *,
        rand: Callable[[], float] | None = None,
        max_waiting: int | None = None,
        now: float = 1000.0,
    ) -> None:
        self.core = SchedulingCore(
            pools=pools,
            rand=rand or random.Random(0).random,
            max_waiting=max_waiting,
            tenant_idle_ttl_s=None,  # (no idle-tenant sweep timers among the decisions)
        )
        self.now = now
        self.tenants: dict[str, str] = {}  # job id -> its tenant, for every job submitted

    def key(self, job_id: str) -> tuple[str, str]:
        """(tenant id, job id) of a job submitted through this driver (tests keep ids unique
        across tenants); tenant "acme" for an id never submitted."""
        return (self.tenants.get(job_id, "acme"), job_id)

    def handle(self, event: Event, at: float | None = None) -> list[Decision]:
        if at is not None:
            assert at >= self.now, "the fake clock never goes back"
            self.now = at
        return self.core.handle(event, self.now)

    def submit(self, jobs: Sequence[Job], one_route: Route) -> list[Decision]:
        """Submit a batch whose jobs all take the same route."""
        return self.submit_each(jobs, [one_route] * len(jobs))

    def submit_each(self, jobs: Sequence[Job], routes: Sequence[Route]) -> list[Decision]:
        """Submit a batch with one route per job."""
        for job in jobs:
            self.tenants.setdefault(job.id, job.tenant_id)
        return self.handle(Submit(tuple(jobs), tuple(routes)))

    def end(self, job_id: str, attempt: int, outcome: Outcome) -> list[Decision]:
        return self.handle(RunEnded(*self.key(job_id), attempt, outcome))

    def cancel(self, job_id: str, reason: str = "requested") -> list[Decision]:
        return self.handle(Cancel(*self.key(job_id), reason))

    def fire(self, timer: ArmTimer) -> list[Decision]:
        """Advance the clock to the timer's time and feed it back."""
        return self.handle(TimerFired(timer.key), at=max(self.now, timer.at))

    def status(self, job_id: str) -> Status | None:
        job = self.core.get(*self.key(job_id))
        return None if job is None else job.status

"""``SchedulingCore``: the pure scheduling state machine.

``decisions = core.handle(event, now)``. The core reads no clock, does no I/O, starts no thread
and owns no randomness (jitter comes from the injected ``rand``), so the same events, clock
readings and random source give the same decisions. The engine carries the decisions out.

What it decides here: admission (a batch is admitted whole or not at all), routing to the first
backend whose pools could ever hold the job, strict priority over per-(level, pool group,
tenant) FIFOs, reservation of pool capacity on dispatch and release when the run has really
ended, retries with backoff, timeouts, and cancellation.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final

from msgspec.structs import replace

from .._errors import ConfigurationError, ConflictError, QueueFullError, UnschedulableError
from .._ir import Attempt, Job, JobError, Pool, Priority, Status
from .._stats import Counts, PoolStats, PoolUsage, Stats
from ._capacity import NO_NEEDS, Needs, PoolState, Reservation, needs_of
from ._lifecycle import ALLOWED_TRANSITIONS, check_transition
from ._messages import (
    ArmTimer,
    Cancel,
    Dispatch,
    Event,
    Failed,
    PoolsChanged,
    Record,
    Reject,
    Route,
    RunEnded,
    StopRun,
    Submit,
    Succeeded,
    TimerFired,
)
from ._queues import Entry, ReadyQueues
from ._retry import backoff_delay_ms

__all__ = ["Decision", "SchedulingCore"]

Decision = Reject | Record | Dispatch | ArmTimer | StopRun

_UTC: Final = _dt.UTC
# Counter slots, by status; then cumulative submitted and rejected.
_SLOT: Final = {status: i for i, status in enumerate(Status)}
_QUEUED_SLOT: Final = _SLOT[Status.QUEUED]
_SUBMITTED: Final = len(_SLOT)
_REJECTED: Final = _SUBMITTED + 1
_PENDING, _QUEUED, _RUNNING = Status.PENDING, Status.QUEUED, Status.RUNNING
_TIMEOUT_KEY: Final = "timeout"
_READY_KEY: Final = "ready"


class _Run:
    """A dispatched execution: holds its reservation until the engine reports its end."""

    __slots__ = ("backend", "reservation")

    def __init__(self, reservation: Reservation, backend: str) -> None:
        self.reservation = reservation
        self.backend = backend


class SchedulingCore:
    """The scheduling state of one scheduler; feed it events, carry out its decisions.

    ``pools`` maps each backend name to the pools it offers (pool names are unique across
    backends). ``rand`` returns floats in [0, 1) for retry jitter. ``max_waiting`` caps pending
    plus queued jobs (None: no cap).
    """

    def __init__(
        self,
        *,
        pools: Mapping[str, Sequence[Pool]],
        rand: Callable[[], float],
        max_waiting: int | None = None,
    ) -> None:
        if max_waiting is not None and max_waiting < 0:
            raise ConfigurationError(f"max_waiting must be >= 0 or None, got {max_waiting}")
        self._rand = rand
        self._max_waiting = max_waiting
        self._pools: dict[str, PoolState] = {}
        for backend, specs in pools.items():
            self._add_pools(backend, specs)
        self._jobs: dict[str, Entry] = {}
        self._runs: dict[tuple[str, int], _Run] = {}
        self._queues = ReadyQueues()
        self._waiting = 0
        self._route_cache: dict[Route, tuple[str, tuple[str, ...]] | None] = {}
        self._totals = self._new_counter()
        self._by_tenant: dict[str, list[int]] = {}
        self._by_level = [self._new_counter() for _ in range(4)]
        self._by_backend: dict[str, list[int]] = {}
        self._counter_sets: dict[tuple[str, int, str], tuple[list[int], ...]] = {}
        # Per handle() call: the clock reading, its datetime, and where decisions go.
        self._now = 0.0
        self._now_dt = _dt.datetime.fromtimestamp(0.0, _UTC)
        self._out: list[Decision] = []

    # ---- the one entry point ---------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Decision]:
        """Apply one event at time ``now`` (seconds, the engine's clock); return decisions in
        the order the engine must carry them out."""
        if now != self._now:
            self._now = now
            self._now_dt = _dt.datetime.fromtimestamp(now, _UTC)
        out: list[Decision] = []
        self._out = out
        kind = type(event)
        if kind is RunEnded:
            self._run_ended(event)  # type: ignore[arg-type]
        elif kind is Submit:
            if not self._submit(event):  # type: ignore[arg-type]
                return out
        elif kind is Cancel:
            self._cancel(event)  # type: ignore[arg-type]
        elif kind is TimerFired:
            self._timer(event)  # type: ignore[arg-type]
        elif kind is PoolsChanged:
            self._pools_changed(event)  # type: ignore[arg-type]
        else:
            raise TypeError(f"SchedulingCore.handle: unknown event {event!r}")
        self._queues.dispatch(self._try_start)
        return out

    # ---- queries (no decisions) --------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        """The current snapshot of a live job, or None if it is not live here."""
        entry = self._jobs.get(job_id)
        return None if entry is None else entry.job

    def waiting_reason(self, job_id: str) -> str | None:
        """Why a pending or queued job is not running now; None for any other."""
        entry = self._jobs.get(job_id)
        if entry is None:
            return None
        if entry.status is _PENDING:
            return entry.job.waiting_reason
        if entry.status is _QUEUED:
            return self._queued_reason(entry)
        return None

    def _queued_reason(self, entry: Entry) -> str:
        if self._queues.competes_above(entry):
            return "higher_priority_backlog"
        return "no_capacity"

    @property
    def waiting(self) -> int:
        """Pending plus queued jobs."""
        return self._waiting

    @property
    def live_jobs(self) -> int:
        """Jobs admitted and not yet terminal."""
        return len(self._jobs)

    @property
    def active_runs(self) -> int:
        """Executions dispatched whose end has not been reported (they hold reservations)."""
        return len(self._runs)

    def pool_states(self) -> Mapping[str, PoolState]:
        """Every pool's state, by name (read-only use: for checks and stats)."""
        return self._pools

    def live_entries(self) -> Iterable[Entry]:
        """The core's record of every live job (read-only use: for checks)."""
        return self._jobs.values()

    def queued_in_order(self) -> list[list[Job]]:
        """Queued jobs per level, each level's per-tenant FIFOs concatenated (for checks)."""
        levels: list[list[Job]] = [[] for _ in range(4)]
        for entry in self._queues.entries():
            levels[entry.rank].append(entry.job)
        return levels

    def stats(self) -> Stats:
        """Counts by status, per priority, tenant and backend; pools; waiting reasons."""
        reasons: dict[str, int] = {}
        pending = self._totals[_SLOT[_PENDING]]
        if pending:
            for entry in self._jobs.values():
                if entry.status is _PENDING:
                    reason = entry.job.waiting_reason or "pending"
                    reasons[reason] = reasons.get(reason, 0) + 1
        for level in self._queues.levels:
            for queue in level.values():
                if queue.count:
                    reason = self._queued_reason(next(queue.entries()))
                    reasons[reason] = reasons.get(reason, 0) + queue.count
        return Stats(
            totals=_counts(self._totals),
            by_priority={p.value: _counts(self._by_level[p.rank]) for p in Priority},
            by_tenant={t: _counts(c) for t, c in self._by_tenant.items()},
            by_backend={b: _counts(c) for b, c in self._by_backend.items()},
            pools={
                name: PoolStats(
                    backend=pool.backend,
                    capacity=pool.spec,
                    used=PoolUsage(**pool.usage()),  # type: ignore[arg-type]
                )
                for name, pool in self._pools.items()
            },
            waiting_reasons=reasons,
        )

    # ---- admission ---------------------------------------------------------------------------

    def _submit(self, event: Submit) -> bool:
        jobs = event.jobs
        count = len(jobs)
        if len(event.routes) != count:
            raise ValueError("Submit: one route per job is required")
        if self._max_waiting is not None and self._waiting + count > self._max_waiting:
            self._out.append(
                Reject(
                    QueueFullError(
                        f"queue full: {self._waiting} jobs are waiting and max_waiting is "
                        f"{self._max_waiting}, so {count} more cannot be admitted; retry later "
                        f"(back-pressure) or raise max_waiting"
                    )
                )
            )
            self._count_rejected(jobs)
            return False
        plans: list[tuple[Job, Needs, str, tuple[str, ...]]] = []
        seen: set[str] = set()
        for index, job in enumerate(jobs):
            if job.id in self._jobs or job.id in seen:
                self._out.append(
                    Reject(
                        ConflictError(
                            f"duplicate job id {job.id!r}: a job with this id already exists; "
                            f"omit id to get a fresh one"
                        ),
                        index,
                    )
                )
                self._count_rejected(jobs)
                return False
            if count > 1:
                seen.add(job.id)
            needs = needs_of(job.resources)
            choice = self._choose_route(needs, event.routes[index])
            if choice is None:
                self._out.append(Reject(self._unschedulable(needs, event.routes[index]), index))
                self._count_rejected(jobs)
                return False
            plans.append((job, needs, choice[0], choice[1]))
        now, at = self._now, self._now_dt
        for job, needs, backend, group in plans:
            job = replace(job, status=_QUEUED, backend=backend, submitted_at=at, queued_at=at)
            entry = Entry(
                job=job,
                tenant=job.tenant_id,
                rank=job.priority.rank,
                needs=needs,
                backend=backend,
                group=group,
                status=_QUEUED,
                since=now,
                submitted=now,
            )
            entry.counters = self._counters(entry)
            self._jobs[job.id] = entry
            for counter in entry.counters:
                counter[_SUBMITTED] += 1
                counter[_QUEUED_SLOT] += 1
            self._queues.push(entry, self._group_pools)
            self._out.append(Record(job, None))
        self._waiting += count
        return True

    def _choose_route(self, needs: Needs, route: Route) -> tuple[str, tuple[str, ...]] | None:
        """The first backend of the route with pools that could ever hold these needs."""
        if needs is NO_NEEDS:
            try:
                return self._route_cache[route]
            except KeyError:
                pass
        choice = None
        for backend, pool_names in route:
            fitting = tuple(
                name
                for name in pool_names
                if name in self._pools and self._pools[name].could_ever_hold(needs)
            )
            if fitting:
                choice = (backend, fitting)
                break
        if needs is NO_NEEDS:
            self._route_cache[route] = choice
        return choice

    def _unschedulable(self, needs: Needs, route: Route) -> UnschedulableError:
        pools = [self._pools[n] for _, names in route for n in names if n in self._pools]
        if not route:
            return UnschedulableError("no backend can run this job")
        if not pools:
            names = ", ".join(f"{b}: {list(p)}" for b, p in route)
            return UnschedulableError(f"no known pool for this job's backends ({names})")
        shortfalls = [(pool, pool.shortfall(needs)) for pool in pools]
        first = next((gap for _, gap in shortfalls if gap is not None), None)
        if first is None:  # pragma: no cover - defensive
            return UnschedulableError(f"no pool can ever hold this job ({needs.describe()})")
        field = first[0]
        offers = [
            f"{pool.name}: {gap[2]}"
            for pool, gap in shortfalls
            if gap is not None and gap[0] == field
        ]
        path = "$.resources." + ("gpu" if field == "gpu" else field.split(".")[0])
        return UnschedulableError(
            f"no pool can ever hold this job: it asks {field}={first[1]} but the pools offer "
            f"{'; '.join(offers) or 'less'} (needs {needs.describe()}); ask for less or declare "
            f"a pool that has it (Scheduler(pools=...)) - at {path}"
        )

    def _group_pools(self, group: tuple[str, ...]) -> list[PoolState]:
        return [self._pools[name] for name in group]

    # ---- dispatch ----------------------------------------------------------------------------

    def _try_start(self, entry: Entry) -> bool:
        """Reserve the first pool of the job's group that fits now, and dispatch it there."""
        needs = entry.needs
        pools = self._pools
        for name in entry.group:
            reservation = pools[name].try_reserve(needs)
            if reservation is not None:
                break
        else:
            return False
        job = entry.job
        number = job.attempt + 1
        at = self._now_dt
        attempt = Attempt(number=number, backend=entry.backend, pool=name, started_at=at)
        job = replace(
            job,
            status=_RUNNING,
            pool=name,
            attempt=number,
            attempts=(*job.attempts, attempt),
            started_at=at,
            waiting_reason=None,
            next_attempt_at=None,
        )
        self._runs[(job.id, number)] = _Run(reservation, entry.backend)
        queue_time_ms = (self._now - entry.since) * 1000.0
        self._waiting -= 1
        self._move(entry, _RUNNING, job)
        self._out.append(Dispatch(job, entry.backend, name, queue_time_ms))
        timeout_ms = job.resources.timeout_ms
        if timeout_ms is not None:
            self._out.append(
                ArmTimer(self._now + timeout_ms / 1000.0, (_TIMEOUT_KEY, job.id, number))
            )
        return True

    # ---- the end of a run --------------------------------------------------------------------

    def _run_ended(self, event: RunEnded) -> None:
        run = self._runs.pop((event.job_id, event.attempt), None)
        if run is None:
            return  # already reported: ending a run is idempotent
        run.reservation.pool.release(run.reservation)
        entry = self._jobs.get(event.job_id)
        if entry is None or entry.status is not _RUNNING or entry.job.attempt != event.attempt:
            return  # the job already moved on (timeout, cancel): only the capacity comes back
        outcome = event.outcome
        if type(outcome) is Succeeded:
            self._finish(entry, Status.SUCCEEDED, result=outcome.result)
        elif type(outcome) is Failed:
            self._attempt_failed(entry, outcome.error, outcome.retryable, Status.FAILED)
        else:
            error = JobError(
                type="StoppedError",
                message="the run was stopped by its backend before it finished",
                attempt=event.attempt,
            )
            self._attempt_failed(entry, error, True, Status.FAILED)

    def _attempt_failed(
        self, entry: Entry, error: JobError, retryable: bool, final: Status
    ) -> None:
        if error.attempt != entry.job.attempt:
            error = replace(error, attempt=entry.job.attempt)
        policy = entry.job.constraints.retry_policy
        if final is Status.TIMEOUT and not policy.retry_on_timeout:
            retryable = False
        if retryable and entry.job.attempt < policy.max_attempts:
            self._retry(entry, error, final)
        else:
            self._finish(entry, final, error=error)

    def _retry(self, entry: Entry, error: JobError, attempt_status: Status) -> None:
        job = entry.job
        delay_ms = backoff_delay_ms(job.constraints.retry_policy, job.attempt, self._rand)
        ready_at = self._now + delay_ms / 1000.0
        job = replace(
            job,
            status=_PENDING,
            attempts=self._close_attempt(job, attempt_status, error),
            error=error,
            waiting_reason="backoff",
            next_attempt_at=_dt.datetime.fromtimestamp(ready_at, _UTC),
        )
        elapsed_ms = (self._now - entry.since) * 1000.0
        self._waiting += 1
        self._move(entry, _PENDING, job)
        self._out.append(Record(job, _RUNNING, elapsed_ms=elapsed_ms, backoff_ms=delay_ms))
        if delay_ms > 0:
            self._out.append(ArmTimer(ready_at, (_READY_KEY, job.id, job.attempt)))
        else:
            self._enqueue_pending(entry)

    def _finish(
        self,
        entry: Entry,
        status: Status,
        *,
        result: object = None,
        error: JobError | None = None,
        cancel_reason: str | None = None,
    ) -> None:
        job = entry.job
        previous = entry.status
        attempts = job.attempts
        if previous is _RUNNING:
            attempts = self._close_attempt(job, status, error)
        job = replace(
            job,
            status=status,
            attempts=attempts,
            result=result,
            error=None if status is Status.SUCCEEDED else (error or job.error),
            finished_at=self._now_dt,
            waiting_reason=None,
            next_attempt_at=None,
            cancel_reason=cancel_reason,
        )
        if previous is not _RUNNING:
            self._waiting -= 1
        now = self._now
        self._move(entry, status, job)
        del self._jobs[job.id]
        self._out.append(
            Record(
                job,
                previous,
                elapsed_ms=(now - entry.since) * 1000.0,
                total_ms=(now - entry.submitted) * 1000.0,
            )
        )

    def _close_attempt(
        self, job: Job, status: Status, error: JobError | None
    ) -> tuple[Attempt, ...]:
        last = replace(job.attempts[-1], finished_at=self._now_dt, status=status, error=error)
        return (*job.attempts[:-1], last)

    # ---- timers, cancellation, capacity --------------------------------------------------------

    def _timer(self, event: TimerFired) -> None:
        what, job_id, attempt = event.key
        entry = self._jobs.get(job_id)
        if entry is None or entry.job.attempt != attempt:
            return  # stale: the job moved on
        if what == _READY_KEY and entry.status is _PENDING:
            self._enqueue_pending(entry)
        elif what == _TIMEOUT_KEY and entry.status is _RUNNING:
            timeout_ms = entry.job.resources.timeout_ms
            error = JobError(
                type="TimeoutError",
                message=f"timed out after {timeout_ms} ms (resources.timeout_ms)",
                attempt=attempt,
            )
            self._out.append(StopRun(job_id, attempt, entry.backend, "timeout"))
            self._attempt_failed(entry, error, True, Status.TIMEOUT)

    def _enqueue_pending(self, entry: Entry) -> None:
        job = replace(entry.job, status=_QUEUED, queued_at=self._now_dt, waiting_reason=None)
        elapsed_ms = (self._now - entry.since) * 1000.0
        self._move(entry, _QUEUED, job)
        self._queues.push(entry, self._group_pools)
        self._out.append(Record(job, _PENDING, elapsed_ms=elapsed_ms))

    def _cancel(self, event: Cancel) -> None:
        entry = self._jobs.get(event.job_id)
        if entry is None:
            return  # unknown or already terminal: nothing changes
        if entry.status is _RUNNING:
            self._out.append(StopRun(event.job_id, entry.job.attempt, entry.backend, event.reason))
        elif entry.status is _QUEUED:
            self._queues.discard(entry)
        self._finish(entry, Status.CANCELED, cancel_reason=event.reason)

    def _pools_changed(self, event: PoolsChanged) -> None:
        existing = [p for p in event.pools if p.name in self._pools]
        for spec in existing:
            pool = self._pools[spec.name]
            if pool.backend != event.backend:
                raise ConfigurationError(
                    f"pool {spec.name!r} belongs to backend {pool.backend!r}, not {event.backend!r}"
                )
            pool.set_spec(spec)
        self._add_pools(event.backend, [p for p in event.pools if p.name not in self._pools])
        self._route_cache.clear()

    def _add_pools(self, backend: str, specs: Iterable[Pool]) -> None:
        for spec in specs:
            if spec.name in self._pools:
                raise ConfigurationError(
                    f"pool name {spec.name!r} is used twice ({self._pools[spec.name].backend!r} "
                    f"and {backend!r}); pool names must be unique across backends"
                )
            self._pools[spec.name] = PoolState(backend, spec)

    # ---- bookkeeping -------------------------------------------------------------------------

    @staticmethod
    def _new_counter() -> list[int]:
        return [0] * (_REJECTED + 1)

    def _counters(self, entry: Entry) -> tuple[list[int], ...]:
        """The counters a job's transitions update: totals, its tenant, level and backend (one
        shared tuple per combination)."""
        key = (entry.tenant, entry.rank, entry.backend)
        found = self._counter_sets.get(key)
        if found is not None:
            return found
        tenant = self._by_tenant.get(entry.tenant)
        if tenant is None:
            tenant = self._by_tenant[entry.tenant] = self._new_counter()
        backend = self._by_backend.get(entry.backend)
        if backend is None:
            backend = self._by_backend[entry.backend] = self._new_counter()
        found = self._counter_sets[key] = (
            self._totals,
            tenant,
            self._by_level[entry.rank],
            backend,
        )
        return found

    def _move(self, entry: Entry, status: Status, job: Job) -> None:
        """The one place a live job changes status: checks the edge, counts, keeps the job."""
        if status not in ALLOWED_TRANSITIONS[entry.status]:
            check_transition(job.id, entry.status, status)  # raises, saying which edge
        old, new = _SLOT[entry.status], _SLOT[status]
        for counter in entry.counters:
            counter[old] -= 1
            counter[new] += 1
        entry.status = status
        entry.job = job
        entry.since = self._now

    def count_rejected(self, jobs: Sequence[object]) -> None:
        """Count submits refused before they reached the core (invalid, unroutable...). A job
        whose priority or tenant is itself invalid counts in the totals only."""
        self._count_rejected(jobs)

    def _count_rejected(self, jobs: Sequence[object]) -> None:
        for job in jobs:
            self._totals[_REJECTED] += 1
            priority = getattr(job, "priority", None)
            if isinstance(priority, Priority):
                self._by_level[priority.rank][_REJECTED] += 1
            tenant_id = getattr(job, "tenant_id", None)
            if isinstance(tenant_id, str) and tenant_id:
                tenant = self._by_tenant.get(tenant_id)
                if tenant is None:
                    tenant = self._by_tenant[tenant_id] = self._new_counter()
                tenant[_REJECTED] += 1


def _counts(counter: list[int]) -> Counts:
    return Counts(
        pending=counter[_SLOT[Status.PENDING]],
        queued=counter[_SLOT[Status.QUEUED]],
        running=counter[_SLOT[Status.RUNNING]],
        succeeded=counter[_SLOT[Status.SUCCEEDED]],
        failed=counter[_SLOT[Status.FAILED]],
        timeout=counter[_SLOT[Status.TIMEOUT]],
        canceled=counter[_SLOT[Status.CANCELED]],
        submitted=counter[_SUBMITTED],
        rejected=counter[_REJECTED],
    )

"""``SchedulingCore``: the pure scheduling state machine.

``decisions = core.handle(event, now, wall)``. The core reads no clock, does no I/O, starts no
thread and owns no randomness (jitter comes from the injected ``rand``), so the same events,
clock readings and random source give the same decisions. The engine carries the decisions out.
``now`` is a monotonic clock in seconds: every duration (run and queue times, timeouts, backoffs,
token buckets, fair-share charges, budget periods) and every timer is on it; ``wall`` is the
wall-clock UTC time in seconds, used only for the timestamps jobs carry.

What the core decides: admission (a batch is admitted whole or not at all: routing, tenant
quotas, queue caps, submit rates), strict priority between levels, weighted dominant-resource
fair share between tenants within a level, tenant and namespace limits and concurrency groups at
dispatch, the opt-in starvation guard, reservation of pool capacity on dispatch and release when
the run has really ended, retries with backoff, timeouts, and cancellation.

This module takes each event through its steps, in order; the state and the rules are in the
modules it calls: ``_admission`` (checks, records of admitted jobs), ``_jobs`` (live jobs and
their status), ``_runs`` (what a run holds), ``_endings`` (how runs, attempts and jobs end:
retries, cancellation), ``_queues`` (ready queues, fair share), ``_holds``
(placement, held capacity), ``_parking``, ``_limits`` (limits, quota gates, starvation guard),
``_registry`` and ``_tenants`` (tenants), ``_counters`` and ``_reasons`` (stats, waiting
reasons).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final

from msgspec.structs import replace

from .._errors import ConfigurationError
from .._ir import (
    DEFAULT_CONSTRAINTS,
    Attempt,
    Job,
    JobError,
    Pool,
    PriorityGuard,
    Status,
    Tenant,
)
from .._stats import Stats, TenantStats
from ._admission import Rejection, Router, check_batch, queued_entry
from ._capacity import PoolState, add_pools
from ._counters import StatsBuilder, pool_stats
from ._endings import (
    READY_KEY,
    TIMEOUT_KEY,
    attempt_failed,
    cancel,
    run_ended,
    stop_current_run,
)
from ._export import export_state
from ._holds import Holds, reserve
from ._jobs import LiveJobs
from ._limits import Limits, StarvationGuard
from ._messages import (
    Amend,
    ArmTimer,
    BackendAvailability,
    Cancel,
    ConcurrencyLimitChanged,
    Decision,
    Dispatch,
    Event,
    HandleReported,
    Pause,
    PoolsChanged,
    Record,
    Reject,
    Rejected,
    Restore,
    RunEnded,
    Submit,
    TenantChanged,
    TimerFired,
)
from ._parking import park_fifo, park_tenant, unpark_fifos
from ._pauses import Pauses, apply_pause
from ._pool_changes import (
    STRANDED_KEY,
    Stranded,
    availability_changed,
    pools_changed,
    strand_expired,
)
from ._queues import (
    DEFAULT_FAIR_SHARE_RESOLUTION_S,
    FIFO,
    LEVELS,
    TENANT,
    Entry,
    ReadyQueues,
    TenantQueue,
    check_resolution,
)
from ._reasons import WaitingReasons
from ._registry import TenantRegistry
from ._restore import restore
from ._runs import Run, start_run
from ._state import CoreState
from ._waits import DEPENDENCIES, Waits

__all__ = ["SchedulingCore"]

_UTC: Final = _dt.UTC
_PENDING, _QUEUED, _RUNNING = Status.PENDING, Status.QUEUED, Status.RUNNING
_LIMIT_KEY: Final = "limit"
_SWEEP_KEY: Final = "sweep"
_SWEEP_TIMER: Final = (_SWEEP_KEY, "", "", 0)
#: How long a tenant's state is kept once it has no waiting or running job, by default.
DEFAULT_TENANT_IDLE_TTL_S: Final = 3600.0
#: The tenant unknown tenants are admitted as, unless configured otherwise.
DEFAULT_TENANT: Final = Tenant("*")


class SchedulingCore:
    """The scheduling state of one scheduler; feed it events, carry out its decisions.

    ``pools`` maps each backend name to the pools it offers (pool names are unique across
    backends). ``rand`` returns floats in [0, 1) for retry jitter. ``max_waiting`` caps pending
    plus queued jobs (None: no cap). ``tenants`` are the configured tenants; an unknown tenant
    is admitted as ``default_tenant`` (its weight and quota, under its own id), or rejected when
    that is None. ``concurrency_limits`` sets limits per concurrency group (others get
    ``default_concurrency_limit``). ``guard`` is the opt-in starvation guard.
    ``fair_share_resolution_s`` is how finely fair share tells tenants apart, in seconds of a
    pool group's whole capacity per unit of weight: tenants whose weighted dominant-resource
    time served differs by less than that are served oldest job first.
    ``tenant_idle_ttl_s`` is how long a tenant's state (usage, standing, counters) is kept once
    it has no waiting or running job (None: forever); its configured spec is never dropped,
    nor a tenant that still owes submit-rate tokens or has spent in its budget period.
    """

    def __init__(
        self,
        *,
        pools: Mapping[str, Sequence[Pool]],
        rand: Callable[[], float],
        max_waiting: int | None = None,
        tenants: Sequence[Tenant] = (),
        default_tenant: Tenant | None = DEFAULT_TENANT,
        concurrency_limits: Mapping[str, int] | None = None,
        default_concurrency_limit: int = 1,
        guard: PriorityGuard | None = None,
        fair_share_resolution_s: float = DEFAULT_FAIR_SHARE_RESOLUTION_S,
        tenant_idle_ttl_s: float | None = DEFAULT_TENANT_IDLE_TTL_S,
    ) -> None:
        check_resolution(fair_share_resolution_s)
        self._pools: dict[str, PoolState] = {}
        self._gone: dict[str, PoolState] = {}  # pools removed (see _pool_changes)
        self._unavailable: set[str] = set()  # backends that are not reachable now
        self._stranded: dict[tuple[str, str], Stranded] = {}  # jobs no pool can hold now
        self._strand_timers = 0
        self._queues = ReadyQueues(fair_share_resolution_s)
        self._tenants = TenantRegistry(
            tenants, default_tenant, tenant_idle_ttl_s, self._queues, self._pools
        )
        if max_waiting is not None and max_waiting < 0:
            raise ConfigurationError(f"max_waiting must be >= 0 or None, got {max_waiting}")
        self._limits = Limits(concurrency_limits, default_concurrency_limit)
        self._rand = rand
        self._max_waiting = max_waiting
        for backend, specs in pools.items():
            add_pools(self._pools, backend, specs)
        self._router = Router(self._pools)
        self._jobs = LiveJobs(self._tenants)
        self._pauses = self._tenants.pauses = Pauses()
        self._runs: dict[tuple[str, str, int], Run] = {}  # by (tenant id, job id, attempt)
        self._holds = Holds()
        self._guard = None if guard is None or not guard.min_share else StarvationGuard(guard)
        self._reasons = WaitingReasons(self._queues, self._guard, self._stranded)
        self._waits = Waits(self)
        #: False once the engine stops on a durable store: runs may end, nothing new starts
        #: (waiting jobs stay queued for the next start).
        self.dispatching = True
        # The clock readings of the event being handled, and the wall clock's datetime.
        self._now = 0.0
        self._wall = 0.0
        self._now_dt = _dt.datetime.fromtimestamp(0.0, _UTC)

    # ---- the one entry point ---------------------------------------------------------------

    def handle(self, event: Event, now: float, wall: float | None = None) -> list[Decision]:
        """Apply one event at monotonic time ``now`` (seconds) and wall-clock time ``wall``
        (UTC seconds; ``now`` when not given); return decisions in the order the engine must
        carry them out."""
        self._now = now
        self._wall = now if wall is None else wall
        self._now_dt = _dt.datetime.fromtimestamp(self._wall, _UTC)
        out: list[Decision] = []
        kind = type(event)
        if kind is RunEnded:
            run_ended(self, event, out)  # type: ignore[arg-type]
        elif kind is Submit:
            if not self._submit(event, out):  # type: ignore[arg-type]
                return out
        elif kind is Cancel:
            cancel(self, event, out)  # type: ignore[arg-type]
        elif kind is TimerFired:
            self._timer(event, out)  # type: ignore[arg-type]
        elif kind is PoolsChanged:
            self._pools_changed(event, out)  # type: ignore[arg-type]
        elif kind is BackendAvailability:
            availability_changed(self, event, out)  # type: ignore[arg-type]
        elif kind is TenantChanged:
            spec = event.tenant  # type: ignore[union-attr]
            self._tenants.update(spec, self._jobs, self._runs.values())
        elif kind is ConcurrencyLimitChanged:
            group = self._limits.set_group_limit(event.group, event.limit)  # type: ignore[union-attr]
            if group is not None:
                unpark_fifos(group.parked)
        elif kind is Rejected:
            jobs, reason = event.jobs, event.reason  # type: ignore[union-attr]
            self._tenants.count_rejected(jobs, reason, now)
            self._arm_sweep(out)
        elif kind is Restore:
            restore(self, event, out)  # type: ignore[arg-type]
        elif kind is Pause:
            apply_pause(self, event)  # type: ignore[arg-type]
        elif kind is HandleReported:  # (no capacity or queue changes: nothing more can start)
            amended = self._jobs.note_handle(event)  # type: ignore[arg-type]
            if amended is not None:
                out.append(Amend(amended))
            return out
        else:
            raise TypeError(f"SchedulingCore.handle: unknown event {event!r}")
        if self.dispatching:
            self._dispatch(out)
        return out

    def _dispatch(self, out: list[Decision]) -> None:
        queues = self._queues
        guard = self._guard
        holds = self._holds
        if guard is not None:
            for rank in guard.owed(queues.counts):
                queues.dispatch_level(rank, self, holds, out, limit=1)
        epoch = holds.release_epoch
        queues.dispatch(self, holds, out)
        while holds.release_epoch != epoch:
            # a held job started or left during the pass: capacity it held is free for heads
            # that were declined before that happened
            epoch = holds.release_epoch
            queues.dispatch(self, holds, out)

    # ---- queries (no decisions) --------------------------------------------------------------

    def export_state(self, now: float, wall: float) -> CoreState:
        """What the core needs to continue that its live jobs do not carry, at ``now`` and
        ``wall`` (the same moment), for a ``Restore``; O(tenants + pool groups + runs)."""
        return export_state(self, now, wall)

    def live_jobs_in_order(self) -> list[Job]:
        """The live jobs in admission order: what a store keeps for a ``Restore``."""
        return [entry.job for entry in self._jobs.in_order()]

    def get(self, tenant_id: str, job_id: str) -> Job | None:
        """The current snapshot of a tenant's live job, or None if it is not live here."""
        entry = self._jobs.get(tenant_id, job_id)
        return None if entry is None else entry.job

    def owners(self, job_id: str) -> list[str]:
        """The tenants with a live job with this id (usually none or one)."""
        return self._jobs.owners(job_id)

    def waiting_reason(self, tenant_id: str, job_id: str) -> str | None:
        """Why a tenant's pending or queued job is not running now; None for any other."""
        entry = self._jobs.get(tenant_id, job_id)
        if entry is None:
            return None
        if entry.status is _PENDING:
            reason = entry.job.waiting_reason
            return self._waits.describe(entry) if reason == DEPENDENCIES else reason
        if entry.status is _QUEUED:
            return self._reasons.queued(entry)
        return None

    @property
    def waiting(self) -> int:
        """Pending plus queued jobs."""
        return self._jobs.waiting

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
        return self._jobs.entries()

    def queued_in_order(self) -> list[list[Job]]:
        """Queued jobs per level (for checks)."""
        levels: list[list[Job]] = [[] for _ in range(LEVELS)]
        for entry in self._queues.entries():
            levels[entry.rank].append(entry.job)
        return levels

    def tenant(self, tenant_id: str) -> Tenant | None:
        """The spec a tenant is scheduled with (configured, or the default), or None."""
        return self._tenants.spec(tenant_id)

    def concurrency_usage(self, group: str) -> tuple[int, int]:
        """(runs holding a slot of the concurrency group, its limit)."""
        return self._limits.group_usage(group)

    def limit_usage(self, tool: str) -> tuple[int, int | None, float | None]:
        """(runs of a backend limit such as a tool's, its max_concurrency, tokens left)."""
        return self._limits.tool_usage(tool)

    def stats(self) -> Stats:
        """Counts by status, per priority, tenant and backend; pools; waiting reasons (in one
        go; ``stats_builder`` builds the same in steps)."""
        return self.stats_builder().result()

    def stats_builder(self) -> StatsBuilder:
        """A ``StatsBuilder`` over the state as it is now, to build the Stats in steps of
        bounded work (O(tenants + waiting jobs) in all)."""
        tenants = self._tenants
        return StatsBuilder(
            tenants.counters,
            tenants.retired,
            tenants.rejected_unleveled,
            self._jobs.entries() if self._jobs.waiting else [],
            tenants.stats_of,
            self._reasons.of,
            lambda: pool_stats(self._pools),
        )

    def tenant_stats(self, tenant_id: str) -> TenantStats:
        """One tenant's stats, from its own counters (O(1) in the number of tenants); zeros
        with its weight and quota for a tenant with no counters."""
        return self._tenants.stats(tenant_id)

    @property
    def tenants_kept(self) -> int:
        """Tenants the core keeps state or counters for now (bounded by the idle sweep)."""
        return self._tenants.kept

    # ---- what a GroupQueue asks while it picks (the Selector protocol) ----------------------

    def gate(self, head: Entry, queue: TenantQueue, out: list[Decision]) -> str | None:
        """If a limit holds a head back: park its tenant (TENANT) or its FIFO (FIFO) and say
        which; None if no limit does."""
        found = self._limits.holding_back(head, self._now)
        if found is None:
            return None
        scope, reason, limit = found
        if scope == "tenant":
            self._holds.release_tenant(queue.queue, head.tenant)  # a parked head holds nothing
            park_tenant(queue, head.tenant_state, reason)
            return TENANT
        self._holds.release_fifo(queue, head)
        if limit is None:
            namespace = head.tenant_state.namespaces[head.namespace]
            park_fifo(queue, head.fifo, reason, namespace.parked)
            return FIFO
        park_fifo(queue, head.fifo, reason, limit.parked)
        if reason.startswith("tool_rate") and not limit.timer_armed:
            limit.timer_armed = True
            at = limit.timer_at = limit.next_token_at(self._now)
            out.append(ArmTimer(at, (_LIMIT_KEY, "", limit.key[1], 0)))
        return FIFO

    def try_start(self, entry: Entry, queue: TenantQueue, out: list[Decision]) -> float | None:
        """Reserve a pool for the job and dispatch it there: among its pools that fit now, the
        cheapest for its needs, then the least loaded (capacity held for other jobs of its level
        or higher is left alone). Returns what the dispatch costs its tenant in virtual time
        (its dominant share of the group's capacity times the expected run time, over the
        tenant's weight; corrected with the real run time when the run ends), or None if the
        job fits none of its pools now."""
        reserved = reserve(entry)
        if reserved is None:
            return None
        rate, reservation = reserved
        self._holds.release(entry, queue.queue)
        entry.rate = rate
        name = reservation.pool.name
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
        limits = self._limits.start(entry.limits) if entry.limits else ()
        run = start_run(entry, reservation, rate, limits, queue, self._now)
        self._runs[(entry.tenant, job.id, number)] = run
        if entry.tenant_state.limited or limits:
            self._holds.release_held_back(self._queues.groups(), self._limits, self._now)
        if self._guard is not None:
            self._guard.record(entry.rank)
        queue_time_ms = (self._now - entry.since) * 1000.0
        self._jobs.move(entry, _RUNNING, job, self._now)
        out.append(Dispatch(job, entry.backend, name, queue_time_ms))
        if job.constraints is not DEFAULT_CONSTRAINTS:
            self._waits.started(entry, out)
        timeout_ms = job.resources.timeout_ms
        if timeout_ms is not None:
            out.append(
                ArmTimer(
                    self._now + timeout_ms / 1000.0, (TIMEOUT_KEY, entry.tenant, job.id, number)
                )
            )
        return run.charged

    # ---- admission ---------------------------------------------------------------------------

    def _submit(self, event: Submit, out: list[Decision]) -> bool:
        live, now, at = self._jobs, self._now, self._now_dt
        jobs = event.jobs
        batch = self._waits.batch(event, live)  # None: no job may wait before it is queued
        rejection = None if batch is None else batch.check()
        if rejection is None:
            plans, rejection = check_batch(
                event, live, self._max_waiting, self._router, self._tenants, now
            )
        if rejection is not None:
            self._reject(jobs, rejection, out)
            return False
        limits, queues, backend_limits = self._limits, self._queues, event.limits
        for index, plan in enumerate(plans):
            keys = limits.keys_for(plan[0], backend_limits[index] if backend_limits else (), now)
            entry = queued_entry(plan, keys, now, at)
            if entry.estimate is not None:
                entry.tenant_state.committed += entry.estimate
            if batch is not None:
                batch.hold(entry)
            live.admit(entry, now)
            if entry.status is _QUEUED:
                queues.push(entry, self._group_pools)
            out.append(Record(entry.job, None))
        if batch is not None:
            batch.admitted(out)
        self._arm_sweep(out)
        return True

    def _reject(self, jobs: Sequence[Job], rejection: Rejection, out: list[Decision]) -> None:
        error, index, reason = rejection
        out.append(Reject(error, index))
        self._tenants.count_rejected(jobs, reason, self._now)

    def _group_pools(self, group: tuple[str, ...]) -> list[PoolState]:
        pools = self._pools
        return [pools.get(name) or self._gone[name] for name in group]

    # ---- timers, configuration -----------------------------------------------

    def _timer(self, event: TimerFired, out: list[Decision]) -> None:
        what, tenant_id, job_id, attempt = event.key
        if what == _SWEEP_KEY:
            at = self._tenants.sweep(self._now)
            if at is not None:
                out.append(ArmTimer(at, _SWEEP_TIMER))
            return
        if what == STRANDED_KEY:  # a grace period for jobs no pool can hold is over
            strand_expired(self, tenant_id, out)
            return
        if what == _LIMIT_KEY:  # a rate-limited tool has a token again
            limit = self._limits.tool(job_id)
            if limit is not None:
                limit.timer_armed = False
                unpark_fifos(limit.parked)
            return
        entry = self._jobs.get(tenant_id, job_id)
        if entry is None or entry.job.attempt != attempt:
            return  # stale: the job moved on
        if attempt == 0 and self._waits.timer(what, entry, out):
            return
        if what == READY_KEY and entry.status is _PENDING:
            self._enqueue_pending(entry, out)
        elif what == TIMEOUT_KEY and entry.status is _RUNNING:
            timeout_ms = entry.job.resources.timeout_ms
            error = JobError(
                type="TimeoutError",
                message=f"timed out after {timeout_ms} ms (resources.timeout_ms)",
                attempt=attempt,
            )
            stop_current_run(self, entry, "timeout", out)
            attempt_failed(self, entry, error, True, Status.TIMEOUT, out)

    def _enqueue_pending(self, entry: Entry, out: list[Decision]) -> None:
        job = replace(entry.job, status=_QUEUED, queued_at=self._now_dt, waiting_reason=None)
        elapsed_ms = (self._now - entry.since) * 1000.0
        self._jobs.move(entry, _QUEUED, job, self._now)
        self._queues.push(entry, self._group_pools)
        out.append(Record(job, _PENDING, elapsed_ms=elapsed_ms))

    def _pools_changed(self, event: PoolsChanged, out: list[Decision]) -> None:
        pools_changed(self, event, out)
        for name in self._pauses.pools:  # (a pool back under its name is still paused)
            if name in self._pools:
                self._pools[name].paused = True

    # ---- bookkeeping -------------------------------------------------------------------------

    def _arm_sweep(self, out: list[Decision]) -> None:
        """Arm the idle-tenant sweep unless it is armed: by the first admitted submit (never
        with a Reject, which comes alone) or a Rejected; each sweep re-arms it while tenants
        are idle."""
        at = self._tenants.arm_sweep(self._now)
        if at is not None:
            out.append(ArmTimer(at, _SWEEP_TIMER))

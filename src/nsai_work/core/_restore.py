"""Restore: a fresh core rebuilt from its stored live jobs and its last ``CoreState``.

``restore`` handles the ``Restore`` event, in this order:

1. It checks the event (a fresh core; pending, queued or running jobs, each once; running ones
   with their attempt) and the state, before it changes anything.
2. It imports the state: tenants and concurrency limits set at run time, tenant buckets,
   spend and budget periods, counters, idle tenants, limits, and the group queues in the order
   they were made, with their fair-share standing and their parked tenants and FIFOs.
3. It re-admits each job with its attempts and timestamps, without admission checks (it was
   admitted before): queued jobs into their FIFOs in the order they entered the queue (their
   ``queued_at``, then submission order); running ones keep their run (re-attached: its pool,
   its tenant's usage and limits, its dispatch's fair-share charge) unless ``lost_reason`` says
   the run died with the old engine. Monotonic instants come from the jobs' wall-clock
   timestamps: ``now + (stamp - wall)``.
4. It gives the tenants their keys back, and capacity held for queue heads.
5. It re-arms the timers: backoffs due later, timeouts of re-attached runs (from the attempt's
   ``started_at``), rate-limited tools, the idle sweep.
6. Then the transitions, the only Records it makes: backoffs already due (queued now), waits
   for dependencies or ``run_at`` that ended while it was down (queued, or canceled by a
   dependency's failure: ``Restore.finished``; see ``_waits``), lost
   runs (their attempt fails with ``EngineLostError``, then their retry policy decides), and
   jobs that cannot run here any more (their backend or pool is gone: waiting ones are
   canceled, running ones fail).

The core then dispatches what fits, as after any event.
"""

from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING, Final

from .._errors import ValidationError
from .._ir import UNLIMITED, Job, JobError, Status
from ._admission import Choice
from ._capacity import NO_NEEDS, needs_of
from ._counters import SLOT_NAMES
from ._endings import attempt_failed, finish
from ._limits import LimitState
from ._messages import ArmTimer, Decision, DisarmTimer, Pause, Restore
from ._parking import restore_parked_fifo, restore_parked_tenant
from ._pauses import apply_pause
from ._queues import Entry, GroupQueue, TenantQueue
from ._runs import Run
from ._state import CoreState, GroupRecord, RunRecord, check_state, to_monotonic
from ._tenants import NamespaceState, job_share
from ._waits import DEPENDENCIES, SCHEDULED

if TYPE_CHECKING:
    from ._core import SchedulingCore
    from ._parking import ParkedFifos

__all__ = ["restore"]

_PENDING, _QUEUED, _RUNNING = Status.PENDING, Status.QUEUED, Status.RUNNING
_RESTORABLE: Final = frozenset({_PENDING, _QUEUED, _RUNNING})
_NEVER: Final = float("-inf")
#: The waiting reasons of a job that waits before its first run (its dependencies, run_at).
_FIRST: Final = frozenset({DEPENDENCIES, SCHEDULED})
#: The error type of an attempt closed because its run was lost with the engine.
LOST_ERROR_TYPE: Final = "EngineLostError"


def restore(core: SchedulingCore, event: Restore, out: list[Decision]) -> None:
    """Handle a ``Restore`` event (see the module docstring); decisions go to ``out``."""
    _check_event(core, event)
    state = None if event.state is None else check_state(event.state)
    _Restorer(core, event, state, out).run()


def _check_event(core: SchedulingCore, event: Restore) -> None:
    """Refuse a Restore that cannot be carried out, before anything changes."""
    jobs = event.jobs
    if len(event.routes) != len(jobs):
        raise ValueError("Restore: one route per job is required")
    if event.limits and len(event.limits) != len(jobs):
        raise ValueError("Restore: limits, when given, are one tuple per job")
    if core.live_jobs or core.active_runs:
        raise ValueError(
            f"Restore: only a fresh core is restored; this one has {core.live_jobs} live jobs "
            f"and {core.active_runs} runs (build a new SchedulingCore)"
        )
    if event.lost_reason is not None and not event.lost_reason:
        raise ValueError("Restore: lost_reason is a non-empty string, or None (re-attach)")
    seen: set[tuple[str, str]] = set()
    for index, job in enumerate(jobs):
        if job.status not in _RESTORABLE:
            raise ValidationError(
                f"Restore takes live jobs (pending, queued or running); job {job.id!r} of "
                f"tenant {job.tenant_id!r} is {job.status}",
                path="$.status",
                index=index,
            )
        key = (job.tenant_id, job.id)
        if key in seen:
            raise ValidationError(
                f"job {job.id!r} of tenant {job.tenant_id!r} is given twice",
                path="$.id",
                index=index,
            )
        seen.add(key)
        if job.status is _RUNNING and (
            not job.attempts or job.attempts[-1].number != job.attempt or job.pool is None
        ):
            raise ValidationError(
                f"running job {job.id!r} of tenant {job.tenant_id!r} needs its current attempt "
                f"(attempt {job.attempt}, the last of its attempts) and its pool",
                path="$.attempts",
                index=index,
            )


class _Restorer:
    """One Restore being carried out (see the module docstring)."""

    def __init__(
        self, core: SchedulingCore, event: Restore, state: CoreState | None, out: list[Decision]
    ) -> None:
        self.core = core
        self.event = event
        self.state = state
        self.out = out
        self.now, self.wall = core._now, core._wall
        self.lost: list[tuple[Entry, str]] = []  # running jobs whose run is lost, and why
        self.gone: list[tuple[Entry, str]] = []  # jobs that cannot run here any more, and why
        self.due: list[tuple[float, int, Entry]] = []  # backoffs due now
        # jobs whose wait for dependencies or run_at ended (or a dependency failed them)
        self.waiting: list[tuple[Entry, tuple[str, Status] | None]] = []
        self.described: set[TenantQueue] = set()  # the tenant queues the state describes

    def mono(self, stamp: _dt.datetime | None, default: float) -> float:
        """A job's wall-clock timestamp on the monotonic clock (``default`` when unset)."""
        if stamp is None:
            return default
        return to_monotonic(stamp.timestamp(), self.now, self.wall)

    def run(self) -> None:
        core, state = self.core, self.state
        if state is not None:
            self.import_state(state)
        entries = [self.entry(index, job) for index, job in enumerate(self.event.jobs)]
        for entry in entries:
            core._jobs.restore(entry, self.now)
        self.enqueue([e for e in entries if e.status is _QUEUED and e.group])
        runs = {(r.tenant, r.job_id, r.attempt): r for r in (state.runs if state else ())}
        for entry in entries:
            if entry.status is _RUNNING and entry.group:
                self.reattach(entry, runs)
        if state is not None:
            self.restore_keys_and_holds(state)
            for record in state.tenants:
                core._tenants.states[record.id].committed = record.committed
        self.activate_undescribed()
        self.arm_timers(entries)
        self.waiting = core._waits.restore(entries, self.event.finished, self.out)
        self.transitions()
        for tenant in {id(e.tenant_state): e.tenant_state for e in entries}.values():
            core._tenants.settle(tenant, self.now)

    # ---- the state -------------------------------------------------------------------------

    def import_state(self, state: CoreState) -> None:
        core, now, wall = self.core, self.now, self.wall
        registry, limits = core._tenants, core._limits
        for scope, name, namespace in state.paused:  # (before any tenant state is made)
            if scope == "pool":
                apply_pause(core, Pause(True, pool=name))
            else:
                apply_pause(core, Pause(True, tenant_id=name, namespace=namespace or None))
        for spec in state.tenant_specs:
            registry.restore_spec(spec)
        for group_name, limit in state.group_limits.items():
            limits.set_group_limit(group_name, limit)
        for record in state.limits:
            key = (record.kind, record.name)
            if record.kind == "group":
                limit_state = LimitState(key, limits.group_limit(record.name))
            else:
                limit_state = LimitState(key, record.max_running)
            limit_state.rate, limit_state.burst = record.rate, record.burst
            limit_state.tokens = record.tokens
            limit_state.last = to_monotonic(record.last, now, wall)
            if record.timer_at is not None and record.rate is not None:
                limit_state.timer_armed = True
                limit_state.timer_at = to_monotonic(record.timer_at, now, wall)
            limits.states[key] = limit_state
        for tenant in state.tenants:
            tenant_state = registry.restore_state(tenant.id, now)
            tenant_state.tokens = min(tenant.tokens, float(tenant_state.burst))
            tenant_state.last_refill = to_monotonic(tenant.last_refill, now, wall)
            tenant_state.spend_total = tenant.spend_total
            tenant_state.spend_period = tenant.spend_period
            tenant_state.period_start = to_monotonic(tenant.period_start, now, wall)
            for name in tenant.namespaces:  # (limits removed at run time: their state stays)
                if name not in tenant_state.namespaces:
                    tenant_state.namespaces[name] = NamespaceState(UNLIMITED)
                    tenant_state.limited = True
        index = {name: i for i, name in enumerate(SLOT_NAMES)}
        for kept in state.counters:
            counters = registry.counters_of(kept.tenant)
            counters.rejections.update(kept.rejections)
            counters.rejected_unleveled += kept.rejected_unleveled
            for cell in kept.cells:
                counter = counters.cell(cell.level, cell.backend)
                for name, count in cell.counts.items():
                    counter[index[name]] += count
        for cell in state.retired:
            counter = registry.retired.setdefault((cell.level, cell.backend), [0] * len(index))
            for name, count in cell.counts.items():
                counter[index[name]] += count
        registry.rejected_unleveled += state.rejected_unleveled
        for tenant_id, since in state.idle:
            registry.restore_idle(tenant_id, to_monotonic(since, now, wall))
        if state.sweep_at is not None:
            registry.restore_sweep(to_monotonic(state.sweep_at, now, wall))
        for group in state.groups:
            self.import_group(group)
        guard = core._guard
        if guard is not None:
            for level in state.guard:
                if level in "0123":
                    guard.record(int(level))
        core._holds.restore_seq(state.hold_seq)

    def import_group(self, record: GroupRecord) -> None:
        """A group queue as it was, before its jobs come back: standing, parking (a FIFO is
        parked before its jobs are added, so it is never among its tenant's heads)."""
        core = self.core
        if not all(name in core._pools for name in record.pools):
            return  # (a pool that is gone: its jobs are routed afresh)
        group = core._queues.group(record.level, record.pools, core._group_pools)
        group.clock = record.clock
        group.expected_run_s = record.expected_run_s
        group.runs_seen = record.runs_seen
        group.idle_vtimes.update(record.idle_vtimes)
        for described in record.tenants:
            queue = group.tenants.get(described.tenant)
            if queue is None:
                vtime = _NEVER if described.vtime is None else described.vtime
                queue = group.tenants[described.tenant] = TenantQueue(
                    described.tenant, group, vtime
                )
            self.described.add(queue)
            for fifo in described.parked:
                parked_on = self.parked_on(described.tenant, fifo.on)
                if parked_on is not None:
                    sub = (fifo.namespace, tuple(fifo.limits))
                    restore_parked_fifo(queue, sub, fifo.reason, parked_on)
        for tenant_id, reason in record.parked.items():
            if tenant_id in group.tenants:
                tenant = core._tenants.restore_state(tenant_id, self.now)
                restore_parked_tenant(group, tenant, reason)

    def parked_on(self, tenant_id: str, on: tuple[str, str]) -> ParkedFifos | None:
        """The list a parked FIFO waits in: its namespace's, or its limit's."""
        kind, name = on
        if kind == "namespace":
            tenant = self.core._tenants.restore_state(tenant_id, self.now)
            namespace = tenant.namespaces.get(name)
            return None if namespace is None else namespace.parked
        limit = self.core._limits.states.get((kind, name))
        return None if limit is None else limit.parked

    # ---- the jobs --------------------------------------------------------------------------

    def entry(self, index: int, job: Job) -> Entry:
        """The core's record of a restored job, in its status; one that cannot run here any
        more gets no pool group (it ends among the transitions)."""
        core, now = self.core, self.now
        tenant = core._tenants.restore_state(job.tenant_id, now)
        needs = needs_of(job.resources)
        route = self.event.routes[index]
        if job.backend is not None:  # it stays on its backend
            route = tuple((backend, pools) for backend, pools in route if backend == job.backend)
        choice = core._router.choose(needs, route, job) if route else None
        specs = self.event.limits[index] if self.event.limits else ()
        keys = core._limits.keys_for(job, specs, now)
        submitted = self.mono(job.submitted_at, now)
        status = job.status
        if status is _QUEUED:
            since = self.mono(job.queued_at, submitted)
        elif status is _PENDING:
            last = job.attempts[-1].finished_at if job.attempts else None
            since = self.mono(last, submitted)
        else:
            since = self.mono(job.attempts[-1].started_at, submitted)
        entry = Entry(
            job=job,
            tenant=job.tenant_id,
            tenant_state=tenant,
            namespace=job.namespace,
            limits=keys,
            rank=job.priority.rank,
            needs=needs,
            backend=job.backend or "",
            group=(),
            status=status,
            since=since,
            submitted=submitted,
        )
        if isinstance(choice, Choice):
            entry.backend, entry.group = choice.backend, choice.group
            entry.placement, entry.estimate = choice.placement, choice.estimate
            if entry.estimate is not None:
                tenant.committed += entry.estimate
        else:
            why = "no route" if choice is None else str(choice)
            why = f"its backend {job.backend!r} cannot run it here: {why}"
            if status is _RUNNING:
                self.lost.append((entry, self.lost_message(job, why)))
            else:
                self.gone.append((entry, why))
        return entry

    def lost_message(self, job: Job, why: str) -> str:
        """Why a running job's attempt is closed: its run died with the old engine
        (``lost_reason``), or it cannot be followed here (``why``)."""
        reason = self.event.lost_reason
        if reason is not None:
            return (
                f"{reason}: the scheduler that ran attempt {job.attempt} stopped before the "
                f"attempt ended"
            )
        return f"not_reattached: {why}, so attempt {job.attempt} cannot be followed here"

    def enqueue(self, queued: list[Entry]) -> None:
        """Queued jobs go back into their FIFOs in the order they entered the queue."""
        core = self.core
        order = sorted(
            range(len(queued)), key=lambda i: (self.mono(queued[i].job.queued_at, -1e300), i)
        )
        for i in order:
            core._queues.add(queued[i], core._group_pools)

    def reattach(self, entry: Entry, runs: dict[tuple[str, str, int], RunRecord]) -> None:
        """A running job keeps its run: its pool, its tenant's usage and limits, what its
        dispatch charged in fair share; or its run is lost (``lost_reason``, or its pool is
        gone)."""
        core, job = self.core, entry.job
        reason = self.event.lost_reason
        pool = core._pools.get(job.pool or "")
        if reason is not None or pool is None or pool.backend != entry.backend:
            self.lost.append((entry, self.lost_message(job, f"its pool {job.pool!r} is gone")))
            return
        # (its pool may have changed since its dispatch, so that it is not among the pools
        # its job would be routed to now: the run goes on there all the same)
        placed = next((rate for rate, p in entry.placement if p is pool), None)
        rate = pool.hourly_rate(entry.needs) if placed is None else placed
        found = runs.get((entry.tenant, job.id, job.attempt))
        reservation = pool.take(entry.needs, None if found is None else found.gpu_type)
        entry.rate = rate
        tenant = entry.tenant_state
        tenant.reserve(reservation, entry.namespace)
        limits = tuple(core._limits.states[key] for key in entry.limits)
        for limit in limits:
            limit.running += 1
        group = core._queues.group(entry.rank, entry.group, core._group_pools)
        queue = group.tenants.get(entry.tenant)
        if queue is None:  # (its queue there went away: the run's end finds the tenant)
            queue = TenantQueue(entry.tenant, group)
            queue.live = False
        if found is not None:
            charged, share, weight = found.charged, found.share, found.weight
        else:
            capacity = group.capacity
            share = (
                capacity.slot_share if entry.needs is NO_NEEDS else job_share(entry.needs, capacity)
            )
            weight = tenant.weight
            charged = share * group.expected_run_s / weight
        run = Run(
            reservation,
            entry,
            entry.backend,
            tenant,
            entry.namespace,
            limits,
            entry.since,
            rate,
            queue,
            charged,
            share,
            weight,
        )
        core._runs[(entry.tenant, job.id, job.attempt)] = run

    def restore_keys_and_holds(self, state: CoreState) -> None:
        core = self.core
        for record in state.groups:
            group = core._queues.levels[record.level].get(record.pools)
            if group is None:
                continue
            for described in record.tenants:
                queue = group.tenants.get(described.tenant)
                if queue is None or described.key_vtime is None:
                    continue
                head = self.queued_in(group, described.tenant, described.key_job)
                group.set_key(queue, described.key_vtime, -1 if head is None else head.seq)
            held = record.held
            if held is not None:
                head = self.queued_in(group, held.tenant, held.job_id)
                pool = core._pools.get(held.pool)
                if head is not None and pool is not None and head.held is None:
                    core._holds.restore(head, group, pool, held.seq)

    def queued_in(self, group: GroupQueue, tenant_id: str, job_id: str | None) -> Entry | None:
        """A restored job queued in ``group``, or None."""
        if job_id is None:
            return None
        entry = self.core._jobs.get(tenant_id, job_id)
        if entry is None or entry.status is not _QUEUED or not entry.group:
            return None
        return entry if self.core._queues.queue_of(entry) is group else None

    def activate_undescribed(self) -> None:
        """Tenants whose queue the state did not describe get keys as a submit gives them."""
        for group in self.core._queues.groups():
            for tenant_id, queue in list(group.tenants.items()):
                if queue not in self.described and queue.key is None:
                    group.activate(tenant_id)

    # ---- timers and transitions ------------------------------------------------------------

    def arm_timers(self, entries: list[Entry]) -> None:
        core, now, out = self.core, self.now, self.out
        for entry in entries:
            job = entry.job
            if not entry.group:
                continue
            if entry.status is _PENDING and job.attempt == 0 and job.waiting_reason in _FIRST:
                continue  # (their timers are the Waits')
            if entry.status is _PENDING:
                at = self.mono(job.next_attempt_at, now)
                if at > now:
                    out.append(ArmTimer(at, ("ready", entry.tenant, job.id, job.attempt)))
                else:
                    self.due.append((at, len(self.due), entry))
            elif entry.status is _RUNNING and (entry.tenant, job.id, job.attempt) in core._runs:
                timeout_ms = job.resources.timeout_ms
                if timeout_ms is not None:
                    at = entry.since + timeout_ms / 1000.0
                    out.append(ArmTimer(at, ("timeout", entry.tenant, job.id, job.attempt)))
        for limit in core._limits.states.values():
            if limit.timer_armed:
                out.append(ArmTimer(limit.timer_at, ("limit", "", limit.key[1], 0)))
        registry = core._tenants
        if self.state is None:
            if entries:
                core._arm_sweep(out)  # (as a submit does)
        elif registry.sweep_at is not None:
            out.append(ArmTimer(registry.sweep_at, ("sweep", "", "", 0)))

    def transitions(self) -> None:
        """The only Records of a Restore (see the module docstring). Timers these moves would
        disarm were never armed here: those DisarmTimers are left out."""
        core, moves = self.core, list[Decision]()
        for _, _, entry in sorted(self.due, key=lambda item: item[:2]):
            core._enqueue_pending(entry, moves)
        core._waits.restored(self.waiting, moves)
        for entry, message in self.lost:
            error = JobError(type=LOST_ERROR_TYPE, message=message, attempt=entry.job.attempt)
            retryable = bool(entry.group)  # (a job that cannot run here is not retried)
            attempt_failed(core, entry, error, retryable, Status.FAILED, moves)
        for entry, why in self.gone:
            finish(core, entry, Status.CANCELED, moves, cancel_reason=f"unschedulable: {why}")
        self.out.extend(d for d in moves if type(d) is not DisarmTimer)

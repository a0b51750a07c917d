"""``Scheduler``: the asyncio engine. It owns the core, the store, the backends, the timer heap and
the telemetry emitter, feeds the core events and carries out its decisions.

Dispatch is driven by events only (a submit, a run's end, a cancel, a timer): there is no polling
loop. Each run is one task owned by the engine; its end (whatever happened) is reported to the
core exactly once, and only then is its capacity released.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import inspect
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final

from .._clock import SYSTEM_CLOCK
from .._errors import (
    NotStartedError,
    ValidationError,
    WaitTimeoutError,
)
from .._ir import TERMINAL_STATUSES, Actor, Job, Priority, Status, Tenant
from .._stats import Stats, TenantStats
from .._validate import validate_struct
from ..core import (
    Amend,
    ArmTimer,
    Cancel,
    ConcurrencyLimitChanged,
    DisarmTimer,
    Dispatch,
    Event,
    JobKey,
    Record,
    SchedulingCore,
    Stopped,
    StopRun,
    Succeeded,
    TenantChanged,
    TimerFired,
    TimerKey,
)
from ..stores import MemoryStore, Store
from ..telemetry import default_bus
from ._admission import Admission
from ._audit import pack
from ._backend_events import BackendEvents
from ._config import Config, make_config, resolve, store_of
from ._cron import CronTable, Schedules
from ._emit import Emitter
from ._inbox import ClientInbox
from ._lookups import JobLookups
from ._reads import Reads
from ._recovery import recover, state_blob
from ._retention import Retention
from ._routing import Router
from ._runner import STOPPED, Background, Handoff, Runner
from ._timers import TimerHeap
from ._verbs import Verbs, check_stop_timeout, check_timeout
from ._watchers import Watcher, WatcherTable, notify, unwatch, watch
from ._writes import GroupCommit, MemoryWrites, Writes

if TYPE_CHECKING:
    from ..telemetry.otel import Tracing
    from ._tenants import TenantScope

__all__ = ["Scheduler"]

_log = logging.getLogger("nsai_work.engine")
_QUEUED, _PENDING, _RUNNING = Status.QUEUED, Status.PENDING, Status.RUNNING
_SUCCEEDED_NONE: Final = Succeeded(None)
_STOPPED: Final = Stopped()
_SHUTDOWN_GRACE_S: Final = 5.0
#: Consecutive realtime/interactive jobs a worker starts at once before yielding to the loop.
_INLINE_LIMIT: Final = 8
_URGENT: Final = frozenset({Priority.REALTIME, Priority.INTERACTIVE})
#: How long a worker may chain short jobs before it yields the loop to other tasks.
_SLICE_S: Final = 0.0001
#: ``stats()`` is built in steps of this much work (tenants or waiting jobs) ...
_STATS_STEP: Final = 16
#: ... and yields to the loop after this long, so dispatch goes on while it is built.
_STATS_SLICE_S: Final = 0.00025


class Scheduler(Admission, Runner, Reads, JobLookups, Schedules, Verbs):
    """The async engine: ``async with work.Scheduler(...) as s:``; every verb is ``async def``.

    Takes the keyword options of ``work.Config`` (or a Config). Acts with full rights over every
    tenant.
    """

    #: The OpenTelemetry spans of this scheduler (``telemetry.otel.instrument``), or None.
    _tracing: Tracing | None = None

    def __init__(self, config: Config | None = None, **options: Any) -> None:
        self.config = make_config(config, options)
        self._state = "new"
        self._adopted: set[JobKey] = set()  # see _start_serving_clients
        self._clients: ClientInbox | None = None
        self._retention: Retention | None = None
        self._cron = None

    # ---- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Scheduler:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._state == "running"

    async def start(self) -> None:
        """Start the backends and accept jobs (idempotent)."""
        if self._state == "running":
            return
        if self._state != "new":
            raise NotStartedError("this Scheduler was stopped; create a new one")
        config = self.config
        self._loop = asyncio.get_running_loop()
        resolved = resolve(config)
        self._router = Router(resolved, config.default_backend)
        self._random = random.Random(config.seed)  # (its state is committed with the jobs)
        self._core = SchedulingCore(
            pools=resolved.pools,
            rand=self._random.random,
            max_waiting=config.max_waiting,
            tenants=config.tenants,
            default_tenant=config.default_tenant if config.unknown_tenants == "admit" else None,
            concurrency_limits=config.concurrency_limits,
            guard=config.priority_guard,
            fair_share_resolution_s=config.fair_share_resolution_s,
            tenant_idle_ttl_s=config.tenant_idle_ttl_s,
        )
        store = store_of(config)
        await store.open("scheduler")
        self._store: Store = store
        self._writes: Writes = (
            MemoryWrites(store)
            if isinstance(store, MemoryStore)
            else GroupCommit(store, flush_s=config.store_flush_s, timeout_s=config.store_timeout_s)
        )
        self._writes.start()
        self._reads_lag = self._writes.durable
        self._max_result_bytes = config.max_result_bytes
        self._bus = config.telemetry if config.telemetry is not None else default_bus()
        self._emitter = Emitter(self._bus)
        clock = config.clock if config.clock is not None else SYSTEM_CLOCK
        self._monotonic, self._wall_time = clock.monotonic, clock.time
        self._timers = TimerHeap(self._loop, self._on_timer, clock)
        self._runs = {}
        # who waits for a job to be terminal (wait, wait_many, as_completed), by job id: one
        # watcher, or a list when several do
        self._watchers: WatcherTable = {}
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._handoff: Handoff | None = None
        self._inbox: deque[Callable[[], None]] = deque()
        self._inbox_armed = False
        self._background = Background()
        self._executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="nsai-backend")
        for info in self._router.backends.values():
            bind = getattr(info.backend, "bind", None)
            if bind is not None:  # the channel for its pool and availability changes
                bind(BackendEvents(self, info))
            hook = getattr(info.backend, "start", None)
            if hook is not None:
                result = hook()
                if inspect.isawaitable(result):
                    await result
        writes = self._writes
        if isinstance(writes, GroupCommit):  # a durable store: continue from what it kept
            writes.state_source = lambda: state_blob(self)
            writes.on_conflict = self._withdraw
            await recover(self)
        self._state = "running"
        self._start_serving_clients()
        self._cron = CronTable(self)
        self._cron.start()

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop: running jobs may finish until ``timeout`` seconds.

        With the memory store, which keeps nothing, waiting jobs are canceled (reason
        ``shutdown``), and running ones still going at ``timeout`` are canceled too and get 5
        more seconds to end. A run still going then (a sync handler's thread, or an async
        handler that ignores cancellation) is abandoned, with an error logged naming its job.

        With a durable store, waiting jobs stay in it for the next start (none starts once
        the stop has begun), and no job is canceled: a run still going at ``timeout`` is
        abandoned, and the next start recovers it as a crash would (its attempt ends with
        ``engine_lost``, then its retry policy decides)."""
        check_stop_timeout(timeout)
        if self._state != "running":
            return
        self._state = "stopping"
        if self._cron is not None:
            self._cron.halt()  # (no await before waiting jobs are canceled)
        if self._clients is not None:
            await self._clients.stop()
        if self._retention is not None:
            await self._retention.stop()
        loop = self._loop
        if self._writes.durable:
            self._core.dispatching = False  # waiting jobs stay in the store for the next start
            await self._wait_runs(loop.time() + max(0.0, timeout))
            left = list(self._runs.values())
            self._state = "stopped"  # their ends record nothing: the next start recovers them
            for task, ctx, info in left:
                _log.warning(
                    "nsai-work: job %s (tenant %r) on %r still running at stop; it is left "
                    "running in the store and recovered at the next start",
                    ctx.job.id,
                    ctx.job.tenant_id,
                    info.name,
                )
                task.cancel()
            self._runs.clear()
        else:
            waiting = lambda status: status is not _RUNNING  # noqa: E731
            self._cancel_live(waiting)
            # running jobs may finish; retries scheduled meanwhile are canceled as they come
            await self._wait_runs(
                loop.time() + max(0.0, timeout), lambda: self._cancel_live(waiting)
            )
            self._cancel_live(lambda status: True)
            await self._wait_runs(loop.time() + _SHUTDOWN_GRACE_S)
        for _, ctx, info in self._runs.values():
            job = ctx.job
            _log.error(
                "nsai-work: job %s (tenant %r, kind %r) on %r did not end within %.0f s of its "
                "cancellation at stop (a sync handler still in its thread, or an async handler "
                "that ignores cancellation); abandoned",
                job.id,
                job.tenant_id,
                job.kind,
                info.name,
                _SHUTDOWN_GRACE_S,
            )
        self._timers.close()
        if self._cron is not None:
            await self._cron.stop()
        await self._background.settle(_SHUTDOWN_GRACE_S)  # backends' cancels still going
        for info in self._router.backends.values():
            hook = getattr(info.backend, "stop", None)
            if hook is not None:
                try:
                    result = hook()
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    _log.exception("backend %r failed to stop", info.name)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._state = "stopped"
        await self._writes.close()
        if self._writes.durable:  # (the memory store's jobs stay readable after stop)
            await self._store.close()

    def _start_serving_clients(self) -> None:
        """With a durable store, admit the jobs and carry out the cancel requests that client
        processes commit to it (engine/_inbox.py). Their jobs are rows of the store already:
        while a client job's admission is not committed its key is in ``_adopted``, and its
        records are written as updates, not inserts."""
        if self._store.durable:
            self._clients = ClientInbox(self)
            self._clients.start()
            self._retention = Retention(
                self._store,
                ttl_s=self.config.finished_ttl_s,
                keep_max=self.config.finished_max,
                wall=self._wall_time,
            )
            self._retention.start()

    async def _wait_runs(self, deadline: float, between: Callable[[], None] | None = None) -> None:
        """Wait until no run is in flight or ``deadline`` (loop time) has passed; ``between``
        runs after each wake-up."""
        loop = self._loop
        while self._runs:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            tasks = {task for task, _, _ in self._runs.values() if not task.done()}
            if not tasks:  # a task ended without reporting its run (never expected): report it
                for key, (_, ctx, _) in list(self._runs.items()):
                    if key in self._runs:
                        self._end_run(ctx.job, STOPPED, None)
                continue
            await asyncio.wait(tasks, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            if between is not None:
                between()

    def abandon(self) -> None:
        """Give up without stopping, because the loop is gone (the blocking facade calls this
        when its loop thread died): runs that end later report nothing."""
        self._state = "stopped"

    def _cancel_live(self, which: Any) -> None:
        keys = [(e.tenant, e.job.id) for e in self._core.live_entries() if which(e.status)]
        for tenant_id, job_id in keys:
            self._feed(Cancel(tenant_id, job_id, "shutdown"))

    def _require_running(self) -> None:
        if self._state != "running":
            raise NotStartedError(
                f"the scheduler is {self._state}: use `async with work.Scheduler() as s:` or "
                f"`await s.start()` before submitting"
            )

    # ---- the scheduler's own verbs (those on jobs are Verbs') ----------------------------------

    @property
    def _engine(self) -> Scheduler:
        return self

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until no execution is in flight (every dispatched run has really ended and
        released its capacity). Useful in tests; ``WaitTimeoutError`` after ``timeout``."""
        self._require_started()
        check_timeout(timeout)
        if not self._runs:
            return
        future: asyncio.Future[None] = self._loop.create_future()
        self._idle_waiters.append(future)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise WaitTimeoutError(
                f"{len(self._runs)} runs still in flight after {timeout} s"
            ) from None

    async def stats(self) -> Stats:
        """Counts by status per priority, tenant and backend; pools; waiting reasons.

        It costs O(tenants + waiting jobs), built in slices of about a millisecond between
        which the engine goes on dispatching (each tenant's counts are read at one instant, so
        totals add up; a waiting job's reason is the one it has when its slice comes)."""
        self._require_started()
        builder = self._core.stats_builder()
        clock = time.perf_counter
        started = clock()
        while not builder.step(_STATS_STEP):
            if clock() - started >= _STATS_SLICE_S:
                await asyncio.sleep(0)
                started = clock()
        return builder.result()

    async def set_tenant(self, tenant: Tenant) -> Tenant:
        """Add or change a tenant (weight, quota, namespace limits), effective for the next
        decision. A quota below current use is allowed: nothing running is stopped, new
        dispatches wait."""
        checked = validate_struct(tenant, Tenant, "$.tenant")
        self._require_started()
        self._feed(TenantChanged(checked))
        return checked

    async def set_concurrency_limit(self, group: str, limit: int) -> None:
        """At most ``limit`` jobs of ``constraints.concurrency_group == group`` run at once."""
        if not isinstance(group, str) or not group:
            raise ValidationError(
                f"a concurrency group is a non-empty string, got {group!r}", path="$.group"
            )
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValidationError(
                f"a concurrency limit is an int >= 1, got {limit!r}", path="$.limit"
            )
        self._require_started()
        self._feed(ConcurrencyLimitChanged(group, limit))

    def as_tenant(self, tenant_id: str) -> TenantScope:
        """A handle that sees and changes only ``tenant_id``'s jobs."""
        from ._tenants import TenantScope

        return TenantScope(self, tenant_id)

    # ---- what the verbs do on the loop thread -------------------------------------------------

    async def _cancel(self, key: JobKey, reason: str, actor: Actor | None = None) -> Job:
        """Cancel a live job; the job as it is then. A job the engine does not hold is a
        client's not admitted yet: it is asked to cancel through the store, as a client asks,
        and the client inbox cancels it as it admits it."""
        if self._clients is not None and self._core.get(*key) is None:
            await self._store.request_cancel(key, pack(reason, actor))
        else:
            self._feed(Cancel(key[0], key[1], reason, actor))
        return self._current(await self._stored(key))

    def _tenant_stats(self, tenant_id: str) -> TenantStats:
        """One tenant's stats, from its own counters: O(1) in the number of tenants (zeros for a
        tenant never seen)."""
        self._require_started()
        return self._core.tenant_stats(tenant_id)

    def _require_started(self) -> None:
        if self._state == "new":
            raise NotStartedError("the scheduler was never started")

    # ---- carrying out decisions -----------------------------------------------------------------

    def _feed(self, event: Event) -> None:
        now = self._monotonic()
        self._apply(self._core.handle(event, now, self._wall_time()), now)

    def _apply(self, decisions: builtins.list[Any], now: float) -> None:
        writes = self._writes
        adopted = self._adopted  # client jobs being admitted: stored already
        emitter = self._emitter if self._bus._by_event else None  # one lookup when unobserved
        for decision in decisions:
            kind = type(decision)
            if kind is Dispatch:
                writes.update(decision.job, now)
                if emitter is not None:
                    emitter.dispatch(decision)
                self._start_run(decision)
            elif kind is Record:
                job = decision.job
                if decision.previous is None and not (
                    adopted and (job.tenant_id, job.id) in adopted
                ):
                    writes.insert(job)
                else:
                    writes.update(job, now)
                if job.status not in TERMINAL_STATUSES:
                    if emitter is not None:
                        emitter.record(decision)
                elif writes.durable:  # told once the result is committed
                    writes.after_commit(functools.partial(self._finished, decision))
                else:
                    if emitter is not None:
                        emitter.record(decision)
                    if self._watchers:
                        self._notify(job)
            elif kind is ArmTimer:
                self._timers.arm(decision.at, decision.key)
            elif kind is StopRun:
                self._stop_run(decision)
            elif kind is DisarmTimer:
                self._timers.disarm(decision.key)
            elif kind is Amend:
                writes.update(decision.job, now)

    def _finished(self, decision: Record) -> None:
        """A job's terminal record is committed: tell telemetry and whoever waits for it."""
        job = decision.job
        if self._writes.withdrawn((job.tenant_id, job.id)):
            return  # not this job's record: the store's job with its key is another one
        if self._bus._by_event:
            self._emitter.record(decision)
        if self._watchers:
            self._notify(decision.job)

    def _withdraw(self, keys: builtins.list[JobKey]) -> None:
        """The store refused these admitted jobs: their keys are other jobs' there (a client
        committed the same id between the submit's check and its commit), and their submits
        failed with ``ConflictError``. They end here too, canceled, with nothing stored or
        told of their end (that would be about the store's job)."""
        for tenant_id, job_id in keys:
            if self._core.get(tenant_id, job_id) is not None:
                self._feed(Cancel(tenant_id, job_id, "withdrawn: duplicate id in the store"))

    # ---- calls from other threads ---------------------------------------------------------------

    def call_threadsafe(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the loop thread soon (the blocking facade's hand-off). It runs
        when the next run ends, or when the loop wakes up if it is idle, whichever is first."""
        self._inbox.append(callback)
        if not self._inbox_armed:
            self._inbox_armed = True
            self._loop.call_soon_threadsafe(self._drain_inbox)

    def _drain_inbox(self) -> None:
        self._inbox_armed = False
        inbox = self._inbox
        while inbox:
            inbox.popleft()()

    def _on_timer(self, key: TimerKey) -> None:
        self._feed(TimerFired(key))

    def _watch(self, job_id: str, watcher: Watcher) -> None:
        """Have ``watcher.done(job)`` called when a job with this id is terminal."""
        watch(self._watchers, job_id, watcher)

    def _unwatch(self, job_id: str, watcher: Watcher) -> None:
        unwatch(self._watchers, job_id, watcher)

    def _notify(self, job: Job) -> None:
        notify(self._watchers, job)

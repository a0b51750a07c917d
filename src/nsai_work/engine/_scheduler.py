"""``Scheduler``: the asyncio engine. It owns the core, the store, the backends, the timer heap and
the telemetry emitter, feeds the core events and carries out its decisions.

Dispatch is driven by events only (a submit, a run's end, a cancel, a timer): there is no polling
loop. Each run is one task owned by the engine; its end (whatever happened) is reported to the
core exactly once, and only then is its capacity released.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import functools
import inspect
import logging
import random
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final

from msgspec import Struct
from msgspec.structs import replace

from .._clock import SYSTEM_CLOCK
from .._context import JobContext
from .._errors import (
    ConflictError,
    NonRetryableError,
    NotFoundError,
    NotStartedError,
    UnschedulableError,
    ValidationError,
    WaitTimeoutError,
    WorkError,
    public_type_name,
)
from .._ir import TERMINAL_STATUSES, Job, JobError, Priority, Status, Tenant
from .._stats import Stats, TenantStats
from .._validate import is_utf8, normalize_result, validate_new_job, validate_struct
from ..backends import RemoteError, run_in_thread
from ..core import (
    ArmTimer,
    Cancel,
    ConcurrencyLimitChanged,
    DisarmTimer,
    Dispatch,
    Event,
    Failed,
    JobKey,
    Limit,
    Outcome,
    Record,
    Reject,
    Rejected,
    Route,
    RunEnded,
    SchedulingCore,
    Stopped,
    StopRun,
    Submit,
    Succeeded,
    TenantChanged,
    TimerFired,
    TimerKey,
)
from ..stores import ListQuery, MemoryStore, Store, store_from_url
from ..telemetry import default_bus
from ._config import Config, make_config, resolve
from ._emit import Emitter, rejection_reason
from ._inbox import ClientInbox
from ._lookups import JobLookups
from ._recovery import recover, state_blob
from ._retention import Retention
from ._timers import TimerHeap
from ._verbs import Verbs, Watcher, check_timeout
from ._writes import GroupCommit, MemoryWrites, Writes

if TYPE_CHECKING:
    from ._tenants import TenantScope

__all__ = ["Page", "Scheduler"]

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


class Page(Struct, kw_only=True):
    """A page of ``list``: jobs newest first, and the cursor for the next page (None: last).
    Iterating a Page iterates its jobs."""

    jobs: builtins.list[Job]
    next_cursor: str | None = None

    def __iter__(self) -> Iterator[Job]:
        return iter(self.jobs)

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> Job:
        return self.jobs[index]


#: A run in flight: its task, its context, its backend.
_RunTuple = tuple[asyncio.Task[Any], JobContext, "_BackendInfo"]


class _Handoff:
    """Open while a worker reports its run's end: the first job that report dispatches goes to
    ``next``, to be run by the same worker task."""

    __slots__ = ("next", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.next: tuple[_BackendInfo, Job, JobContext] | None = None


class _BackendInfo:
    """What routing and running need from one backend, looked up once."""

    __slots__ = (
        "async_execute",
        "auto",
        "backend",
        "check",
        "extra_pools",
        "name",
        "pools",
        "pools_for",
        "routes",
        "shared_limits",
    )

    def __init__(self, backend: Any, pools: tuple[str, ...], extra: tuple[str, ...]) -> None:
        self.backend = backend
        self.name: str = backend.name
        self.pools = pools
        self.extra_pools = extra
        self.pools_for = getattr(backend, "pools_for", None)
        self.shared_limits = getattr(backend, "shared_limits", None)
        self.check = getattr(backend, "validate", None)
        self.auto = bool(getattr(backend, "auto_select", True))
        self.async_execute = inspect.iscoroutinefunction(backend.execute)
        # its routes, one object per set of pools: the jobs of a batch share them (a tuple per
        # job would only be work for the garbage collector until the batch is admitted)
        self.routes: dict[tuple[str, ...], tuple[str, tuple[str, ...]]] = {}

    def route_for(self, job: Job) -> tuple[str, tuple[str, ...]]:
        pools = self.pools if self.pools_for is None else tuple(self.pools_for(job))
        route = self.routes.get(pools)
        if route is None:
            all_pools = pools + self.extra_pools if self.pools_for is not None else pools
            route = self.routes[pools] = (self.name, all_pools)
        return route

    def validate(self, job: Job) -> None:
        if self.check is not None:
            self.check(job)

    def explain(self, job: Job) -> str:
        explain = getattr(self.backend, "explain", None)
        if explain is not None:
            return str(explain(job))
        return f"{self.name}: supports() is False for this job"


def _with_index(error: WorkError, index: int) -> WorkError:
    """The same error, saying which job of a batch it is about."""
    if isinstance(error, ValidationError):
        if error.index == index:
            return error
        labelled_error = copy.copy(error)  # keeps the subclass and its attributes
        labelled_error.index = index
        labelled_error.args = (f"{error.rule} - at {error.path} of job #{index}",)
        return labelled_error
    labelled = copy.copy(error)
    labelled.args = (f"job #{index} of the batch: {error}",)
    return labelled


def _job_error(exc: BaseException, attempt: int) -> JobError:
    """The exception as data; never raises, whatever the exception's ``__str__`` does."""
    kind = type(exc)
    qualname = getattr(kind, "__qualname__", "?")
    # (an exception raised again from a worker process carries the original type's name)
    name = exc.type_name if isinstance(exc, RemoteError) else public_type_name(kind)
    try:
        message = str(exc)
    except Exception:
        message = f"<{qualname} whose str() raised>"
    try:
        trace: str | None = "".join(traceback.format_exception(exc))
    except Exception:
        trace = None
    return JobError(
        type=name,
        message=_encodable(message),
        traceback=None if trace is None else _encodable(trace),
        attempt=attempt,
    )


def _encodable(text: str) -> str:
    """``text`` with what UTF-8 cannot encode (lone surrogates) replaced by ``?``: a job's
    error must stay storable whatever the exception's message holds."""
    return text if is_utf8(text) else text.encode("utf-8", "replace").decode("utf-8")


class Scheduler(JobLookups, Verbs):
    """The async engine: ``async with work.Scheduler(...) as s:``; every verb is ``async def``.

    Takes the keyword options of ``work.Config`` (or a Config). Acts with full rights over every
    tenant.
    """

    def __init__(self, config: Config | None = None, **options: Any) -> None:
        self.config = make_config(config, options)
        self._state = "new"
        self._adopted: set[JobKey] = set()  # see _start_serving_clients
        self._clients: ClientInbox | None = None
        self._retention: Retention | None = None

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
        self._backends: dict[str, _BackendInfo] = {
            b.name: _BackendInfo(
                b, tuple(p.name for p in resolved.pools[b.name]), resolved.extra[b.name]
            )
            for b in resolved.backends
        }
        order = [b for b in self._backends.values() if b.auto]
        if config.default_backend is not None:
            default = self._backends[config.default_backend]
            order = [default] + [b for b in order if b is not default]
        self._auto_order = order
        self._routes: dict[Route, Route] = {}
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
        store = _store_of(config)
        await store.open("scheduler")
        self._store: Store = store
        self._writes: Writes = (
            MemoryWrites(store)
            if isinstance(store, MemoryStore)
            else GroupCommit(store, flush_s=config.store_flush_s, timeout_s=config.store_timeout_s)
        )
        self._writes.start()
        self._max_result_bytes = config.max_result_bytes
        self._bus = config.telemetry if config.telemetry is not None else default_bus()
        self._emitter = Emitter(self._bus)
        clock = config.clock if config.clock is not None else SYSTEM_CLOCK
        self._monotonic, self._wall_time = clock.monotonic, clock.time
        self._timers = TimerHeap(self._loop, self._on_timer, clock)
        self._runs: dict[tuple[str, str, int], _RunTuple] = {}  # by (tenant, job id, attempt)
        # who waits for a job to be terminal (wait, wait_many, as_completed), by job id: one
        # watcher, or a list when several do
        self._watchers: dict[str, Watcher | list[Watcher]] = {}
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._handoff: _Handoff | None = None
        self._inbox: deque[Callable[[], None]] = deque()
        self._inbox_armed = False
        self._executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="nsai-backend")
        for info in self._backends.values():
            hook = getattr(info.backend, "start", None)
            if hook is not None:
                result = hook()
                if inspect.isawaitable(result):
                    await result
        writes = self._writes
        if isinstance(writes, GroupCommit):  # a durable store: continue from what it kept
            writes.state_source = lambda: state_blob(self)
            await recover(self)
        self._state = "running"
        self._start_serving_clients()

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
        for info in self._backends.values():
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
                        self._end_run(ctx.job, _STOPPED, None)
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

    async def _admit(self, jobs: Sequence[Job], *, batch: bool) -> builtins.list[Job]:
        """Validate, route and admit jobs (all or nothing); the admitted jobs, once they are
        committed to the store."""
        self._require_running()
        validated: builtins.list[Job] = []
        routes: builtins.list[Route] = []
        limits: builtins.list[tuple[Limit, ...]] = []
        any_limits = False
        index = 0
        try:
            for index, job in enumerate(jobs):
                checked = validate_new_job(job, index if batch else None)
                route, shared = self._route(checked)
                routes.append(route)
                limits.append(shared)
                any_limits = any_limits or bool(shared)
                validated.append(checked)
            keys = [(job.tenant_id, job.id) for job in validated]
            for index, stored in enumerate(await self._store.get_many(keys)):  # noqa: B007
                if stored is not None:  # (a live job's id is refused by the core)
                    raise ConflictError(
                        f"duplicate job id {stored.id!r}: tenant {stored.tenant_id!r} already "
                        f"has a job with this id; omit id to get a fresh one"
                    )
        except WorkError as exc:
            error = _with_index(exc, index) if batch else exc
            self._feed(Rejected(tuple(jobs), rejection_reason(error)))
            self._emitter.rejected([j for j in jobs if type(j) is Job], error)
            raise error from None
        if not validated:
            return []
        submit = Submit(tuple(validated), tuple(routes), tuple(limits) if any_limits else ())
        now = self._monotonic()
        decisions = self._core.handle(submit, now, self._wall_time())
        rejection = decisions[0] if decisions else None
        if type(rejection) is Reject:
            error = rejection.error
            if batch and rejection.index is not None:
                error = _with_index(error, rejection.index)
            self._emitter.rejected(validated, error)
            raise error
        self._apply(decisions, now)
        live = self._core.get
        admitted = [live(*key) or job for key, job in zip(keys, validated, strict=True)]
        writes = self._writes
        await writes.wait_submitted(writes.submitted(keys))
        return admitted

    async def _owners(self, job_id: str) -> builtins.list[str]:
        """The tenants with a job with this id: live here, or in the store."""
        if self._state == "new":
            return []
        live = self._core.owners(job_id)
        stored = await self._store.owners(job_id)
        return live if not stored else sorted({*live, *stored})

    async def _owners_many(self, job_ids: Sequence[str]) -> dict[str, builtins.list[str]]:
        """The tenants with a job with each of these ids: live here, or in the store (one
        store query)."""
        if self._state == "new" or not job_ids:
            return {}
        stored = await self._store.owners_many(job_ids)
        live = self._core.owners
        found: dict[str, builtins.list[str]] = {}
        for job_id in job_ids:
            owners = live(job_id)
            more = stored.get(job_id)
            if more and more != owners:  # (the usual case: the same one tenant, or none live)
                owners = sorted({*owners, *more}) if owners else more
            found[job_id] = owners
        return found

    async def _read(self, keys: Sequence[JobKey]) -> builtins.list[Job | None]:
        """Each job's latest snapshot: a live job's from the core (a durable store may not have
        it yet), any other's from the store; None when there is none."""
        if self._state == "new":
            return [None] * len(keys)
        live = self._core.get
        jobs = [live(*key) for key in keys]
        missing = [index for index, job in enumerate(jobs) if job is None]
        if missing:
            found = await self._store.get_many([keys[index] for index in missing])
            for index, job in zip(missing, found, strict=True):
                jobs[index] = job
        return jobs

    def not_found(self, job_id: str) -> NotFoundError:
        """The one answer for an unknown id, another tenant's job, or a pruned one."""
        return NotFoundError(
            f"no job {job_id!r} here: unknown, another tenant's, or finished and pruned "
            f"(finished jobs are kept finished_ttl_s={self.config.finished_ttl_s} s)"
        )

    def _current(self, job: Job) -> Job:
        """A stored snapshot with what changes between transitions filled in."""
        status = job.status
        if status is _QUEUED or status is _PENDING:
            reason = self._core.waiting_reason(job.tenant_id, job.id)
            if reason is not None and reason != job.waiting_reason:
                return replace(job, waiting_reason=reason)
        elif status is _RUNNING:
            run = self._runs.get((job.tenant_id, job.id, job.attempt))
            if run is not None and run[1].last_progress is not None:
                return replace(job, progress=run[1].last_progress)
        return job

    async def _list(self, query: ListQuery) -> Page:
        """A page of a tenant's jobs from the store's indexes, newest first (arguments checked);
        live jobs as they are now."""
        if self._state == "new":
            return Page(jobs=[])
        jobs, next_cursor = await self._store.list(query)
        live = self._core.get
        return Page(
            jobs=[self._current(live(job.tenant_id, job.id) or job) for job in jobs],
            next_cursor=next_cursor,
        )

    async def _cancel(self, key: JobKey, reason: str) -> Job:
        """Cancel a live job; the job as it is then. A job the engine does not hold is a
        client's not admitted yet: it is asked to cancel through the store, as a client asks,
        and the client inbox cancels it as it admits it."""
        if self._clients is not None and self._core.get(*key) is None:
            await self._store.request_cancel(key, reason)
        else:
            self._feed(Cancel(key[0], key[1], reason))
        return self._current(await self._stored(key))

    def _tenant_stats(self, tenant_id: str) -> TenantStats:
        """One tenant's stats, from its own counters: O(1) in the number of tenants (zeros for a
        tenant never seen)."""
        self._require_started()
        return self._core.tenant_stats(tenant_id)

    def _require_started(self) -> None:
        if self._state == "new":
            raise NotStartedError("the scheduler was never started")

    # ---- routing ------------------------------------------------------------------------------

    def _route(self, job: Job) -> tuple[Route, tuple[Limit, ...]]:
        """The backends that may run the job, with their pools, in order, and the shared
        limits (across tenants) of the first of them."""
        name = job.constraints.backend
        if name is not None:
            info = self._backends.get(name)
            if info is None:
                raise UnschedulableError(
                    f"unknown backend {name!r}; configured backends: {sorted(self._backends)} "
                    f"- at $.constraints.backend"
                )
            if not info.backend.supports(job):
                raise UnschedulableError(
                    f"backend {name!r} does not run this job: {info.explain(job)} - at "
                    f"$.constraints.backend"
                )
            info.validate(job)
            return self._interned((info.route_for(job),)), _shared_limits(info, job)
        route = []
        first: _BackendInfo | None = None
        for info in self._auto_order:
            if info.backend.supports(job):
                info.validate(job)
                route.append(info.route_for(job))
                first = first or info
        if first is None:
            reasons = "; ".join(info.explain(job) for info in self._auto_order)
            raise UnschedulableError(f"no backend runs kind {job.kind!r}: {reasons} - at $.kind")
        return self._interned(tuple(route)), _shared_limits(first, job)

    def _interned(self, route: Route) -> Route:
        """One object per distinct route (see ``_BackendInfo.routes``)."""
        return self._routes.setdefault(route, route)

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

    def _finished(self, decision: Record) -> None:
        """A job's terminal record is committed: tell telemetry and whoever waits for it."""
        if self._bus._by_event:
            self._emitter.record(decision)
        if self._watchers:
            self._notify(decision.job)

    def _start_run(self, decision: Dispatch) -> None:
        job = decision.job
        info = self._backends[decision.backend]
        ctx = JobContext(job)
        handoff = self._handoff
        if handoff is not None and handoff.next is None:
            # A worker is reporting its run's end: it takes this job itself (no new task, and an
            # urgent job starts in this very loop step).
            handoff.next = (info, job, ctx)
            task = handoff.task
        else:
            task = self._loop.create_task(self._worker(info, job, ctx))
        self._runs[(job.tenant_id, job.id, job.attempt)] = (task, ctx, info)

    async def _worker(self, info: _BackendInfo, job: Job, ctx: JobContext) -> None:
        """Run a job; then the job that its end dispatched first, if any, and so on.

        Realtime and interactive jobs handed over this way start at once (up to
        ``_INLINE_LIMIT`` in a row); others first yield to the loop, like a new task would.
        A run stopped before it began (a cancel in the same loop step as its dispatch) never
        calls the backend; whatever user code raises (``BaseException`` too: ``SystemExit``,
        ``KeyboardInterrupt``) fails that attempt and the worker goes on.
        """
        task = asyncio.current_task()
        assert task is not None
        clock = time.monotonic  # the loop's clock, read without a Python frame per job
        inline = 0
        yield_first = False
        slice_start = clock()
        handoff = _Handoff(task)  # reused: open again at the end of each run
        while True:
            outcome: Outcome = _STOPPED
            taker: _Handoff | None = None  # None when the task itself is going away
            try:
                if yield_first:
                    await asyncio.sleep(0)
                    slice_start = clock()
                if not ctx._cancelled:  # (the attribute: no property call per run)
                    ctx._running = True  # from now on a stop cancels this task
                    try:  # one attempt (inlined: no extra coroutine per run)
                        if info.async_execute:
                            result = await info.backend.execute(job, ctx)
                        else:
                            result = await run_in_thread(
                                self._executor, info.backend.execute, job, ctx
                            )
                        outcome = (
                            _SUCCEEDED_NONE if result is None else self._succeeded(result, job)
                        )
                    except NonRetryableError as exc:
                        outcome = Failed(_job_error(exc, job.attempt), retryable=False)
                    except Exception as exc:
                        outcome = Failed(_job_error(exc, job.attempt), retryable=True)
                    except asyncio.CancelledError:
                        raise  # a stop, not a failure
                    except BaseException as exc:  # SystemExit, KeyboardInterrupt: not retried
                        outcome = Failed(_job_error(exc, job.attempt), retryable=False)
                taker = handoff
            except asyncio.CancelledError:
                if not ctx._cancelled:
                    raise  # not our StopRun: the task itself is being cancelled
                taker = handoff
            finally:  # whatever happened, the run has ended: report it exactly once
                if ctx._cancelled:
                    while task.cancelling():  # our StopRun was delivered: the worker goes on
                        task.uncancel()
                handoff.next = None
                self._end_run(job, outcome, taker)
            if handoff.next is None:
                return
            info, job, ctx = handoff.next
            if job.priority in _URGENT and inline < _INLINE_LIMIT:
                inline += 1  # an urgent job starts in this very step
                yield_first = False
            elif clock() - slice_start < _SLICE_S:
                yield_first = False  # short jobs chain within one slice of the loop
            else:
                yield_first = True  # others get the loop, as if this were a new task
                inline = 0

    def _end_run(self, job: Job, outcome: Outcome, handoff: _Handoff | None) -> None:
        self._runs.pop((job.tenant_id, job.id, job.attempt), None)
        if self._state == "stopped":
            return  # a run abandoned at stop ended after all: nobody is told any more
        if self._inbox:  # calls from other threads first: a realtime submit gets this slot
            self._drain_inbox()
        self._handoff = handoff
        try:
            self._feed(RunEnded(job.tenant_id, job.id, job.attempt, outcome))
        except Exception:  # pragma: no cover - an engine bug must not go unnoticed
            _log.exception("nsai-work engine failed to record the end of job %s", job.id)
        finally:
            self._handoff = None
        if self._idle_waiters and not self._runs:
            for future in self._idle_waiters:
                if not future.done():
                    future.set_result(None)
            self._idle_waiters.clear()

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

    def _succeeded(self, result: Any, job: Job) -> Outcome:
        """A handler's return value as an outcome: not JSON-encodable (or too large) fails the
        attempt for good."""
        try:
            return Succeeded(normalize_result(result, self._max_result_bytes))
        except ValidationError as exc:
            return Failed(_job_error(exc, job.attempt), retryable=False)
        except Exception as exc:  # a result whose encoding itself blows up
            return Failed(_job_error(exc, job.attempt), retryable=False)

    def _stop_run(self, decision: StopRun) -> None:
        run = self._runs.get((decision.tenant_id, decision.job_id, decision.attempt))
        if run is None:
            return
        task, ctx, info = run
        ctx.cancel()
        if not ctx._running:
            return  # not begun: the worker sees the flag and reports the end without running
        try:
            result = info.backend.cancel(decision.job_id)
            if inspect.isawaitable(result):
                self._loop.create_task(_quietly(result, info.name))
        except BaseException:
            _log.exception("backend %r failed to cancel job %s", info.name, decision.job_id)
        task.cancel()

    def _on_timer(self, key: TimerKey) -> None:
        self._feed(TimerFired(key))

    def _watch(self, job_id: str, watcher: Watcher) -> None:
        """Have ``watcher.done(job)`` called when a job with this id is terminal."""
        found = self._watchers.get(job_id)
        if found is None:
            self._watchers[job_id] = watcher
        elif type(found) is list:
            found.append(watcher)
        else:
            self._watchers[job_id] = [found, watcher]  # type: ignore[list-item]

    def _unwatch(self, job_id: str, watcher: Watcher) -> None:
        found = self._watchers.get(job_id)
        if found is watcher:
            del self._watchers[job_id]
        elif type(found) is list and watcher in found:
            found.remove(watcher)
            if len(found) == 1:
                self._watchers[job_id] = found[0]

    def _notify(self, job: Job) -> None:
        """A job is terminal: wake whoever watches it (watchers check the tenant: an id may
        be used by two tenants)."""
        watchers = self._watchers
        found = watchers.get(job.id)
        if found is None:
            return
        if type(found) is not list:
            if found.done(job):  # type: ignore[union-attr]
                del watchers[job.id]
            return
        left = [each for each in found if not each.done(job)]
        if not left:
            del watchers[job.id]
        else:
            watchers[job.id] = left[0] if len(left) == 1 else left


def _shared_limits(info: _BackendInfo, job: Job) -> tuple[Limit, ...]:
    if info.shared_limits is None:
        return ()
    return tuple(info.shared_limits(job))


async def _quietly(awaitable: Any, backend: str) -> None:
    try:
        await awaitable
    except asyncio.CancelledError:
        raise
    except BaseException:
        _log.exception("backend %r failed to cancel a job", backend)


def check_stop_timeout(timeout: float) -> None:
    """Refuse a ``stop`` timeout that is not a finite number of seconds >= 0 (None is no
    limit for a wait, not for a stop)."""
    if timeout is None:
        raise ValidationError("stop's timeout is seconds >= 0, got None", path="$.timeout")
    check_timeout(timeout)


def _store_of(config: Config) -> Store:
    """The store a config names (a URL, or a Store object), not opened yet."""
    store = config.store
    if not isinstance(store, str):
        return store  # type: ignore[no-any-return]
    if store.split("://", 1)[0].lower() == "memory":  # retention options are the memory store's
        return MemoryStore(finished_ttl_s=config.finished_ttl_s, finished_max=config.finished_max)
    return store_from_url(store)

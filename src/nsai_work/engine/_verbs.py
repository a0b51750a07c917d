"""The verbs on jobs, written once for every face.

``Verbs`` holds the one implementation of each verb on jobs (submit, get, list, wait, cancel,
retry...): the checks of its arguments, its options, its documentation. Every face runs it:

- ``Scheduler`` is a ``Verbs`` with full rights over every tenant;
- ``TenantScope`` is a ``Verbs`` bound to one tenant (``scheduler.as_tenant("acme")``);
- the blocking faces (``SyncScheduler``, ``SyncTenantScope`` and the module functions) run these
  same coroutines on the engine's loop thread (``_blocking.blocking``), and take their
  signatures and docstrings from them.

So an option added here is an option of every face. Each verb is a coroutine, so a verb can wait
for what it needs (a durable store's commit) before it answers, on every face alike.

What carries a verb out is an ``Engine``: the scheduler itself, or a ``Client`` of a store that
a scheduler in another process serves (``engine/_client.py``).
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Literal, Protocol

from msgspec import Struct

from .._bulk import BulkFilter, BulkResult
from .._errors import ConflictError, ValidationError, WaitTimeoutError
from .._ir import LOCAL_ACTOR, TERMINAL_STATUSES, Actor, Job, Priority, Status
from .._schedule import Schedule
from .._validate import check_status, retry_copy
from .._workflow import Workflow, WorkflowRun, last_first, refreshed
from ..stores import JobKey, ListQuery
from ._bulk import run_bulk
from ._cron_rules import CronSpec, check_cron
from ._watchers import Collector, WaitGroup, Watcher, catch_up

__all__ = ["Engine", "Page", "Verbs", "check_stop_timeout", "check_timeout", "job_list"]


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


class Engine(Protocol):
    """What carries the verbs out (the scheduler, or a client of a store): the engine-internal
    methods ``Verbs`` calls, on the engine's loop."""

    _loop: asyncio.AbstractEventLoop
    #: True when a read may await while jobs finish (a durable store), so a job the read saw
    #: running may have finished before its watcher was registered (see ``catch_up``).
    _reads_lag: bool

    async def _admit(self, jobs: Sequence[Job], *, batch: bool) -> builtins.list[Job]:
        """Validate and submit new jobs (all or nothing); the jobs as accepted."""
        ...

    async def _key(self, job_id: object, tenant_id: object = None) -> JobKey:
        """The (tenant id, job id) a caller means."""
        ...

    async def _lookup(self, job_ids: object, tenant_id: object) -> builtins.list[Job]:
        """The current snapshot of each job id a caller passed (``NotFoundError`` if one is
        unknown)."""
        ...

    async def _stored(self, key: JobKey) -> Job:
        """A job's latest snapshot (``NotFoundError`` if unknown)."""
        ...

    async def _one(self, job_id: object, tenant_id: object) -> Job:
        """The current snapshot of the job a caller names (``_key`` and ``_stored`` in one)."""
        ...

    async def _read(self, keys: Sequence[JobKey]) -> builtins.list[Job | None]:
        """Each job's latest snapshot, None when there is none."""
        ...

    def _current(self, job: Job) -> Job:
        """A snapshot with what changes between transitions filled in."""
        ...

    async def _list(self, query: ListQuery) -> Page:
        """A page of a tenant's jobs (arguments checked)."""
        ...

    async def _cancel(self, key: JobKey, reason: str, actor: Actor | None = None) -> Job:
        """Cancel (or ask to cancel) a job that is not terminal, as ``actor`` (recorded on the
        job); the job as it is then."""
        ...

    def _watch(self, job_id: str, watcher: Watcher) -> None:
        """Have ``watcher.done(job)`` called when a job with this id is terminal."""
        ...

    async def _cron_declare(self, spec: CronSpec) -> Schedule:
        """Add a checked schedule."""
        ...

    async def _cron_list(self, tenant_id: str | None) -> builtins.list[Schedule]:
        """The schedules (of one tenant, or all)."""
        ...

    async def _cron_pause(self, name: object, tenant_id: str | None, paused: bool) -> Schedule:
        """Pause or resume the schedule a caller names."""
        ...

    async def _cron_remove(self, name: object, tenant_id: str | None) -> Schedule:
        """Remove the schedule a caller names."""
        ...

    def _unwatch(self, job_id: str, watcher: Watcher) -> None:
        """Stop calling ``watcher`` for this id."""
        ...


class Verbs:
    """The verbs on jobs. ``_engine`` carries them out; ``_scope`` is the tenant a scoped handle
    is bound to, or None for full rights over every tenant."""

    __slots__ = ()

    @property
    def _engine(self) -> Engine:
        raise NotImplementedError

    @property
    def _scope(self) -> str | None:
        return None

    @property
    def _actor(self) -> Actor:
        """Who calls, for the audit records of cancels and retries (``"local"`` here; the
        server's verbs are its callers' keys)."""
        return LOCAL_ACTOR

    def _tenant(self, tenant_id: str | None) -> str | None:
        """Whose job a caller means: a scoped handle's own tenant, whatever was passed (another
        tenant is refused); with full rights, what was passed."""
        scope = self._scope
        if scope is None or tenant_id is None or tenant_id == scope:
            return scope if scope is not None else tenant_id
        raise ValidationError(
            f"this handle sees tenant {scope!r}'s jobs only; got tenant_id={tenant_id!r}",
            path="$.tenant_id",
        )

    def _own(self, jobs: builtins.list[Job], *, batch: bool) -> builtins.list[Job]:
        """A scoped handle submits its own tenant's jobs only."""
        scope = self._scope
        if scope is not None:
            for index, job in enumerate(jobs):
                owner = getattr(job, "tenant_id", None)
                if owner != scope:
                    raise ValidationError(
                        f"this handle submits for tenant {scope!r} only; the job is for {owner!r}",
                        path="$.tenant_id",
                        index=index if batch else None,
                    )
        return jobs

    async def submit(self, job: Job) -> Job:
        """Admit one job; returns it as accepted (status pending or later)."""
        return (await self._engine._admit(self._own([job], batch=False), batch=False))[0]

    async def submit_many(self, jobs: Iterable[Job]) -> builtins.list[Job]:
        """Admit a batch, all or nothing (the error names the index of the bad job)."""
        return await self._engine._admit(self._own(job_list(jobs), batch=True), batch=True)

    async def get(self, job_id: str, *, tenant_id: str | None = None) -> Job:
        """The job as it is now (``NotFoundError`` if unknown, another tenant's, or pruned).

        Jobs are keyed by (tenant_id, id): ``tenant_id`` is needed only when two tenants have a
        job with this id (``ValidationError`` says so); the same holds for every verb that
        takes job ids."""
        engine = self._engine
        return engine._current(await engine._one(job_id, self._tenant(tenant_id)))

    async def list(
        self,
        tenant_id: str | None = None,
        *,
        namespace: str | None = None,
        status: Status | str | None = None,
        kind: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """A page of a tenant's jobs, newest first; pass ``page.next_cursor`` for the next.

        ``tenant_id`` is required with full rights; a scoped handle lists its own tenant.
        ``namespace``, ``status`` and ``kind`` narrow it (any of them, together); a page costs
        O(page + log n) in every store."""
        tenant_id = self._tenant(tenant_id)
        if tenant_id is None:
            raise ValidationError(
                "list needs tenant_id: whose jobs to list (a handle from as_tenant(...) lists "
                "its own tenant's)",
                path="$.tenant_id",
            )
        if not isinstance(tenant_id, str) or not tenant_id:
            raise ValidationError(
                f"tenant_id is a non-empty string, got {tenant_id!r}", path="$.tenant_id"
            )
        if namespace is not None and (not isinstance(namespace, str) or not namespace):
            raise ValidationError(
                f"namespace is a non-empty string or None, got {namespace!r}", path="$.namespace"
            )
        if status is not None:
            status = check_status(status)
        if kind is not None and (not isinstance(kind, str) or not kind):
            raise ValidationError(
                f"kind is a non-empty string or None, got {kind!r}", path="$.kind"
            )
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
            raise ValidationError(f"limit is an int in [1, 10000], got {limit!r}", path="$.limit")
        if cursor is not None and not isinstance(cursor, str):
            raise ValidationError(f"cursor is a string, got {cursor!r}", path="$.cursor")
        return await self._engine._list(
            ListQuery(
                tenant_id=tenant_id,
                namespace=namespace,
                status=status,
                kind=kind,
                limit=limit,
                cursor=cursor,
            )
        )

    async def wait(
        self, job_id: str, timeout: float | None = None, *, tenant_id: str | None = None
    ) -> Job:
        """The job once terminal, whatever its status (a failed job is returned, not raised);
        ``WaitTimeoutError`` after ``timeout`` seconds."""
        return (await self.wait_many([job_id], timeout, tenant_id=tenant_id))[0]

    async def wait_many(
        self,
        job_ids: Iterable[str],
        timeout: float | None = None,
        *,
        tenant_id: str | None = None,
    ) -> builtins.list[Job]:
        """Every job once terminal, in the order given (one wake-up for the whole set)."""
        engine = self._engine
        jobs = await engine._lookup(job_ids, self._tenant(tenant_id))
        check_timeout(timeout)
        group = WaitGroup(jobs, engine._loop.create_future())
        slots = group.slots
        repeats: builtins.list[tuple[int, int]] = []  # (index, index of its first mention)
        for index, job in enumerate(jobs):
            if job.status in TERMINAL_STATUSES:
                continue
            first = slots.get(job.id)  # (one call resolves each id to one tenant)
            if first is not None:
                repeats.append((index, first))
                continue
            slots[job.id] = index
            group.left += 1
            engine._watch(job.id, group)
        if group.left:
            try:
                if engine._reads_lag:
                    keys = [(jobs[i].tenant_id, job_id) for job_id, i in slots.items()]
                    await catch_up(engine, group, keys)
                await asyncio.wait_for(group.future, timeout)
            except TimeoutError:
                one = f" (job {jobs[0].id} is {engine._current(jobs[0]).status})"
                raise WaitTimeoutError(
                    f"{group.left} of {len(jobs)} jobs are not finished after {timeout} s"
                    + (one if len(jobs) == 1 else "")
                ) from None
            finally:
                for job_id in slots:
                    engine._unwatch(job_id, group)
        for index, first in repeats:
            jobs[index] = jobs[first]
        return jobs

    async def as_completed(
        self,
        job_ids: Iterable[str],
        timeout: float | None = None,
        *,
        tenant_id: str | None = None,
    ) -> AsyncIterator[Job]:
        """Yield each job as it reaches a terminal state."""
        engine = self._engine
        jobs = await engine._lookup(job_ids, self._tenant(tenant_id))
        check_timeout(timeout)
        collector = Collector()
        done, watched = collector.queue, collector.tenants
        for job in jobs:
            if job.status in TERMINAL_STATUSES:
                done.put_nowait(job)
            elif job.id not in watched:
                watched[job.id] = job.tenant_id
                engine._watch(job.id, collector)
        expected = len(watched) + done.qsize()
        try:
            if watched and engine._reads_lag:
                keys = [(tenant_id, job_id) for job_id, tenant_id in watched.items()]
                await catch_up(engine, collector, keys)
            async with asyncio.timeout(timeout):
                for _ in range(expected):
                    item = await done.get()
                    if isinstance(item, BaseException):  # the engine gave up (see fail())
                        raise item
                    yield item
        except TimeoutError:
            raise WaitTimeoutError(f"not every job finished after {timeout} s") from None
        finally:
            for job_id in builtins.list(watched):
                engine._unwatch(job_id, collector)

    async def cancel(
        self, job_id: str, reason: str | None = None, *, tenant_id: str | None = None
    ) -> Job:
        """Cancel a pending, queued or running job; a terminal one is returned unchanged."""
        engine = self._engine
        job = await engine._one(job_id, self._tenant(tenant_id))
        key = (job.tenant_id, job.id)
        if job.status in TERMINAL_STATUSES:
            return job
        if reason is not None and not isinstance(reason, str):
            raise ValidationError(f"reason is a string, got {reason!r}", path="$.reason")
        return await engine._cancel(key, reason or "requested", self._actor)

    async def retry(self, job_id: str, *, tenant_id: str | None = None) -> Job:
        """Submit a copy of a terminal job (new id, ``retry_of`` = the old id)."""
        engine = self._engine
        job = await engine._one(job_id, self._tenant(tenant_id))
        if job.status not in TERMINAL_STATUSES:
            raise ConflictError(
                f"job {job_id} is {job.status}: retry() copies a finished job (succeeded, failed, "
                f"timeout or canceled); wait for it or cancel it first"
            )
        with retry_copy(job, self._actor) as copy_of:
            return (await engine._admit([copy_of], batch=False))[0]

    async def cancel_where(
        self,
        tenant_id: str | None = None,
        *,
        namespace: str | None = None,
        status: Status | str | None = None,
        kind: str | None = None,
        priority: Priority | str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        reason: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> BulkResult:
        """Cancel a tenant's jobs that match, newest first: at most ``limit`` (1 to 1,000) a
        call. The filters are ``list``'s, plus ``priority`` and a ``created_at`` range
        (``created_after`` inclusive, ``created_before`` exclusive); finished jobs are skipped.
        Returns the ids canceled and ``next_cursor``: call again with it while it is not None."""
        where = BulkFilter(
            tenant_id=tenant_id,
            namespace=namespace,
            status=status,  # type: ignore[arg-type]
            kind=kind,
            priority=priority,  # type: ignore[arg-type]
            created_after=created_after,
            created_before=created_before,
            reason=reason,
            limit=limit,
            cursor=cursor,
        )
        return await self._bulk("cancel", where)

    async def retry_where(
        self,
        tenant_id: str | None = None,
        *,
        namespace: str | None = None,
        status: Status | str | None = None,
        kind: str | None = None,
        priority: Priority | str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> BulkResult:
        """Retry a tenant's finished jobs that match (``status="failed"``, say), newest first:
        at most ``limit`` (1 to 1,000) a call, filtered as ``cancel_where``; jobs not finished
        are skipped. Returns the ids retried, their copies' ids, and ``next_cursor``: go on
        with it (a call again without it would retry the same jobs again)."""
        where = BulkFilter(
            tenant_id=tenant_id,
            namespace=namespace,
            status=status,  # type: ignore[arg-type]
            kind=kind,
            priority=priority,  # type: ignore[arg-type]
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            cursor=cursor,
        )
        return await self._bulk("retry", where)

    async def _bulk(self, action: Literal["cancel", "retry"], where: BulkFilter) -> BulkResult:
        """Carry out a bulk verb (``_bulk.py``); a client over HTTP asks its server instead."""
        return await run_bulk(self, action, where)

    async def submit_workflow(self, workflow: Workflow) -> WorkflowRun:
        """Admit every step of a ``work.Workflow``, or none: an unknown step, a cycle (named)
        or one invalid step (named) refuses them all. Returns the run: each step's job."""
        if not isinstance(workflow, Workflow):
            raise ValidationError(
                f"submit_workflow takes a work.Workflow, got {type(workflow).__name__}"
            )
        jobs = self._own(workflow.jobs(), batch=True)
        try:
            admitted = await self._engine._admit(jobs, batch=True)
        except ValidationError as exc:
            if exc.index is None:
                raise
            name = workflow.steps[exc.index]
            raise ValidationError(
                f"step {name!r}: {exc.rule}", path=exc.path, index=exc.index
            ) from None
        return workflow.run_of(admitted)

    async def get_workflow(self, run: WorkflowRun) -> WorkflowRun:
        """A submitted workflow as it is now: each step's job, and its one status."""
        engine = self._engine
        ids = builtins.list(_run_of(run).job_ids.values())
        jobs = await engine._lookup(ids, self._tenant(run.tenant_id))
        return refreshed(run, [engine._current(job) for job in jobs])

    async def wait_workflow(self, run: WorkflowRun, timeout: float | None = None) -> WorkflowRun:
        """A submitted workflow once every step is terminal; ``WaitTimeoutError`` after
        ``timeout`` seconds."""
        ids = builtins.list(_run_of(run).job_ids.values())
        return refreshed(run, await self.wait_many(ids, timeout, tenant_id=run.tenant_id))

    async def cancel_workflow(self, run: WorkflowRun, reason: str | None = None) -> WorkflowRun:
        """Cancel every step of a workflow that is not terminal (reason ``workflow_canceled``
        unless given), the last steps first; the workflow as it is then."""
        for job_id in last_first(_run_of(run)):
            await self.cancel(job_id, reason or "workflow_canceled", tenant_id=run.tenant_id)
        return await self.get_workflow(run)

    # ---- cron schedules (engine/_cron.py) -----------------------------------------------------

    async def cron(
        self,
        name: str,
        cron: str,
        job_template: Job,
        *,
        tz: str = "UTC",
        missed: str = "run_once",
        grace_s: float = 60.0,
    ) -> Schedule:
        """Declare a cron schedule: at each time the expression ``cron`` names, in the time
        zone ``tz`` (an IANA name), submit a copy of ``job_template`` as its tenant. Its id is
        ``cron:<name>:<fire time, UTC>`` and its metadata gains ``schedule`` and ``fire_time``.

        ``name`` is unique per tenant (the template's tenant_id): declaring it again in the
        same scheduler is a ``ConflictError``. Declared in code, at each start; the store keeps
        its last fire and whether it is paused, so a restarted scheduler goes on where it was:
        no fire is doubled or lost. A fire found more than ``grace_s`` seconds late was
        missed (the scheduler was down): ``missed="run_once"`` (the default) runs one job for
        the latest missed fire, ``missed="skip"`` runs none. Errors name the field
        (``$.name``, ``$.cron``, ``$.tz``, ``$.missed``, ``$.grace_s``, ``$.template...``)."""
        template = self._own([job_template], batch=False)[0]
        spec = check_cron(name, cron, template, tz=tz, missed=missed, grace_s=grace_s)
        return await self._engine._cron_declare(spec)

    async def schedules(self, tenant_id: str | None = None) -> builtins.list[Schedule]:
        """The cron schedules declared (of one tenant, or of all with full rights), by tenant
        then name, each with its state (``paused``, ``last_fire``, ``next_fire``)."""
        return await self._engine._cron_list(self._tenant(tenant_id))

    async def pause_schedule(self, name: str, *, tenant_id: str | None = None) -> Schedule:
        """Pause a schedule: it fires no more until resumed (kept in the store, so across a
        restart too); ``NotFoundError`` for an unknown name."""
        return await self._engine._cron_pause(name, self._tenant(tenant_id), True)

    async def resume_schedule(self, name: str, *, tenant_id: str | None = None) -> Schedule:
        """Resume a paused schedule: it fires from its next time on (the fires that fell
        during the pause are skipped, not missed)."""
        return await self._engine._cron_pause(name, self._tenant(tenant_id), False)

    async def remove_schedule(self, name: str, *, tenant_id: str | None = None) -> Schedule:
        """Remove a schedule: it fires no more and its state leaves the store; returns it as
        it was. (A schedule declared in code comes back if the code declares it again.)"""
        return await self._engine._cron_remove(name, self._tenant(tenant_id))


def _run_of(run: object) -> WorkflowRun:
    if not isinstance(run, WorkflowRun):
        raise ValidationError(
            f"expected a work.WorkflowRun (what submit_workflow returns), got {type(run).__name__}"
        )
    return run


def job_list(jobs: object) -> builtins.list[Job]:
    """The jobs a ``submit_many`` caller passed, as a list (each is checked at submit)."""
    if isinstance(jobs, str | bytes) or not isinstance(jobs, Iterable):
        raise ValidationError(
            f"submit_many takes a list (or other iterable) of work.Job, got {type(jobs).__name__}",
            path="$.jobs",
        )
    return [*jobs]


def check_timeout(timeout: float | None) -> None:
    """Refuse a wait's timeout that is not a finite number of seconds >= 0 (None: no limit)."""
    if timeout is not None and (
        not isinstance(timeout, int | float)
        or isinstance(timeout, bool)
        or not 0 <= timeout <= 1e12  # also refuses NaN and infinity (1e12 s: 31,700 years)
    ):
        raise ValidationError(
            f"timeout is a finite number of seconds, 0 to 1e12, or None to wait without a limit; "
            f"got {timeout!r}",
            path="$.timeout",
        )


def check_stop_timeout(timeout: float) -> None:
    """Refuse a ``stop`` timeout that is not a finite number of seconds >= 0 (None is no
    limit for a wait, not for a stop)."""
    if timeout is None:
        raise ValidationError("stop's timeout is seconds >= 0, got None", path="$.timeout")
    check_timeout(timeout)

"""What the HTTP API does, apart from HTTP: the engine it serves, and each call as its caller's.

A ``Service`` holds one engine: a ``Scheduler`` it runs on the store (``scheduler=True``; the
only choice for ``memory://``, whose jobs no other process can see), or a ``Client`` of a store
that a scheduler in another process serves (``scheduler=False``), so any number of server
processes can share one store. Every call runs as its key's: a tenant's key gets the verbs
narrowed to its tenant (``Verbs`` with a scope, as ``as_tenant`` does, so another tenant's job
is exactly an unknown id), an admin key gets them with full rights.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, cast

from msgspec.structs import replace

from .._errors import ConfigurationError, NotStartedError, ValidationError, WaitTimeoutError
from .._ir import LOCAL_ACTOR, TERMINAL_STATUSES, Actor, Job, Priority, Tenant
from .._stats import Stats, TenantStats
from .._validate import check_identifier, validate_struct
from .._wire import MAX_POLL_S, JobPage, OpsState, PauseBody, Paused, TenantBody, WaitResult
from ..core import Pause
from ..engine import Client, Config, Scheduler
from ..engine._verbs import Engine, Verbs, check_timeout
from ..stores import redact
from ..telemetry.prometheus import PrometheusMetrics
from ._keys import ApiKey, KeyRing
from ._stream import EventHub

__all__ = ["ListFilters", "Service"]

_log = logging.getLogger("nsai_work.server")


class Scoped(Verbs):
    """The verbs of an engine (a Scheduler or a Client), for one tenant's key, or with full
    rights for an admin key (``tenant_id=None``)."""

    __slots__ = ("actor", "engine", "tenant_id")

    def __init__(self, engine: Engine, tenant_id: str | None, actor: Actor = LOCAL_ACTOR) -> None:
        self.engine = engine
        self.tenant_id = tenant_id
        self.actor = actor

    @property
    def _engine(self) -> Engine:
        return self.engine

    @property
    def _scope(self) -> str | None:
        return self.tenant_id

    @property
    def _actor(self) -> Actor:
        return self.actor


class ListFilters:
    """What ``GET /v1/jobs`` filters on beyond the store's indexes (priority, time range)."""

    __slots__ = ("created_after", "created_before", "priority")

    def __init__(
        self,
        priority: Priority | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> None:
        self.priority = priority
        self.created_after = created_after
        self.created_before = created_before

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.priority, self.created_after, self.created_before))

    def keeps(self, job: Job) -> bool:
        """Whether a job passes these filters."""
        if self.priority is not None and job.priority != self.priority:
            return False
        if self.created_after is not None and job.created_at < self.created_after:
            return False
        return self.created_before is None or job.created_at < self.created_before


#: At most this many jobs are read from the store per page of a filtered list (then the page
#: comes back short, with a cursor to go on from).
_SCAN_PER_PAGE = 10


class Service:
    """The engine behind the HTTP API, and the API keys that reach it.

    ``store``: a URL or Store object. ``scheduler``: True runs the scheduler here (with
    ``config``'s options); False opens the store as a client of the scheduler that serves it
    (another process); None (the default) runs it for ``memory://`` and is a client otherwise.
    """

    def __init__(
        self,
        *,
        config: Config,
        scheduler: bool | Scheduler | None,
        keys: KeyRing,
        metrics: PrometheusMetrics | None = None,
        hub: EventHub | None = None,
        tracing: Any = None,
    ) -> None:
        # a Scheduler already running (on the loop this server will run on): served, not owned
        self._external = isinstance(scheduler, Scheduler)
        if isinstance(scheduler, Scheduler):
            config = scheduler.config
        store = config.store
        memory = (
            store.url == "memory://"
            if not isinstance(store, str)
            else (store.split("://", 1)[0].lower() == "memory")
        )
        if scheduler is None:
            scheduler = memory or (not isinstance(store, str) and not store.durable)
        if not isinstance(keys, KeyRing):
            raise ConfigurationError(
                f"keys is a nsai_work.server.KeyRing, got {type(keys).__name__}"
            )
        self.keys = keys
        self.metrics = metrics if metrics is not None else PrometheusMetrics()
        self.hub = hub if hub is not None else EventHub()
        self._store = store
        #: ``create_app``'s ``tracing``: None (off), True (the global tracer provider) or a
        #: TracerProvider; ``start`` instruments the engine with it.
        self.tracing_with = tracing
        self.tracing: Any = None
        self.runs_scheduler = bool(scheduler)
        self.engine: Scheduler | Client
        if isinstance(scheduler, Scheduler):
            self.engine = scheduler
        elif self.runs_scheduler:
            self.engine = Scheduler(config)
        else:
            if config != Config(store=store):
                raise ConfigurationError(
                    "the scheduler's options were given to a server that is a client of the "
                    "store (scheduler=False): give them to the process that runs the scheduler"
                )
            self.engine = Client(store=store)

    @property
    def store_url(self) -> str:
        """The store's URL, without a password."""
        store = self._store
        return redact(store) if isinstance(store, str) else str(store.url)

    async def start(self) -> None:
        """Start the scheduler, or open the store as a client (traced if asked)."""
        if self.tracing_with is not None and self.tracing_with is not False:
            from ..telemetry.otel import instrument  # (before the start: recovered jobs too)

            provider = None if self.tracing_with is True else self.tracing_with
            self.tracing = instrument(self.engine, tracer_provider=provider)
        if isinstance(self.engine, Scheduler):
            if not self._external:
                await self.engine.start()
            self.metrics.attach(self.engine._bus, thread=threading.get_ident())
            self.hub.bind(self.engine._bus)
        else:
            await self.engine.open()

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop the scheduler (running jobs get ``timeout`` seconds), or close the client."""
        if self.tracing is not None:
            self.tracing.close()
            self.tracing = None
        if isinstance(self.engine, Scheduler):
            self.hub.close()
            self.metrics.detach()
            if not self._external:
                await self.engine.stop(timeout)
        else:
            await self.engine.close()

    def traced(self, jobs: builtins.list[Job], headers: Any) -> builtins.list[Job]:
        """The jobs with the HTTP caller's ``traceparent`` header in their metadata (where they
        carry none), when this server traces: their submit spans join the caller's trace."""
        if self.tracing is None:
            return jobs
        parent = headers.get("traceparent")
        if not parent:
            return jobs
        carrier = {"traceparent": parent}
        state = headers.get("tracestate")
        if state:
            carrier["tracestate"] = state
        return [
            job
            if not isinstance(job, Job) or "traceparent" in job.metadata
            else replace(job, metadata={**job.metadata, **carrier})
            for job in jobs
        ]

    def verbs(self, key: ApiKey) -> Scoped:
        """The verbs as ``key`` may use them."""
        tenant_id = None if key.admin else key.tenant_id
        return Scoped(cast(Engine, self.engine), tenant_id, (f"key:{key.id}", key.name))

    # ---- the calls that are more than one verb ------------------------------------------------

    async def list(
        self,
        verbs: Scoped,
        filters: ListFilters,
        *,
        tenant_id: str | None,
        namespace: str | None,
        status: str | None,
        kind: str | None,
        limit: int,
        cursor: str | None,
    ) -> JobPage:
        """A page of jobs with the store's filters, and the others applied to what it reads: at
        most ``_SCAN_PER_PAGE`` store pages are read, so a rare match may come back as a short
        (even empty) page with a cursor to go on from."""
        jobs: builtins.list[Job] = []
        for _ in range(_SCAN_PER_PAGE if filters else 1):
            page = await verbs.list(
                tenant_id,
                namespace=namespace,
                status=status,
                kind=kind,
                limit=limit - len(jobs),
                cursor=cursor,
            )
            jobs.extend(job for job in page if filters.keeps(job))
            cursor = page.next_cursor
            if cursor is None or len(jobs) >= limit:
                break
        return JobPage(jobs=jobs, next_cursor=cursor)

    async def wait(
        self,
        verbs: Scoped,
        job_ids: Sequence[str],
        timeout: float,
        *,
        tenant_id: str | None,
        return_when: Literal["all", "first"] = "all",
    ) -> WaitResult:
        """A long poll: the jobs once all (or one) are terminal, or as they are after
        ``timeout`` seconds (at most ``MAX_POLL_S``)."""
        check_timeout(timeout)
        timeout = min(timeout, MAX_POLL_S)
        done = True
        if return_when == "all":
            try:
                jobs = await verbs.wait_many(job_ids, timeout, tenant_id=tenant_id)
            except WaitTimeoutError:
                done = False
                jobs = await self.snapshots(verbs, job_ids, tenant_id)
            return WaitResult(jobs=jobs, done=done)
        try:
            async for _ in verbs.as_completed(job_ids, timeout, tenant_id=tenant_id):
                break
        except WaitTimeoutError:
            done = False
        jobs = await self.snapshots(verbs, job_ids, tenant_id)
        done = (done and any(job.status in TERMINAL_STATUSES for job in jobs)) or not jobs
        return WaitResult(jobs=jobs, done=done)

    async def snapshots(
        self, verbs: Scoped, job_ids: Sequence[str], tenant_id: str | None
    ) -> builtins.list[Job]:
        """The jobs as they are now (one store read)."""
        engine = verbs._engine
        jobs = await engine._lookup(job_ids, verbs._tenant(tenant_id))
        return [engine._current(job) for job in jobs]

    def scheduler(self, what: str) -> Scheduler:
        """The scheduler, for the calls that need its memory (``NotStartedError`` saying so on
        a server that is a client of the store)."""
        if isinstance(self.engine, Scheduler):
            return self.engine
        raise NotStartedError(
            f"{what} needs the scheduler's memory, and this server is a client of the store "
            f"{self.store_url}: ask the server that runs the scheduler (nsai-work server "
            f"--scheduler)"
        )

    async def stats(self, key: ApiKey) -> Stats | TenantStats:
        """The whole scheduler's stats for an admin key, its tenant's for a tenant's key."""
        scheduler = self.scheduler("stats")
        if key.admin:
            return await scheduler.stats()
        assert key.tenant_id is not None
        return await scheduler.as_tenant(key.tenant_id).stats()

    async def tenant(self, key: ApiKey, tenant_id: str) -> TenantStats:
        """One tenant's stats (its weight, quota, use): admin, or the tenant's own key."""
        scheduler = self.scheduler("a tenant's stats")
        verbs = self.verbs(key)
        verbs._tenant(tenant_id)  # a tenant's key sees its own tenant only
        return await scheduler.as_tenant(tenant_id).stats()

    async def tenants(self) -> dict[str, TenantStats]:
        """Every tenant the scheduler knows now, by id."""
        return (await self.scheduler("the tenants").stats()).by_tenant

    # ---- operations (admin) ---------------------------------------------------------------------

    def ops_state(self) -> OpsState:
        """What is paused now, and how many runs are in flight."""
        scheduler = self.scheduler("operations")
        core = scheduler._core
        pauses = core._pauses
        return OpsState(
            draining=not core.dispatching,
            running=core.active_runs,
            tenants=sorted(pauses.tenants),
            namespaces=[Paused(tenant_id=t, namespace=n) for t, n in sorted(pauses.namespaces)],
            pools=sorted(pauses.pools),
        )

    def pause(self, body: PauseBody, *, paused: bool) -> OpsState:
        """Pause or resume a tenant, a namespace, a pool, or (naming none) all dispatching."""
        scheduler = self.scheduler("operations")
        if body.namespace is not None and body.tenant_id is None:
            raise ValidationError("a namespace is paused with its tenant_id", path="$.tenant_id")
        if body.pool is not None and body.tenant_id is not None:
            raise ValidationError(
                "pause a tenant (and a namespace of its) or a pool, not both", path="$.pool"
            )
        if body.tenant_id is not None:
            check_identifier(body.tenant_id, "$.tenant_id", what="a tenant id")
        if body.namespace is not None:
            check_identifier(body.namespace, "$.namespace", what="a namespace")
        if body.pool is not None and body.pool not in scheduler._core.pool_states():
            known = ", ".join(sorted(scheduler._core.pool_states()))
            raise ValidationError(f"no pool {body.pool!r}; the pools are {known}", path="$.pool")
        if body.tenant_id is None and body.pool is None and not scheduler.running:
            return self.ops_state()  # (a stopping scheduler starts nothing new anyway)
        scheduler._feed(
            Pause(paused, tenant_id=body.tenant_id, namespace=body.namespace, pool=body.pool)
        )
        return self.ops_state()

    async def drain(self, timeout: float) -> OpsState:
        """Pause all dispatching, then wait up to ``timeout`` s for the runs in flight to end."""
        check_timeout(timeout)
        self.pause(PauseBody(), paused=True)
        with contextlib.suppress(WaitTimeoutError):
            await self.scheduler("operations").wait_idle(min(timeout, MAX_POLL_S))
        return self.ops_state()

    async def set_tenant(self, tenant_id: str, body: TenantBody) -> Tenant:
        """Add or change a tenant (admin)."""
        scheduler = self.scheduler("setting a tenant")
        tenant = validate_struct(
            {
                "id": tenant_id,
                "weight": body.weight,
                "quota": body.quota,
                "namespaces": body.namespaces,
            },
            Tenant,
            "$",
        )
        return await scheduler.set_tenant(tenant)

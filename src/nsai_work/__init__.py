"""nsai-work: the unified job scheduler of an AI platform.

One Job IR for every kind of work (tool calls, experiment steps, training, inference), strict
priority levels, tenants, resource-aware placement, retries with backoff, and pluggable backends
that really run the work. Three faces over one engine::

    import nsai_work as work

    work.start()                                   # the process-wide default (the seed's API)
    job = work.submit(work.Job(kind="tool_call", tenant_id="acme",
                               payload={"tool_name": "echo", "args": {"hi": 1}}))
    work.wait(job.id).result                       # {'hi': 1}

    with work.SyncScheduler() as s: ...            # a blocking scheduler of your own
    async with work.Scheduler() as s: ...          # the async engine

    with work.connect(store="sqlite:///var/lib/work/work.db") as c: ...  # a client of the
    async with work.Client(store="sqlite:///...") as c: ...  # scheduler serving that store
"""

from __future__ import annotations

import builtins
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._clock import Clock
from ._errors import (
    AdmissionError,
    BackendError,
    ConfigurationError,
    ConflictError,
    NonRetryableError,
    NotFoundError,
    NotStartedError,
    QueueFullError,
    QuotaExceededError,
    RateLimitedError,
    StoreError,
    StoreUnavailableError,
    UnschedulableError,
    ValidationError,
    WaitTimeoutError,
    WorkError,
)
from ._handlers import HandlerRegistry, default_handlers
from ._ir import (
    TERMINAL_STATUSES,
    Attempt,
    Backoff,
    Constraints,
    Job,
    JobError,
    Pool,
    Prices,
    Priority,
    PriorityGuard,
    Progress,
    Quota,
    Resources,
    RetryPolicy,
    Status,
    Tenant,
    new_job_id,
)
from ._stats import Counts, PoolStats, PoolUsage, Stats, TenantStats, TenantUsage

# The engine, the backends and the rest load on first use, so `import nsai_work.core` (or the
# IR alone) loads no asyncio, threads or backends: name -> the module that defines it ("" for a
# subpackage of this one).
_LAZY: dict[str, str] = {
    "JobContext": "._context",
    "Workflow": "._workflow",
    "WorkflowRun": "._workflow",
    "Backend": ".backends",
    **dict.fromkeys(
        [
            "BackendEvents",
            "Client",
            "Config",
            "Page",
            "Schedule",
            "Scheduler",
            "SyncClient",
            "SyncScheduler",
            "SyncTenantScope",
            "TenantScope",
            "connect",
        ],
        ".engine",
    ),
    **dict.fromkeys(
        [
            "as_completed",
            "as_tenant",
            "cancel",
            "cancel_workflow",
            "cron",
            "default_scheduler",
            "get",
            "get_workflow",
            "list",
            "pause_schedule",
            "remove_schedule",
            "resume_schedule",
            "retry",
            "schedules",
            "set_concurrency_limit",
            "set_tenant",
            "start",
            "stats",
            "stop",
            "submit",
            "submit_many",
            "submit_workflow",
            "wait",
            "wait_many",
            "wait_workflow",
        ],
        ".engine._default",
    ),
    **dict.fromkeys(["altar", "backends", "telemetry", "testing"], ""),
}

if TYPE_CHECKING:
    from . import altar, backends, telemetry, testing
    from ._context import JobContext
    from ._workflow import Workflow, WorkflowRun
    from .backends import Backend
    from .engine import (
        BackendEvents,
        Client,
        Config,
        Page,
        Schedule,
        Scheduler,
        SyncClient,
        SyncScheduler,
        SyncTenantScope,
        TenantScope,
        connect,
    )
    from .engine._default import (
        as_completed,
        as_tenant,
        cancel,
        cancel_workflow,
        cron,
        default_scheduler,
        get,
        get_workflow,
        list,
        pause_schedule,
        remove_schedule,
        resume_schedule,
        retry,
        schedules,
        set_concurrency_limit,
        set_tenant,
        start,
        stats,
        stop,
        submit,
        submit_many,
        submit_workflow,
        wait,
        wait_many,
        wait_workflow,
    )


def __getattr__(name: str) -> Any:
    """Load a lazily exported name on first use (PEP 562)."""
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'nsai_work' has no attribute {name!r}")
    if where:
        value = getattr(importlib.import_module(where, __name__), name)
    else:
        value = importlib.import_module(f".{name}", __name__)
    globals()[name] = value
    return value


def __dir__() -> builtins.list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

F = TypeVar("F", bound=Callable[..., Any])


@overload
def handler(kind: F, *, replace: bool = False) -> F: ...


@overload
def handler(kind: str | None = None, *, replace: bool = False) -> Callable[[F], F]: ...


def handler(kind: str | F | None = None, *, replace: bool = False) -> F | Callable[[F], F]:
    """Register the decorated function as the handler of jobs of ``kind`` (local backend)::

        @work.handler("embed")
        async def embed(job): ...

        @work.handler  # the kind is the function's name: "summarize"
        def summarize(job, ctx): ...

    The function takes ``(job)`` or ``(job, ctx)``; ``"tool_call"`` and ``"command"`` (the
    altar and process backends' kinds) need ``replace=True``.
    """
    return default_handlers().handler(kind, replace=replace)


def register_handler(kind: str, fn: Callable[..., Any], *, replace: bool = False) -> None:
    """Register ``fn`` as the handler of jobs of ``kind`` (local backend); same rules as
    ``handler``."""
    default_handlers().register(kind, fn, replace=replace)


def unregister_handler(kind: str) -> None:
    """Forget the handler of ``kind``."""
    default_handlers().unregister(kind)


__all__ = [
    "TERMINAL_STATUSES",
    "AdmissionError",
    "Attempt",
    "Backend",
    "BackendError",
    "BackendEvents",
    "Backoff",
    "Client",
    "Clock",
    "Config",
    "ConfigurationError",
    "ConflictError",
    "Constraints",
    "Counts",
    "HandlerRegistry",
    "Job",
    "JobContext",
    "JobError",
    "NonRetryableError",
    "NotFoundError",
    "NotStartedError",
    "Page",
    "Pool",
    "PoolStats",
    "PoolUsage",
    "Prices",
    "Priority",
    "PriorityGuard",
    "Progress",
    "QueueFullError",
    "Quota",
    "QuotaExceededError",
    "RateLimitedError",
    "Resources",
    "RetryPolicy",
    "Schedule",
    "Scheduler",
    "Stats",
    "Status",
    "StoreError",
    "StoreUnavailableError",
    "SyncClient",
    "SyncScheduler",
    "SyncTenantScope",
    "Tenant",
    "TenantScope",
    "TenantStats",
    "TenantUsage",
    "UnschedulableError",
    "ValidationError",
    "WaitTimeoutError",
    "WorkError",
    "Workflow",
    "WorkflowRun",
    "__version__",
    "altar",
    "as_completed",
    "as_tenant",
    "backends",
    "cancel",
    "cancel_workflow",
    "connect",
    "cron",
    "default_scheduler",
    "get",
    "get_workflow",
    "handler",
    "list",
    "new_job_id",
    "pause_schedule",
    "register_handler",
    "remove_schedule",
    "resume_schedule",
    "retry",
    "schedules",
    "set_concurrency_limit",
    "set_tenant",
    "start",
    "stats",
    "stop",
    "submit",
    "submit_many",
    "submit_workflow",
    "telemetry",
    "testing",
    "unregister_handler",
    "wait",
    "wait_many",
    "wait_workflow",
]

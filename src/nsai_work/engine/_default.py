"""The module functions (``work.start()``, ``work.submit(...)`` ...): the seed's API, on one
process-wide ``SyncScheduler``.

``start`` is idempotent. Any verb before ``start()`` raises ``NotStartedError`` naming it. The
default scheduler stops at interpreter exit and on SIGTERM (then the previous SIGTERM handler,
or the default exit, runs).
"""

from __future__ import annotations

import atexit
import builtins
import signal
import threading
from collections.abc import Iterable, Iterator
from types import FrameType
from typing import Any

from .._errors import ConfigurationError, NotStartedError
from .._ir import Job, Status, Tenant
from .._stats import Stats
from ._config import Config, make_config
from ._scheduler import Page, check_stop_timeout
from ._sync import SyncScheduler
from ._tenants import SyncTenantScope

__all__ = [
    "as_completed",
    "as_tenant",
    "cancel",
    "default_scheduler",
    "get",
    "list",
    "list_jobs",
    "retry",
    "set_concurrency_limit",
    "set_tenant",
    "start",
    "stats",
    "stop",
    "submit",
    "submit_many",
    "wait",
    "wait_many",
]

_lock = threading.Lock()
_default: SyncScheduler | None = None
_hooks_installed = False
_previous_sigterm: Any = None


def start(config: Config | None = None, **options: Any) -> SyncScheduler:
    """Start the process-wide scheduler (idempotent: a second call returns the running one;
    with different options it raises ``ConfigurationError``: stop it first)."""
    global _default
    with _lock:
        wanted = make_config(config, options)
        if _default is not None and _default.running:
            if (config is not None or options) and wanted != _default.config:
                raise ConfigurationError(
                    "work.start() was already called with other options; call work.stop() first "
                    "to restart with new ones"
                )
            return _default
        scheduler = SyncScheduler(wanted).start()
        _default = scheduler
        _install_exit_hooks()
        return scheduler


def stop(timeout: float = 30.0) -> None:
    """Stop the process-wide scheduler (no-op if it is not running)."""
    global _default
    check_stop_timeout(timeout)
    with _lock:
        scheduler, _default = _default, None
    if scheduler is not None:
        scheduler.stop(timeout)


def default_scheduler() -> SyncScheduler:
    """The running process-wide scheduler, or ``NotStartedError``."""
    scheduler = _default
    if scheduler is None or not scheduler.running:
        raise NotStartedError(
            "the default scheduler is not started: call work.start() first (or use "
            "`with work.SyncScheduler() as s:` / `async with work.Scheduler() as s:`)"
        )
    return scheduler


def _install_exit_hooks() -> None:
    global _hooks_installed, _previous_sigterm
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_stop_at_exit)
    if threading.current_thread() is threading.main_thread():
        _previous_sigterm = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _on_sigterm)


def _exit_timeout() -> float:
    scheduler = _default
    return scheduler.config.exit_timeout_s if scheduler is not None else 0.0


def _stop_at_exit() -> None:
    stop(_exit_timeout())


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    stop(_exit_timeout())
    previous = _previous_sigterm
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:
        raise SystemExit(128 + signum)


# ---- the verbs, on the default scheduler ------------------------------------------------------


def submit(job: Job) -> Job:
    """Admit one job (see ``SyncScheduler.submit``)."""
    return default_scheduler().submit(job)


def submit_many(jobs: Iterable[Job]) -> builtins.list[Job]:
    """Admit a batch, all or nothing."""
    return default_scheduler().submit_many(jobs)


def get(job_id: str, *, tenant_id: str | None = None) -> Job:
    """The job as it is now (``tenant_id`` only when two tenants use this id)."""
    return default_scheduler().get(job_id, tenant_id=tenant_id)


def list(
    tenant_id: str,
    *,
    namespace: str | None = None,
    status: Status | str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> Page:
    """A page of a tenant's jobs, newest first (``work.list``)."""
    return default_scheduler().list(
        tenant_id, namespace=namespace, status=status, limit=limit, cursor=cursor
    )


def wait(job_id: str, timeout: float | None = None, *, tenant_id: str | None = None) -> Job:
    """Block until the job is terminal."""
    return default_scheduler().wait(job_id, timeout, tenant_id=tenant_id)


def wait_many(
    job_ids: Iterable[str], timeout: float | None = None, *, tenant_id: str | None = None
) -> builtins.list[Job]:
    """Block until every job is terminal."""
    return default_scheduler().wait_many(job_ids, timeout, tenant_id=tenant_id)


def as_completed(
    job_ids: Iterable[str], timeout: float | None = None, *, tenant_id: str | None = None
) -> Iterator[Job]:
    """Yield jobs as they finish."""
    return default_scheduler().as_completed(job_ids, timeout, tenant_id=tenant_id)


def cancel(job_id: str, reason: str | None = None, *, tenant_id: str | None = None) -> Job:
    """Cancel a job."""
    return default_scheduler().cancel(job_id, reason, tenant_id=tenant_id)


def retry(job_id: str, *, tenant_id: str | None = None) -> Job:
    """Submit a copy of a terminal job."""
    return default_scheduler().retry(job_id, tenant_id=tenant_id)


def stats() -> Stats:
    """The default scheduler's counters."""
    return default_scheduler().stats()


def set_tenant(tenant: Tenant) -> Tenant:
    """Add or change a tenant of the default scheduler (effective for the next decision)."""
    return default_scheduler().set_tenant(tenant)


def set_concurrency_limit(group: str, limit: int) -> None:
    """At most ``limit`` jobs of a concurrency group run at once on the default scheduler."""
    default_scheduler().set_concurrency_limit(group, limit)


def as_tenant(tenant_id: str) -> SyncTenantScope:
    """A handle on the default scheduler that sees and changes only one tenant's jobs."""
    return default_scheduler().as_tenant(tenant_id)


#: The same function under the name it had before ``work.list`` was defined as ``list``.
list_jobs = list

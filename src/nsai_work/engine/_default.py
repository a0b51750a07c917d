"""The module functions (``work.start()``, ``work.submit(...)`` ...): the seed's API, on one
process-wide ``SyncScheduler``.

``start`` is idempotent. Any verb before ``start()`` raises ``NotStartedError`` naming it. The
default scheduler stops at interpreter exit and on SIGTERM (then the previous SIGTERM handler,
or the default exit, runs).
"""

from __future__ import annotations

import atexit
import functools
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Concatenate, ParamSpec, TypeVar

from .._errors import ConfigurationError, NotStartedError
from ._config import Config, make_config
from ._sync import SyncScheduler
from ._verbs import check_stop_timeout

__all__ = [
    "as_completed",
    "as_tenant",
    "cancel",
    "cancel_workflow",
    "cron",
    "default_scheduler",
    "get",
    "get_workflow",
    "list",
    "list_jobs",
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
]

P = ParamSpec("P")
T = TypeVar("T")

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


def on_default(verb: Callable[Concatenate[SyncScheduler, P], T]) -> Callable[P, T]:
    """The module function that calls the blocking method ``verb`` on the default scheduler
    (same signature and docstring)."""

    @functools.wraps(verb)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        return verb(default_scheduler(), *args, **kwargs)

    call.__qualname__ = verb.__name__
    call.__module__ = "nsai_work"
    return call


submit = on_default(SyncScheduler.submit)
submit_many = on_default(SyncScheduler.submit_many)
get = on_default(SyncScheduler.get)
list = on_default(SyncScheduler.list)
wait = on_default(SyncScheduler.wait)
wait_many = on_default(SyncScheduler.wait_many)
as_completed = on_default(SyncScheduler.as_completed)
cancel = on_default(SyncScheduler.cancel)
retry = on_default(SyncScheduler.retry)
submit_workflow = on_default(SyncScheduler.submit_workflow)
get_workflow = on_default(SyncScheduler.get_workflow)
wait_workflow = on_default(SyncScheduler.wait_workflow)
cancel_workflow = on_default(SyncScheduler.cancel_workflow)
cron = on_default(SyncScheduler.cron)
schedules = on_default(SyncScheduler.schedules)
pause_schedule = on_default(SyncScheduler.pause_schedule)
resume_schedule = on_default(SyncScheduler.resume_schedule)
remove_schedule = on_default(SyncScheduler.remove_schedule)
stats = on_default(SyncScheduler.stats)
set_tenant = on_default(SyncScheduler.set_tenant)
set_concurrency_limit = on_default(SyncScheduler.set_concurrency_limit)
as_tenant = on_default(SyncScheduler.as_tenant)

#: The same function under the name it had before ``work.list`` was defined as ``list``.
list_jobs = list

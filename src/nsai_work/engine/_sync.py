"""``SyncScheduler``: the same engine on its own loop thread, with blocking verbs.

Each call is one hand-off into the loop (``submit_many`` moves a whole batch in one hop); it never
runs ``asyncio.run()`` per call. The loop thread and the hand-offs are ``LoopThread``'s
(shared with ``SyncClient``); calling a blocking verb from the engine's own loop (an async
handler) raises a clear error instead of deadlocking, and nothing hangs if the loop thread dies.
"""

from __future__ import annotations

from typing import Any

from .._errors import NotStartedError
from ._blocking import SyncVerbs, blocking
from ._config import Config, make_config
from ._loop_thread import LoopThread
from ._scheduler import Scheduler
from ._tenants import SyncTenantScope
from ._verbs import check_stop_timeout

__all__ = ["SyncScheduler"]


class SyncScheduler(LoopThread[Scheduler], SyncVerbs):
    """The blocking face: ``with work.SyncScheduler(...) as s:``; verbs wait for their answer.

    Takes the same options as ``Scheduler`` (``work.Config``).
    """

    _not_started = "this SyncScheduler is not started: call start() or use `with`"
    _dead_hint = "it runs no jobs any more: call stop() and start a new scheduler"
    _whose = "the scheduler's"

    def __init__(self, config: Config | None = None, **options: Any) -> None:
        super().__init__()
        self.config = make_config(config, options)

    # ---- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> SyncScheduler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``, unless the loop thread died."""
        return self._engine is not None and self._engine.running and self._death is None

    @property
    def engine(self) -> Scheduler:
        """The async engine inside (``NotStartedError`` before ``start()``)."""
        if self._engine is None:
            raise NotStartedError(self._not_started)
        return self._engine

    def start(self) -> SyncScheduler:
        """Start the loop thread and the engine (idempotent)."""
        with self._lock:
            self._start_engine(lambda: Scheduler(self.config), Scheduler.start)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the engine (see ``Scheduler.stop``) and its thread (idempotent)."""
        check_stop_timeout(timeout)
        with self._lock:
            self._stop_engine(lambda engine: engine.stop(timeout))

    # ---- verbs: those on jobs come from SyncVerbs, these are the scheduler's own ------------

    wait_idle = blocking(Scheduler.wait_idle)
    stats = blocking(Scheduler.stats)
    set_tenant = blocking(Scheduler.set_tenant)
    set_concurrency_limit = blocking(Scheduler.set_concurrency_limit)

    def as_tenant(self, tenant_id: str) -> SyncTenantScope:
        """A handle that sees and changes only ``tenant_id``'s jobs."""
        return SyncTenantScope(self, tenant_id)

"""``SyncScheduler``: the same engine on its own loop thread, with blocking verbs.

Each call is one hand-off into the loop (``submit_many`` moves a whole batch in one hop); it never
runs ``asyncio.run()`` per call. Calling it from the engine's own loop (an async handler) would
deadlock, so that raises a clear error pointing to the async API instead.

Nothing hangs if the loop thread dies (say user code scheduled a callback on it that raised
``SystemExit``): every call waiting for an answer, and every later call, raises
``NotStartedError`` saying so, with the exception that killed the loop as its ``__cause__``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import queue
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from .._errors import NotStartedError, WorkError
from .._ir import Job, Status, Tenant
from .._stats import Stats
from ._config import Config, make_config
from ._scheduler import Page, Scheduler, check_stop_timeout, job_list
from ._tenants import SyncTenantScope

__all__ = ["SyncScheduler"]

T = TypeVar("T")


class SyncScheduler:
    """The blocking face: ``with work.SyncScheduler(...) as s:``; verbs wait for their answer.

    Takes the same options as ``Scheduler`` (``work.Config``).
    """

    def __init__(self, config: Config | None = None, **options: Any) -> None:
        self.config = make_config(config, options)
        self._lock = threading.Lock()
        self._engine: Scheduler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Calls waiting for the loop, by what fails them if it dies; guarded by _waiting_lock.
        self._waiting: dict[int, Callable[[BaseException], None]] = {}
        self._waiting_lock = threading.Lock()
        self._death: BaseException | None = None  # what killed the loop thread, if it died

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
            raise NotStartedError("this SyncScheduler is not started: call start() or use `with`")
        return self._engine

    def start(self) -> SyncScheduler:
        """Start the loop thread and the engine (idempotent)."""
        with self._lock:
            if self._engine is not None:
                return self
            loop = asyncio.new_event_loop()
            self._death = None
            thread = threading.Thread(
                target=self._run_loop, args=(loop,), name="nsai-work-engine", daemon=True
            )
            thread.start()
            engine = Scheduler(self.config)
            try:
                asyncio.run_coroutine_threadsafe(engine.start(), loop).result()
            except BaseException:
                loop.call_soon_threadsafe(loop.stop)
                thread.join()
                loop.close()
                raise
            self._loop, self._thread, self._engine = loop, thread, engine
            return self

    def _run_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
        except BaseException as exc:  # the loop died: fail every waiting call, never hang
            self._died(exc)

    def _died(self, cause: BaseException) -> None:
        with self._waiting_lock:
            self._death = cause
            waiting = list(self._waiting.values())
            self._waiting.clear()
        error = self._dead_error()
        for fail in waiting:
            fail(error)

    def _dead_error(self) -> NotStartedError:
        cause = self._death
        error = NotStartedError(
            f"the scheduler's event loop thread died ({type(cause).__name__}: {cause}); it runs "
            f"no jobs any more: call stop() and start a new scheduler (the cause is attached)"
        )
        error.__cause__ = cause
        return error

    def _register(self, fail: Callable[[BaseException], None]) -> int:
        """Remember how to fail a call that waits for the loop (at once if the loop is dead)."""
        with self._waiting_lock:
            token = id(fail)
            if self._death is None:
                self._waiting[token] = fail
                return token
        fail(self._dead_error())
        return token

    def _unregister(self, token: int) -> None:
        with self._waiting_lock:
            self._waiting.pop(token, None)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the engine (see ``Scheduler.stop``) and its thread (idempotent)."""
        check_stop_timeout(timeout)
        with self._lock:
            engine, loop, thread = self._engine, self._loop, self._thread
            if engine is None or loop is None or thread is None:
                return
            self._guard()
            try:
                if self._death is None:
                    self._wait_for(asyncio.run_coroutine_threadsafe(engine.stop(timeout), loop))
            finally:
                if self._death is None:
                    loop.call_soon_threadsafe(loop.stop)
                thread.join()
                self._abandon(engine, loop)
                loop.close()
                self._engine = self._loop = self._thread = None

    # ---- hand-offs ----------------------------------------------------------------------------

    def _guard(self) -> None:
        if self._thread is not None and threading.current_thread() is self._thread:
            raise WorkError(
                "a blocking nsai-work call (SyncScheduler or work.submit/get/wait...) was made "
                "from "
                "code running on the scheduler's own event loop (an async handler?): it would "
                "deadlock. In async code use the async API: `await scheduler.submit(job)` on a "
                "work.Scheduler, or run the blocking call in a thread"
            )

    @staticmethod
    def _abandon(engine: Scheduler, loop: asyncio.AbstractEventLoop) -> None:
        """After the loop stopped (or died): tasks still pending on it can never end (runs that
        ignored their cancellation, which stop() reported). Close their coroutines now, so
        their clean-up runs here and not in some later garbage collection, and let them go
        without asyncio's "Task was destroyed but it is pending!"."""
        engine.abandon()
        for task in asyncio.all_tasks(loop):
            task._log_destroy_pending = False  # type: ignore[attr-defined]
            with contextlib.suppress(BaseException):
                task.get_coro().close()

    def _wait_for(self, future: Future[T]) -> T:
        """The answer of a call handed to the loop; ``NotStartedError`` if the loop dies."""

        def fail(error: BaseException) -> None:
            if not future.done():
                future.set_exception(error)

        token = self._register(fail)
        try:
            return future.result()
        finally:
            self._unregister(token)

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        engine = self._engine
        if engine is None:
            raise NotStartedError("this SyncScheduler is not started: call start() or use `with`")
        self._guard()
        future: Future[T] = Future()

        def run() -> None:
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)

        if self._death is not None:
            raise self._dead_error()
        engine.call_threadsafe(run)
        return self._wait_for(future)

    def _await(self, coroutine: Coroutine[Any, Any, T]) -> T:
        loop = self._loop
        try:
            if loop is None:
                raise NotStartedError(
                    "this SyncScheduler is not started: call start() or use `with`"
                )
            self._guard()
            if self._death is not None:
                raise self._dead_error()
        except BaseException:
            coroutine.close()
            raise
        return self._wait_for(asyncio.run_coroutine_threadsafe(coroutine, loop))

    # ---- verbs --------------------------------------------------------------------------------

    def submit(self, job: Job) -> Job:
        """Admit one job; returns it as accepted (status pending or later)."""
        return self._call(self.engine.submit_now, [job], batch=False)[0]

    def submit_many(self, jobs: Iterable[Job]) -> builtins.list[Job]:
        """Admit a batch in one hand-off, all or nothing."""
        return self._call(self.engine.submit_now, job_list(jobs), batch=True)

    def get(self, job_id: str, *, tenant_id: str | None = None) -> Job:
        """The job as it is now (``tenant_id``: see ``Scheduler.get``)."""
        return self._call(self.engine.get_now, job_id, tenant_id=tenant_id)

    def list(
        self,
        tenant_id: str,
        *,
        namespace: str | None = None,
        status: Status | str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """A page of a tenant's jobs, newest first."""
        return self._call(
            self.engine.list_now,
            tenant_id,
            namespace=namespace,
            status=status,
            limit=limit,
            cursor=cursor,
        )

    def wait(
        self, job_id: str, timeout: float | None = None, *, tenant_id: str | None = None
    ) -> Job:
        """Block until the job is terminal; returns it whatever its status."""
        return self._await(self.engine.wait(job_id, timeout, tenant_id=tenant_id))

    def wait_many(
        self,
        job_ids: Iterable[str],
        timeout: float | None = None,
        *,
        tenant_id: str | None = None,
    ) -> builtins.list[Job]:
        """Block until every job is terminal."""
        return self._await(self.engine.wait_many(job_ids, timeout, tenant_id=tenant_id))

    def as_completed(
        self,
        job_ids: Iterable[str],
        timeout: float | None = None,
        *,
        tenant_id: str | None = None,
    ) -> Iterator[Job]:
        """Yield each job as it finishes."""
        engine = self.engine
        self._guard()
        if self._death is not None:
            raise self._dead_error()
        ids = job_ids
        results: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()

        async def pump() -> None:
            try:
                async for job in engine.as_completed(ids, timeout, tenant_id=tenant_id):
                    results.put(("job", job))
            except BaseException as exc:
                results.put(("error", exc))
                return
            results.put(("done", None))

        assert self._loop is not None
        token = self._register(lambda error: results.put(("error", error)))
        try:
            asyncio.run_coroutine_threadsafe(pump(), self._loop)
            while True:
                what, value = results.get()
                if what == "job":
                    yield value
                elif what == "error":
                    raise value
                else:
                    return
        finally:
            self._unregister(token)

    def wait_idle(self, timeout: float | None = None) -> None:
        """Block until no execution is in flight (see ``Scheduler.wait_idle``)."""
        self._await(self.engine.wait_idle(timeout))

    def cancel(
        self, job_id: str, reason: str | None = None, *, tenant_id: str | None = None
    ) -> Job:
        """Cancel a job; a terminal one is returned unchanged."""
        return self._call(self.engine.cancel_now, job_id, reason, tenant_id=tenant_id)

    def retry(self, job_id: str, *, tenant_id: str | None = None) -> Job:
        """Submit a copy of a terminal job."""
        return self._call(self.engine.retry_now, job_id, tenant_id=tenant_id)

    def stats(self) -> Stats:
        """Counts by status per priority, tenant and backend; pools; waiting reasons."""
        return self._await(self.engine.stats())

    def set_tenant(self, tenant: Tenant) -> Tenant:
        """Add or change a tenant, effective for the next decision (see ``Scheduler``)."""
        return self._call(self.engine.set_tenant_now, tenant)

    def set_concurrency_limit(self, group: str, limit: int) -> None:
        """At most ``limit`` jobs of the concurrency group run at once."""
        self._call(self.engine.set_concurrency_limit_now, group, limit)

    def as_tenant(self, tenant_id: str) -> SyncTenantScope:
        """A handle that sees and changes only ``tenant_id``'s jobs."""
        return SyncTenantScope(self, tenant_id)

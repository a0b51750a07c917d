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
import contextlib
import inspect
import queue
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from .._errors import NotStartedError, WorkError
from ._blocking import SyncVerbs, blocking, start_eagerly
from ._config import Config, make_config
from ._scheduler import Scheduler, check_stop_timeout
from ._tenants import SyncTenantScope

__all__ = ["SyncScheduler"]

T = TypeVar("T")


class SyncScheduler(SyncVerbs):
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

    def _run(self, make: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
        """Run ``make(engine)`` on the loop thread, its first step at once; its answer, here."""
        engine = self._engine
        loop = self._loop
        if engine is None or loop is None:
            raise NotStartedError("this SyncScheduler is not started: call start() or use `with`")
        self._guard()
        if self._death is not None:
            raise self._dead_error()
        coroutine = make(engine)
        answer: Future[T] = Future()
        engine.call_threadsafe(lambda: start_eagerly(coroutine, loop, answer))
        try:
            return self._wait_for(answer)
        finally:
            if inspect.getcoroutinestate(coroutine) == inspect.CORO_CREATED:
                coroutine.close()  # the loop died before it took the call

    def _iterate(self, make: Callable[[Any], AsyncIterator[T]]) -> Iterator[T]:
        """Iterate ``make(engine)`` on the loop thread; its items, here, as they come."""
        engine = self._engine
        loop = self._loop
        if engine is None or loop is None:
            raise NotStartedError("this SyncScheduler is not started: call start() or use `with`")
        self._guard()
        if self._death is not None:
            raise self._dead_error()
        items = make(engine)
        results: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()

        async def pump() -> None:
            try:
                async for item in items:
                    results.put(("item", item))
            except BaseException as exc:
                results.put(("error", exc))
                return
            results.put(("done", None))

        return self._drain(pump(), loop, results)

    def _drain(
        self,
        pump: Coroutine[Any, Any, None],
        loop: asyncio.AbstractEventLoop,
        results: queue.SimpleQueue[tuple[str, Any]],
    ) -> Iterator[Any]:
        token = self._register(lambda error: results.put(("error", error)))
        try:
            asyncio.run_coroutine_threadsafe(pump, loop)
            while True:
                what, value = results.get()
                if what == "item":
                    yield value
                elif what == "error":
                    raise value
                else:
                    return
        finally:
            self._unregister(token)

    # ---- verbs: those on jobs come from SyncVerbs, these are the scheduler's own ------------

    wait_idle = blocking(Scheduler.wait_idle)
    stats = blocking(Scheduler.stats)
    set_tenant = blocking(Scheduler.set_tenant)
    set_concurrency_limit = blocking(Scheduler.set_concurrency_limit)

    def as_tenant(self, tenant_id: str) -> SyncTenantScope:
        """A handle that sees and changes only ``tenant_id``'s jobs."""
        return SyncTenantScope(self, tenant_id)

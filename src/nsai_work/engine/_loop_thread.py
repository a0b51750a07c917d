"""``LoopThread``: an async engine on an event loop thread of its own, behind a blocking face.

Both blocking faces with an engine of their own (``SyncScheduler``, ``SyncClient``) are one of
these: it starts a loop thread, makes the engine there (by a factory), hands each call over to
the loop (``_run``, ``_iterate``: one hop per call, never ``asyncio.run()`` per call), and
stops the engine and the thread. The faces differ only in which engine they make and how it
starts and stops.

Nothing hangs if the loop thread dies (say user code scheduled a callback on it that raised
``SystemExit``): every call waiting for an answer, and every later call, raises
``NotStartedError`` saying so, with the exception that killed the loop as its ``__cause__``.
Calling a blocking verb from the engine's own loop (an async handler) would deadlock, so that
raises a clear error pointing to the async API instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import queue
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from .._errors import NotStartedError, WorkError
from ._blocking import SyncFace, start_eagerly

__all__ = ["LoopEngine", "LoopThread"]

T = TypeVar("T")


class LoopEngine(Protocol):
    """What a ``LoopThread`` needs of its engine, besides starting and stopping it."""

    def call_threadsafe(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the engine's loop thread soon (called from another thread)."""
        ...

    def abandon(self) -> None:
        """The loop is gone (it died, or stopped with tasks pending): give up without stopping."""
        ...


E = TypeVar("E", bound=LoopEngine)


class LoopThread(SyncFace, Generic[E]):
    """A loop thread with an engine on it, and the hand-offs of the blocking verbs.

    Subclasses say in their messages what they are (``_not_started``, ``_dead_hint``) and call
    ``_start_engine`` / ``_stop_engine`` from their own lifecycle methods.
    """

    #: What a call on a face that is not started (or already stopped) is told.
    _not_started: ClassVar[str] = "this face is not started"
    #: What to do once the loop thread died (after "the ... event loop thread died (cause); ").
    _dead_hint: ClassVar[str] = "start a new one"
    #: Whose loop it is, in messages ("the scheduler's").
    _whose: ClassVar[str] = "the engine's"
    #: The loop thread's name.
    _thread_name: ClassVar[str] = "nsai-work-engine"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engine: E | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Calls waiting for the loop, by what fails them if it dies; guarded by _waiting_lock.
        self._waiting: dict[int, Callable[[BaseException], None]] = {}
        self._waiting_lock = threading.Lock()
        self._death: BaseException | None = None  # what killed the loop thread, if it died

    # ---- lifecycle ----------------------------------------------------------------------------

    def _start_engine(
        self, make: Callable[[], E], start: Callable[[E], Coroutine[Any, Any, Any]]
    ) -> None:
        """Start the loop thread, make the engine and run ``start(engine)`` on the loop
        (idempotent; the caller holds ``_lock``). If it fails, the thread is gone again."""
        if self._engine is not None:
            return
        loop = asyncio.new_event_loop()
        self._death = None
        thread = threading.Thread(
            target=self._run_loop, args=(loop,), name=self._thread_name, daemon=True
        )
        thread.start()
        try:
            engine = make()
            asyncio.run_coroutine_threadsafe(start(engine), loop).result()
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            raise
        self._loop, self._thread, self._engine = loop, thread, engine

    def _stop_engine(self, stop: Callable[[E], Coroutine[Any, Any, Any]]) -> None:
        """Run ``stop(engine)`` on the loop, then stop the loop and its thread (idempotent; the
        caller holds ``_lock``)."""
        engine, loop, thread = self._engine, self._loop, self._thread
        if engine is None or loop is None or thread is None:
            return
        self._guard()
        try:
            if self._death is None:
                self._wait_for(asyncio.run_coroutine_threadsafe(stop(engine), loop))
        finally:
            if self._death is None:
                loop.call_soon_threadsafe(loop.stop)
            thread.join()
            self._abandon(engine, loop)
            loop.close()
            self._engine = self._loop = self._thread = None
            self._fail_waiting(
                NotStartedError(f"{self._whose} event loop stopped while this call waited")
            )

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
        self._fail_waiting(self._dead_error())

    def _fail_waiting(self, error: BaseException) -> None:
        """Fail the calls of other threads still waiting for the loop (it stopped under them:
        their coroutines were closed, so no answer would ever come)."""
        with self._waiting_lock:
            waiting = list(self._waiting.values())
            self._waiting.clear()
        for fail in waiting:
            fail(error)

    def _dead_error(self) -> NotStartedError:
        cause = self._death
        error = NotStartedError(
            f"{self._whose} event loop thread died ({type(cause).__name__}: {cause}); "
            f"{self._dead_hint} (the cause is attached)"
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

    # ---- hand-offs ----------------------------------------------------------------------------

    def _guard(self) -> None:
        if self._thread is not None and threading.current_thread() is self._thread:
            raise WorkError(
                "a blocking nsai-work call (SyncScheduler, SyncClient or work.submit/get/wait...) "
                "was made from code running on the engine's own event loop (an async handler?): "
                "it would deadlock. In async code use the async API: `await scheduler.submit(job)` "
                "on a work.Scheduler, or run the blocking call in a thread"
            )

    @staticmethod
    def _abandon(engine: LoopEngine, loop: asyncio.AbstractEventLoop) -> None:
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

    def _ready(self) -> tuple[E, asyncio.AbstractEventLoop]:
        """The engine and its loop, for a call (``NotStartedError`` when there are none)."""
        engine = self._engine
        loop = self._loop
        if engine is None or loop is None:
            raise NotStartedError(self._not_started)
        self._guard()
        if self._death is not None:
            raise self._dead_error()
        return engine, loop

    def _run(self, make: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
        """Run ``make(engine)`` on the loop thread, its first step at once; its answer, here."""
        engine, loop = self._ready()
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
        engine, loop = self._ready()
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

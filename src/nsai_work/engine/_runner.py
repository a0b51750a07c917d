"""Running jobs: the engine's side of a run, from a ``Dispatch`` to its one ``RunEnded``.

``Runner`` is the part of the ``Scheduler`` that starts a run's task, calls the backend, turns
what user code returned or raised into an ``Outcome``, stops a run on ``StopRun``, and reports
each run's end to the core exactly once (only then is its capacity released). A worker task
that reports an end takes the first job that end dispatches (``Handoff``), so a stream of short
jobs costs no task per job.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
import traceback
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final

from .._context import JobContext
from .._errors import NonRetryableError, ValidationError, public_type_name
from .._ir import Job, JobError, Priority
from .._validate import is_utf8, normalize_result
from ..backends import RemoteError, run_in_thread
from ..core import (
    Dispatch,
    Event,
    Failed,
    HandleReported,
    Outcome,
    RunEnded,
    Stopped,
    StopRun,
    Succeeded,
)

if TYPE_CHECKING:
    from ._routing import BackendInfo, Router

__all__ = ["STOPPED", "Background", "Handoff", "RunTuple", "Runner", "job_error", "quietly"]

_log = logging.getLogger("nsai_work.engine")
_SUCCEEDED_NONE: Final = Succeeded(None)
STOPPED: Final = Stopped()
#: Consecutive realtime/interactive jobs a worker starts at once before yielding to the loop.
_INLINE_LIMIT: Final = 8
_URGENT: Final = frozenset({Priority.REALTIME, Priority.INTERACTIVE})
#: How long a worker may chain short jobs before it yields the loop to other tasks.
_SLICE_S: Final = 0.0001

#: A run in flight: its task, its context, its backend.
RunTuple = tuple[asyncio.Task[Any], JobContext, "BackendInfo"]


class Handoff:
    """Open while a worker reports its run's end: the first job that report dispatches goes to
    ``next``, to be run by the same worker task."""

    __slots__ = ("next", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.next: tuple[BackendInfo, Job, JobContext] | None = None


class Runner:
    """The runs in flight and how they start and end (mixed into ``Scheduler``, which sets
    these attributes at start)."""

    _loop: asyncio.AbstractEventLoop
    _router: Router
    _runs: dict[tuple[str, str, int], RunTuple]  # by (tenant, job id, attempt)
    _handoff: Handoff | None
    _executor: ThreadPoolExecutor
    _max_result_bytes: int
    _state: str
    _inbox: deque[Callable[[], None]]
    _idle_waiters: list[asyncio.Future[None]]
    _background: Background

    def _feed(self, event: Event) -> None:
        raise NotImplementedError  # the Scheduler's

    def handle_reported(self, ctx: JobContext, handle: str) -> None:
        """A backend set its run's handle (``ctx.set_handle``): record it on the attempt. From
        the loop it is recorded at once; from another thread (a sync backend's), it is handed
        to the loop, where it comes before the end of the run that set it."""
        job = ctx.job
        event = HandleReported(job.tenant_id, job.id, job.attempt, handle)
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._note_handle(event)
        elif self._state == "running":
            with contextlib.suppress(RuntimeError):  # (a loop closed meanwhile records nothing)
                self._loop.call_soon_threadsafe(self._note_handle, event)

    def _note_handle(self, event: HandleReported) -> None:
        if self._state == "running":  # (after a stop, nothing is recorded any more)
            self._feed(event)

    def _drain_inbox(self) -> None:
        raise NotImplementedError  # the Scheduler's

    def _start_run(self, decision: Dispatch) -> None:
        job = decision.job
        info = self._router.backends[decision.backend]
        ctx = JobContext(job, self)
        handoff = self._handoff
        if handoff is not None and handoff.next is None:
            # A worker is reporting its run's end: it takes this job itself (no new task, and an
            # urgent job starts in this very loop step).
            handoff.next = (info, job, ctx)
            task = handoff.task
        else:
            task = self._loop.create_task(self._worker(info, job, ctx))
        self._runs[(job.tenant_id, job.id, job.attempt)] = (task, ctx, info)

    async def _worker(self, info: BackendInfo, job: Job, ctx: JobContext) -> None:
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
        handoff = Handoff(task)  # reused: open again at the end of each run
        while True:
            outcome: Outcome = STOPPED
            taker: Handoff | None = None  # None when the task itself is going away
            try:
                if yield_first:
                    await asyncio.sleep(0)
                    slice_start = clock()
                if not ctx._cancelled:  # (the attribute: no property call per run)
                    ctx._running = True  # from now on a stop cancels this task
                    try:  # one attempt (inlined: no extra coroutine per run)
                        if job.constraints.depends_on:
                            await self._before_run(job, ctx)
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
                        outcome = Failed(job_error(exc, job.attempt), retryable=False)
                    except Exception as exc:
                        outcome = Failed(job_error(exc, job.attempt), retryable=True)
                    except asyncio.CancelledError:
                        raise  # a stop, not a failure
                    except BaseException as exc:  # SystemExit, KeyboardInterrupt: not retried
                        outcome = Failed(job_error(exc, job.attempt), retryable=False)
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

    async def _before_run(self, job: Job, ctx: JobContext) -> None:
        """What a job with dependencies gets before it runs: its upstream results (read now
        from a durable store; from the memory store, when the handler first reads them)."""
        from ._deps import upstream_now, upstream_of

        if self._writes.durable:  # type: ignore[attr-defined]
            ctx._upstream = await upstream_of(self, job)  # type: ignore[arg-type]
        else:
            ctx._upstream_source = functools.partial(upstream_now, self, job)  # type: ignore[arg-type]

    def _end_run(self, job: Job, outcome: Outcome, handoff: Handoff | None) -> None:
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

    def _succeeded(self, result: Any, job: Job) -> Outcome:
        """A handler's return value as an outcome: not JSON-encodable (or too large) fails the
        attempt for good."""
        try:
            return Succeeded(normalize_result(result, self._max_result_bytes))
        except ValidationError as exc:
            return Failed(job_error(exc, job.attempt), retryable=False)
        except Exception as exc:  # a result whose encoding itself blows up
            return Failed(job_error(exc, job.attempt), retryable=False)

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
                self._background.spawn(quietly(result, f"{info.name!r} failed to cancel a job"))
        except BaseException:
            _log.exception("backend %r failed to cancel job %s", info.name, decision.job_id)
        task.cancel()


def job_error(exc: BaseException, attempt: int) -> JobError:
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


async def quietly(awaitable: Any, what: str) -> None:
    """Await a backend's call, logging (not raising) what it raises."""
    try:
        await awaitable
    except asyncio.CancelledError:
        raise
    except BaseException:
        _log.exception("nsai-work: backend %s", what)


class Background:
    """The engine's fire-and-forget calls to backends (a run's cancel, an orphan's): each task
    is kept until it ends (the loop only keeps weak references), and a stop waits for them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run ``coroutine`` as a task of its own."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the calls in flight, then cancel the rest."""
        tasks = set(self._tasks)
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

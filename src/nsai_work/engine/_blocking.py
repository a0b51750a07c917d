"""The blocking faces, made from the async verbs.

``blocking(Verbs.submit)`` is the blocking ``submit``: it runs the very coroutine the async face
awaits, on the engine's loop thread, and returns its answer (or raises its error) in the calling
thread. Its signature and docstring are the async verb's. ``SyncVerbs`` lists the verbs on jobs
once for both blocking faces (``SyncScheduler`` and ``SyncTenantScope``).

The coroutine's first step runs as soon as the loop takes the call (``start_eagerly``, what
Python 3.12 calls an eager task): a verb that needs no wait (a submit to the memory store)
finishes in that hand-off, as a plain function would, so a blocking submit still takes the slot
of the next run that ends. A verb that does wait (for a commit) goes on as a task.
"""

from __future__ import annotations

import asyncio
import functools
import types
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterator
from concurrent.futures import Future
from typing import Any, Concatenate, ParamSpec, TypeVar

from ._verbs import Verbs

__all__ = ["SyncFace", "SyncVerbs", "blocking", "blocking_iter", "start_eagerly"]

P = ParamSpec("P")
T = TypeVar("T")


class SyncFace:
    """What a blocking face provides: the way to run a coroutine of its async face (the
    ``target``: the engine, or a tenant scope of it) on the loop thread and wait for it."""

    __slots__ = ()

    def _run(self, make: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
        """Run ``make(target)`` on the loop thread; its answer, here."""
        raise NotImplementedError

    def _iterate(self, make: Callable[[Any], AsyncIterator[T]]) -> Iterator[T]:
        """Iterate ``make(target)`` on the loop thread; its items, here."""
        raise NotImplementedError


def blocking(
    verb: Callable[Concatenate[Any, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[SyncFace, P], T]:
    """The blocking method that runs the async method ``verb`` and returns its answer."""

    @functools.wraps(verb)
    def call(self: SyncFace, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(lambda target: verb(target, *args, **kwargs))

    return call


def blocking_iter(
    verb: Callable[Concatenate[Any, P], AsyncIterator[T]],
) -> Callable[Concatenate[SyncFace, P], Iterator[T]]:
    """The blocking method that iterates the async generator method ``verb``."""

    @functools.wraps(verb)
    def call(self: SyncFace, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        return self._iterate(lambda target: verb(target, *args, **kwargs))

    return call


class SyncVerbs(SyncFace):
    """The verbs on jobs of both blocking faces: each is ``Verbs``'s, run on the loop thread."""

    __slots__ = ()

    submit = blocking(Verbs.submit)
    submit_many = blocking(Verbs.submit_many)
    get = blocking(Verbs.get)
    list = blocking(Verbs.list)
    wait = blocking(Verbs.wait)
    wait_many = blocking(Verbs.wait_many)
    as_completed = blocking_iter(Verbs.as_completed)
    cancel = blocking(Verbs.cancel)
    retry = blocking(Verbs.retry)
    submit_workflow = blocking(Verbs.submit_workflow)
    get_workflow = blocking(Verbs.get_workflow)
    wait_workflow = blocking(Verbs.wait_workflow)
    cancel_workflow = blocking(Verbs.cancel_workflow)
    cron = blocking(Verbs.cron)
    schedules = blocking(Verbs.schedules)
    pause_schedule = blocking(Verbs.pause_schedule)
    resume_schedule = blocking(Verbs.resume_schedule)
    remove_schedule = blocking(Verbs.remove_schedule)


def start_eagerly(
    coroutine: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop, answer: Future[T]
) -> None:
    """Run ``coroutine`` on ``loop`` (call on its thread), its first step right now; its result
    or exception goes to ``answer`` (a thread-safe future the caller waits on)."""
    try:
        yielded = coroutine.send(None)
    except StopIteration as stop:
        _settle(answer, stop.value, None)
        return
    except BaseException as exc:
        _settle(answer, None, exc)
        return
    task = loop.create_task(_resume(coroutine, yielded))

    def done(task: asyncio.Task[T]) -> None:
        if task.cancelled():
            _settle(answer, None, asyncio.CancelledError())
        else:
            _settle(answer, task.result() if task.exception() is None else None, task.exception())

    task.add_done_callback(done)


def _settle(answer: Future[T], value: T | None, error: BaseException | None) -> None:
    if answer.done():  # failed already (the loop died while it ran)
        return
    if error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(value)  # type: ignore[arg-type]


async def _resume(coroutine: Coroutine[Any, Any, T], yielded: Any) -> T:
    return await _go_on(coroutine, yielded)


@types.coroutine
def _go_on(coroutine: Coroutine[Any, Any, T], yielded: Any) -> Generator[Any, Any, T]:
    """A coroutine already started (it gave ``yielded`` to its runner), run on by the task that
    awaits this: what it yields goes to the task, what the task sends or throws goes back to it,
    as ``await coroutine`` would have done from its first step."""
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:
            try:
                yielded = coroutine.throw(exc)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
        else:
            try:
                yielded = coroutine.send(sent)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]

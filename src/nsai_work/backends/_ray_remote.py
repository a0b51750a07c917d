"""What runs inside a Ray worker for a callable job: the registered handler, called as the local
backend calls it, with its outcome returned as data.

The task never raises for what user code does: an exception (``BaseException`` too) comes back
as an ``Err`` (type, message, traceback, retryable), so the job's error names the original type
whatever Ray's own wrapping of remote exceptions would make of it, and an exception that cannot
be pickled still arrives. A result is checked against the result size limit here, before it is
sent back through Ray's object store.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from .._context import JobContext
from .._ir import Job
from .._validate import normalize_result
from ._worker import _error

__all__ = ["run_handler"]


def run_handler(
    fn: Callable[..., Any], takes_context: bool, job: Job, max_result_bytes: int
) -> tuple[str, Any]:
    """Call ``fn(job)`` or ``fn(job, ctx)`` (awaiting an async one); ``("ok", result)`` with the
    result as the JSON the job will carry, or ``("err", Err)`` (see ``_worker.Err``)."""
    try:
        ctx = JobContext(job)  # (progress stays in the worker: nothing carries it back)
        ctx._running = True
        result = fn(job, ctx) if takes_context else fn(job)
        if inspect.isawaitable(result):
            result = asyncio.run(_awaited(result))
    except BaseException as exc:  # whatever user code raises fails the attempt
        return ("err", _error(exc))
    try:
        return ("ok", normalize_result(result, max_result_bytes))
    except Exception as exc:  # not JSON, or too large: the same result would fail again
        return ("err", _error(exc, retryable=False))


async def _awaited(awaitable: Any) -> Any:
    return await awaitable

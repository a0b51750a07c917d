"""What runs inside a Ray worker for a callable job: the registered handler, called as the local
backend calls it, with its outcome returned as data.

The task never raises for what user code does: an exception (``BaseException`` too) comes back
as an ``Err`` (type, message, traceback, retryable) in place of the result, so the job's error
names the original type
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
from .._ir import Job, job_decoder
from .._validate import normalize_result
from ._worker_wire import error_reply

__all__ = ["make_runner"]


def make_runner(
    fn: Callable[..., Any], takes_context: bool, max_result_bytes: int
) -> Callable[..., Any]:
    """The function a Ray task of this handler runs: it takes the job as JSON and, for a job
    with dependencies, their results (``ctx.upstream``). Ray exports it once (the handler
    travels with it, by reference when its module is importable, and so does the result size
    limit), so a task sends only its job: one argument, which Ray passes as raw bytes (each
    further argument costs a serialization in the driver and one in the worker)."""

    def run(job_json: bytes, upstream: dict[str, Any] | None = None) -> Any:
        # (only module functions here: the closure is pickled, the decoder cannot be)
        return run_json(fn, takes_context, job_json, max_result_bytes, upstream)

    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "handler")
    run.__name__ = run.__qualname__ = f"nsai_work.ray[{name}]"
    return run


def run_json(
    fn: Callable[..., Any],
    takes_context: bool,
    job_json: bytes,
    max_result_bytes: int,
    upstream: dict[str, Any] | None = None,
) -> Any:
    """``run_handler`` for a job sent as JSON."""
    job = job_decoder.decode(job_json)
    return run_handler(fn, takes_context, job, max_result_bytes, upstream)


def run_handler(
    fn: Callable[..., Any],
    takes_context: bool,
    job: Job,
    max_result_bytes: int,
    upstream: dict[str, Any] | None = None,
) -> Any:
    """Call ``fn(job)`` or ``fn(job, ctx)`` (awaiting an async one); the result as the JSON the
    job will carry, or an ``Err`` (``_worker_wire.Err``: no JSON value is one) for what it
    raised."""
    try:
        ctx = JobContext(job)  # (progress stays in the worker: nothing carries it back)
        ctx._running = True
        if upstream is not None:
            ctx._upstream = upstream
        result = fn(job, ctx) if takes_context else fn(job)
        if inspect.isawaitable(result):
            result = asyncio.run(_awaited(result))
    except BaseException as exc:  # whatever user code raises fails the attempt
        return error_reply(exc)
    if result is None:
        return None
    try:
        return normalize_result(result, max_result_bytes)
    except Exception as exc:  # not JSON, or too large: the same result would fail again
        return error_reply(exc, retryable=False)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable

"""The operators' routes (admin keys): pause and resume a tenant, a namespace, a pool or the
whole scheduler, drain before maintenance, and cancel or retry a tenant's jobs by filter."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post

from .._bulk import BulkFilter
from .._wire import DrainBody, PauseBody, decode_body
from ..engine._bulk import run_bulk
from ._common import _answer, _caller, _idempotent, _send
from ._idempotency import Answer

__all__ = ["bulk_cancel", "bulk_retry", "drain", "ops_state", "pause", "resume"]

_WHAT = 'an object {"tenant_id": ..., "namespace": ..., "pool": ...} (none: everything)'


@get("/v1/ops")
async def ops_state(request: Request[Any, Any, Any]) -> Response[bytes]:
    """What is paused, whether the scheduler is drained, how many runs are in flight."""
    service, _ = _caller(request, admin=True)
    return _send(_answer(service.ops_state()))


@post("/v1/ops/pause", status_code=200)
async def pause(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Pause a tenant, one of its namespaces, a pool, or (naming none) all dispatching."""
    service, _ = _caller(request, admin=True)
    body = decode_body(await request.body(), PauseBody, _WHAT)
    return _send(_answer(service.pause(body, paused=True)))


@post("/v1/ops/resume", status_code=200)
async def resume(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Resume what ``pause`` paused (the same body)."""
    service, _ = _caller(request, admin=True)
    body = decode_body(await request.body(), PauseBody, _WHAT)
    return _send(_answer(service.pause(body, paused=False)))


@post("/v1/ops/drain", status_code=200)
async def drain(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Pause all dispatching, then wait (up to ``timeout`` s, at most 60) for runs to end:
    ``running`` is 0 in the answer once it is safe to stop."""
    service, _ = _caller(request, admin=True)
    body = decode_body(await request.body(), DrainBody, 'an object {"timeout": 30}')
    return _send(_answer(await service.drain(body.timeout)))


_FILTER = 'an object {"tenant_id": ..., "status": ..., "limit": 100, ...} (a job filter)'


@post("/v1/ops/cancel", status_code=200)
async def bulk_cancel(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Cancel at most ``limit`` (1,000) of one tenant's jobs that match the filter, newest
    first; the ids canceled, and ``next_cursor`` to go on from."""
    service, key = _caller(request, admin=True)

    async def make() -> Answer:
        where = decode_body(await request.body(), BulkFilter, _FILTER)
        return _answer(await run_bulk(service.verbs(key), "cancel", where))

    return await _idempotent(request, key, make)


@post("/v1/ops/retry", status_code=200)
async def bulk_retry(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Retry at most ``limit`` (1,000) of one tenant's finished jobs that match the filter,
    newest first; the ids retried, their copies' ids, and ``next_cursor`` to go on from."""
    service, key = _caller(request, admin=True)

    async def make() -> Answer:
        where = decode_body(await request.body(), BulkFilter, _FILTER)
        return _answer(await run_bulk(service.verbs(key), "retry", where))

    return await _idempotent(request, key, make)

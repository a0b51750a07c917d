"""The operators' routes (admin keys): pause and resume a tenant, a namespace, a pool or the
whole scheduler, and drain before maintenance."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post

from .._wire import DrainBody, PauseBody, decode_body
from ._common import _answer, _caller, _send

__all__ = ["drain", "ops_state", "pause", "resume"]

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

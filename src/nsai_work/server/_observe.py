"""The routes that watch the scheduler: ``GET /metrics`` (Prometheus) and ``GET /v1/events``
(server-sent events of job events)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.response import Stream

from .._errors import ValidationError
from ..telemetry.prometheus import CONTENT_TYPE
from ._common import _caller, _number, _service, _text
from ._stream import stream

__all__ = ["events", "metrics"]

#: The cookie a browser's ``EventSource`` (which cannot send headers) may carry the key in.
KEY_COOKIE = "nsai_work_key"
#: At most this many job ids in one stream's filter.
MAX_STREAM_JOBS = 1000


@get("/metrics")
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The scheduler's metrics in Prometheus' text format (an admin key, unless the app was
    made with ``public_metrics=True``)."""
    service = _service(request)
    if not request.app.state.public_metrics:
        _caller(request, admin=True)
    scheduler = service.scheduler("metrics")
    body = service.metrics.render(await scheduler.stats())
    return Response(body, media_type=CONTENT_TYPE)


@get("/v1/events")
async def events(request: Request[Any, Any, Any]) -> Response[Any]:
    """A stream (``text/event-stream``) of job events: a tenant key's own tenant's, an admin
    key's every tenant's (or ``tenant_id``'s); only ``job_id``'s (repeatable) when given. The
    key may come in a header, the ``nsai_work_key`` cookie, or ``access_token`` (RFC 6750)."""
    token = request.cookies.get(KEY_COOKIE) or request.query_params.get("access_token")
    service, key = _caller(request, token=token)
    scheduler = service.scheduler("the event stream")
    verbs = service.verbs(key)
    tenant_id = verbs._tenant(_text(request, "tenant_id"))
    timeout = request.query_params.get("timeout")
    seconds = None if timeout is None else _number(request, "timeout", 0.0, float)
    if seconds is not None and not 0 <= seconds <= 86_400:
        raise ValidationError(f"timeout is 0 to 86400 seconds, got {timeout!r}", path="$.timeout")
    job_ids = request.query_params.getall("job_id", [])
    if len(job_ids) > MAX_STREAM_JOBS:
        raise ValidationError(
            f"a stream follows at most {MAX_STREAM_JOBS} job ids, got {len(job_ids)}",
            path="$.job_id",
        )
    keys = None
    if job_ids:
        found = [await verbs.get(job_id, tenant_id=tenant_id) for job_id in job_ids]
        keys = frozenset((job.tenant_id, job.id) for job in found)
    del scheduler  # (needed only to say 503 on a server that is a client of the store)
    return Stream(
        stream(service.hub, tenant_id, keys, seconds),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )

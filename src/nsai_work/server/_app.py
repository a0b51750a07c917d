"""The HTTP API: ``create_app(...)`` makes the ASGI app (Litestar), one handler per route.

Each handler authenticates the caller (``Authorization: Bearer <key>``, or ``X-API-Key``),
charges the key's rate, reads its input with the IR's decoders (``_wire``) and runs the verb as
the key's caller (``Service.verbs``). Bodies are encoded with msgspec, once. Every error is a
problem (RFC 9457, ``application/problem+json``): a ``WorkError`` by its class (``_wire``'s
table), a refused key (401, 403), an unknown route (404), a body over the size limit (413).
The routes are listed once, in ``ROUTES`` (``_routes.py``), from which the OpenAPI document is
generated.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import AsyncIterator, Iterable
from typing import Any

from litestar import Litestar, Request, Response, get, post, put
from litestar.exceptions import HTTPException

from .._errors import ConfigurationError, ValidationError, WorkError
from .._ir import Priority, Status
from .._validate import check_identifier
from .._wire import (
    PROBLEM_BASE,
    Caller,
    CancelBody,
    JobBatch,
    Problem,
    TenantBody,
    WaitBody,
    decode_body,
    decode_jobs,
    problem_for,
)
from ..engine import Config, Scheduler
from ..engine._config import make_config
from ..telemetry.prometheus import PrometheusMetrics
from . import _dashboard, _session
from ._common import (
    Refused,
    _answer,
    _caller,
    _enum,
    _idempotent,
    _instant,
    _number,
    _problem_answer,
    _refused_problem,
    _send,
    _service,
    _text,
)
from ._history import History
from ._idempotency import Answer, IdempotencyCache
from ._keys import KeyRing
from ._observe import events, metrics
from ._ops import bulk_cancel, bulk_retry, drain, ops_state, pause, resume
from ._schedules import list_schedules, pause_schedule, remove_schedule, resume_schedule
from ._service import ListFilters, Service
from ._stream import EventHub

__all__ = ["create_app"]

_log = logging.getLogger("nsai_work.server")


def _on_work_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, WorkError)
    problem = problem_for(exc, request.url.path)
    if problem.status >= 500:
        _log.warning("nsai-work server: %s %s: %s", request.method, request.url.path, exc)
    return _send(_problem_answer(problem))


def _on_refused(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, Refused)
    return _send(_problem_answer(_refused_problem(exc, request.url.path)))


def _on_http(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    detail = str(exc.detail)
    if status == 404:
        detail = f"no route {request.method} {request.url.path}; the API is under /v1 (see /docs)"
    elif status == 413:
        limit = request.app.state.service_max_body
        detail = f"the body is larger than the server's limit of {limit} bytes"
    elif status == 405:
        detail = f"{request.method} is not a method of {request.url.path}"
    error = "NotFoundError" if status == 404 else "ValidationError" if status < 500 else "WorkError"
    problem = Problem(
        type=PROBLEM_BASE + ("not-found" if status == 404 else f"http-{status}"),
        title=_TITLES.get(status, "Bad request"),
        status=status,
        detail=detail,
        error=error,
        instance=request.url.path,
        path="$" if error == "ValidationError" else None,
        rule=detail if error == "ValidationError" else None,
    )
    if status == 503:
        problem.retry_after_s = 1.0
    return _send(_problem_answer(problem))


_TITLES = {404: "No such route", 405: "Method not allowed", 413: "Body too large"}


def _on_crash(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    _log.exception("nsai-work server: %s %s failed", request.method, request.url.path)
    problem = Problem(
        type=PROBLEM_BASE + "internal",
        title="Internal error",
        status=500,
        detail=f"the server failed on this request ({type(exc).__name__}); it is logged",
        error="WorkError",
        instance=request.url.path,
    )
    return _send(_problem_answer(problem))


# ---- routes -------------------------------------------------------------------------------------


@get("/v1/auth")
async def auth(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Whose key this is."""
    _, key = _caller(request)
    return _send(_answer(Caller(key_id=key.id, tenant_id=key.tenant_id, admin=key.admin)))


@post("/v1/jobs", status_code=201)
async def submit(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Submit one job."""
    service, key = _caller(request)

    async def make() -> Answer:
        (job,) = service.traced(decode_jobs(await request.body(), batch=False), request.headers)
        return _answer(await service.verbs(key).submit(job), 201)

    return await _idempotent(request, key, make)


@post("/v1/jobs/batch", status_code=201)
async def submit_many(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Submit jobs, all or nothing."""
    service, key = _caller(request)

    async def make() -> Answer:
        jobs = service.traced(decode_jobs(await request.body(), batch=True), request.headers)
        return _answer(JobBatch(jobs=await service.verbs(key).submit_many(jobs)), 201)

    return await _idempotent(request, key, make)


@get("/v1/jobs")
async def list_jobs(request: Request[Any, Any, Any]) -> Response[bytes]:
    """A page of a tenant's jobs, newest first."""
    service, key = _caller(request)
    filters = ListFilters(
        priority=_enum(request, "priority", Priority),
        created_after=_instant(request, "created_after"),
        created_before=_instant(request, "created_before"),
    )
    page = await service.list(
        service.verbs(key),
        filters,
        tenant_id=_text(request, "tenant_id"),
        namespace=_text(request, "namespace"),
        status=_enum(request, "status", Status),
        kind=_text(request, "kind"),
        limit=_number(request, "limit", 100, int),
        cursor=_text(request, "cursor"),
    )
    return _send(_answer(page))


@get("/v1/jobs/{job_id:str}")
async def get_job(request: Request[Any, Any, Any]) -> Response[bytes]:
    """One job as it is now."""
    job_id = request.path_params["job_id"]
    service, key = _caller(request)
    job = await service.verbs(key).get(job_id, tenant_id=_text(request, "tenant_id"))
    return _send(_answer(job))


@post("/v1/jobs/{job_id:str}/cancel", status_code=200)
async def cancel(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Cancel a job (a finished one is returned unchanged)."""
    job_id = request.path_params["job_id"]
    service, key = _caller(request)

    async def make() -> Answer:
        body = decode_body(await request.body(), CancelBody, 'an object {"reason": "..."}')
        reason = body.reason
        job = await service.verbs(key).cancel(job_id, reason, tenant_id=_text(request, "tenant_id"))
        return _answer(job)

    return await _idempotent(request, key, make)


@post("/v1/jobs/{job_id:str}/retry", status_code=201)
async def retry(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Submit a copy of a finished job."""
    job_id = request.path_params["job_id"]
    service, key = _caller(request)

    async def make() -> Answer:
        job = await service.verbs(key).retry(job_id, tenant_id=_text(request, "tenant_id"))
        return _answer(job, 201)

    return await _idempotent(request, key, make)


@get("/v1/jobs/{job_id:str}/wait")
async def wait_one(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The job once terminal, or as it is after ``timeout`` seconds (a long poll)."""
    job_id = request.path_params["job_id"]
    service, key = _caller(request)
    result = await service.wait(
        service.verbs(key),
        [job_id],
        _number(request, "timeout", 30.0, float),
        tenant_id=_text(request, "tenant_id"),
    )
    return _send(_answer(result.jobs[0]))


@post("/v1/jobs/wait", status_code=200)
async def wait_many(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Jobs once all (or one) are terminal, or as they are after ``timeout`` (a long poll)."""
    service, key = _caller(request)
    body = decode_body(await request.body(), WaitBody, 'an object {"job_ids": [...]}')
    result = await service.wait(
        service.verbs(key),
        body.job_ids,
        body.timeout,
        tenant_id=body.tenant_id,
        return_when=body.return_when,
    )
    return _send(_answer(result))


@get("/v1/stats")
async def stats(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The scheduler's stats (admin), or the key's tenant's."""
    service, key = _caller(request)
    return _send(_answer(await service.stats(key)))


@get("/v1/tools")
async def tools(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The registered ALTAR tools (name, description, ADM parameters)."""
    _caller(request)
    from .. import altar

    return _send(_answer(altar.list()))


@get("/v1/tools/export")
async def tools_export(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The tools in a provider's shape: ``format=openai`` (``strict=true``) or ``gemini``, as
    ``{"tools": [...], "left_out": [...]}`` (why a tool the provider would refuse is left out)."""
    _caller(request)
    from .. import altar

    shape = request.query_params.get("format", "openai")
    strict = request.query_params.get("strict", "false")
    if strict not in ("true", "false"):
        raise ValidationError(f"strict is true or false, got {strict!r}", path="$.strict")
    if shape not in ("openai", "gemini"):
        raise ValidationError(f"format is 'openai' or 'gemini', got {shape!r}", path="$.format")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", altar.ToolExportWarning)
        if shape == "openai":
            exported = altar.export_openai(strict=strict == "true")
        else:
            exported = altar.export_gemini()
    left_out = [str(w.message) for w in caught if issubclass(w.category, altar.ToolExportWarning)]
    return _send(_answer({"tools": exported, "left_out": left_out}))


@get("/v1/tenants")
async def tenants(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Every tenant the scheduler knows now, with weight, quota and use (admin)."""
    service, _ = _caller(request, admin=True)
    return _send(_answer(await service.tenants()))


@get("/v1/tenants/{tenant_id:str}")
async def tenant(request: Request[Any, Any, Any]) -> Response[bytes]:
    """One tenant's weight, quota and use (admin, or the tenant's own key)."""
    tenant_id = request.path_params["tenant_id"]
    service, key = _caller(request)
    check_identifier(tenant_id, "$.tenant_id", what="a tenant id")
    return _send(_answer(await service.tenant(key, tenant_id)))


@put("/v1/tenants/{tenant_id:str}", status_code=200)
async def set_tenant(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Add or change a tenant: weight, quota, namespace limits (admin)."""
    tenant_id = request.path_params["tenant_id"]
    service, _ = _caller(request, admin=True)
    body = decode_body(await request.body(), TenantBody, "a tenant: weight, quota, namespaces")
    return _send(_answer(await service.set_tenant(tenant_id, body)))


@get("/healthz")
async def health(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Liveness: 200 while the server runs (no key needed)."""
    service = _service(request)
    return _send(_answer({"status": "ok", "scheduler": service.runs_scheduler}))


@get("/openapi.json")
async def openapi(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The OpenAPI 3.1 document of this API."""
    from ._openapi import document_bytes

    return Response(document_bytes(), media_type="application/vnd.oai.openapi+json")


@get("/docs")
async def docs(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Interactive documentation of the API (Swagger UI, from the OpenAPI document)."""
    from ._openapi import docs_page

    return Response(docs_page().encode(), media_type="text/html")


HANDLERS = [
    auth,
    submit,
    submit_many,
    list_jobs,
    get_job,
    cancel,
    retry,
    wait_one,
    wait_many,
    stats,
    tools,
    tools_export,
    tenants,
    tenant,
    set_tenant,
    health,
    openapi,
    docs,
    metrics,
    events,
    ops_state,
    pause,
    resume,
    drain,
    list_schedules,
    pause_schedule,
    resume_schedule,
    remove_schedule,
    bulk_cancel,
    bulk_retry,
]


def create_app(
    store: Any = None,
    *,
    keys: KeyRing | str | None = None,
    scheduler: bool | Scheduler | None = None,
    config: Config | None = None,
    max_body_bytes: int = 10 * 1024 * 1024,
    stop_timeout_s: float = 30.0,
    metrics_tenants: Iterable[str] | None = None,
    metrics_top_tenants: int = 20,
    public_metrics: bool = False,
    stream_buffer: int = 10_000,
    tracing: Any = None,
    **options: Any,
) -> Litestar:
    """The ASGI app of the HTTP API, for any ASGI server (``uvicorn``, ``hypercorn``...).

    ``store``: the store's URL (default ``memory://``) or a Store object. ``keys``: the API keys
    (a ``KeyRing``, or the path of its file). ``scheduler``: True runs the scheduler in this
    process, False serves the store as a client of the scheduler that runs elsewhere (so several
    servers can share one store); None runs it for ``memory://`` and is a client otherwise; a
    running ``Scheduler`` is served as it is (not started or stopped by the app: serve the app
    on that scheduler's loop, as ``make demo DEMO_ARGS=--serve`` does).
    ``config`` and ``options`` are the scheduler's (``work.Config``). ``max_body_bytes``:
    larger requests are refused (413). At shutdown (SIGTERM, via the ASGI lifespan) running
    jobs get ``stop_timeout_s`` to finish.

    ``GET /metrics``: ``metrics_tenants`` is the allow-list of tenants that get a label of their
    own (None: the ``metrics_top_tenants`` busiest at each scrape; the others are summed as
    ``_other``); ``public_metrics=True`` serves it without a key (an admin key otherwise).
    ``stream_buffer``: events an event stream buffers for a slow client before it drops some
    (and then says so with a ``gap`` event). ``tracing``: True (OpenTelemetry's global tracer
    provider) or a ``TracerProvider`` traces submits and attempts (``nsai_work.telemetry.otel``,
    the ``[otel]`` extra), continuing an HTTP caller's ``traceparent``; None: off.
    """
    if store is not None:
        options["store"] = store
    if keys is None:
        raise ConfigurationError(
            "keys is needed: a nsai_work.server.KeyRing, or the path of its file (made by "
            "`nsai-work keys create --keys PATH ...`)"
        )
    ring = keys if isinstance(keys, KeyRing) else KeyRing(keys)
    service = Service(
        config=make_config(config, options),
        scheduler=scheduler,
        keys=ring,
        metrics=PrometheusMetrics(tenants=metrics_tenants, top_tenants=metrics_top_tenants),
        hub=EventHub(buffer=stream_buffer),
        tracing=tracing,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            app.state.history.close()  # the dashboard's charts (if it was looked at)
            await service.stop(stop_timeout_s)

    app = Litestar(
        route_handlers=[*HANDLERS, *_dashboard.HANDLERS],  # the dashboard: not in the OpenAPI
        exception_handlers={
            WorkError: _on_work_error,
            Refused: _on_refused,
            HTTPException: _on_http,
            Exception: _on_crash,
        },
        lifespan=[lifespan],
        openapi_config=None,
        logging_config=None,
        request_max_body_size=max_body_bytes,
        debug=False,
    )
    app.state.service = service
    app.state.service_max_body = max_body_bytes
    app.state.public_metrics = public_metrics
    app.state.idempotency = IdempotencyCache()
    app.state.sessions = _session.Sessions()  # the dashboard's logins
    app.state.history = History()  # the dashboard's charts
    return app

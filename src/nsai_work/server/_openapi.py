"""The OpenAPI 3.1 document of the HTTP API, generated from the msgspec types it speaks.

The schemas are msgspec's own (``msgspec.json.schema_components`` of ``Job``, ``Stats``,
``Problem``... the very types the server decodes and encodes, and the same generator as
``schema/job.schema.json``); the routes are the table ``ROUTES`` below, one row per route of
``_app.py`` (a test checks that they are the same set). ``nsai-work openapi --write schema``
writes it to ``schema/openapi.json``; a test fails when that copy is stale.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Final, NamedTuple

import msgspec

from .. import __version__
from .._ir import Job, Priority, Status, Tenant
from .._schedule import Schedule, ScheduleList
from .._stats import Stats, TenantStats
from .._wire import (
    Caller,
    CancelBody,
    DrainBody,
    JobBatch,
    JobPage,
    OpsState,
    PauseBody,
    Problem,
    TenantBody,
    WaitBody,
    WaitResult,
)
from ..altar import FunctionDeclaration

__all__ = ["ROUTES", "Route", "docs_page", "document", "document_bytes"]


class Route(NamedTuple):
    """One route: method, path, summary, what it takes and answers, who may call it."""

    method: str
    path: str
    summary: str
    answer: Any  # a type, or None for a schema-less JSON answer
    status: int = 200
    body: Any = None
    params: tuple[str, ...] = ()
    auth: str = "key"  # "key", "admin", or "none"
    tag: str = "jobs"
    media: str = "application/json"  # of the answer


_JOB_PARAMS: Final = ("tenant_id",)
#: Every route of the API.
ROUTES: Final[tuple[Route, ...]] = (
    Route("get", "/v1/auth", "Whose key this is", Caller, tag="auth"),
    Route("post", "/v1/jobs", "Submit a job", Job, 201, Job, ("Idempotency-Key",)),
    Route(
        "post",
        "/v1/jobs/batch",
        "Submit jobs, all or nothing",
        JobBatch,
        201,
        JobBatch,
        ("Idempotency-Key",),
    ),
    Route(
        "get",
        "/v1/jobs",
        "List a tenant's jobs, newest first",
        JobPage,
        params=(
            "tenant_id",
            "namespace",
            "status",
            "kind",
            "priority",
            "created_after",
            "created_before",
            "limit",
            "cursor",
        ),
    ),
    Route("get", "/v1/jobs/{job_id}", "Get a job", Job, params=_JOB_PARAMS),
    Route(
        "post",
        "/v1/jobs/{job_id}/cancel",
        "Cancel a job",
        Job,
        200,
        CancelBody,
        ("tenant_id", "Idempotency-Key"),
    ),
    Route(
        "post",
        "/v1/jobs/{job_id}/retry",
        "Retry a finished job (a new job)",
        Job,
        201,
        None,
        ("tenant_id", "Idempotency-Key"),
    ),
    Route(
        "get",
        "/v1/jobs/{job_id}/wait",
        "Wait for a job (a long poll)",
        Job,
        params=("tenant_id", "timeout"),
    ),
    Route("post", "/v1/jobs/wait", "Wait for jobs (a long poll)", WaitResult, 200, WaitBody),
    Route(
        "get", "/v1/stats", "The scheduler's stats (a tenant key: its tenant's)", Any, tag="stats"
    ),
    Route("get", "/v1/tools", "The registered ALTAR tools", list[FunctionDeclaration], tag="tools"),
    Route(
        "get",
        "/v1/tools/export",
        "The tools in a provider's shape",
        None,
        params=("format", "strict"),
        tag="tools",
    ),
    Route(
        "get",
        "/v1/tenants",
        "Every tenant (admin)",
        dict[str, TenantStats],
        auth="admin",
        tag="tenants",
    ),
    Route(
        "get",
        "/v1/tenants/{tenant_id}",
        "A tenant's weight, quota and use",
        TenantStats,
        tag="tenants",
    ),
    Route(
        "put",
        "/v1/tenants/{tenant_id}",
        "Add or change a tenant (admin)",
        Tenant,
        200,
        TenantBody,
        auth="admin",
        tag="tenants",
    ),
    Route(
        "get",
        "/v1/events",
        "A stream of job events (server-sent events)",
        None,
        params=("tenant_id", "job_id", "timeout@events", "access_token"),
        tag="events",
        media="text/event-stream",
    ),
    Route(
        "get",
        "/metrics",
        "Metrics in Prometheus' text format (admin)",
        None,
        auth="admin",
        tag="service",
        media="text/plain",
    ),
    Route(
        "get", "/v1/ops", "What is paused and running (admin)", OpsState, auth="admin", tag="ops"
    ),
    Route(
        "post",
        "/v1/ops/pause",
        "Pause a tenant, a namespace, a pool, or everything (admin)",
        OpsState,
        200,
        PauseBody,
        auth="admin",
        tag="ops",
    ),
    Route(
        "post",
        "/v1/ops/resume",
        "Resume what was paused (admin)",
        OpsState,
        200,
        PauseBody,
        auth="admin",
        tag="ops",
    ),
    Route(
        "post",
        "/v1/ops/drain",
        "Pause everything and wait for runs to end (admin)",
        OpsState,
        200,
        DrainBody,
        auth="admin",
        tag="ops",
    ),
    Route(
        "get",
        "/v1/schedules",
        "The cron schedules (a tenant key: its tenant's)",
        ScheduleList,
        params=("tenant_id@schedules",),
        tag="schedules",
    ),
    Route(
        "post",
        "/v1/schedules/{name}/pause",
        "Pause a cron schedule",
        Schedule,
        params=("tenant_id@schedules",),
        tag="schedules",
    ),
    Route(
        "post",
        "/v1/schedules/{name}/resume",
        "Resume a cron schedule",
        Schedule,
        params=("tenant_id@schedules",),
        tag="schedules",
    ),
    Route(
        "delete",
        "/v1/schedules/{name}",
        "Remove a cron schedule",
        Schedule,
        params=("tenant_id@schedules",),
        tag="schedules",
    ),
    Route("get", "/healthz", "Liveness", None, auth="none", tag="service"),
    Route("get", "/openapi.json", "This document", None, auth="none", tag="service"),
)

_PARAMETERS: Final[dict[str, dict[str, Any]]] = {
    "tenant_id": {
        "description": "Whose job (admin keys; a tenant key is its tenant's)",
        "schema": {"type": "string", "minLength": 1},
    },
    "tenant_id@schedules": {
        "name": "tenant_id",
        "description": "Whose schedule (admin keys; a tenant key is its tenant's)",
        "schema": {"type": "string", "minLength": 1},
    },
    "namespace": {
        "description": "Only this namespace",
        "schema": {"type": "string", "minLength": 1},
    },
    "status": {
        "description": "Only this status",
        "schema": {"type": "string", "enum": [s.value for s in Status]},
    },
    "kind": {"description": "Only this kind", "schema": {"type": "string", "minLength": 1}},
    "priority": {
        "description": "Only this priority",
        "schema": {"type": "string", "enum": [p.value for p in Priority]},
    },
    "created_after": {
        "description": "Created at or after (RFC 3339)",
        "schema": {"type": "string", "format": "date-time"},
    },
    "created_before": {
        "description": "Created before (RFC 3339)",
        "schema": {"type": "string", "format": "date-time"},
    },
    "limit": {
        "description": "Jobs per page",
        "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100},
    },
    "cursor": {"description": "next_cursor of the previous page", "schema": {"type": "string"}},
    "timeout": {
        "description": "Seconds to wait, at most 60",
        "schema": {"type": "number", "minimum": 0, "maximum": 60, "default": 30},
    },
    "format": {
        "description": "The provider's shape",
        "schema": {"type": "string", "enum": ["openai", "gemini"], "default": "openai"},
    },
    "strict": {
        "description": "OpenAI's strict mode",
        "schema": {"type": "string", "enum": ["true", "false"], "default": "false"},
    },
    "job_id": {
        "description": "Only this job's events (repeatable, at most 1000)",
        "schema": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 1000},
        "style": "form",
        "explode": True,
    },
    "timeout@events": {
        "name": "timeout",
        "description": "End the stream after this many seconds (default: when the client leaves)",
        "schema": {"type": "number", "minimum": 0, "maximum": 86400},
    },
    "access_token": {
        "description": "The API key, for clients that cannot send headers (a browser's "
        "EventSource; the nsai_work_key cookie works too)",
        "schema": {"type": "string"},
    },
    "Idempotency-Key": {
        "description": "A retried request with the same key gets the first answer",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        "in": "header",
    },
}

_ERRORS: Final = {
    "401": "No key, or a key that is unknown or revoked",
    "404": "Unknown job, another tenant's, or pruned",
    "422": "A field breaks a rule (path and rule in the problem)",
    "429": "Over a rate or a quota (Retry-After)",
    "503": "The scheduler or the store cannot take it now (Retry-After)",
}


def _ref(kind: Any, refs: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    if kind is None or kind is Any:
        return {}
    return refs[kind]


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a dict of JSON values)."""
    return json.loads(render())  # type: ignore[no-any-return]


@functools.cache
def render() -> str:
    """The document's text: indented JSON, keys sorted, a final newline."""
    return json.dumps(_build(), indent=2, sort_keys=True) + "\n"


def _build() -> dict[str, Any]:
    kinds = [
        Job,
        JobBatch,
        JobPage,
        CancelBody,
        WaitBody,
        WaitResult,
        Stats,
        TenantStats,
        Tenant,
        TenantBody,
        Problem,
        Caller,
        OpsState,
        PauseBody,
        DrainBody,
        Schedule,
        ScheduleList,
        list[FunctionDeclaration],
        dict[str, TenantStats],
    ]
    schemas, components = msgspec.json.schema_components(
        kinds, ref_template="#/components/schemas/{name}"
    )
    refs = dict(zip(kinds, schemas, strict=True))
    problem = {"content": {"application/problem+json": {"schema": refs[Problem]}}}
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.method
            + route.path.replace("/", "_").replace("{", "").replace("}", "").replace(".", "_"),
            "tags": [route.tag],
        }
        parameters = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "minLength": 1},
            }
            for name in ("job_id", "tenant_id", "name")
            if "{" + name + "}" in route.path
        ]
        for param in route.params:
            spec = dict(_PARAMETERS[param])
            name = spec.pop("name", param)
            parameters.append({"name": name, "in": spec.pop("in", "query"), **spec})
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            operation["requestBody"] = {
                "required": route.body not in (CancelBody, PauseBody, DrainBody),
                "content": {"application/json": {"schema": refs[route.body]}},
            }
        answer: dict[str, Any] = {"description": route.summary}
        schema = _ref(route.answer, refs)
        if route.answer is not None:
            answer["content"] = {route.media: {"schema": schema}}
        elif route.media != "application/json":
            answer["content"] = {route.media: {"schema": {"type": "string"}}}
        responses: dict[str, Any] = {str(route.status): answer}
        if route.auth != "none":
            operation["security"] = [{"bearer": []}, {"apiKey": []}]
            for status, text in _ERRORS.items():
                responses[status] = {"description": text, **problem}
            if route.auth == "admin" or route.path.startswith("/v1/tenants/"):
                responses["403"] = {"description": "A tenant key on an admin route", **problem}
        responses["default"] = {"description": "Any other error, as a problem", **problem}
        operation["responses"] = responses
        paths.setdefault(route.path, {})[route.method] = operation
    from ..cli import _clean_descriptions  # docstrings cleaned alike on every msgspec release

    components = _clean_descriptions(components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "nsai-work",
            "version": __version__,
            "description": "The HTTP API of nsai-work, the job scheduler of an AI platform. "
            "Errors are application/problem+json (RFC 9457). See docs/service.md.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


@functools.cache
def document_bytes() -> bytes:
    """The document as ``schema/openapi.json`` holds it."""
    return render().encode()


def docs_page() -> str:
    """An HTML page with Swagger UI on ``/openapi.json`` (its script from a CDN)."""
    return """<!doctype html>
<html><head><meta charset="utf-8"><title>nsai-work API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head><body><div id="ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "openapi.json", dom_id: "#ui"});</script>
<noscript>The document is at <a href="openapi.json">/openapi.json</a>.</noscript>
</body></html>
"""

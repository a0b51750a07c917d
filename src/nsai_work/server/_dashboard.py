"""The web dashboard: a page at ``/`` and its assets under ``/ui/static/``, shipped in the
package (``server/static/``: no CDN, servers are often offline), plus the two reads the API
has no route for: jobs waiting by reason per tenant, and the workflows among the newest jobs.

The page is one HTML shell and one script (``static/app.js``, no build step) that reads the
same API as every client (``/v1/stats``, ``/v1/jobs``, ``/v1/tenants``, ``/v1/tools``, the
``/v1/events`` stream) with a session cookie (``_session``): the same keys, the same tenant
scoping. See docs/dashboard.md.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from typing import Any, Final

from litestar import Request, Response, get

from .._errors import NotFoundError
from .._ir import Job
from ._common import _answer, _caller, _send
from ._history import History
from ._session import login, logout, session_info

__all__ = ["HANDLERS", "asset", "history", "index", "tools", "waiting", "workflows"]

_TYPES: Final = {
    "js": "text/javascript",
    "css": "text/css",
    "html": "text/html",
    "svg": "image/svg+xml",
    "txt": "text/plain",
    "md": "text/plain",
}
#: The page's Content-Security-Policy: its own scripts only, no inline script, no other origin.
_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
_HEADERS: Final = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
#: Workflows are looked for among this many of the newest jobs (a store has no index of them).
WORKFLOW_SCAN: Final = 2000
#: Per-tenant waiting reasons read at most this many live jobs (then say ``partial``).
WAITING_SCAN: Final = 200_000

#: An admin's workflows and tool calls are read from at most this many tenants (the busiest).
MAX_TENANTS: Final = 20
#: Recent tool calls: the newest this many ``tool_call`` jobs of each tenant.
TOOL_CALLS: Final = 100

#: The assets index.html names with ``?v=0``, replaced by their digest.
_VERSIONED: Final = ("app.js", "app.css", "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css")

_static = importlib.resources.files("nsai_work.server") / "static"
_cache: dict[str, bytes] = {}


def _read(name: str) -> bytes:
    data = _cache.get(name)
    if data is None:
        resource = _static
        for part in name.split("/"):
            if not part or part.startswith("."):
                raise NotFoundError(f"no asset {name!r}")
            resource = resource / part
        if not resource.is_file():
            raise NotFoundError(f"no asset {name!r}")
        data = _cache[name] = resource.read_bytes()
    return data


def _page() -> bytes:
    """index.html, its assets' URLs ending in ``?v=<digest of the assets>`` (so a browser
    never keeps a script of another version)."""
    page = _cache.get("")
    if page is None:
        digest = hashlib.sha256()
        for name in _VERSIONED:
            digest.update(_read(name))
        page = _cache[""] = _read("index.html").replace(
            b"?v=0", b"?v=" + digest.hexdigest()[:12].encode()
        )
    return page


@get("/", include_in_schema=False)
async def index(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The dashboard (no key needed to load the page; its data needs a session)."""
    return Response(
        _page(),
        media_type=_TYPES["html"],
        headers={**_HEADERS, "Cache-Control": "no-cache"},
    )


@get("/ui/static/{name:path}", include_in_schema=False)
async def asset(request: Request[Any, Any, Any]) -> Response[bytes]:
    """A file of the dashboard (scripts, styles, the vendored libraries)."""
    name = request.path_params["name"].lstrip("/")
    kind = _TYPES.get(name.rsplit(".", 1)[-1])
    if kind is None:
        raise NotFoundError(f"no asset {name!r}")
    return Response(
        _read(name),
        media_type=kind,
        headers={**_HEADERS, "Cache-Control": "public, max-age=86400"},
    )


@get("/ui/api/waiting", include_in_schema=False)
async def waiting(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Waiting jobs by reason, per tenant (a tenant key: its own tenant only)."""
    service, key = _caller(request)
    core = service.scheduler("waiting reasons")._core
    own = None if key.admin else key.tenant_id
    by_tenant: dict[str, dict[str, int]] = {}
    reason_of = core._reasons.of
    cache: dict[Any, Any] = {}
    scanned = 0
    partial = False
    for entry in core.live_entries():
        if scanned >= WAITING_SCAN:
            partial = True
            break
        scanned += 1
        if own is not None and entry.tenant != own:
            continue
        reason = reason_of(entry, cache)
        if reason is None:
            continue
        reasons = by_tenant.setdefault(entry.tenant, {})
        reasons[reason] = reasons.get(reason, 0) + 1
    return _send(_answer({"by_tenant": by_tenant, "partial": partial}))


def _workflow(jobs: list[Job]) -> dict[str, Any]:
    from .._workflow import workflow_status

    first = jobs[0]
    steps = []
    by_id = {job.id: job.metadata.get("workflow_step") for job in jobs}
    for job in sorted(jobs, key=lambda j: j.id):
        steps.append(
            {
                "step": job.metadata.get("workflow_step"),
                "job_id": job.id,
                "status": str(job.status),
                "kind": job.kind,
                "after": [by_id.get(d, d) for d in job.constraints.depends_on],
                "waiting_reason": job.waiting_reason,
            }
        )
    return {
        "workflow_id": first.metadata.get("workflow_id"),
        "name": first.metadata.get("workflow_name"),
        "tenant_id": first.tenant_id,
        "status": workflow_status(jobs),
        "created_at": min(job.created_at for job in jobs).isoformat(),
        "steps": steps,
    }


async def _tenant_ids(request: Request[Any, Any, Any]) -> tuple[Any, list[str | None]]:
    """The verbs of the request's key and the tenants whose jobs it reads: a tenant key's own
    (None: the key's), or for an admin key ``tenant_id`` if given, else the tenants the
    scheduler knows now (at most ``MAX_TENANTS``, busiest first)."""
    service, key = _caller(request)
    verbs = service.verbs(key)
    if not key.admin:
        return verbs, [None]
    wanted = request.query_params.get("tenant_id")
    if wanted:
        return verbs, [wanted]
    by_tenant = (await service.scheduler("the dashboard").stats()).by_tenant
    busiest = sorted(by_tenant, key=lambda t: (-by_tenant[t].submitted, t))
    return verbs, list(busiest[:MAX_TENANTS])


async def _newest(verbs: Any, tenant_id: str | None, limit: int, **filters: Any) -> list[Job]:
    """Up to ``limit`` of a tenant's newest jobs."""
    jobs: list[Job] = []
    cursor = None
    while len(jobs) < limit:
        page = await verbs.list(
            tenant_id, limit=min(500, limit - len(jobs)), cursor=cursor, **filters
        )
        jobs.extend(page)
        cursor = page.next_cursor
        if cursor is None or not len(page):
            break
    return jobs


@get("/ui/api/workflows", include_in_schema=False)
async def workflows(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The workflows among each tenant's newest ``WORKFLOW_SCAN`` jobs, newest first, with each
    step's status and edges; ``workflow_id`` keeps one."""
    verbs, tenant_ids = await _tenant_ids(request)
    wanted = request.query_params.get("workflow_id")
    groups: dict[tuple[str, str], list[Job]] = {}
    scanned = 0
    for tenant_id in tenant_ids:
        jobs = await _newest(verbs, tenant_id, WORKFLOW_SCAN)
        scanned += len(jobs)
        for job in jobs:
            workflow_id = job.metadata.get("workflow_id")
            if isinstance(workflow_id, str) and (wanted is None or workflow_id == wanted):
                groups.setdefault((job.tenant_id, workflow_id), []).append(job)
    found = [_workflow(jobs) for jobs in groups.values()]
    found.sort(key=lambda w: w["created_at"], reverse=True)
    return _send(_answer({"workflows": found, "scanned": scanned, "per_tenant": WORKFLOW_SCAN}))


@get("/ui/api/tools", include_in_schema=False)
async def tools(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The ALTAR tools: each one's declaration, limits and latest calls (``tool_call`` jobs)."""
    verbs, tenant_ids = await _tenant_ids(request)
    from .. import altar

    calls: dict[str, list[dict[str, Any]]] = {}
    for tenant_id in tenant_ids:
        for job in await _newest(verbs, tenant_id, TOOL_CALLS, kind="tool_call"):
            name = job.payload.get("tool")
            if isinstance(name, str):
                calls.setdefault(name, []).append(
                    {
                        "job_id": job.id,
                        "tenant_id": job.tenant_id,
                        "status": str(job.status),
                        "created_at": job.created_at.isoformat(),
                    }
                )
    found = [
        {
            "declaration": d,
            "limits": altar.limits(d.name),
            "recent": sorted(calls.get(d.name, []), key=lambda c: c["created_at"])[-5:][::-1],
        }
        for d in altar.list()
    ]
    return _send(_answer({"tools": found}))


@get("/ui/api/history", include_in_schema=False)
async def history(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The last minutes of jobs ended and started, with their submit-to-start delays, in
    buckets (``_history``): a tenant key's own tenant's, an admin key's every tenant's (or
    ``tenant_id``'s)."""
    service, key = _caller(request)
    scheduler = service.scheduler("the dashboard's charts")
    recent: History = request.app.state.history
    recent.bind(scheduler._bus)
    tenant_id = key.tenant_id if not key.admin else request.query_params.get("tenant_id")
    return _send(
        _answer(
            {
                "bucket_s": recent.bucket_s,
                "window_s": recent.window_s,
                "buckets": recent.series(tenant_id),
            }
        )
    )


#: The dashboard's routes (outside the API's OpenAPI document): the page, its assets, its two
#: reads, and the session routes.
HANDLERS: Final = [index, asset, history, waiting, workflows, tools, login, session_info, logout]

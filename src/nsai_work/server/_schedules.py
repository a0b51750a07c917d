"""The routes of cron schedules: list them, pause, resume and remove one by name. Schedules
are declared in code (``work.cron``) in the process that runs the scheduler; a server that is
a client of its store has none to show (``ConfigurationError``, as a problem)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, get, post

from .._schedule import ScheduleList
from ._common import _answer, _caller, _send, _text

__all__ = ["list_schedules", "pause_schedule", "remove_schedule", "resume_schedule"]


@get("/v1/schedules")
async def list_schedules(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The schedules (a tenant key: its tenant's; an admin key: all, or ``tenant_id``'s)."""
    service, key = _caller(request)
    found = await service.verbs(key).schedules(_text(request, "tenant_id"))
    return _send(_answer(ScheduleList(schedules=found)))


@post("/v1/schedules/{name:str}/pause", status_code=200)
async def pause_schedule(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Pause a schedule by name."""
    return await _by_name(request, "pause_schedule")


@post("/v1/schedules/{name:str}/resume", status_code=200)
async def resume_schedule(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Resume a paused schedule by name (the fires of the pause are skipped)."""
    return await _by_name(request, "resume_schedule")


@delete("/v1/schedules/{name:str}", status_code=200)
async def remove_schedule(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Remove a schedule by name; the answer is the schedule as it was."""
    return await _by_name(request, "remove_schedule")


async def _by_name(request: Request[Any, Any, Any], verb: str) -> Response[bytes]:
    """Call the caller's schedule verb ``verb`` on the schedule the path names."""
    service, key = _caller(request)
    act = getattr(service.verbs(key), verb)
    name = request.path_params["name"]
    return _send(_answer(await act(name, tenant_id=_text(request, "tenant_id"))))

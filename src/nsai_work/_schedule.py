"""``Schedule``: a cron schedule as the verbs answer it (``work.cron``, ``schedules()``...)
and the HTTP API sends it."""

from __future__ import annotations

import datetime as _dt

from msgspec import Struct

from ._ir import Job

__all__ = ["Schedule", "ScheduleList"]


class Schedule(Struct, frozen=True, kw_only=True):
    """A cron schedule as it is now: what ``work.cron`` declared (``name``, ``tenant_id``,
    ``cron``, ``tz``, ``missed``, ``grace_s``, the job ``template``), and its state (``paused``,
    ``last_fire``: the fire time of the last job it submitted, ``next_fire``: the next time it
    fires, None while paused). Times are UTC."""

    name: str
    tenant_id: str
    cron: str
    tz: str
    missed: str
    grace_s: float
    paused: bool
    last_fire: _dt.datetime | None
    next_fire: _dt.datetime | None
    template: Job


class ScheduleList(Struct, kw_only=True):
    """The schedules ``GET /v1/schedules`` answers, by tenant then name."""

    schedules: list[Schedule]

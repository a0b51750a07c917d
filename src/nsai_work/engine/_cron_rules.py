"""Cron schedules, the rules: what a declaration is (checked, with errors naming the field),
which fires are due between two instants, and which of them run.

No I/O and no clock here: the caller passes the instants. Expressions are cronsim's (the five
fields of cron, plus ``L``, ``#`` and the ``@daily``-style aliases), evaluated in the
schedule's time zone, so ``0 2 * * *`` with ``tz="Europe/Paris"`` fires at 02:00 Paris time
all year. Across a daylight-saving change the rules are cron's (Debian's): a time that does
not exist that day (the spring gap) fires at the first minute after the gap, and a time that
happens twice (the autumn fold) fires once, unless the hour field is ``*`` (a per-minute or
per-hour schedule fires in both).

A fire is *due* once its time has passed. A due fire found within ``grace_s`` of its time
runs; one found later was *missed* (no scheduler ran it in time: the process was down or
stopped, the machine asleep), and the schedule's ``missed`` policy decides: ``"run_once"``
(the default) runs one job for the latest missed fire, however many were missed;
``"skip"`` runs none of them.
"""

from __future__ import annotations

import datetime as _dt
import zoneinfo
from collections.abc import Sequence
from typing import Final, Literal

from cronsim import CronSim, CronSimError
from msgspec import Struct
from msgspec.structs import replace

from .._errors import ValidationError
from .._ir import Job
from .._validate import DEFAULT_MAX_PAYLOAD_BYTES, check_identifier, validate_new_job

__all__ = [
    "MISSED_POLICIES",
    "CronSpec",
    "Plan",
    "check_cron",
    "fire_job",
    "fire_job_id",
    "next_fire",
    "plan",
]

Missed = Literal["run_once", "skip"]
#: What a schedule does with the fires it missed.
MISSED_POLICIES: Final = ("run_once", "skip")
#: Missed fires counted one by one before the rest are counted as one jump.
_COUNT_MAX: Final = 10_000
_UTC: Final = _dt.UTC
_SECOND: Final = _dt.timedelta(seconds=1)


class CronSpec(Struct, frozen=True, kw_only=True):
    """A checked declaration: the schedule's name (unique per tenant), its expression, time
    zone, missed-fire policy and grace, and the job each fire submits."""

    name: str
    cron: str
    tz: str
    missed: Missed
    grace_s: float
    template: Job

    @property
    def tenant_id(self) -> str:
        """The tenant the schedule belongs to (its template's)."""
        return self.template.tenant_id


class Plan(Struct, frozen=True, kw_only=True):
    """What to do at ``now``: the fires that run (UTC, oldest first), how many fires were
    missed (counted up to 10,000) and the latest of them, up to when fires are then settled,
    and the next fire after that."""

    fires: tuple[_dt.datetime, ...]
    missed: int
    last_missed: _dt.datetime | None
    settled_through: _dt.datetime
    next_fire: _dt.datetime | None


def check_cron(
    name: object,
    cron: object,
    template: object,
    *,
    tz: object = "UTC",
    missed: object = "run_once",
    grace_s: object = 60.0,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> CronSpec:
    """A declaration, checked: ``ValidationError`` naming the field (``$.name``, ``$.cron``,
    ``$.tz``, ``$.missed``, ``$.grace_s``, or the template's own path under ``$.template``)."""
    check_identifier(name, "$.name", what="a schedule name")
    if not isinstance(cron, str) or not cron.strip():
        raise ValidationError(
            f"a cron expression is a non-empty string such as '*/5 * * * *', got {cron!r}",
            path="$.cron",
        )
    zone = _zone(tz)
    try:
        CronSim(cron, _dt.datetime(2000, 1, 1, tzinfo=zone))
    except (CronSimError, ValueError, IndexError) as exc:
        raise ValidationError(
            f"{cron!r} is not a cron expression ({exc}); five fields: minute hour "
            f"day-of-month month day-of-week, e.g. '*/5 * * * *'",
            path="$.cron",
        ) from None
    if missed not in MISSED_POLICIES:
        raise ValidationError(
            f"missed is one of {list(MISSED_POLICIES)}, got {missed!r}", path="$.missed"
        )
    if (
        not isinstance(grace_s, int | float)
        or isinstance(grace_s, bool)
        or not 0 <= grace_s <= 86_400
    ):
        raise ValidationError(
            f"grace_s is seconds in [0, 86400], got {grace_s!r}", path="$.grace_s"
        )
    if not isinstance(template, Job):
        raise ValidationError(
            f"a schedule's job template is a work.Job, got {type(template).__name__}",
            path="$.template",
        )
    try:
        checked = validate_new_job(template, None, max_payload_bytes)
    except ValidationError as exc:
        raise ValidationError(
            f"the job template: {exc.rule}", path="$.template" + exc.path.removeprefix("$")
        ) from None
    return CronSpec(
        name=str(name),
        cron=cron,
        tz=str(tz),
        missed=missed,
        grace_s=float(grace_s),
        template=checked,
    )


def _zone(tz: object) -> zoneinfo.ZoneInfo:
    if not isinstance(tz, str) or not tz:
        raise ValidationError(
            f"tz is an IANA time zone name such as 'Europe/Paris' or 'UTC', got {tz!r}",
            path="$.tz",
        )
    try:
        return zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            f"unknown time zone {tz!r}; an IANA name such as 'Europe/Paris' or 'UTC'",
            path="$.tz",
        ) from None


def next_fire(spec: CronSpec, after: _dt.datetime) -> _dt.datetime:
    """The first fire strictly after ``after`` (aware), in UTC."""
    zone = zoneinfo.ZoneInfo(spec.tz)
    return next(CronSim(spec.cron, after.astimezone(zone))).astimezone(_UTC)


def plan(spec: CronSpec, settled_through: _dt.datetime, now: _dt.datetime) -> Plan:
    """The fires due after ``settled_through`` up to ``now`` (both aware), and which run."""
    zone = zoneinfo.ZoneInfo(spec.tz)
    cut = now - _dt.timedelta(seconds=spec.grace_s)
    on_time: list[_dt.datetime] = []
    missed = 0
    last_missed: _dt.datetime | None = None
    upcoming: _dt.datetime | None = None
    fires = iter(CronSim(spec.cron, settled_through.astimezone(zone)))
    while True:
        at = next(fires).astimezone(_UTC)
        if at > now:
            upcoming = at
            break
        if at > cut:
            on_time.append(at)
            continue
        missed += 1
        last_missed = at
        if missed == _COUNT_MAX:  # a long outage: count no further, jump to the grace window
            last_missed = _last_at_or_before(spec.cron, zone, cut) or at
            fires = iter(CronSim(spec.cron, cut.astimezone(zone)))
    run: Sequence[_dt.datetime] = on_time
    if last_missed is not None and spec.missed == "run_once":
        run = [last_missed, *on_time]
    due_last = on_time[-1] if on_time else last_missed
    return Plan(
        fires=tuple(run),
        missed=missed,
        last_missed=last_missed,
        settled_through=settled_through if due_last is None else max(due_last, settled_through),
        next_fire=upcoming,
    )


def _last_at_or_before(
    cron: str, zone: zoneinfo.ZoneInfo, when: _dt.datetime
) -> _dt.datetime | None:
    for fire in CronSim(cron, (when + _SECOND).astimezone(zone), reverse=True):
        at = fire.astimezone(_UTC)
        if at <= when:
            return at
    return None  # pragma: no cover  (an expression always has an earlier fire)


def fire_job_id(name: str, fire: _dt.datetime) -> str:
    """The id of the job a schedule submits for one fire: the same in every process and
    every life of the scheduler, so the store refuses a second job for one fire."""
    return f"cron:{name}:{fire.astimezone(_UTC):%Y%m%dT%H%M%SZ}"


def fire_job(spec: CronSpec, fire: _dt.datetime, now: _dt.datetime) -> Job:
    """The job of one fire: the template with the fire's id, created ``now``, and the
    schedule's name and fire time added to its metadata (``schedule``, ``fire_time``)."""
    template = spec.template
    metadata = {
        **template.metadata,
        "schedule": spec.name,
        "fire_time": fire.astimezone(_UTC).isoformat(),
    }
    return replace(template, id=fire_job_id(spec.name, fire), created_at=now, metadata=metadata)

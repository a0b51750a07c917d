"""Unique keys: what a claim on ``(tenant_id, constraints.unique_key)`` is, and when the job
that made it still holds it. Every store uses these rules; each keeps claims in its own table
(SQLite and Postgres: ``unique_keys``, keyed by (tenant_id, unique_key), so the database
itself refuses a second claim and two processes cannot both win one key).

A claim names the job that made it, the statuses it counts in, and when its period ends. It
holds while that job's stored status is among them and the period has not ended; a claim
whose job the store does not hold yet (the scheduler claims before its group commit writes
the job) holds too. A job's deletion drops its claims.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import Final

from msgspec import Struct

from .._ir import Job, Status

__all__ = [
    "DEFAULT_UNIQUE_STATES",
    "Claim",
    "claims_of",
    "holds",
    "states_from_text",
    "states_text",
]

#: What a key counts against when ``unique_states`` is None: jobs that have not ended.
DEFAULT_UNIQUE_STATES: Final = (Status.PENDING, Status.QUEUED, Status.RUNNING)


class Claim(Struct, frozen=True, kw_only=True):
    """A job's claim on its tenant's unique key."""

    tenant_id: str
    unique_key: str
    job_id: str
    states: tuple[Status, ...]
    expires_at: _dt.datetime | None


def claims_of(jobs: Sequence[Job], now: _dt.datetime) -> list[Claim]:
    """The claims of jobs that have a unique key, made at ``now`` (aware)."""
    claims = []
    for job in jobs:
        constraints = job.constraints
        key = constraints.unique_key
        if key is None:
            continue
        period = constraints.unique_period_s
        claims.append(
            Claim(
                tenant_id=job.tenant_id,
                unique_key=key,
                job_id=job.id,
                states=constraints.unique_states or DEFAULT_UNIQUE_STATES,
                expires_at=None if period is None else now + _dt.timedelta(seconds=period),
            )
        )
    return claims


def holds(
    status: str | None,
    states: Sequence[str],
    expires_at: _dt.datetime | None,
    now: _dt.datetime,
) -> bool:
    """Whether a claim still holds at ``now``: its job's stored ``status`` (None: not stored
    yet) is among ``states``, within the period."""
    if expires_at is not None and now >= expires_at:
        return False
    return status is None or status in states


def states_text(states: Sequence[Status]) -> str:
    """The statuses as one column value (comma-separated)."""
    return ",".join(str(state) for state in states)


def states_from_text(text: str) -> tuple[str, ...]:
    """The statuses of a column value."""
    return tuple(text.split(","))

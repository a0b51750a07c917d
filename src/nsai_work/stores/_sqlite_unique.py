"""The SQLite store's unique keys (``stores/_unique.py`` for the rules): claims in the
``unique_keys`` table, made inside the caller's ``BEGIN IMMEDIATE`` transaction, so claims
from every process on the file are serialized by SQLite's write lock.

Everything here blocks, and runs on the store's own thread.
"""

from __future__ import annotations

import datetime as _dt
import sqlite3
from collections.abc import Sequence

from ._protocol import JobKey
from ._unique import Claim, holds, states_from_text, states_text

__all__ = ["claim", "release", "sweep"]

_HOLDER = (
    "SELECT u.job_id, u.states, u.expires_at, j.status FROM unique_keys u "
    "LEFT JOIN jobs j ON j.id = u.job_id AND j.tenant_id = u.tenant_id "
    "WHERE u.tenant_id = ? AND u.unique_key = ?"
)
_CLAIM = (
    "INSERT OR REPLACE INTO unique_keys (tenant_id, unique_key, job_id, states, expires_at) "
    "VALUES (?, ?, ?, ?, ?)"
)


def _micros(when: _dt.datetime) -> int:
    return round(when.timestamp() * 1_000_000)


def claim(conn: sqlite3.Connection, claims: Sequence[Claim], now: _dt.datetime) -> list[str | None]:
    """Claim each key unless its holder holds it (inside the caller's write transaction):
    None where claimed, else the holder's job id."""
    holders: list[str | None] = []
    for c in claims:
        row = conn.execute(_HOLDER, (c.tenant_id, c.unique_key)).fetchone()
        if row is not None:
            job_id, states, expires_us, status = row
            expires = None if expires_us is None else _from_micros(expires_us)
            if holds(status, states_from_text(states), expires, now):
                holders.append(job_id)
                continue
        expires_at = None if c.expires_at is None else _micros(c.expires_at)
        conn.execute(
            _CLAIM, (c.tenant_id, c.unique_key, c.job_id, states_text(c.states), expires_at)
        )
        holders.append(None)
    return holders


def _from_micros(us: int) -> _dt.datetime:
    return _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC) + _dt.timedelta(microseconds=us)


def release(conn: sqlite3.Connection, keys: Sequence[JobKey]) -> None:
    """Drop the claims of these jobs."""
    conn.executemany(
        "DELETE FROM unique_keys WHERE job_id = ? AND tenant_id = ?",
        [(job_id, tenant_id) for tenant_id, job_id in keys],
    )


def sweep(conn: sqlite3.Connection) -> None:
    """Drop claims whose job was never written (a scheduler died between its claim and its
    commit); run by a starting scheduler, when none of its own claims can be in flight."""
    conn.execute(
        "DELETE FROM unique_keys WHERE NOT EXISTS (SELECT 1 FROM jobs j "
        "WHERE j.id = unique_keys.job_id AND j.tenant_id = unique_keys.tenant_id)"
    )

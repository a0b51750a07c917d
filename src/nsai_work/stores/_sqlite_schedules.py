"""The SQLite store's cron schedules (``stores/_schedules.py``): rows of the ``schedules``
table, changed inside the caller's ``BEGIN IMMEDIATE`` transaction, so every process on the
file is serialized by SQLite's write lock and a compare-and-set has one winner.

Everything here blocks, and runs on the store's own thread.
"""

from __future__ import annotations

import datetime as _dt
import sqlite3
from typing import Any, Final

from ._schedules import ScheduleState

__all__ = ["add", "advance", "pause", "read", "remove"]

_COLUMNS: Final = "tenant_id, name, settled_through, last_fire, paused"
_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


def _micros(when: _dt.datetime) -> int:
    return (when - _EPOCH) // _dt.timedelta(microseconds=1)


def _from_micros(us: int) -> _dt.datetime:
    return _EPOCH + _dt.timedelta(microseconds=us)


def _state(row: Any) -> ScheduleState:
    tenant_id, name, settled, last, paused = row
    return ScheduleState(
        tenant_id=tenant_id,
        name=name,
        settled_through=_from_micros(settled),
        last_fire=None if last is None else _from_micros(last),
        paused=bool(paused),
    )


def _one(conn: sqlite3.Connection, tenant_id: str, name: str) -> ScheduleState | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM schedules WHERE tenant_id = ? AND name = ?", (tenant_id, name)
    ).fetchone()
    return None if row is None else _state(row)


def add(conn: sqlite3.Connection, state: ScheduleState) -> ScheduleState:
    """Insert the state unless the (tenant_id, name) has one; the kept state."""
    conn.execute(
        f"INSERT OR IGNORE INTO schedules ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
        (
            state.tenant_id,
            state.name,
            _micros(state.settled_through),
            None if state.last_fire is None else _micros(state.last_fire),
            int(state.paused),
        ),
    )
    kept = _one(conn, state.tenant_id, state.name)
    assert kept is not None  # (inserted or there, under the write lock)
    return kept


def read(conn: sqlite3.Connection, tenant_id: str | None) -> list[ScheduleState]:
    """The states (of one tenant, or all), by tenant then name."""
    if tenant_id is None:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM schedules ORDER BY tenant_id, name")
    else:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM schedules WHERE tenant_id = ? ORDER BY name", (tenant_id,)
        )
    return [_state(row) for row in rows.fetchall()]


def advance(
    conn: sqlite3.Connection,
    tenant_id: str,
    name: str,
    expected: _dt.datetime,
    settled_through: _dt.datetime,
    last_fire: _dt.datetime | None,
) -> bool:
    """Compare-and-set of ``settled_through`` (not while paused)."""
    cur = conn.execute(
        "UPDATE schedules SET settled_through = ?, last_fire = coalesce(?, last_fire) "
        "WHERE tenant_id = ? AND name = ? AND settled_through = ? AND paused = 0",
        (
            _micros(settled_through),
            None if last_fire is None else _micros(last_fire),
            tenant_id,
            name,
            _micros(expected),
        ),
    )
    return cur.rowcount == 1


def pause(
    conn: sqlite3.Connection, tenant_id: str, name: str, paused: bool, now: _dt.datetime
) -> ScheduleState | None:
    """Pause, or resume settling the pause's fires; the state then (None: no such row)."""
    if paused:
        conn.execute(
            "UPDATE schedules SET paused = 1 WHERE tenant_id = ? AND name = ?", (tenant_id, name)
        )
    else:
        conn.execute(
            "UPDATE schedules SET paused = 0, settled_through = max(settled_through, ?) "
            "WHERE tenant_id = ? AND name = ?",
            (_micros(now), tenant_id, name),
        )
    return _one(conn, tenant_id, name)


def remove(conn: sqlite3.Connection, tenant_id: str, name: str) -> bool:
    """Delete the row (False: none)."""
    cur = conn.execute("DELETE FROM schedules WHERE tenant_id = ? AND name = ?", (tenant_id, name))
    return cur.rowcount == 1

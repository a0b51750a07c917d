"""The PostgreSQL store's cron schedules (``stores/_schedules.py``): rows of the
``schedules`` table. ``advance`` is a compare-and-set (``UPDATE ... WHERE settled_through =
the value read``): two processes settling the same fires queue on the row lock, and the
second's update then matches no row, so one of them wins.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from .._schedules import ScheduleState

__all__ = ["add", "advance", "pause", "read", "remove"]

Connection = AsyncConnection[TupleRow]

_COLUMNS: Final = "tenant_id, name, settled_through, last_fire, paused"


def _state(row: Any) -> ScheduleState:
    tenant_id, name, settled, last, paused = row
    return ScheduleState(
        tenant_id=tenant_id, name=name, settled_through=settled, last_fire=last, paused=paused
    )


async def add(conn: Connection, state: ScheduleState) -> ScheduleState:
    """Insert the state unless the (tenant_id, name) has one; the kept state."""
    await conn.execute(
        f"INSERT INTO schedules ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s) "
        "ON CONFLICT (tenant_id, name) DO NOTHING",
        (state.tenant_id, state.name, state.settled_through, state.last_fire, state.paused),
    )
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM schedules WHERE tenant_id = %s AND name = %s",
        (state.tenant_id, state.name),
    )
    row = await cur.fetchone()
    return state if row is None else _state(row)


async def read(conn: Connection, tenant_id: str | None) -> list[ScheduleState]:
    """The states (of one tenant, or all), by tenant then name."""
    if tenant_id is None:
        cur = await conn.execute(f"SELECT {_COLUMNS} FROM schedules ORDER BY tenant_id, name")
    else:
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM schedules WHERE tenant_id = %s ORDER BY name", (tenant_id,)
        )
    return [_state(row) for row in await cur.fetchall()]


async def advance(
    conn: Connection,
    tenant_id: str,
    name: str,
    expected: _dt.datetime,
    settled_through: _dt.datetime,
    last_fire: _dt.datetime | None,
) -> bool:
    """Compare-and-set of ``settled_through`` (not while paused)."""
    cur = await conn.execute(
        "UPDATE schedules SET settled_through = %s, last_fire = coalesce(%s, last_fire) "
        "WHERE tenant_id = %s AND name = %s AND settled_through = %s AND NOT paused",
        (settled_through, last_fire, tenant_id, name, expected),
    )
    return cur.rowcount == 1


async def pause(
    conn: Connection, tenant_id: str, name: str, paused: bool, now: _dt.datetime
) -> ScheduleState | None:
    """Pause, or resume settling the pause's fires; the state then (None: no such row)."""
    cur = await conn.execute(
        "UPDATE schedules SET paused = %s, settled_through = CASE WHEN %s "
        "THEN settled_through ELSE greatest(settled_through, %s) END "
        f"WHERE tenant_id = %s AND name = %s RETURNING {_COLUMNS}",
        (paused, paused, now, tenant_id, name),
    )
    row = await cur.fetchone()
    return None if row is None else _state(row)


async def remove(conn: Connection, tenant_id: str, name: str) -> bool:
    """Delete the row (False: none)."""
    cur = await conn.execute(
        "DELETE FROM schedules WHERE tenant_id = %s AND name = %s", (tenant_id, name)
    )
    return cur.rowcount == 1

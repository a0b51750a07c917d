"""The PostgreSQL store's unique keys (``stores/_unique.py`` for the rules), on a connection
inside the caller's transaction.

A claim first tries ``INSERT ... ON CONFLICT DO NOTHING``: against a concurrent claim of the
same key it waits for that transaction and then sees its row. Where a row exists, it is read
``FOR UPDATE`` with its job's status, and replaced (an UPDATE under that lock) only when it no
longer holds. So any number of processes claiming one key make one winner, whatever the
interleaving; a row deleted in between (its job pruned) is tried again.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import Final

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from .._protocol import JobKey
from .._unique import Claim, holds
from . import _sql

__all__ = ["claim", "release", "sweep"]

Connection = AsyncConnection[TupleRow]

_INSERT: Final = (
    "INSERT INTO unique_keys (tenant_id, unique_key, job_id, states, expires_at) "
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tenant_id, unique_key) DO NOTHING"
)
_HOLDER: Final = (
    "SELECT u.job_id, u.states, u.expires_at, j.status FROM unique_keys u "
    "LEFT JOIN jobs j ON j.id = u.job_id AND j.tenant_id = u.tenant_id "
    "WHERE u.tenant_id = %s AND u.unique_key = %s FOR UPDATE OF u"
)
_REPLACE: Final = (
    "UPDATE unique_keys SET job_id = %s, states = %s, expires_at = %s "
    "WHERE tenant_id = %s AND unique_key = %s"
)


async def claim(conn: Connection, claims: Sequence[Claim], now: _dt.datetime) -> list[str | None]:
    """Claim each key unless its holder holds it: None where claimed, else the holder's id
    (as the caller named it)."""
    holders: list[str | None] = [None] * len(claims)
    # Keys in one order in every transaction, so two claiming many keys cannot deadlock (a
    # stable sort: of two jobs with one key, the earlier claims it).
    for n in sorted(range(len(claims)), key=lambda n: (claims[n].tenant_id, claims[n].unique_key)):
        c = claims[n]
        job_id = _sql.to_column(c.job_id)
        states = [str(state) for state in c.states]
        while True:
            cur = await conn.execute(
                _INSERT, (c.tenant_id, c.unique_key, job_id, states, c.expires_at)
            )
            if cur.rowcount == 1:
                break
            cur = await conn.execute(_HOLDER, (c.tenant_id, c.unique_key))
            row = await cur.fetchone()
            if row is None:  # released or pruned since the INSERT looked: try again
                continue
            held_by, held_states, expires_at, status = row
            if holds(status, held_states, expires_at, now):
                holders[n] = _sql.from_column(held_by)
            else:
                await conn.execute(
                    _REPLACE, (job_id, states, c.expires_at, c.tenant_id, c.unique_key)
                )
            break
    return holders


async def release(conn: Connection, keys: Sequence[JobKey]) -> None:
    """Drop the claims of these jobs."""
    await conn.execute(
        "DELETE FROM unique_keys u USING unnest(%s::text[], %s::text[]) AS k(id, tenant_id) "
        "WHERE u.job_id = k.id AND u.tenant_id = k.tenant_id",
        _sql.key_arrays(keys),
    )


async def sweep(conn: Connection) -> None:
    """Drop claims whose job was never written (a scheduler died between its claim and its
    commit); run by a starting scheduler, when none of its own claims can be in flight."""
    await conn.execute(
        "DELETE FROM unique_keys u WHERE NOT EXISTS (SELECT 1 FROM jobs j "
        "WHERE j.id = u.job_id AND j.tenant_id = u.tenant_id)"
    )

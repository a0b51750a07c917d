"""The scheduler lease: a session advisory lock plus the ``lease`` row that names its holder.

The lock is held by the scheduler's writer connection, so the session that writes is the
session that holds it: if that connection is lost, so is the lock, and the writer must take it
again before its next write. Taking the lease bumps the fencing token (``lease.fence``); every
write checks that the token is still its own (``_sql.FENCE``), so a scheduler that lost the
lease to another cannot write after the other took over, whatever its connections do.
"""

from __future__ import annotations

import datetime as _dt
from typing import Final

import psycopg
from psycopg.rows import TupleRow

from ..._errors import StoreError
from .._protocol import Lease

__all__ = ["LEASE_LOCK", "acquire", "holder", "release", "resume"]

#: The two-int advisory lock key of the lease ("nsai" and 1).
LEASE_LOCK: Final = (0x6E736169, 1)

Connection = psycopg.AsyncConnection[TupleRow]

# pg_locks shows a two-int advisory lock as classid, objid and objsubid = 2.
_LOCK_HOLDER: Final = """
SELECT pid FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 2
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND classid::bigint = %s AND objid::bigint = %s
"""
_HOLDER: Final = f"""
SELECT pid, host, since, fence FROM lease
WHERE id = 1 AND held AND EXISTS ({_LOCK_HOLDER})
"""


async def holder(conn: Connection) -> Lease | None:
    """Who holds the lease now (None: no session holds the lock)."""
    cur = await conn.execute(_HOLDER, LEASE_LOCK)
    row = await cur.fetchone()
    if row is None:
        return None
    pid, host, since, fence = row
    return Lease(pid=pid, host=host, since=since, fence=fence)


def _held_by(lease: Lease | None, where: str) -> str:
    if lease is None:
        return (
            f"another session holds the scheduler lease of {where} (it has not named itself "
            f"yet, or it is not an nsai-work scheduler)"
        )
    since = lease.since.astimezone(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f"another scheduler holds the lease of {where}: pid {lease.pid} on host "
        f"{lease.host!r} since {since} (fence {lease.fence})"
    )


async def acquire(conn: Connection, *, pid: int, host: str, where: str) -> tuple[int, int]:
    """Take the lease on ``conn`` (an autocommit connection) and name this process as its
    holder; returns (fence, writes). ``StoreError`` naming the holder when another has it."""
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", LEASE_LOCK)
    got = await cur.fetchone()
    if not (got and got[0]):
        raise StoreError(
            f"{_held_by(await holder(conn), where)}; one scheduler runs per store: stop it "
            f"first, or open this store as a client"
        )
    try:
        async with conn.transaction():
            cur = await conn.execute(
                "UPDATE lease SET fence = fence + 1, held = true, pid = %s, host = %s,"
                " since = now() WHERE id = 1 RETURNING fence, writes",
                (pid, host),
            )
            row = await cur.fetchone()
    except BaseException:
        await _unlock(conn)
        raise
    if row is None:
        raise StoreError(f"the lease row of {where} is missing: the schema is damaged")
    return row[0], row[1]


async def resume(conn: Connection, *, fence: int, lost_backend: int | None, where: str) -> int:
    """Take the lease again on a new connection after the writer's connection was lost,
    provided nobody took it meanwhile (the fence is still ``fence``); returns ``writes``.

    When the lock is still held by the lost connection's server process (the server has not
    noticed that its client is gone), that process is ended first. Anyone else holding it, or
    a fence that moved on, is a ``StoreError``: this scheduler is fenced out."""
    for attempt in (1, 2):
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", LEASE_LOCK)
        got = await cur.fetchone()
        if got and got[0]:
            break
        cur = await conn.execute(_LOCK_HOLDER, LEASE_LOCK)
        row = await cur.fetchone()
        if attempt == 1 and row is not None and row[0] == lost_backend:
            await conn.execute("SELECT pg_terminate_backend(%s, 5000)", (lost_backend,))
            continue
        raise StoreError(
            f"fenced out: {_held_by(await holder(conn), where)}; this scheduler lost its lease "
            f"and must stop"
        )
    cur = await conn.execute("SELECT fence, writes FROM lease WHERE id = 1")
    row = await cur.fetchone()
    if row is None or row[0] != fence:
        await _unlock(conn)
        raise StoreError(
            f"fenced out: the lease of {where} was taken by another scheduler since this one "
            f"held it (fence {fence}, now {row[0] if row else None}); this scheduler must stop"
        )
    return int(row[1])


async def release(conn: Connection, *, fence: int) -> None:
    """Give the lease up (mark the row free if the fence is still ours, then unlock)."""
    await conn.execute("UPDATE lease SET held = false WHERE id = 1 AND fence = %s", (fence,))
    await _unlock(conn)


async def _unlock(conn: Connection) -> None:
    if not (conn.closed or conn.broken):
        await conn.execute("SELECT pg_advisory_unlock(%s, %s)", LEASE_LOCK)

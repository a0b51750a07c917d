"""Schema migrations: the numbered SQL files of ``stores/migrations/postgres``, applied at open.

Every open runs one transaction that takes a transaction-level advisory lock (the migration
lock), creates ``schema_version`` if there is none, and applies the files it does not record,
in order, recording each. Two processes opening a new database at once queue on the lock: the
second sees the first's versions and applies nothing. A database that records a version this
code does not know was migrated by a newer nsai-work: opening it is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Final

import psycopg
from psycopg.rows import TupleRow

from ..._errors import StoreError

__all__ = ["MIGRATION_LOCK", "Migration", "migrate", "migrations"]

#: The two-int advisory lock key of migrations ("nsai" and 2; the lease is "nsai" and 1).
MIGRATION_LOCK: Final = (0x6E736169, 2)
_NAME: Final = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The store's migrations in version order, read from the package data."""
    folder = resources.files("nsai_work.stores") / "migrations" / "postgres"
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if not found or versions != list(range(1, len(found) + 1)):
        raise StoreError(f"the PostgreSQL migrations are not numbered 1..n: {versions}")
    return found


async def migrate(conn: psycopg.AsyncConnection[TupleRow], where: str) -> int:
    """Bring the database of ``conn`` (an autocommit connection) to the newest schema; returns
    how many migrations were applied. ``where`` names the store in messages."""
    known = migrations()
    applied = 0
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT version FROM schema_version")
        done = {row[0] for row in await cur.fetchall()}
        newest = known[-1].version
        if done and max(done) > newest:
            raise StoreError(
                f"the database of {where} has schema version {max(done)}, newer than this "
                f"nsai-work knows ({newest}); upgrade nsai-work to open it"
            )
        for migration in known:
            if migration.version in done:
                continue
            await conn.execute(migration.sql.encode("utf-8"), prepare=False)
            await conn.execute(
                "INSERT INTO schema_version (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
            applied += 1
    return applied

"""The scheduler's writer: one connection that holds the lease and commits every write.

Single writer, no pool: the session that writes is the session that holds the lease's advisory
lock (``_lease``), so the lock cannot be lost without the writer noticing. A write is one
transaction: the fence check (which also counts the commit in ``lease.writes``), a binary COPY
of the new jobs, one UPDATE over ``unnest`` arrays for the changed ones, the deletes, the
core's state, and a NOTIFY for clients.

When the connection is lost the write raises ``StoreError`` (the engine keeps the batch and
retries) and the next write reconnects and takes the lease again, provided the fence has not
moved (else: fenced out). If the connection was lost while its COMMIT was on the way, the
commit may or may not have happened; the commit counter read back with the lease says which.
When it did, the retried batch's inserts (the engine sends them again, perhaps with newer
snapshots) are written as updates of the rows that are there, instead of failing as
duplicates of themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors

from ..._errors import ConflictError, StoreError
from ..._ir import Job
from .._protocol import JobKey, WriteBatch
from . import _lease, _sql
from ._conn import Connection, Connector, dropped, failure, lost

__all__ = ["Writer"]

T = TypeVar("T")


class Writer:
    """The writer's connection, the lease it holds and its fence."""

    def __init__(self, connector: Connector, *, notify_clients: bool) -> None:
        self.connector = connector
        self.where = connector.where
        self.notify_clients = notify_clients
        self._conn: Connection | None = None
        self._lock = asyncio.Lock()
        self._fence = 0
        self._writes = 0  # the lease's commit count as of this writer's last commit
        self._backend_pid: int | None = None  # the server process of the connection
        # A COMMIT whose answer was lost: (the lease's commit count it set, its inserts).
        self._doubt: tuple[int, list[JobKey]] | None = None
        self._landed: set[JobKey] = set()  # inserts that such a COMMIT did commit

    async def start(self, conn: Connection) -> None:
        """Take the lease on ``conn`` (``StoreError`` naming the holder when another process
        has it) and write through it from now on."""
        self._fence, self._writes = await _lease.acquire(
            conn, pid=os.getpid(), host=socket.gethostname(), where=self.where
        )
        self._conn, self._backend_pid = conn, conn.info.backend_pid

    async def close(self) -> None:
        """Give the lease up and close the connection."""
        conn, self._conn = self._conn, None
        self._doubt, self._landed = None, set()
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                if not lost(conn):
                    await _lease.release(conn, fence=self._fence)
            await conn.close()

    async def write(self, batch: WriteBatch) -> None:
        """Commit ``batch`` in one transaction, fenced; see the module docstring."""
        inserts, updates = batch.inserts, _sql.dedupe(batch.updates)
        if not (inserts or updates or batch.deletes or batch.state is not None):
            return
        _sql.check_unique(inserts, self.where)
        async with self._lock:
            conn = await self._connection()
            if self._landed:  # inserts a lost COMMIT did commit: their rows are there
                landed = [j for j in inserts if (j.tenant_id, j.id) in self._landed]
                if landed:
                    inserts = [j for j in inserts if (j.tenant_id, j.id) not in self._landed]
                    updates = _sql.dedupe([*landed, *updates])
            # Everything is encoded before the transaction begins: what can fail inside it is
            # the server or the connection.
            rows = [_sql.job_row(job, True) for job in inserts]
            statements: list[tuple[str, Sequence[Any]]] = [(_sql.FENCE, (self._fence,))]
            if updates:
                arrays = _sql.update_arrays(updates)
                statements.append((_sql.UPDATE_JOBS, [*arrays, len(updates)]))
            if batch.deletes:
                statements.append((_sql.DELETE_JOBS, _sql.key_arrays(batch.deletes)))
            if batch.state is not None:
                statements.append((_sql.UPSERT_STATE, (batch.state,)))
            if self.notify_clients:
                statements.append((f"NOTIFY {_sql.CHANNEL_JOBS}", ()))
            keys = [(j.tenant_id, j.id) for j in inserts]
            try:
                await self._commit(conn, rows, statements, keys)
            except psycopg.Error as exc:
                raise await self._failed(conn, exc, inserts, updates) from None
            except BaseException:  # canceled mid-transaction: the connection's state is unknown
                await conn.close()
                raise
            self._landed.clear()

    async def _commit(
        self,
        conn: Connection,
        rows: list[tuple[Any, ...]],
        statements: list[tuple[str, Sequence[Any]]],
        keys: list[JobKey],
    ) -> None:
        """The transaction: BEGIN and the COPY of new jobs' ``rows`` (two round trips, when
        there are any), then the ``statements`` (the fence check first) and the COMMIT in one
        pipeline (one round trip). The checks raise in the server (``nsai_work_fence``,
        ``nsai_work_expect_rows``), so the COMMIT that follows them never runs when they
        fail."""
        self._doubt = None
        if rows:
            await conn.execute("BEGIN")
            await _sql.copy_rows(conn, rows)
        async with conn.pipeline():
            if not rows:
                await conn.execute("BEGIN")
            fence = await conn.execute(*statements[0])
            for statement, params in statements[1:]:
                await conn.execute(statement, params)
            # From here the outcome is in doubt if the connection is lost: the commit count
            # this transaction takes is the last one plus one.
            self._doubt = (self._writes + 1, keys)
            await conn.execute("COMMIT")
        row = await fence.fetchone()
        self._writes = int(row[0]) if row else self._writes + 1
        self._doubt = None

    async def _failed(
        self, conn: Connection, exc: psycopg.Error, inserts: list[Job], updates: list[Job]
    ) -> Exception:
        """The error to raise for a failed write; the transaction rolled back if the
        connection still stands (else the doubt, if any, is resolved at reconnection)."""
        if dropped(conn, exc):
            # If the COMMIT was on its way, whether it happened is learnt at reconnection.
            await conn.close()
            return failure(f"write to {self.where} failed", exc)
        self._doubt = None
        with contextlib.suppress(psycopg.Error):
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                await conn.execute("ROLLBACK")
        if isinstance(exc, pg_errors.UniqueViolation):
            return await self._conflict(conn, inserts, exc)
        if exc.sqlstate == _sql.FENCED_OUT:
            return await self._fenced_out(conn)
        if exc.sqlstate == _sql.UNKNOWN_JOBS:
            return await self._unknown(conn, updates)
        return failure(f"write to {self.where} failed", exc)

    async def fenced(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        """Run ``fn`` in a transaction of the writer, fenced like ``write``."""
        async with self._lock:
            conn = await self._connection()
            try:
                async with conn.transaction():
                    cur = await conn.execute(_sql.FENCE, (self._fence,))
                    row = await cur.fetchone()
                    result = await fn(conn)
                self._writes = int(row[0]) if row else self._writes + 1
                return result
            except psycopg.Error as exc:
                if dropped(conn, exc):
                    await conn.close()
                elif exc.sqlstate == _sql.FENCED_OUT:
                    raise await self._fenced_out(conn) from None
                raise failure(f"a write to {self.where} failed", exc) from exc
            except asyncio.CancelledError:  # mid-transaction: the connection's state is unknown
                await conn.close()
                raise

    async def _connection(self) -> Connection:
        """The connection; after it was lost, a new one holding the lease again."""
        conn = self._conn
        if conn is not None and not lost(conn):
            return conn
        self._conn = None
        if conn is not None:
            await conn.close()
        conn = await self.connector.connect("nsai-work scheduler")
        try:
            writes = await _lease.resume(
                conn, fence=self._fence, lost_backend=self._backend_pid, where=self.where
            )
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, psycopg.Error):
                raise failure(f"cannot take the lease of {self.where} again", exc) from exc
            raise
        if self._doubt is not None:
            doubtful, keys = self._doubt
            if writes >= doubtful:  # that COMMIT happened
                self._landed.update(keys)
            self._doubt = None
        self._writes = writes
        self._conn, self._backend_pid = conn, conn.info.backend_pid
        return conn

    async def _fenced_out(self, conn: Connection) -> StoreError:
        lease = await _lease.holder(conn)
        now = f"; the lease is held by pid {lease.pid} on {lease.host!r}" if lease else ""
        return StoreError(
            f"fenced out: another scheduler took the lease of {self.where} (this one holds "
            f"fence {self._fence}){now}; this scheduler must stop"
        )

    async def _unknown(self, conn: Connection, jobs: Sequence[Job]) -> StoreError:
        keys = _sql.key_arrays((j.tenant_id, j.id) for j in jobs)
        rows: list[tuple[str, str]] = []
        with contextlib.suppress(psycopg.Error):
            cur = await conn.execute(_sql.MISSING_KEYS, keys)
            rows = await cur.fetchall()
        missing = ", ".join(f"({t!r}, {_sql.from_column(i)!r})" for t, i in rows)
        return StoreError(
            f"write to {self.where} updates jobs the store does not hold: {missing} (an "
            f"update is the snapshot of a stored job); nothing of the batch was written"
        )

    async def _conflict(
        self, conn: Connection, inserts: Sequence[Job], exc: psycopg.Error
    ) -> ConflictError:
        """The error of a batch refused by the primary key: which key is taken."""
        with contextlib.suppress(psycopg.Error):
            cur = await conn.execute(
                _sql.EXISTING_KEYS, _sql.key_arrays((j.tenant_id, j.id) for j in inserts)
            )
            taken = await cur.fetchall()
            if taken:
                return _sql.duplicate(taken[0][0], _sql.from_column(taken[0][1]), self.where)
        detail = exc.diag.message_detail or str(exc)
        return ConflictError(f"duplicate job in a batch for {self.where}: {detail}")

"""The PostgreSQL store: jobs kept in a PostgreSQL database, for a scheduler and its clients in
other processes (docs/design.md, "Durable state").

Connections (psycopg 3, async):

- the **writer** (scheduler only): one dedicated connection that holds the scheduler lease (a
  session advisory lock) and commits every ``write`` (single writer, no pool). If it is lost
  (the server restarts), ``write`` raises ``StoreError`` and the engine retries; the next
  ``write`` reconnects, takes the lease again if the fence has not moved, and learns from the
  lease's commit counter whether a COMMIT that lost its answer happened (then the batch's
  inserts, which the engine sends again, are written as updates instead of failing as
  duplicates);
- the **listener**: one connection that LISTENs (the scheduler to clients' submits and cancel
  requests, a client to the scheduler's commits), for ``wait_for_change``;
- a **pool** (psycopg_pool) for reads and clients' writes; a read that meets a connection the
  server dropped is retried once on a fresh one.

Writes are one transaction each: the fence check, COPY (binary) of new jobs, one UPDATE over
``unnest`` arrays for the changed ones, deletes, the core's state. A duplicate key fails the
whole batch (``ConflictError``); nothing of it is written.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import datetime as _dt
import math
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, Final, TypeVar
from urllib.parse import urlsplit

import msgspec
import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .._errors import ConfigurationError, ConflictError, StoreError, ValidationError
from .._ir import Job
from ._codec import decode_job
from ._pg import _lease, _sql
from ._pg._migrate import migrate
from ._protocol import Inbox, JobKey, Lease, ListQuery, Quarantined, Recovered, Role, WriteBatch
from ._url import redact

__all__ = ["PostgresStore"]

T = TypeVar("T")
Connection = psycopg.AsyncConnection[TupleRow]
_SCHEMES: Final = ("postgresql", "postgres")


class PostgresStore:
    """Jobs in a PostgreSQL database. ``url`` is a libpq URL
    (``postgresql://user:password@host:port/dbname?sslmode=...``).

    Options: ``min_connections`` and ``max_connections`` size the pool of reads and client
    writes; ``connect_timeout`` (seconds) bounds connecting and waiting for a pooled
    connection; ``notify_clients`` makes every scheduler write NOTIFY clients (for their
    ``wait_for_change``). Not thread-safe: one event loop uses a store object."""

    durable: bool = True
    #: The keyword options (``store_from_url`` refuses others).
    OPTIONS: ClassVar[tuple[str, ...]] = (
        "connect_timeout",
        "max_connections",
        "min_connections",
        "notify_clients",
    )

    def __init__(
        self,
        url: str,
        *,
        min_connections: int = 1,
        max_connections: int = 4,
        connect_timeout: float = 5.0,
        notify_clients: bool = True,
    ) -> None:
        self.url = redact(url)
        self._conninfo = _check_url(url, self.url)
        if not 0 <= min_connections <= max_connections or max_connections < 1:
            raise ConfigurationError(
                f"the pool needs 0 <= min_connections <= max_connections and "
                f"max_connections >= 1; got {min_connections} and {max_connections}"
            )
        if not (math.isfinite(connect_timeout) and connect_timeout > 0):
            raise ConfigurationError(f"connect_timeout is seconds > 0, got {connect_timeout}")
        self.min_connections = min_connections
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.notify_clients = notify_clients
        self._role: Role | None = None
        self._pool: AsyncConnectionPool[Connection] | None = None
        self._listener: Connection | None = None
        self._waiting = 0  # wait_for_change calls in progress
        self._cursor_key = b""
        # The writer and the lease (scheduler only).
        self._writer: Connection | None = None
        self._write_lock = asyncio.Lock()
        self._fence = 0
        self._backend_pid: int | None = None  # the writer's server process
        # A COMMIT whose answer was lost: (the lease's write count it set, its inserts).
        self._doubt: tuple[int, list[JobKey]] | None = None
        self._landed: set[JobKey] = set()  # inserts that such a COMMIT did commit

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r}, role={self._role!r})"

    # ---- open and close ---------------------------------------------------------------------

    async def open(self, role: Role = "scheduler") -> None:
        """Connect, apply migrations and, as ``"scheduler"``, take the lease (``StoreError``
        naming the holder when another process has it). Idempotent."""
        if role not in ("scheduler", "client"):
            raise ConfigurationError(f"role is 'scheduler' or 'client', got {role!r}")
        if self._role is not None:
            if role != self._role:
                raise ConfigurationError(
                    f"{self.url} is open as {self._role!r}; close it before opening as {role!r}"
                )
            return
        conn = await self._connect(f"nsai-work {role}")
        try:
            await migrate(conn, self.url)
            cur = await conn.execute(_sql.CURSOR_KEY)
            row = await cur.fetchone()
            self._cursor_key = bytes(row[0]) if row else b""
            if role == "scheduler":
                self._fence, _ = await _lease.acquire(
                    conn, pid=os.getpid(), host=socket.gethostname(), where=self.url
                )
                self._writer, self._backend_pid = conn, conn.info.backend_pid
            else:
                await conn.close()
            channel = _sql.CHANNEL_INBOX if role == "scheduler" else _sql.CHANNEL_JOBS
            self._listener = await self._listen(channel)
            self._pool = await self._open_pool(role)
        except BaseException as exc:
            await self._close_all()
            await conn.close()
            if isinstance(exc, psycopg.Error):
                raise _failure(f"cannot open the PostgreSQL store {self.url}", exc) from exc
            raise
        self._role = role

    async def close(self) -> None:
        """Release the lease and the connections. Idempotent."""
        self._role = None
        await self._close_all()

    async def _close_all(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(psycopg.Error):
                if not (writer.closed or writer.broken):
                    await _lease.release(writer, fence=self._fence)
            await writer.close()
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        self._doubt, self._landed = None, set()

    async def _connect(self, name: str) -> Connection:
        """A new autocommit connection; ``StoreError`` naming the URL and the cause."""
        try:
            return await psycopg.AsyncConnection.connect(
                self._conninfo, **self._connect_kwargs(name)
            )
        except psycopg.Error as exc:
            raise _failure(f"cannot connect to {self.url}", exc) from exc

    def _connect_kwargs(self, name: str) -> dict[str, Any]:
        return {
            "autocommit": True,
            "connect_timeout": max(1, math.ceil(self.connect_timeout)),
            "application_name": name,
            # A server that vanishes without closing the socket is noticed in ~10 s.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
        }

    async def _open_pool(self, role: Role) -> AsyncConnectionPool[Connection]:
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            self._conninfo,
            min_size=self.min_connections,
            max_size=self.max_connections,
            kwargs=self._connect_kwargs(f"nsai-work {role} pool"),
            open=False,
            timeout=self.connect_timeout,
            name=f"nsai-work {self.url}",
        )
        try:
            await pool.open(wait=True, timeout=self.connect_timeout)
        except BaseException:
            await pool.close()
            raise
        return pool

    # ---- the scheduler's writes -------------------------------------------------------------

    async def write(self, batch: WriteBatch) -> None:
        """Commit ``batch`` in one transaction, fenced by the lease; returns once it is durable.

        ``ConflictError`` naming a duplicate insert (nothing written); ``StoreError`` when the
        fence moved on (another scheduler took over), an update names no stored job, or the
        connection failed (the engine retries)."""
        self._require("scheduler", "write")
        inserts, updates = batch.inserts, _sql.dedupe(batch.updates)
        if not (inserts or updates or batch.deletes or batch.state is not None):
            return
        _check_unique(inserts, self.url)
        async with self._write_lock:
            conn = await self._writer_connection()
            if self._landed:  # inserts a lost COMMIT did commit: the rows are there
                landed = [j for j in inserts if (j.tenant_id, j.id) in self._landed]
                if landed:
                    inserts = [j for j in inserts if (j.tenant_id, j.id) not in self._landed]
                    updates = _sql.dedupe([*landed, *updates])
            writes, committing = 0, False
            try:
                async with conn.transaction():
                    writes = await self._check_fence(conn)
                    if inserts:
                        await _copy_jobs(conn, inserts, admitted=True)
                    if updates:
                        await self._update_jobs(conn, updates)
                    if batch.deletes:
                        await conn.execute(_sql.DELETE_JOBS, _sql.key_arrays(batch.deletes))
                    if batch.state is not None:
                        await conn.execute(_sql.UPSERT_STATE, (batch.state,), binary=True)
                    if self.notify_clients:
                        await conn.execute(f"NOTIFY {_sql.CHANNEL_JOBS}")
                    committing = True
            except pg_errors.UniqueViolation as exc:
                raise await self._conflict(conn, inserts, exc) from None
            except psycopg.Error as exc:
                if committing and _lost(conn):
                    self._doubt = (writes, [(j.tenant_id, j.id) for j in inserts])
                raise _failure(f"write to {self.url} failed", exc) from exc
            self._landed.clear()

    async def _writer_connection(self) -> Connection:
        """The writer's connection; after it was lost, a new one holding the lease again."""
        conn = self._writer
        if conn is not None and not _lost(conn):
            return conn
        self._writer = None
        if conn is not None:
            await conn.close()
        conn = await self._connect("nsai-work scheduler")
        try:
            writes = await _lease.resume(
                conn, fence=self._fence, lost_backend=self._backend_pid, where=self.url
            )
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, psycopg.Error):
                raise _failure(f"cannot take the lease of {self.url} again", exc) from exc
            raise
        if self._doubt is not None:
            doubtful_writes, keys = self._doubt
            if writes >= doubtful_writes:  # that COMMIT happened
                self._landed.update(keys)
            self._doubt = None
        self._writer, self._backend_pid = conn, conn.info.backend_pid
        return conn

    async def _check_fence(self, conn: Connection) -> int:
        cur = await conn.execute(_sql.FENCE, (self._fence,))
        row = await cur.fetchone()
        if row is None:
            lease = await _lease.holder(conn)
            now = f"; the lease is held by pid {lease.pid} on {lease.host!r}" if lease else ""
            raise StoreError(
                f"fenced out: another scheduler took the lease of {self.url} (this one holds "
                f"fence {self._fence}){now}; this scheduler must stop"
            )
        return int(row[0])

    async def _update_jobs(self, conn: Connection, jobs: Sequence[Job]) -> None:
        cur = await conn.execute(_sql.UPDATE_JOBS, _sql.update_arrays(jobs), binary=True)
        if cur.rowcount != len(jobs):
            keys = _sql.key_arrays((j.tenant_id, j.id) for j in jobs)
            cur = await conn.execute(_sql.MISSING_KEYS, keys)
            rows = await cur.fetchall()
            missing = ", ".join(f"({t!r}, {_sql.from_column(i)!r})" for t, i in rows)
            raise StoreError(
                f"write to {self.url} updates jobs the store does not hold: {missing} (an "
                f"update is the snapshot of a stored job); nothing of the batch was written"
            )

    async def _conflict(
        self, conn: Connection, inserts: Sequence[Job], exc: psycopg.Error
    ) -> ConflictError:
        """The error of a batch refused by the primary key: which keys are taken."""
        with contextlib.suppress(psycopg.Error):
            keys = _sql.key_arrays((j.tenant_id, j.id) for j in inserts)
            cur = await conn.execute(_sql.EXISTING_KEYS, keys)
            taken = await cur.fetchall()
            if taken:
                return _duplicate(taken[0][0], _sql.from_column(taken[0][1]), self.url)
        detail = exc.diag.message_detail or str(exc)
        return ConflictError(f"duplicate job in a batch for {self.url}: {detail}")

    async def prune(self, finished_before: _dt.datetime, keep_max: int) -> int:
        """Drop finished jobs that finished before ``finished_before``, and the oldest
        finished beyond ``keep_max``; returns how many went. The scheduler's, fenced."""
        if not isinstance(finished_before, _dt.datetime) or finished_before.tzinfo is None:
            raise ValidationError(
                f"finished_before must be a timezone-aware datetime, got {finished_before!r}",
                path="$.finished_before",
            )
        if isinstance(keep_max, bool) or not isinstance(keep_max, int) or keep_max < 0:
            raise ValidationError(
                f"keep_max must be an int >= 0, got {keep_max!r}", path="$.keep_max"
            )
        self._require("scheduler", "prune")

        async def prune(conn: Connection) -> int:
            cur = await conn.execute(_sql.PRUNE_BEFORE, (finished_before,))
            dropped = max(cur.rowcount, 0)
            cur = await conn.execute(_sql.PRUNE_BEYOND, (keep_max,))
            return dropped + max(cur.rowcount, 0)

        return await self._fenced(prune)

    async def _fenced(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        """Run ``fn`` in a transaction of the writer, fenced like ``write``."""
        async with self._write_lock:
            conn = await self._writer_connection()
            try:
                async with conn.transaction():
                    await self._check_fence(conn)
                    return await fn(conn)
            except psycopg.Error as exc:
                raise _failure(f"a write to {self.url} failed", exc) from exc

    # ---- recovery and the inbox (the scheduler's reads) ---------------------------------------

    async def load(self) -> Recovered:
        """Every non-terminal job the scheduler wrote, in submission order, the core's state,
        and the rows set aside as unreadable (moved to ``quarantine``)."""
        self._require("scheduler", "load")

        async def read(conn: Connection) -> tuple[list[Any], bytes | None]:
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cur = await conn.execute(_sql.LOAD_JOBS, binary=True)
            rows = await cur.fetchall()
            cur = await conn.execute(_sql.LOAD_STATE, binary=True)
            state = await cur.fetchone()
            return rows, (bytes(state[0]) if state else None)

        rows, state = await self._on_pool(read, transaction=True)
        jobs, bad = await self._decode_rows(rows)
        return Recovered(jobs=jobs, state=state, quarantined=bad)

    async def inbox(self, limit: int = 1000) -> Inbox:
        """At most ``limit`` jobs clients committed that the scheduler has not written since
        (oldest first), and the cancel requests of non-terminal jobs. What was announced
        before this call counts as seen by ``wait_for_change``."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError(f"limit must be an int >= 1, got {limit!r}", path="$.limit")
        self._require("scheduler", "inbox")
        await self._drain()

        async def read(conn: Connection) -> tuple[list[Any], list[Any]]:
            cur = await conn.execute(_sql.INBOX_JOBS, (limit,), binary=True)
            jobs = await cur.fetchall()
            cur = await conn.execute(_sql.INBOX_CANCELS)
            return jobs, await cur.fetchall()

        rows, cancels = await self._on_pool(read)
        jobs, _ = await self._decode_rows(rows)
        from_column = _sql.from_column
        requests = [((t, from_column(i)), from_column(reason)) for t, i, reason in cancels]
        return Inbox(jobs=jobs, cancels=requests)

    async def _decode_rows(self, rows: Sequence[Any]) -> tuple[list[Job], list[Quarantined]]:
        """Jobs from (seq, tenant_id, id, body) rows; the rows that do not decode (or decode
        to another key) are moved to the quarantine table."""
        jobs: list[Job] = []
        bad: list[tuple[str, str, str]] = []  # (id column, tenant_id, reason)
        for _, tenant_id, column, body in rows:
            try:
                job = decode_job(body)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                bad.append((column, tenant_id, str(exc)))
                continue
            if job.tenant_id != tenant_id or _sql.to_column(job.id) != column:
                reason = f"the body is job ({job.tenant_id!r}, {job.id!r}), not this row's"
                bad.append((column, tenant_id, reason))
                continue
            jobs.append(job)
        quarantined = [
            Quarantined(tenant_id=t, job_id=_sql.from_column(c), reason=r) for c, t, r in bad
        ]
        if bad:
            arrays = [list(column) for column in zip(*bad, strict=True)]

            async def quarantine(conn: Connection) -> None:
                await conn.execute(_sql.QUARANTINE, arrays)

            await self._fenced(quarantine)
        return jobs, quarantined

    async def wait_for_change(self, timeout: float) -> bool:
        """Wait until something may have changed (True) or ``timeout`` seconds passed
        (False). The scheduler wakes on clients' submits and cancel requests, a client on the
        scheduler's commits (LISTEN/NOTIFY; a notification is sent at commit). While the
        server is away this keeps reconnecting; it returns True once the listener is back,
        since what was committed meanwhile went unannounced."""
        if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout >= 0):
            raise ValidationError(
                f"timeout must be finite seconds >= 0, got {timeout!r}", path="$.timeout"
            )
        self._require(None, "wait_for_change")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        conn = self._listener
        if conn is not None and not _lost(conn):
            self._waiting += 1
            try:
                woke = False
                async for _ in conn.notifies(timeout=timeout, stop_after=1):
                    woke = True
                if woke:  # the burst behind it is one change for the caller
                    async for _ in conn.notifies(timeout=0):
                        pass
                return woke
            except psycopg.Error:
                if self._role is None:  # closed meanwhile
                    return False
            finally:
                self._waiting -= 1
        return await self._relisten(deadline)

    async def _drain(self) -> None:
        """Consume the notifications received so far (unless a wait is reading them)."""
        conn = self._listener
        if conn is None or self._waiting or _lost(conn):
            return
        with contextlib.suppress(psycopg.Error):
            async for _ in conn.notifies(timeout=0):
                pass

    async def _relisten(self, deadline: float) -> bool:
        """Replace the lost listener, retrying until ``deadline``."""
        loop = asyncio.get_running_loop()
        channel = _sql.CHANNEL_INBOX if self._role == "scheduler" else _sql.CHANNEL_JOBS
        lost, self._listener = self._listener, None
        if lost is not None:
            await lost.close()
        delay = 0.05
        while self._role is not None:
            try:
                self._listener = await self._listen(channel)
                return True
            except (StoreError, psycopg.Error):
                left = deadline - loop.time()
                if left <= 0:
                    return False
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, 1.0)
        return False

    async def _listen(self, channel: str) -> Connection:
        conn = await self._connect("nsai-work listener")
        try:
            await conn.execute(f"LISTEN {channel}")
        except BaseException:
            await conn.close()
            raise
        return conn

    # ---- clients' writes ----------------------------------------------------------------------

    async def submit(self, jobs: Sequence[Job]) -> None:
        """As a client: commit new jobs for the scheduler to admit, and wake it (NOTIFY at
        commit). ``ConflictError`` for a (tenant_id, id) the store holds (nothing written)."""
        self._require(None, "submit")
        if not jobs:
            return
        _check_unique(jobs, self.url)

        async def submit(conn: Connection) -> None:
            try:
                await _copy_jobs(conn, jobs, admitted=False)
            except pg_errors.UniqueViolation as exc:
                raise _Refused(exc) from None
            await conn.execute(f"NOTIFY {_sql.CHANNEL_INBOX}")

        try:
            await self._on_pool(submit, transaction=True)
        except _Refused as refused:
            ids, tenants = _sql.key_arrays((j.tenant_id, j.id) for j in jobs)

            async def taken(conn: Connection) -> list[Any]:
                cur = await conn.execute(_sql.EXISTING_KEYS, (ids, tenants))
                return await cur.fetchall()

            clash = await self._on_pool(taken)
            if clash:
                raise _duplicate(clash[0][0], _sql.from_column(clash[0][1]), self.url) from None
            detail = refused.error.diag.message_detail or str(refused.error)
            raise ConflictError(f"duplicate job in a submit to {self.url}: {detail}") from None

    async def request_cancel(self, key: JobKey, reason: str) -> bool:
        """As a client: ask the scheduler to cancel a job (False: no such job, or it is
        terminal). The request stays with the job until the scheduler writes it terminal."""
        self._require(None, "request_cancel")
        tenant_id, job_id = key

        async def cancel(conn: Connection) -> bool:
            cur = await conn.execute(
                _sql.REQUEST_CANCEL, (_sql.to_column(reason), _sql.to_column(job_id), tenant_id)
            )
            if cur.rowcount != 1:
                return False
            await conn.execute(f"NOTIFY {_sql.CHANNEL_INBOX}")
            return True

        return await self._on_pool(cancel, transaction=True)

    # ---- reads ----------------------------------------------------------------------------------

    async def get_many(self, keys: Sequence[JobKey]) -> builtins.list[Job | None]:
        """The stored snapshot of each (tenant_id, id), None where there is none; one query
        over the primary key."""
        self._require(None, "get_many")
        found: builtins.list[Job | None] = [None] * len(keys)
        if not keys:
            return found

        async def read(conn: Connection) -> builtins.list[Any]:
            cur = await conn.execute(_sql.GET_MANY, _sql.key_arrays(keys), binary=True)
            return await cur.fetchall()

        for n, body in await self._on_pool(read):
            found[n - 1] = self._decode_one(keys[n - 1], body)
        return found

    async def owners(self, job_id: str) -> builtins.list[str]:
        """The tenants that have a job with this id (usually none or one)."""
        self._require(None, "owners")

        async def read(conn: Connection) -> builtins.list[str]:
            cur = await conn.execute(_sql.OWNERS, (_sql.to_column(job_id),))
            return [row[0] for row in await cur.fetchall()]

        return await self._on_pool(read)

    async def lease(self) -> Lease | None:
        """The current holder of the scheduler lease, or None (no session holds the lock)."""
        self._require(None, "lease")
        return await self._on_pool(_lease.holder)

    async def list(self, query: ListQuery) -> tuple[builtins.list[Job], str | None]:
        """A page of a tenant's jobs, newest first, and the cursor of the next (None: last
        page): keyset pagination on ``seq`` down one (tenant_id, ..., seq) index."""
        self._require(None, "list")
        if query.limit < 1:
            raise ValidationError(f"limit must be >= 1, got {query.limit}", path="$.limit")
        after = None
        if query.cursor is not None:
            after = _sql.read_cursor(self._cursor_key, query, query.cursor)
        sql, params = _sql.list_statement(query, after)

        async def read(conn: Connection) -> builtins.list[Any]:
            cur = await conn.execute(sql, params, binary=True)
            return await cur.fetchall()

        rows = await self._on_pool(read)
        page = rows[: query.limit]
        jobs = [self._decode_one((query.tenant_id, job_id), body) for _, job_id, body in page]
        more = len(rows) > query.limit
        cursor = _sql.make_cursor(self._cursor_key, query, page[-1][0]) if more else None
        return jobs, cursor

    def _decode_one(self, key: JobKey, body: bytes) -> Job:
        try:
            return decode_job(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StoreError(
                f"the stored job {key!r} in {self.url} cannot be read ({exc}); the scheduler "
                f"quarantines such rows when it loads"
            ) from exc

    # ---- plumbing ---------------------------------------------------------------------------

    def _require(self, role: Role | None, what: str) -> None:
        if self._role is None:
            raise StoreError(f"{self.url} is not open: call open() before {what}()")
        if role is not None and self._role != role:
            raise StoreError(
                f"{what}() is for the store's {role}; {self.url} is open as {self._role!r}"
            )

    async def _on_pool(
        self, fn: Callable[[Connection], Awaitable[T]], *, transaction: bool = False
    ) -> T:
        """Run ``fn`` on a pooled connection (in a transaction if asked). A connection the
        server dropped while it sat in the pool fails the first statement: then the pool's
        idle connections are checked and ``fn`` runs once more, unless its COMMIT had been
        sent (its outcome is then unknown: ``StoreError``)."""
        pool = self._pool
        if pool is None:
            raise StoreError(f"{self.url} is not open: call open() first")
        for attempt in (1, 2):
            conn: Connection | None = None
            committing = False
            try:
                async with pool.connection() as conn:
                    if not transaction:
                        return await fn(conn)
                    async with conn.transaction():
                        result = await fn(conn)
                        committing = True
                    return result
            except PoolTimeout as exc:
                raise StoreError(
                    f"no connection to {self.url} within {self.connect_timeout} s ({exc})"
                ) from exc
            except psycopg.Error as exc:
                if isinstance(exc, pg_errors.UniqueViolation):
                    raise
                if attempt == 1 and conn is not None and _lost(conn) and not committing:
                    await pool.check()
                    continue
                unknown = " (the outcome of its COMMIT is unknown)" if committing else ""
                raise _failure(f"a request to {self.url} failed{unknown}", exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover


class _Refused(Exception):
    """A client's insert hit the primary key (carried out of the transaction)."""

    def __init__(self, error: psycopg.Error) -> None:
        super().__init__(str(error))
        self.error = error


async def _copy_jobs(conn: Connection, jobs: Sequence[Job], *, admitted: bool) -> None:
    async with conn.cursor().copy(_sql.COPY_JOBS) as copy:
        copy.set_types(_sql.COPY_TYPES)
        for job in jobs:
            await copy.write_row(_sql.job_row(job, admitted))


def _check_unique(jobs: Sequence[Job], where: str) -> None:
    """A batch that holds one key twice is refused before it reaches the server."""
    keys = {(j.tenant_id, j.id) for j in jobs}
    if len(keys) != len(jobs):
        seen: set[JobKey] = set()
        for job in jobs:
            key = (job.tenant_id, job.id)
            if key in seen:
                raise _duplicate(job.tenant_id, job.id, where, twice=True)
            seen.add(key)


def _duplicate(tenant_id: str, job_id: str, where: str, *, twice: bool = False) -> ConflictError:
    found = "the batch holds it twice" if twice else f"the store ({where}) already holds it"
    return ConflictError(
        f"duplicate job id {job_id!r} for tenant {tenant_id!r}: {found}; nothing of the batch "
        f"was written (omit id to get a fresh one)"
    )


def _lost(conn: Connection) -> bool:
    """Whether the connection is unusable (closed, or the server went away)."""
    return conn.closed or conn.broken


def _failure(what: str, exc: BaseException) -> StoreError:
    """A ``StoreError`` saying what failed and why, on one line."""
    cause = " ".join(str(exc).split()) or type(exc).__name__
    return StoreError(f"{what}: {cause}")


def _check_url(url: str, shown: str) -> str:
    """The URL, checked: a postgresql:// or postgres:// URL that libpq can parse, its ports
    numbers (libpq would only say so when connecting)."""
    if not isinstance(url, str):
        raise ConfigurationError(f"a PostgreSQL store URL is a string, got {url!r}")
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise ConfigurationError(f"malformed PostgreSQL URL {shown}: {exc}") from None
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"a PostgreSQL store URL starts with postgresql:// or postgres://, got {shown}"
        )
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error as exc:
        cause = " ".join(str(exc).split())
        raise ConfigurationError(f"malformed PostgreSQL URL {shown}: {cause}") from None
    for port in str(params.get("port") or "").split(","):
        if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ConfigurationError(
                f"malformed PostgreSQL URL {shown}: port {port!r} is not a number 1-65535"
            )
    return url

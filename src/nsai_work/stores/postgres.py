"""The PostgreSQL store: jobs kept in a PostgreSQL database, for a scheduler and its clients in
other processes (docs/design.md, "Durable state"). Schema: stores/migrations/postgres/.

Connections (psycopg 3, async):

- the **writer** (scheduler only, ``_pg/_writer.py``): one dedicated connection that holds the
  scheduler lease (a session advisory lock, ``_pg/_lease.py``) and commits every ``write`` in
  one fenced transaction. If it is lost (the server restarts), ``write`` raises ``StoreError``
  and the engine retries; the next ``write`` reconnects and takes the lease again, unless
  another scheduler took it meanwhile (then: fenced out);
- the **listener**: one connection that LISTENs (the scheduler to clients' submits and cancel
  requests, a client to the scheduler's commits), for ``wait_for_change``;
- a **pool** (psycopg_pool) for reads and clients' writes; a request that meets a connection
  the server dropped runs once more on a fresh one (``_pg/_conn.py``).

Clients commit jobs with ``admitted = false`` and NOTIFY; the scheduler reads them from
``inbox()`` until its own write of each (an update, which admits it) settles them. A client's
cancel request is the job row's ``cancel_requested``, kept until the job is written terminal.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import datetime as _dt
import math
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, ClassVar, TypeVar

import msgspec
import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool

from .._errors import ConfigurationError, ConflictError, StoreError, ValidationError
from .._ir import Job
from ._codec import decode_job
from ._pg import _lease, _schedules, _sql, _unique
from ._pg._conn import Connection, Connector, InDoubtError, failure, lost, run
from ._pg._migrate import migrate
from ._pg._writer import Writer
from ._protocol import Inbox, JobKey, Lease, ListQuery, Quarantined, Recovered, Role, WriteBatch
from ._schedules import ScheduleState
from ._unique import claims_of

__all__ = ["PostgresStore"]

T = TypeVar("T")


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
        if not (isinstance(connect_timeout, int | float) and 0 < connect_timeout < math.inf):
            raise ConfigurationError(f"connect_timeout is seconds > 0, got {connect_timeout!r}")
        self._connector = Connector(url, connect_timeout=connect_timeout)
        self.url = self._connector.where
        if not 0 <= min_connections <= max_connections or max_connections < 1:
            raise ConfigurationError(
                f"the pool needs 0 <= min_connections <= max_connections and "
                f"max_connections >= 1; got {min_connections} and {max_connections}"
            )
        self.min_connections = min_connections
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.notify_clients = notify_clients
        self._role: Role | None = None
        self._pool: AsyncConnectionPool[Connection] | None = None
        self._writer: Writer | None = None
        self._listener: Connection | None = None
        self._waiting = 0  # wait_for_change calls in progress
        self._cursor_key = b""

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
        conn = await self._connector.connect(f"nsai-work {role}")
        try:
            await migrate(conn, self.url)
            cur = await conn.execute(_sql.CURSOR_KEY)
            row = await cur.fetchone()
            self._cursor_key = bytes(row[0]) if row else b""
            if role == "scheduler":
                self._writer = Writer(self._connector, notify_clients=self.notify_clients)
                await self._writer.start(conn)
            else:
                await conn.close()
            channel = _sql.CHANNEL_INBOX if role == "scheduler" else _sql.CHANNEL_JOBS
            self._listener = await self._listen(channel)
            self._pool = await self._connector.pool(
                f"nsai-work {role} pool",
                min_size=self.min_connections,
                max_size=self.max_connections,
            )
        except BaseException as exc:
            await self._close_all()
            await conn.close()
            if isinstance(exc, psycopg.Error):
                raise failure(f"cannot open the PostgreSQL store {self.url}", exc) from exc
            raise
        self._role = role

    async def close(self) -> None:
        """Release the lease and the connections. Idempotent."""
        self._role = None
        await self._close_all()

    async def _close_all(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.close()
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # ---- the scheduler's writes -------------------------------------------------------------

    async def write(self, batch: WriteBatch) -> None:
        """Commit ``batch`` in one transaction, fenced by the lease; returns once it is durable.

        ``ConflictError`` naming a duplicate insert (nothing written); ``StoreError`` when the
        fence moved on (another scheduler took over), an update names no stored job, or the
        connection failed (the engine retries)."""
        await self._scheduler("write").write(batch)

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
        writer = self._scheduler("prune")

        async def prune(conn: Connection) -> int:
            cur = await conn.execute(_sql.PRUNE_BEFORE, (finished_before,))
            dropped = max(cur.rowcount, 0)
            cur = await conn.execute(_sql.PRUNE_BEYOND, (keep_max,))
            return dropped + max(cur.rowcount, 0)

        return await writer.fenced(prune)

    # ---- recovery and the inbox (the scheduler's reads) ---------------------------------------

    async def load(self) -> Recovered:
        """Every non-terminal job the scheduler wrote, in submission order, the core's state,
        and the rows set aside as unreadable (moved to ``quarantine``)."""
        self._scheduler("load")
        await self._on_pool(_unique.sweep, transaction=True, idempotent=True)

        async def read(conn: Connection) -> tuple[list[Any], bytes | None]:
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cur = await conn.execute(_sql.LOAD_JOBS, binary=True)
            rows = await cur.fetchall()
            cur = await conn.execute(_sql.LOAD_STATE, binary=True)
            state = await cur.fetchone()
            return rows, (bytes(state[0]) if state else None)

        rows, state = await self._on_pool(read, transaction=True)
        jobs, bad = await self._decode_rows(rows, "load")
        return Recovered(jobs=jobs, state=state, quarantined=bad)

    async def inbox(self, limit: int = 1000) -> Inbox:
        """At most ``limit`` jobs clients committed that the scheduler has not written since
        (oldest first), and the cancel requests of non-terminal jobs. What was announced
        before this call counts as seen by ``wait_for_change``."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError(f"limit must be an int >= 1, got {limit!r}", path="$.limit")
        self._scheduler("inbox")
        await self._drain()

        async def read(conn: Connection) -> tuple[list[Any], list[Any]]:
            cur = await conn.execute(_sql.INBOX_JOBS, (limit,), binary=True)
            jobs = await cur.fetchall()
            cur = await conn.execute(_sql.INBOX_CANCELS)
            return jobs, await cur.fetchall()

        rows, cancels = await self._on_pool(read)
        jobs, _ = await self._decode_rows(rows, "inbox")
        from_column = _sql.from_column
        requests = [((t, from_column(i)), from_column(reason)) for t, i, reason in cancels]
        return Inbox(jobs=jobs, cancels=requests)

    async def _decode_rows(
        self, rows: Sequence[Any], what: str
    ) -> tuple[list[Job], list[Quarantined]]:
        """Jobs from (seq, tenant_id, id, body) rows; the rows that do not decode (or decode
        to another key) are moved to the quarantine table (by the writer, fenced)."""
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

            await self._scheduler(what).fenced(quarantine)
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
        if conn is not None and not lost(conn):
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
        if conn is None or self._waiting or lost(conn):
            return
        with contextlib.suppress(psycopg.Error):
            async for _ in conn.notifies(timeout=0):
                pass

    async def _relisten(self, deadline: float) -> bool:
        """Replace the lost listener, retrying until ``deadline``."""
        loop = asyncio.get_running_loop()
        channel = _sql.CHANNEL_INBOX if self._role == "scheduler" else _sql.CHANNEL_JOBS
        old, self._listener = self._listener, None
        if old is not None:
            await old.close()
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
        conn = await self._connector.connect("nsai-work listener")
        try:
            await conn.execute(f"LISTEN {channel}")
        except BaseException:
            await conn.close()
            raise
        return conn

    # ---- clients' writes ----------------------------------------------------------------------

    async def submit(
        self, jobs: Sequence[Job], *, now: _dt.datetime | None = None
    ) -> builtins.list[str | None]:
        """As a client: commit new jobs for the scheduler to admit, and wake it (NOTIFY at
        commit). ``ConflictError`` for a (tenant_id, id) the store holds (nothing written).
        Unique keys are claimed at ``now`` (default: the wall clock) in the same transaction:
        per job, None (committed) or the id of the job that holds its key (not committed)."""
        self._require(None, "submit")
        holders: builtins.list[str | None] = [None] * len(jobs)
        if not jobs:
            return holders
        _sql.check_unique(jobs, self.url)
        keys = [(job.tenant_id, job.id) for job in jobs]
        unique = [n for n, job in enumerate(jobs) if job.constraints.unique_key is not None]
        when = now or _dt.datetime.now(_dt.UTC)

        async def submit(conn: Connection) -> None:
            if unique:
                claims = claims_of([jobs[n] for n in unique], when)
                for n, holder in zip(unique, await _unique.claim(conn, claims, when), strict=True):
                    holders[n] = holder
            rows = [
                _sql.job_row(job, False)
                for job, holder in zip(jobs, holders, strict=True)
                if holder is None
            ]
            if rows:
                await _sql.copy_rows(conn, rows)
            await conn.execute(f"NOTIFY {_sql.CHANNEL_INBOX}")

        try:
            await self._on_pool(submit, transaction=True)
        except pg_errors.UniqueViolation as exc:

            async def taken(conn: Connection) -> builtins.list[Any]:
                cur = await conn.execute(_sql.EXISTING_KEYS, _sql.key_arrays(keys))
                return await cur.fetchall()

            clash = await self._on_pool(taken)
            if clash:
                raise _sql.duplicate(clash[0][0], _sql.from_column(clash[0][1]), self.url) from None
            detail = exc.diag.message_detail or str(exc)
            raise ConflictError(f"duplicate job in a submit to {self.url}: {detail}") from None
        except InDoubtError:  # did the COMMIT happen? The jobs are there, as sent, or none is
            if unique or await self.get_many(keys) != list(jobs):
                raise
            await self._on_pool(_notify_inbox, idempotent=True)
        return holders

    async def claim_unique(
        self, jobs: Sequence[Job], now: _dt.datetime
    ) -> builtins.list[str | None]:
        """Claim each job's unique key unless a job holds it, in one transaction: per job,
        None (claimed) or the holder's id; the table's primary key and a row lock make one
        winner among any number of processes (``_pg/_unique.py``)."""
        self._require(None, "claim_unique")
        claims = claims_of(jobs, now)

        async def claim(conn: Connection) -> builtins.list[str | None]:
            return await _unique.claim(conn, claims, now)

        return await self._on_pool(claim, transaction=True)

    async def release_unique(self, keys: Sequence[JobKey]) -> None:
        """Drop the claims these jobs made."""
        self._require(None, "release_unique")
        if not keys:
            return

        async def release(conn: Connection) -> None:
            await _unique.release(conn, keys)

        await self._on_pool(release, transaction=True, idempotent=True)

    # ---- cron schedules (_pg/_schedules.py) --------------------------------------------------

    async def add_schedule(self, state: ScheduleState) -> ScheduleState:
        """Keep a schedule's state unless one is kept for its (tenant_id, name): the kept one."""
        self._require(None, "add_schedule")
        return await self._on_pool(partial(_schedules.add, state=state), transaction=True)

    async def schedules(self, tenant_id: str | None = None) -> builtins.list[ScheduleState]:
        """The schedules' states (of one tenant, or all), by tenant then name."""
        self._require(None, "schedules")
        return await self._on_pool(partial(_schedules.read, tenant_id=tenant_id))

    async def advance_schedule(
        self,
        tenant_id: str,
        name: str,
        expected: _dt.datetime,
        settled_through: _dt.datetime,
        last_fire: _dt.datetime | None,
    ) -> bool:
        """Compare-and-set of a schedule's ``settled_through`` (one winner under the row lock)."""
        self._require(None, "advance_schedule")
        advance = partial(
            _schedules.advance,
            tenant_id=tenant_id,
            name=name,
            expected=expected,
            settled_through=settled_through,
            last_fire=last_fire,
        )
        return await self._on_pool(advance, transaction=True)

    async def pause_schedule(
        self, tenant_id: str, name: str, paused: bool, now: _dt.datetime
    ) -> ScheduleState | None:
        """Pause or resume (settling the pause's fires); the state then, or None."""
        self._require(None, "pause_schedule")
        pause = partial(_schedules.pause, tenant_id=tenant_id, name=name, paused=paused, now=now)
        return await self._on_pool(pause, transaction=True, idempotent=True)

    async def remove_schedule(self, tenant_id: str, name: str) -> bool:
        """Drop a schedule's state (False: none)."""
        self._require(None, "remove_schedule")
        remove = partial(_schedules.remove, tenant_id=tenant_id, name=name)
        return await self._on_pool(remove, transaction=True)

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

        return await self._on_pool(cancel, transaction=True, idempotent=True)

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

    async def find_many(self, job_ids: Sequence[str]) -> dict[str, builtins.list[Job]]:
        """Every stored job with each of these ids, by tenant id; one query."""
        self._require(None, "find_many")
        if not job_ids:
            return {}
        column = _sql.to_column

        async def read(conn: Connection) -> builtins.list[Any]:
            ids = [column(i) for i in dict.fromkeys(job_ids)]
            cur = await conn.execute(_sql.FIND_MANY, (ids,), binary=True)
            return await cur.fetchall()

        found: dict[str, builtins.list[Job]] = {}
        for stored_id, tenant_id, body in await self._on_pool(read):
            job_id = _sql.from_column(stored_id)
            found.setdefault(job_id, []).append(self._decode_one((tenant_id, job_id), body))
        return found

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
        jobs = [
            self._decode_one((query.tenant_id, _sql.from_column(job_id)), body)
            for _, job_id, body in page
        ]
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

    def _scheduler(self, what: str) -> Writer:
        """The writer, for the scheduler's own calls (``StoreError`` for a client)."""
        self._require("scheduler", what)
        writer = self._writer
        if writer is None:  # open as the scheduler without a writer: never
            raise StoreError(f"{self.url} has no writer: reopen it")
        return writer

    async def _on_pool(
        self,
        fn: Callable[[Connection], Awaitable[T]],
        *,
        transaction: bool = False,
        idempotent: bool = False,
    ) -> T:
        pool = self._pool
        if pool is None:
            raise StoreError(f"{self.url} is not open: call open() first")
        return await run(pool, fn, where=self.url, transaction=transaction, idempotent=idempotent)


async def _notify_inbox(conn: Connection) -> None:
    await conn.execute(f"NOTIFY {_sql.CHANNEL_INBOX}")

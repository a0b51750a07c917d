"""The SQLite store's operations, blocking: one connection and what each Store method does
with it. ``SqliteStore`` (``stores/sqlite.py``) runs every call on its own thread.

Rows: a job is its msgspec JSON plus the columns that queries read (status, namespace, kind,
times, flags); the schema is ``migrations/sqlite/0001_init.sql``. Every method that writes runs
in one ``BEGIN IMMEDIATE`` transaction; a scheduler's writes first compare its fencing token.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import hmac
import logging
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, TypeVar

import msgspec

from .._errors import ConflictError, StoreError, ValidationError
from .._ir import TERMINAL_STATUSES, Job, utc_now
from . import _sqlite_unique as unique_keys
from ._codec import decode_job, encode_job
from ._protocol import Inbox, JobKey, Lease, ListQuery, Quarantined, Recovered, Role, WriteBatch
from ._sqlite_lease import acquire, check_fence, holder, release
from ._sqlite_schema import connect, migrate, rollback_quietly, translate
from ._unique import claims_of

T = TypeVar("T")

__all__ = ["SqliteDatabase"]

_log = logging.getLogger("nsai_work.stores.sqlite")

_TERMINAL: Final = frozenset(status.value for status in TERMINAL_STATUSES)
_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_MICROSECOND: Final = _dt.timedelta(microseconds=1)
_CHUNK: Final = 500  # ids per get_many query (SQLite allows 32,766 parameters)
_CURSOR: Final = re.compile(r"([0-9]{1,19})\.([A-Za-z0-9_-]{16})")

_INSERT: Final = (
    "INSERT INTO jobs (tenant_id, id, status, terminal, namespace, kind, priority, created_at, "
    "finished_at, admitted, job) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# namespace, kind and created_at are set at submission and never change, so an update leaves
# their indexes alone. A terminal snapshot settles a client's cancel request.
_UPDATE: Final = (
    "UPDATE jobs SET status = ?, terminal = ?, priority = ?, finished_at = ?, admitted = 1, "
    "cancel_requested = CASE WHEN ? THEN NULL ELSE cancel_requested END, job = ? "
    "WHERE id = ? AND tenant_id = ?"
)
_DELETE: Final = "DELETE FROM jobs WHERE id = ? AND tenant_id = ?"
_STATE: Final = (
    "INSERT INTO core_state (id, state, updated_at) VALUES (1, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at"
)
_EXISTS: Final = "SELECT 1 FROM jobs WHERE id = ? AND tenant_id = ?"


def micros(when: _dt.datetime) -> int:
    """Microseconds since 1970-01-01 UTC (a naive datetime is taken as UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return (when - _EPOCH) // _MICROSECOND


def _insert_row(job: Job, admitted: int, now_us: int) -> tuple[Any, ...]:
    status = job.status.value
    terminal = status in _TERMINAL
    finished = job.finished_at
    return (
        job.tenant_id,
        job.id,
        status,
        terminal,
        job.namespace,
        job.kind,
        job.priority.value,
        micros(job.created_at),
        (micros(finished) if finished is not None else now_us) if terminal else None,
        admitted,
        encode_job(job).decode(),
    )


def _update_row(job: Job, now_us: int) -> tuple[Any, ...]:
    status = job.status.value
    terminal = status in _TERMINAL
    finished = job.finished_at
    return (
        status,
        terminal,
        job.priority.value,
        (micros(finished) if finished is not None else now_us) if terminal else None,
        terminal,
        encode_job(job).decode(),
        job.id,
        job.tenant_id,
    )


def _list_sql(namespace: bool, status: bool, kind: bool, after: bool) -> str:
    where = ["tenant_id = ?"]
    where += ["namespace = ?"] if namespace else []
    where += ["status = ?"] if status else []
    where += ["kind = ?"] if kind else []
    where += ["seq < ?"] if after else []
    return f"SELECT seq, job FROM jobs WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?"


_LIST_SQL: Final = {
    (n, s, k, a): _list_sql(n, s, k, a)
    for n in (False, True)
    for s in (False, True)
    for k in (False, True)
    for a in (False, True)
}


class SqliteDatabase:
    """One connection to one store's database and the store's operations on it. Blocking;
    used from one thread (the store's)."""

    def __init__(
        self, path: str, *, synchronous: str, busy_timeout_s: float, max_size_mb: int | None
    ) -> None:
        self.path = path
        self._synchronous = synchronous
        self._busy_timeout_s = busy_timeout_s
        self._max_size_mb = max_size_mb
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._fence: int | None = None
        self._cursor_key = b""
        self._seen_version = 0

    # ---- open and close -------------------------------------------------------------------

    def open(self, role: Role) -> None:
        """Connect, migrate, and as the scheduler take the lease."""
        conn = connect(
            self.path,
            synchronous=self._synchronous,
            busy_timeout_s=self._busy_timeout_s,
            max_size_mb=self._max_size_mb,
        )
        try:
            migrate(conn, self.path)
            self._cursor_key = conn.execute("SELECT cursor_key FROM store_info").fetchone()[0]
            if role == "scheduler":
                self._lock_fd, lease = acquire(conn, self.path)
                self._fence = lease.fence
            self._seen_version = conn.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error as exc:
            conn.close()
            raise translate(exc, self.path, "opening it") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def close(self) -> None:
        """Release the lease (a scheduler refreshes the planner's statistics first) and the
        connection. Safe after a failed or partial open, and twice."""
        conn, self._conn = self._conn, None
        lock_fd, self._lock_fd = self._lock_fd, None
        if conn is not None and lock_fd is not None:
            try:
                conn.execute("PRAGMA analysis_limit = 400")
                conn.execute("PRAGMA optimize")
            except sqlite3.Error:  # pragma: no cover - statistics are an optimisation
                pass
        if lock_fd is not None:
            release(conn, lock_fd, self._fence or 0)
        self._fence = None
        if conn is not None:
            conn.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:  # pragma: no cover - SqliteStore checks first
            raise StoreError(f"the SQLite store {self.path} is not open")
        return self._conn

    @contextmanager
    def _transaction(self, doing: str, *, write: bool) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield conn
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            rollback_quietly(conn)
            raise translate(exc, self.path, doing) from exc
        except BaseException:
            rollback_quietly(conn)
            raise

    # ---- writes -----------------------------------------------------------------------------

    def write(self, batch: WriteBatch) -> None:
        """Commit the batch in one transaction, under this scheduler's fence."""
        if self._fence is None:  # pragma: no cover - SqliteStore checks the role first
            raise StoreError(f"write() on {self.path} needs the scheduler lease")
        now_us = micros(utc_now())
        inserts = [_insert_row(job, 1, now_us) for job in batch.inserts]
        updates = [_update_row(job, now_us) for job in batch.updates]
        deletes = [(job_id, tenant_id) for tenant_id, job_id in batch.deletes]
        state = batch.state
        try:
            with self._transaction("committing a batch", write=True) as conn:
                check_fence(conn, self.path, self._fence)
                if inserts:
                    conn.executemany(_INSERT, inserts)
                if updates and conn.executemany(_UPDATE, updates).rowcount != len(updates):
                    raise _UnknownUpdate
                if deletes:
                    conn.executemany(_DELETE, deletes)
                if state is not None:
                    conn.execute(_STATE, (state, utc_now().isoformat()))
        except StoreError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise self._conflict(batch.inserts) from exc.__cause__
            raise
        except _UnknownUpdate:
            raise self._unknown(batch.updates) from None

    def submit(self, jobs: Sequence[Job], now: _dt.datetime) -> list[str | None]:
        """Commit new jobs as a client's: stored, not admitted until the scheduler writes them;
        their unique keys claimed in the same transaction (a duplicate is not stored)."""
        now_us = micros(utc_now())
        holders: list[str | None] = [None] * len(jobs)
        if not jobs:
            return holders
        unique = [n for n, job in enumerate(jobs) if job.constraints.unique_key is not None]
        try:
            with self._transaction("submitting jobs", write=True) as conn:
                if unique:
                    got = unique_keys.claim(conn, claims_of([jobs[n] for n in unique], now), now)
                    for n, holder in zip(unique, got, strict=True):
                        holders[n] = holder
                rows = [
                    _insert_row(job, 0, now_us)
                    for job, holder in zip(jobs, holders, strict=True)
                    if holder is None
                ]
                conn.executemany(_INSERT, rows)
        except StoreError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise self._conflict(jobs) from exc.__cause__
            raise
        return holders

    def claim_unique(self, jobs: Sequence[Job], now: _dt.datetime) -> list[str | None]:
        """Claim the jobs' unique keys in one transaction (``stores/_unique.py``)."""
        with self._transaction("claiming unique keys", write=True) as conn:
            return unique_keys.claim(conn, claims_of(jobs, now), now)

    def release_unique(self, keys: Sequence[JobKey]) -> None:
        """Drop the claims of these jobs."""
        with self._transaction("releasing unique keys", write=True) as conn:
            unique_keys.release(conn, keys)

    def run(self, doing: str, write: bool, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` in one transaction (a write one if ``write``); ``doing`` says
        what it does in an error's message."""
        with self._transaction(doing, write=write) as conn:
            return fn(conn, *args)

    def request_cancel(self, key: JobKey, reason: str) -> bool:
        """Record a client's cancel request on a non-terminal job (the first reason stays)."""
        tenant_id, job_id = key
        with self._transaction("requesting a cancel", write=True) as conn:
            changed = conn.execute(
                "UPDATE jobs SET cancel_requested = coalesce(cancel_requested, ?) "
                "WHERE id = ? AND tenant_id = ? AND terminal = 0",
                (reason, job_id, tenant_id),
            ).rowcount
        return changed == 1

    def prune(self, finished_before: _dt.datetime, keep_max: int) -> int:
        """Drop finished jobs that finished before ``finished_before``, then all but the
        ``keep_max`` that finished last."""
        if self._fence is None:  # pragma: no cover - SqliteStore checks the role first
            raise StoreError(f"prune() on {self.path} needs the scheduler lease")
        with self._transaction("pruning finished jobs", write=True) as conn:
            check_fence(conn, self.path, self._fence)
            dropped = conn.execute(
                "DELETE FROM jobs WHERE terminal = 1 AND finished_at < ?",
                (micros(finished_before),),
            ).rowcount
            dropped += conn.execute(
                "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs INDEXED BY jobs_finished "
                "WHERE terminal = 1 "
                "ORDER BY finished_at DESC, seq DESC LIMIT -1 OFFSET ?)",
                (keep_max,),
            ).rowcount
        return dropped

    def _conflict(self, jobs: Sequence[Job]) -> ConflictError:
        """Which insert the unique key refused (the transaction is rolled back already)."""
        seen: set[JobKey] = set()
        for job in jobs:
            key = (job.tenant_id, job.id)
            if key in seen:
                return ConflictError(
                    f"duplicate job id {job.id!r} for tenant {job.tenant_id!r}: it appears "
                    f"twice in one batch of {len(jobs)}; nothing of the batch was written"
                )
            seen.add(key)
        conn = self._connection()
        for job in jobs:
            if conn.execute(_EXISTS, (job.id, job.tenant_id)).fetchone() is not None:
                return ConflictError(
                    f"duplicate job id {job.id!r} for tenant {job.tenant_id!r}: the store "
                    f"already holds it; nothing of the batch of {len(jobs)} was written"
                )
        return ConflictError(  # pragma: no cover - a racing commit removed it again
            f"a job of a batch of {len(jobs)} was refused as a duplicate; nothing was written"
        )

    def _unknown(self, jobs: Sequence[Job]) -> StoreError:
        conn = self._connection()
        for job in jobs:
            if conn.execute(_EXISTS, (job.id, job.tenant_id)).fetchone() is None:
                return StoreError(
                    f"cannot update job {job.id!r} of tenant {job.tenant_id!r} in {self.path}: "
                    f"the store does not hold it (updates are snapshots of stored jobs; new "
                    f"jobs are inserts); nothing of the batch was written"
                )
        return StoreError(  # pragma: no cover - a racing commit added it
            f"an update of a batch of {len(jobs)} named no stored job; nothing was written"
        )

    # ---- recovery and the inbox -------------------------------------------------------------

    def load(self) -> Recovered:
        """The admitted non-terminal jobs in submission order, the core's state, and the rows
        set aside now because they do not decode. Claims of unique keys whose job was never
        written (the last scheduler died between claim and commit) are dropped first."""
        with self._transaction("dropping stale unique keys", write=True) as conn:
            unique_keys.sweep(conn)
        with self._transaction("loading jobs", write=False) as conn:
            rows = conn.execute(
                "SELECT seq, tenant_id, id, job FROM jobs "
                "WHERE terminal = 0 AND admitted = 1 ORDER BY seq"
            ).fetchall()
            found = conn.execute("SELECT state FROM core_state WHERE id = 1").fetchone()
        jobs, bad = _decode_rows(rows)
        return Recovered(
            jobs=jobs,
            state=None if found is None else bytes(found[0]),
            quarantined=self._quarantine(bad) if bad else [],
        )

    def inbox(self, limit: int) -> Inbox:
        """Jobs clients submitted that the scheduler has not written, oldest first, and the
        cancel requests of non-terminal jobs; what this returns counts as seen for
        ``changed``."""
        with self._transaction("reading the inbox", write=False) as conn:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            rows = conn.execute(
                "SELECT seq, tenant_id, id, job FROM jobs WHERE admitted = 0 ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
            cancels = conn.execute(
                "SELECT tenant_id, id, cancel_requested FROM jobs INDEXED BY jobs_cancel_requested "
                "WHERE cancel_requested IS NOT NULL AND terminal = 0 ORDER BY seq"
            ).fetchall()
        self._seen_version = version
        jobs, bad = _decode_rows(rows)
        if bad:
            self._quarantine(bad)
        requests = [((tenant_id, job_id), reason) for tenant_id, job_id, reason in cancels]
        return Inbox(jobs=jobs, cancels=requests)

    def _quarantine(self, bad: list[tuple[int, str, str, str]]) -> list[Quarantined]:
        """Move unreadable rows to the quarantine table, in one transaction."""
        now = utc_now().isoformat()
        with self._transaction("setting aside unreadable rows", write=True) as conn:
            if self._fence is not None:
                check_fence(conn, self.path, self._fence)
            conn.executemany(
                "INSERT OR REPLACE INTO quarantine "
                "(seq, tenant_id, job_id, reason, job, quarantined_at) "
                "SELECT seq, tenant_id, id, ?, job, ? FROM jobs WHERE seq = ?",
                [(reason, now, seq) for seq, _, _, reason in bad],
            )
            conn.executemany("DELETE FROM jobs WHERE seq = ?", [(seq,) for seq, *_ in bad])
        for _, tenant_id, job_id, reason in bad:
            _log.warning(
                "SQLite store %s: job %r of tenant %r set aside (table quarantine): %s",
                self.path,
                job_id,
                tenant_id,
                reason,
            )
        return [Quarantined(tenant_id=t, job_id=j, reason=r) for _, t, j, r in bad]

    def changed(self) -> bool:
        """Whether another connection committed since the last inbox or True answer."""
        version = self._connection().execute("PRAGMA data_version").fetchone()[0]
        if version == self._seen_version:
            return False
        self._seen_version = version
        return True

    def lease(self) -> Lease | None:
        """The lease row's holder."""
        try:
            return holder(self._connection())
        except sqlite3.Error as exc:
            raise translate(exc, self.path, "reading the lease") from exc

    # ---- reads ------------------------------------------------------------------------------

    def get_many(self, keys: Sequence[JobKey]) -> list[Job | None]:
        """The stored job of each key, None where there is none."""
        wanted = set(keys)
        ids = list({job_id for _, job_id in wanted})
        found: dict[JobKey, Job] = {}
        with self._transaction("reading jobs", write=False) as conn:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ", ".join("?" * len(chunk))
                for tenant_id, job_id, data in conn.execute(
                    f"SELECT tenant_id, id, job FROM jobs WHERE id IN ({marks})", chunk
                ):
                    if (tenant_id, job_id) in wanted:
                        found[tenant_id, job_id] = self._decode(tenant_id, job_id, data)
        return [found.get(key) for key in keys]

    def owners(self, job_id: str) -> list[str]:
        """The tenants holding a job with this id, sorted."""
        with self._transaction("reading jobs", write=False) as conn:
            rows = conn.execute(
                "SELECT tenant_id FROM jobs WHERE id = ? ORDER BY tenant_id", (job_id,)
            ).fetchall()
        return [row[0] for row in rows]

    def find_many(self, job_ids: list[str]) -> dict[str, list[Job]]:
        """The stored jobs with each of these ids, by tenant id."""
        found: dict[str, list[Job]] = {}
        with self._transaction("reading jobs", write=False) as conn:
            for start in range(0, len(job_ids), _CHUNK):
                chunk = job_ids[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT tenant_id, id, job FROM jobs WHERE id IN ({marks}) "
                    f"ORDER BY id, tenant_id",
                    chunk,
                ).fetchall()
                for tenant_id, job_id, data in rows:
                    found.setdefault(job_id, []).append(self._decode(tenant_id, job_id, data))
        return found

    def list(self, query: ListQuery) -> tuple[list[Job], str | None]:
        """A page of the tenant's jobs, newest first, and the next page's cursor."""
        params: list[Any] = [query.tenant_id]
        for value in (query.namespace, query.status, query.kind):
            if value is not None:
                params.append(str(value))
        after = None if query.cursor is None else self._parse_cursor(query)
        if after is not None:
            params.append(after)
        params.append(query.limit + 1)
        shape = (
            query.namespace is not None,
            query.status is not None,
            query.kind is not None,
            after is not None,
        )
        with self._transaction("listing jobs", write=False) as conn:
            rows = conn.execute(_LIST_SQL[shape], params).fetchall()
        more = len(rows) > query.limit
        del rows[query.limit :]
        jobs = [self._decode(query.tenant_id, None, data) for _, data in rows]
        return jobs, (self._cursor(query, rows[-1][0]) if more else None)

    def _sign(self, query: ListQuery, seq: int) -> str:
        status = None if query.status is None else str(query.status)
        message = msgspec.json.encode([query.tenant_id, query.namespace, status, query.kind, seq])
        digest = hmac.new(self._cursor_key, message, hashlib.sha256).digest()[:12]
        return base64.urlsafe_b64encode(digest).decode()

    def _cursor(self, query: ListQuery, seq: int) -> str:
        return f"{seq}.{self._sign(query, seq)}"

    def _parse_cursor(self, query: ListQuery) -> int:
        cursor = query.cursor
        match = _CURSOR.fullmatch(cursor) if isinstance(cursor, str) else None
        if match is None or not hmac.compare_digest(
            match[2], self._sign(query, seq := int(match[1]))
        ):
            raise ValidationError(
                f"cursor {cursor!r} is not one this store returned for this query (tenant "
                f"{query.tenant_id!r}, namespace {query.namespace!r}, status "
                f"{None if query.status is None else str(query.status)!r}, kind "
                f"{query.kind!r}); pass the cursor of the previous page of the same query, or "
                f"None for the first page",
                path="$.cursor",
            )
        return seq

    def _decode(self, tenant_id: str, job_id: str | None, data: Any) -> Job:
        try:
            return decode_job(data)
        except (msgspec.DecodeError, TypeError, UnicodeDecodeError) as exc:
            which = f"job {job_id!r}" if job_id else "a job"
            raise StoreError(
                f"{which} of tenant {tenant_id!r} in {self.path} cannot be read back ({exc}); "
                f"the next scheduler start sets it aside in the quarantine table"
            ) from exc


class _UnknownUpdate(Exception):
    """An update named no stored job (raised inside the transaction to roll it back)."""


def _decode_rows(
    rows: Iterable[tuple[int, str, str, Any]],
) -> tuple[list[Job], list[tuple[int, str, str, str]]]:
    """Jobs from (seq, tenant_id, id, data) rows, and the rows that are not a job with their
    key, as (seq, tenant_id, id, reason)."""
    jobs: list[Job] = []
    bad: list[tuple[int, str, str, str]] = []
    for seq, tenant_id, job_id, data in rows:
        try:
            job = decode_job(data)
        except (msgspec.DecodeError, TypeError, UnicodeDecodeError) as exc:
            bad.append((seq, tenant_id, job_id, f"{type(exc).__name__}: {exc}"))
            continue
        if job.tenant_id != tenant_id or job.id != job_id:
            bad.append(
                (
                    seq,
                    tenant_id,
                    job_id,
                    f"the row's key ({tenant_id!r}, {job_id!r}) is not its job's "
                    f"({job.tenant_id!r}, {job.id!r})",
                )
            )
            continue
        jobs.append(job)
    return jobs, bad

"""The PostgreSQL store's statements, how a job becomes a row, and the listing cursor.

Rows are written by COPY (binary) and by single statements over ``unnest`` of parallel arrays
(one round trip per batch, not one per job: notes/postgres.md measured executemany 20-25%
slower). Bodies are bytea and travel in binary format, so neither side escapes them.

A PostgreSQL text value cannot hold NUL, and a job id (any non-empty string) or a cancel
reason may: those go into their columns through ``to_column`` (a backslash becomes ``\\\\``
and NUL ``\\0``; other text, every UUID among it, is stored as it is) and come back through
``from_column``. The body keeps the exact value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

import psycopg
from psycopg.rows import TupleRow

from ..._errors import ConflictError, ValidationError
from ..._ir import TERMINAL_STATUSES, Job, Priority, Status
from .._codec import encode_job
from .._protocol import JobKey, ListQuery

__all__ = [
    "CHANNEL_INBOX",
    "CHANNEL_JOBS",
    "COPY_JOBS",
    "COPY_TYPES",
    "check_unique",
    "copy_rows",
    "dedupe",
    "duplicate",
    "from_column",
    "job_row",
    "key_arrays",
    "list_statement",
    "make_cursor",
    "read_cursor",
    "to_column",
    "update_arrays",
]

#: Clients' submits and cancel requests NOTIFY this channel; the scheduler LISTENs.
CHANNEL_INBOX: Final = "nsai_work_inbox"
#: The scheduler's commits NOTIFY this channel; clients LISTEN (a job they wait for may be done).
CHANNEL_JOBS: Final = "nsai_work_jobs"

COPY_JOBS: Final = (
    "COPY jobs (id, tenant_id, status, terminal, namespace, kind, priority, created_at,"
    " finished_at, admitted, body) FROM STDIN (FORMAT BINARY)"
)
COPY_TYPES: Final = [
    "text",
    "text",
    "text",
    "bool",
    "text",
    "text",
    "text",
    "timestamptz",
    "timestamptz",
    "bool",
    "bytea",
]

#: The fencing check of every scheduler write: the commit count, or FENCED_OUT.
FENCE: Final = "SELECT nsai_work_fence(%s)"
#: The SQLSTATEs of the migration's functions: fenced out, an update of unknown jobs.
FENCED_OUT: Final = "NW001"
UNKNOWN_JOBS: Final = "NW002"

_TERMINAL: Final = ", ".join(f"'{status.value}'" for status in sorted(TERMINAL_STATUSES))
#: The latest snapshots, in full; admitted from now on; a client's cancel request is kept
#: until the job is terminal. UNKNOWN_JOBS unless every row was there.
UPDATE_JOBS: Final = f"""
WITH updated AS (
    UPDATE jobs AS j SET
        status = u.status, terminal = u.status IN ({_TERMINAL}), priority = u.priority,
        finished_at = u.finished_at, body = u.body, admitted = true,
        cancel_requested = CASE WHEN u.status IN ({_TERMINAL}) THEN NULL
                                ELSE j.cancel_requested END
    FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::timestamptz[], %b::bytea[])
        AS u(id, tenant_id, status, priority, finished_at, body)
    WHERE j.id = u.id AND j.tenant_id = u.tenant_id
    RETURNING 1
)
SELECT nsai_work_expect_rows(count(*), %s) FROM updated
"""
MISSING_KEYS: Final = """
SELECT k.tenant_id, k.id FROM unnest(%b::text[], %b::text[]) AS k(id, tenant_id)
WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = k.id AND j.tenant_id = k.tenant_id)
LIMIT 5
"""
EXISTING_KEYS: Final = """
SELECT j.tenant_id, j.id FROM unnest(%b::text[], %b::text[]) AS k(id, tenant_id)
JOIN jobs j ON j.id = k.id AND j.tenant_id = k.tenant_id
LIMIT 5
"""
DELETE_JOBS: Final = """
DELETE FROM jobs AS j USING unnest(%b::text[], %b::text[]) AS d(id, tenant_id)
WHERE j.id = d.id AND j.tenant_id = d.tenant_id
"""
UPSERT_STATE: Final = """
INSERT INTO core_state (id, state, updated_at) VALUES (1, %b, now())
ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at
"""
GET_MANY: Final = """
SELECT k.n, j.body FROM unnest(%b::text[], %b::text[]) WITH ORDINALITY AS k(id, tenant_id, n)
JOIN jobs j ON j.id = k.id AND j.tenant_id = k.tenant_id
"""
OWNERS: Final = "SELECT tenant_id FROM jobs WHERE id = %s ORDER BY tenant_id"
FIND_MANY: Final = (
    "SELECT id, tenant_id, body FROM jobs WHERE id = ANY(%b::text[]) ORDER BY id, tenant_id"
)
LOAD_JOBS: Final = (
    "SELECT seq, tenant_id, id, body FROM jobs WHERE NOT terminal AND admitted ORDER BY seq"
)
LOAD_STATE: Final = "SELECT state FROM core_state WHERE id = 1"
INBOX_JOBS: Final = (
    "SELECT seq, tenant_id, id, body FROM jobs WHERE NOT admitted ORDER BY seq LIMIT %s"
)
INBOX_CANCELS: Final = (
    "SELECT tenant_id, id, cancel_requested FROM jobs"
    " WHERE cancel_requested IS NOT NULL AND NOT terminal ORDER BY seq"
)
#: The first reason asked is kept.
REQUEST_CANCEL: Final = (
    "UPDATE jobs SET cancel_requested = coalesce(cancel_requested, %s)"
    " WHERE id = %s AND tenant_id = %s AND NOT terminal"
)
QUARANTINE: Final = """
WITH bad AS (
    DELETE FROM jobs AS j
    USING unnest(%b::text[], %b::text[], %b::text[]) AS b(id, tenant_id, reason)
    WHERE j.id = b.id AND j.tenant_id = b.tenant_id
    RETURNING j.seq, j.tenant_id, j.id, b.reason, j.body
)
INSERT INTO quarantine (seq, tenant_id, job_id, reason, body)
SELECT seq, tenant_id, id, reason, body FROM bad
ON CONFLICT (seq) DO NOTHING
"""
PRUNE_BEFORE: Final = "DELETE FROM jobs WHERE terminal AND finished_at < %s"
PRUNE_BEYOND: Final = """
DELETE FROM jobs AS j USING (
    SELECT id, tenant_id FROM jobs WHERE terminal
    ORDER BY finished_at DESC NULLS LAST, seq DESC OFFSET %s
) AS old
WHERE j.id = old.id AND j.tenant_id = old.tenant_id
"""
CURSOR_KEY: Final = "SELECT cursor_key FROM store_info WHERE id = 1"


def to_column(text: str) -> str:
    """``text`` as a text column can hold it (no NUL); the same string for most text."""
    if "\\" in text or "\x00" in text:
        return text.replace("\\", "\\\\").replace("\x00", "\\0")
    return text


def from_column(text: str) -> str:
    """The string ``to_column`` was given."""
    if "\\" in text:
        return _ESCAPE.sub(_unescape, text)
    return text


_ESCAPE: Final = re.compile(r"\\(.)", re.DOTALL)


def _unescape(match: re.Match[str]) -> str:
    return "\x00" if match[1] == "0" else match[1]


#: The text of each status and priority (faster than ``.value``, an enum descriptor).
_STATUS: Final = {status: status.value for status in Status}
_PRIORITY: Final = {priority: priority.value for priority in Priority}


def job_row(job: Job, admitted: bool) -> tuple[Any, ...]:
    """The COPY row of a job (the columns of ``COPY_JOBS``)."""
    status = job.status
    return (
        to_column(job.id),
        job.tenant_id,
        _STATUS[status],
        status in TERMINAL_STATUSES,
        job.namespace,
        job.kind,
        _PRIORITY[job.priority],
        job.created_at,
        job.finished_at,
        admitted,
        encode_job(job),
    )


def update_arrays(jobs: Sequence[Job]) -> list[list[Any]]:
    """The parallel arrays of ``UPDATE_JOBS``."""
    return [
        [to_column(job.id) for job in jobs],
        [job.tenant_id for job in jobs],
        [_STATUS[job.status] for job in jobs],
        [_PRIORITY[job.priority] for job in jobs],
        [job.finished_at for job in jobs],
        [encode_job(job) for job in jobs],
    ]


def key_arrays(keys: Iterable[JobKey]) -> list[list[str]]:
    """``[ids, tenant_ids]`` of (tenant_id, id) keys, as the statements above take them."""
    ids: list[str] = []
    tenants: list[str] = []
    for tenant_id, job_id in keys:
        ids.append(to_column(job_id))
        tenants.append(tenant_id)
    return [ids, tenants]


def list_statement(query: ListQuery, after: int | None) -> tuple[str, list[Any]]:
    """A page of ``query`` newest first, one more row than the limit (to tell if there is a
    next page). Every filter is an equality on a column after tenant_id, so the planner walks
    one of the (tenant_id, ..., seq) indexes backwards from ``after``."""
    where = ["tenant_id = %s"]
    params: list[Any] = [query.tenant_id]
    if query.namespace is not None:
        where.append("namespace = %s")
        params.append(query.namespace)
    if query.status is not None:
        where.append("status = %s")
        params.append(query.status.value)
    if query.kind is not None:
        where.append("kind = %s")
        params.append(query.kind)
    if after is not None:
        where.append("seq < %s")
        params.append(after)
    params.append(query.limit + 1)
    sql = f"SELECT seq, id, body FROM jobs WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT %s"
    return sql, params


# ---- the listing cursor ---------------------------------------------------------------------
# "<seq>.<signature>": the signature (HMAC-SHA256 with the database's cursor_key, 72 bits)
# binds the seq to the query, so a cursor of another store or of another query is refused.


def _signature(key: bytes, query: ListQuery, seq: int) -> str:
    status = query.status.value if query.status is not None else ""
    message = "\x00".join(
        (query.tenant_id, query.namespace or "", status, query.kind or "", str(seq))
    ).encode("utf-8", "surrogatepass")
    digest = hmac.new(key, message, hashlib.sha256).digest()[:9]
    return base64.urlsafe_b64encode(digest).decode("ascii")


def make_cursor(key: bytes, query: ListQuery, seq: int) -> str:
    """The cursor of the page after the row ``seq``."""
    return f"{seq}.{_signature(key, query, seq)}"


def read_cursor(key: bytes, query: ListQuery, cursor: str) -> int:
    """The seq of ``make_cursor``'s cursor; ``ValidationError`` at ``$.cursor`` for any other
    string (another store's, another query's, or made up)."""
    seq_text, _, signature = cursor.partition(".")
    if seq_text.isascii() and seq_text.isdigit() and len(seq_text) < 19:
        seq = int(seq_text)
        if hmac.compare_digest(signature, _signature(key, query, seq)):
            return seq
    raise ValidationError(
        f"cursor must be the next cursor of a previous page of this same query, got "
        f"{cursor[:60]!r}",
        path="$.cursor",
    )


def dedupe(jobs: Sequence[Job]) -> list[Job]:
    """The last snapshot of each (tenant_id, id), in the order each key first appears."""
    latest: dict[JobKey, Job] = {}
    for job in jobs:
        latest[(job.tenant_id, job.id)] = job
    return list(latest.values()) if len(latest) != len(jobs) else list(jobs)


async def copy_rows(conn: psycopg.AsyncConnection[TupleRow], rows: Sequence[Any]) -> None:
    """COPY new jobs' rows (``job_row``) in, binary; a key the table holds raises
    ``UniqueViolation``."""
    async with conn.cursor().copy(COPY_JOBS) as copy:
        copy.set_types(COPY_TYPES)
        for row in rows:
            await copy.write_row(row)


def check_unique(jobs: Sequence[Job], where: str) -> None:
    """A batch that holds one key twice is refused before it reaches the server."""
    if len({(j.tenant_id, j.id) for j in jobs}) != len(jobs):
        seen: set[JobKey] = set()
        for job in jobs:
            key = (job.tenant_id, job.id)
            if key in seen:
                raise duplicate(job.tenant_id, job.id, where, twice=True)
            seen.add(key)


def duplicate(tenant_id: str, job_id: str, where: str, *, twice: bool = False) -> ConflictError:
    """The error of an insert whose key is taken."""
    found = "the batch holds it twice" if twice else f"the store ({where}) already holds it"
    return ConflictError(
        f"duplicate job id {job_id!r} for tenant {tenant_id!r}: {found}; nothing of the batch "
        f"was written (omit id to get a fresh one)"
    )

"""The SQLite store's connection: opening a database file with its pragmas, applying the
numbered migrations, and saying what SQLite's errors mean for the person who reads them.

Everything here blocks, and runs on the store's own thread (``stores/sqlite.py``).
"""

from __future__ import annotations

import os
import re
import sqlite3
from contextlib import suppress
from functools import cache
from importlib import resources

from .._errors import StoreError
from .._ir import utc_now

__all__ = [
    "SYNCHRONOUS_MODES",
    "connect",
    "migrate",
    "migrations",
    "rollback_quietly",
    "split_statements",
    "translate",
]

#: The ``synchronous`` settings offered (OFF is not: a power loss could damage the file).
SYNCHRONOUS_MODES = ("NORMAL", "FULL", "EXTRA")

_MIGRATION_FILE = re.compile(r"([0-9]{4})_[a-z0-9_]+\.sql")
_SCHEMA_VERSION = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
)"""


def split_statements(script: str) -> tuple[str, ...]:
    """The statements of an SQL script, each complete (``sqlite3.complete_statement``), so they
    can run one by one inside a transaction (``executescript`` would commit first)."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    rest = "".join(
        line for line in pending.splitlines() if line.strip() and not line.strip().startswith("--")
    )
    if rest:
        raise StoreError(f"an SQL script ends with an incomplete statement: {rest[:200]!r}")
    return tuple(statements)


@cache
def migrations() -> tuple[tuple[int, str, tuple[str, ...]], ...]:
    """The files of ``stores/migrations/sqlite``, in order: (version, file name, statements)."""
    folder = resources.files("nsai_work.stores") / "migrations" / "sqlite"
    found: list[tuple[int, str, tuple[str, ...]]] = []
    for entry in folder.iterdir():
        match = _MIGRATION_FILE.fullmatch(entry.name)
        if match is not None:
            found.append((int(match[1]), entry.name, split_statements(entry.read_text("utf-8"))))
    found.sort()
    if [version for version, _, _ in found] != list(range(1, len(found) + 1)):
        raise StoreError(  # a packaging mistake, not the user's
            f"the SQLite migrations must be numbered 0001, 0002, ... without gaps; found "
            f"{[name for _, name, _ in found]} in {folder}"
        )
    return tuple(found)


def rollback_quietly(conn: sqlite3.Connection) -> None:
    """Roll back the open transaction, if any (SQLite ends some on its own, e.g. when full)."""
    if conn.in_transaction:
        with suppress(sqlite3.Error):  # the connection is gone: nothing was written
            conn.execute("ROLLBACK")


def connect(
    path: str, *, synchronous: str, busy_timeout_s: float, max_size_mb: int | None
) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode with the store's pragmas (autocommit: the store
    issues BEGIN and COMMIT itself); ``StoreError`` naming the path and the cause."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise StoreError(
            f"cannot open the SQLite store {path}: the directory {directory} does not exist; "
            f"create it first (the store creates its file, not the directories above it)"
        )
    if os.path.isdir(path):
        raise StoreError(
            f"cannot open the SQLite store {path}: it is a directory; name a file in it, "
            f"e.g. sqlite://{os.path.join(path, 'work.db')}"
        )
    try:
        conn = sqlite3.connect(
            path, timeout=busy_timeout_s, isolation_level=None, cached_statements=128
        )
    except sqlite3.Error as exc:
        raise translate(exc, path, "opening it") from exc
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(
                f"cannot switch the SQLite database {path} to WAL mode (it stays in "
                f"{mode!r} mode){_because(path)}; the store needs to write the file and to "
                f"create {os.path.basename(path)}-wal and -shm beside it"
            )
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        if max_size_mb is not None:
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            pages = max(1, max_size_mb * 1024 * 1024 // page_size)
            conn.execute(f"PRAGMA max_page_count = {pages}")
    except sqlite3.Error as exc:
        conn.close()
        raise translate(exc, path, "opening it") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def migrate(conn: sqlite3.Connection, path: str) -> int:
    """Bring the schema up to date inside one ``BEGIN IMMEDIATE`` (so two processes opening at
    once apply each file once), and prove the file is writable; returns the schema version."""
    plan = migrations()
    latest = plan[-1][0]
    try:
        conn.execute("BEGIN IMMEDIATE")
        known = conn.execute("SELECT name FROM sqlite_master WHERE name = 'schema_version'")
        if known.fetchone() is None:
            others = [
                row[0]
                for row in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite%' AND name != 'nsai_work_api_keys' "  # (a server's)
                    "ORDER BY name LIMIT 5"
                )
            ]
            if others:
                raise StoreError(
                    f"{path} is a SQLite database of something else (it has tables "
                    f"{', '.join(others)} and no schema_version); give the store a file of "
                    f"its own"
                )
            conn.execute(_SCHEMA_VERSION)
        current = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
        if current > latest:
            raise StoreError(
                f"the SQLite database {path} has schema version {current}, made by a newer "
                f"nsai-work; this one knows versions up to {latest}: upgrade nsai-work"
            )
        for version, name, statements in plan:
            if version > current:
                for statement in statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, utc_now().isoformat()),
                )
        # A real (no-op) row write, so a file this process may not write fails here, at open,
        # and not at the first submit.
        conn.execute("UPDATE lease SET fence = fence WHERE id = 1")
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        rollback_quietly(conn)
        raise translate(exc, path, "opening it (schema migrations)") from exc
    except BaseException:
        rollback_quietly(conn)
        raise
    return latest


def translate(exc: sqlite3.Error, path: str, doing: str) -> StoreError:
    """A ``StoreError`` that says what went wrong with ``path`` while ``doing``, and what to do."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    family = name.split("_")[1] if name.count("_") >= 1 else ""
    if family == "FULL":
        return StoreError(
            f"the SQLite database {path} is full ({exc}) while {doing}: the disk has no space "
            f"left, or the database reached the store's max_size_mb; nothing of it was "
            f"written. Free space (or raise max_size_mb) and retry"
        )
    if family in ("READONLY", "PERM", "AUTH"):
        return StoreError(
            f"cannot write the SQLite database {path} while {doing}: it is read-only to this "
            f"process{_because(path)} ({name}). Give the process write access to the file "
            f"and its directory"
        )
    if family == "CANTOPEN":
        return StoreError(
            f"cannot open the SQLite database {path} while {doing}{_because(path)} ({exc}). "
            f"The process needs to read and write the file and to create "
            f"{os.path.basename(path)}-wal and -shm in its directory"
        )
    if family == "NOTADB":
        return StoreError(
            f"{path} is not a SQLite database ({exc}); point the store at a database file, "
            f"or at a path where none exists yet"
        )
    if family == "CORRUPT":
        return StoreError(
            f"the SQLite database {path} is damaged ({exc}) while {doing}; restore it from a "
            f"backup, or try `sqlite3 {path} .recover`"
        )
    if family in ("BUSY", "LOCKED"):
        return StoreError(
            f"the SQLite database {path} stayed locked by another connection past the "
            f"store's busy_timeout_s while {doing} ({exc}); a long transaction elsewhere "
            f"holds it, or raise busy_timeout_s"
        )
    if family == "IOERR":
        return StoreError(
            f"disk I/O error on the SQLite database {path} while {doing} ({name}: {exc})"
            f"{_because(path)}"
        )
    suffix = f" ({name})" if name else ""
    return StoreError(f"SQLite failed on {path} while {doing}: {exc}{suffix}")


def _because(path: str) -> str:
    """``": <why this process cannot write path>"``, or ``""`` when nothing obvious stops it."""
    directory = os.path.dirname(path) or "."
    who = f"this process (uid {os.geteuid()})"
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return f": {directory} is on a read-only file system"
    except OSError as exc:
        return f": {directory}: {exc.strerror}"
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK, effective_ids=True):
        return f": {who} may not write {path} (its permissions)"
    if not os.access(directory, os.W_OK | os.X_OK, effective_ids=True):
        return f": {who} may not create files in {directory}"
    for side in ("-wal", "-shm"):
        if os.path.exists(path + side) and not os.access(
            path + side, os.R_OK | os.W_OK, effective_ids=True
        ):
            return f": {who} may not write {path}{side}"
    return ""

"""The SQLite store's scheduler lease: an exclusive ``flock`` on ``<database>.lock``, held
while a scheduler has the store open, and the ``lease`` row that names the holder and carries
the fencing token.

The lock is what excludes: the kernel releases it when its holder's process dies, however it
dies, so a crashed scheduler never blocks its successor. The row is what others read: the pid,
host and start of the holder (for the error a second scheduler gets, and for ``lease()``), and
``fence``, bumped at each acquisition and compared by every ``write()``, so a scheduler that
lost the lock without knowing (someone deleted the lock file, the file system does not honour
``flock``) cannot overwrite its successor's jobs. After a crash the row still names the dead
holder (``held = 1``) until the next scheduler takes over.

Everything here blocks, and runs on the store's own thread.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
import socket
import sqlite3

from .._errors import StoreError
from .._ir import utc_now
from ._protocol import Lease
from ._sqlite_schema import rollback_quietly, translate

__all__ = ["acquire", "check_fence", "holder", "release"]


def holder(conn: sqlite3.Connection) -> Lease | None:
    """Who the lease row says holds the lease, or None."""
    row = conn.execute("SELECT pid, host, since, fence FROM lease WHERE id = 1 AND held = 1")
    found = row.fetchone()
    if found is None:
        return None
    pid, host, since, fence = found
    return Lease(pid=pid, host=host, since=_dt.datetime.fromisoformat(since), fence=fence)


def _describe(lease: Lease | None) -> str:
    if lease is None:
        return "a process that has not written its lease row yet"
    return (
        f"pid {lease.pid} on host {lease.host}, since {lease.since.isoformat()} "
        f"(fence {lease.fence})"
    )


def acquire(conn: sqlite3.Connection, path: str) -> tuple[int, Lease]:
    """Take the lease of the database at ``path``: lock ``<path>.lock`` (never waiting), then
    record this process in the lease row with the next fence. Returns (the lock file's
    descriptor, the lease). ``StoreError`` naming the holder when another scheduler has it."""
    lock_path = path + ".lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StoreError(
            f"cannot open the scheduler's lock file {lock_path}: {exc.strerror}; the "
            f"scheduler needs to create and lock it beside the database"
        ) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                current = holder(conn)
            except sqlite3.Error:  # pragma: no cover - the database went away meanwhile
                current = None
            raise StoreError(
                f"another scheduler holds the SQLite store {path}: {_describe(current)}. "
                f"One scheduler runs per store: stop that one first, or open this store as "
                f"a client (role='client')"
            ) from None
        except OSError as exc:
            raise StoreError(
                f"cannot lock the scheduler's lock file {lock_path}: {exc.strerror}"
            ) from exc
        lease = _record(conn, path)
        note = f"{lease.pid} {lease.host} {lease.since.isoformat()} fence {lease.fence}\n"
        try:  # for a human who looks at the lock file; the row is what the store reads
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode(), 0)
        except OSError:  # pragma: no cover - a full disk: the row says the same
            pass
    except BaseException:
        os.close(fd)
        raise
    return fd, lease


def _record(conn: sqlite3.Connection, path: str) -> Lease:
    since = utc_now()
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "UPDATE lease SET fence = fence + 1, held = 1, pid = ?, host = ?, since = ? "
            "WHERE id = 1",
            (os.getpid(), socket.gethostname(), since.isoformat()),
        )
        fence = conn.execute("SELECT fence FROM lease WHERE id = 1").fetchone()[0]
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        rollback_quietly(conn)
        raise translate(exc, path, "taking the scheduler lease") from exc
    except BaseException:
        rollback_quietly(conn)
        raise
    return Lease(pid=os.getpid(), host=socket.gethostname(), since=since, fence=fence)


def check_fence(conn: sqlite3.Connection, path: str, fence: int) -> None:
    """Inside a write transaction: ``StoreError`` unless this scheduler's fence is current."""
    current = conn.execute("SELECT fence, held, pid, host FROM lease WHERE id = 1").fetchone()
    if current[0] != fence:
        raise StoreError(
            f"this scheduler's lease of {path} (fence {fence}) was taken over by pid "
            f"{current[2]} on host {current[3]} (fence {current[0]}); it may no longer write, "
            f"and nothing of this batch was written. Stop this scheduler"
        )


def release(conn: sqlite3.Connection | None, fd: int, fence: int) -> None:
    """Clear the lease row (if it is still ours) and unlock. Never raises: a close must finish;
    a row left behind names a holder whose lock is free, which the next scheduler overwrites."""
    if conn is not None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE lease SET held = 0 WHERE id = 1 AND fence = ?", (fence,))
            conn.execute("COMMIT")
        except sqlite3.Error:
            rollback_quietly(conn)
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)

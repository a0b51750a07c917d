"""``SqliteStore``: jobs kept in one SQLite file, across restarts, for one scheduler and any
number of client processes on the same machine (``sqlite:///path/work.db``).

Threads. ``sqlite3`` blocks, so every store object owns one thread (a single-worker executor)
and one connection made on it; each coroutine hands its call to that thread and awaits it, so
the event loop never waits on the disk. Calls of one store object run one at a time, in order.
A coroutine canceled while its call runs does not stop the call: the transaction commits or
rolls back whole.

Durability. WAL mode; ``synchronous="FULL"`` by default: ``write()`` returns after the commit
is on disk (one fsync of the WAL per commit), so a crash of the process, the OS or the power
loses nothing that was acknowledged. ``"NORMAL"`` skips that fsync (the WAL is synced at
checkpoints): still safe against a crash of the process, and the file is never damaged, but a
power loss or an OS crash may roll back the last commits before the checkpoint. ``"EXTRA"``
also syncs the directory. OFF is not offered.

The scheduler lease. A scheduler holds an exclusive ``flock`` on ``<path>.lock`` while it is
open (released by the kernel when its process dies) and records its pid, host, start and a
fencing token bumped at every acquisition in the ``lease`` table; every ``write()`` and
``prune()`` compares the token inside its transaction. A second scheduler fails at ``open``
with a ``StoreError`` naming the holder; clients open freely. After a crash, ``lease()`` still
names the dead holder until the next scheduler opens.

Clients and the inbox. ``submit`` stores jobs with ``admitted = 0``; ``inbox()`` returns those
rows (oldest first) until the scheduler writes them (an update, which sets ``admitted = 1``, or
a delete), so a scheduler crash loses none. ``request_cancel`` sets ``cancel_requested`` on a
non-terminal job; the request comes back from ``inbox()`` until the job is written terminal.
``load()`` returns admitted jobs only: a client's job that was never admitted comes back
through ``inbox()`` instead. ``wait_for_change`` polls ``PRAGMA data_version`` (which changes
when another connection commits) every ``poll_interval_s`` (10 ms by default: that bounds the
wake-up latency; each look is one hop to the store's thread, about 50 us, so about 0.5% of a
core while waiting); it also wakes for this object's own ``submit`` and ``request_cancel``.

Listing. Keyset pagination on ``seq`` (submission order, never reused): a page costs an index
seek plus the rows it returns. With no filter or one of namespace, status and kind, an index
has the filter as its prefix, so a page is O(page + log n) whatever else the tenant holds. With
two or three filters SQLite walks the index of one of them (its choice, from the statistics a
scheduler refreshes with ``PRAGMA optimize`` when it closes) and checks the others: a page
costs O(log n + the rows of that index it skips), which is large only for a rare combination
of common values. Cursors are signed with a key kept in the database, so a cursor made by
another store or for another query is a ``ValidationError`` at ``$.cursor``.

Paths. ``sqlite:///var/lib/work.db`` is the file ``/var/lib/work.db``: the path after the
third slash is absolute, as in ``file:///`` URLs (SQLAlchemy's four-slash form names the same
file; its three-slash relative form does not exist here). Build the URL from an absolute path:
``f"sqlite://{Path('work.db').resolve()}"``. ``:memory:`` is refused: an in-memory database
is not shared between processes and keeps nothing (use ``memory://``). Options come as
keywords or in the query string: ``sqlite:///var/lib/work.db?synchronous=NORMAL``.
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as _dt
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from .._errors import ConfigurationError, StoreError, ValidationError
from .._ir import Job
from .._validate import check_status
from . import _sqlite_schedules as schedules
from ._protocol import Inbox, JobKey, Lease, ListQuery, Recovered, Role, WriteBatch
from ._schedules import ScheduleState
from ._sqlite_db import SqliteDatabase
from ._sqlite_schema import SYNCHRONOUS_MODES

__all__ = ["SqliteStore"]

T = TypeVar("T")

_DEFAULTS: dict[str, Any] = {
    "synchronous": "FULL",
    "busy_timeout_s": 5.0,
    "poll_interval_s": 0.01,
    "max_size_mb": None,
}


class SqliteStore:
    """Jobs in a SQLite file (``sqlite:///absolute/path/work.db``); see the module docstring.

    Options (keywords, or the URL's query string):

    - ``synchronous``: ``"FULL"`` (default; a returned write survives a power loss),
      ``"NORMAL"`` (faster; survives a process crash, may lose the last commits to a power
      loss) or ``"EXTRA"``.
    - ``busy_timeout_s``: how long a transaction waits for another process's (default 5).
    - ``poll_interval_s``: how often ``wait_for_change`` looks (default 0.01).
    - ``max_size_mb``: refuse writes that would grow the file past this size, with a
      ``StoreError`` saying it is full (default: no limit but the disk's).

    Not thread-safe: one event loop uses a store object (it runs SQLite on a thread of its own).
    """

    #: The option names the constructor and the URL's query string accept.
    OPTIONS: ClassVar[tuple[str, ...]] = tuple(_DEFAULTS)
    #: Jobs survive the process.
    durable: bool = True

    def __init__(
        self,
        url: str,
        *,
        synchronous: str | None = None,
        busy_timeout_s: float | None = None,
        poll_interval_s: float | None = None,
        max_size_mb: int | None = None,
    ) -> None:
        path, from_url = _parse_url(url)
        given = {
            "synchronous": synchronous,
            "busy_timeout_s": busy_timeout_s,
            "poll_interval_s": poll_interval_s,
            "max_size_mb": max_size_mb,
        }
        options = dict(_DEFAULTS)
        for name, value in from_url.items():
            if given[name] is not None:
                raise ConfigurationError(
                    f"the SQLite store's option {name} is set twice, in the URL {url} and as a "
                    f"keyword; set it once"
                )
            options[name] = _from_text(name, value, url)
        options.update({name: value for name, value in given.items() if value is not None})
        _check_options(options, url)
        self.url = url
        #: The database file (absolute).
        self.path = path
        self.synchronous: str = options["synchronous"].upper()
        self.busy_timeout_s: float = float(options["busy_timeout_s"])
        self.poll_interval_s: float = float(options["poll_interval_s"])
        self.max_size_mb: int | None = options["max_size_mb"]
        self._db = SqliteDatabase(
            path,
            synchronous=self.synchronous,
            busy_timeout_s=self.busy_timeout_s,
            max_size_mb=self.max_size_mb,
        )
        self._executor: ThreadPoolExecutor | None = None
        self._role: Role | None = None
        self._local_change = False

    def __repr__(self) -> str:
        state = self._role or "closed"
        return f"SqliteStore({self.url!r}, {state})"

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        executor = self._executor
        if executor is None:
            raise StoreError(
                f"the SQLite store {self.path} is not open: await store.open(role) first"
            )
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    def _need_scheduler(self, what: str) -> None:
        if self._role != "scheduler":
            how = "not open" if self._role is None else "open as a client"
            raise StoreError(
                f"{what} on the SQLite store {self.path} is the scheduler's, and this store is "
                f"{how}; open it with role='scheduler' (one process holds that lease)"
            )

    # ---- open and close -------------------------------------------------------------------

    async def open(self, role: Role = "scheduler") -> None:
        """Connect, apply migrations, and as ``"scheduler"`` take the lease (``StoreError``
        naming the holder when another process has it). Idempotent for the same role."""
        if role not in ("scheduler", "client"):
            raise ValidationError(
                f"role must be 'scheduler' or 'client', got {role!r}", path="$.role"
            )
        if self._role is not None:
            if self._role == role:
                return
            raise StoreError(
                f"the SQLite store {self.path} is already open as {self._role}; close it "
                f"before opening it as {role}"
            )
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nsai-work-sqlite")
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._db.open, role)
        except BaseException:
            executor.submit(self._db.close)  # after the open, should it still be running
            executor.shutdown(wait=False)
            raise
        self._executor = executor
        self._role = role

    async def close(self) -> None:
        """Release the lease, the connection and the thread. Idempotent."""
        executor, self._executor, self._role = self._executor, None, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._db.close)
        finally:
            executor.shutdown(wait=False)

    # ---- the scheduler's ------------------------------------------------------------------

    async def write(self, batch: WriteBatch) -> None:
        """Commit ``batch`` in one transaction (inserts, then updates, deletes, state); returns
        once it is durable. ``ConflictError`` for an insert the store holds, ``StoreError`` for
        an update it does not, or when this scheduler's fence is no longer current: nothing
        of the batch is written then. The batch is read on the store's thread: leave it
        unchanged until this returns."""
        self._need_scheduler("write()")
        await self._call(self._db.write, batch)

    async def load(self) -> Recovered:
        """Every admitted non-terminal job in submission order, the core's state, and the rows
        set aside (moved to the quarantine table) by this call because they do not decode."""
        self._need_scheduler("load()")
        return await self._call(self._db.load)

    async def prune(self, finished_before: _dt.datetime, keep_max: int) -> int:
        """Drop finished jobs that finished before ``finished_before``, and the oldest
        finished beyond ``keep_max``; returns how many went."""
        if not isinstance(finished_before, _dt.datetime) or finished_before.tzinfo is None:
            raise ValidationError(
                f"finished_before must be a timezone-aware datetime, got {finished_before!r}",
                path="$.finished_before",
            )
        if isinstance(keep_max, bool) or not isinstance(keep_max, int) or keep_max < 0:
            raise ValidationError(
                f"keep_max must be an int >= 0, got {keep_max!r}", path="$.keep_max"
            )
        self._need_scheduler("prune()")
        return await self._call(self._db.prune, finished_before, keep_max)

    async def inbox(self, limit: int = 1000) -> Inbox:
        """At most ``limit`` jobs clients submitted that the scheduler has not written since
        (oldest first), and the cancel requests of non-terminal jobs; both come again until
        the scheduler's writes settle them."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError(f"limit must be an int >= 1, got {limit!r}", path="$.limit")
        self._need_scheduler("inbox()")
        self._local_change = False
        return await self._call(self._db.inbox, limit)

    # ---- anyone's -------------------------------------------------------------------------

    async def get_many(self, keys: Sequence[JobKey]) -> list[Job | None]:
        """The stored snapshot of each (tenant_id, id), None where there is none."""
        return await self._call(self._db.get_many, list(keys))

    async def owners(self, job_id: str) -> list[str]:
        """The tenants that have a job with this id, sorted."""
        return await self._call(self._db.owners, job_id)

    async def find_many(self, job_ids: Sequence[str]) -> dict[str, list[Job]]:
        """Every stored job with each of these ids, by tenant id; one read."""
        return await self._call(self._db.find_many, list(dict.fromkeys(job_ids)))

    async def list(self, query: ListQuery) -> tuple[list[Job], str | None]:
        """A page of the tenant's jobs, newest first, and the next page's cursor (None: the
        last page). ``ValidationError`` at ``$.cursor`` for a cursor this store did not return
        for this query, at ``$.limit`` for a limit below 1."""
        limit = query.limit
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError(f"limit must be an int >= 1, got {limit!r}", path="$.limit")
        if query.status is not None:
            check_status(query.status)
        return await self._call(self._db.list, query)

    async def submit(
        self, jobs: Sequence[Job], *, now: _dt.datetime | None = None
    ) -> builtins.list[str | None]:
        """Commit new jobs for the scheduler to admit, in one transaction (``ConflictError``,
        and nothing written, for a (tenant_id, id) the store holds), claiming their unique keys
        at ``now`` (default: the wall clock) in it: per job, None (committed) or the id of the
        job that holds its key (a duplicate, not committed)."""
        holders = await self._call(self._db.submit, list(jobs), now or _dt.datetime.now(_dt.UTC))
        self._local_change = True
        return holders

    async def claim_unique(
        self, jobs: Sequence[Job], now: _dt.datetime
    ) -> builtins.list[str | None]:
        """Claim each job's unique key unless a job holds it, in one transaction: per job,
        None (claimed) or the holder's id. SQLite's write lock serializes every process's
        claims; the table's primary key is (tenant_id, unique_key)."""
        return await self._call(self._db.claim_unique, list(jobs), now)

    async def release_unique(self, keys: Sequence[JobKey]) -> None:
        """Drop the claims these jobs made."""
        await self._call(self._db.release_unique, list(keys))

    # ---- cron schedules (stores/_sqlite_schedules.py) ----------------------------------------

    async def add_schedule(self, state: ScheduleState) -> ScheduleState:
        """Keep a schedule's state unless one is kept for its (tenant_id, name): the kept one."""
        return await self._call(self._db.run, "adding a schedule", True, schedules.add, state)

    async def schedules(self, tenant_id: str | None = None) -> builtins.list[ScheduleState]:
        """The schedules' states (of one tenant, or all), by tenant then name."""
        return await self._call(self._db.run, "reading schedules", False, schedules.read, tenant_id)

    async def advance_schedule(
        self,
        tenant_id: str,
        name: str,
        expected: _dt.datetime,
        settled_through: _dt.datetime,
        last_fire: _dt.datetime | None,
    ) -> bool:
        """Compare-and-set of a schedule's ``settled_through`` under the write lock."""
        return await self._call(
            self._db.run,
            "advancing a schedule",
            True,
            schedules.advance,
            tenant_id,
            name,
            expected,
            settled_through,
            last_fire,
        )

    async def pause_schedule(
        self, tenant_id: str, name: str, paused: bool, now: _dt.datetime
    ) -> ScheduleState | None:
        """Pause or resume (settling the pause's fires); the state then, or None."""
        return await self._call(
            self._db.run, "pausing a schedule", True, schedules.pause, tenant_id, name, paused, now
        )

    async def remove_schedule(self, tenant_id: str, name: str) -> bool:
        """Drop a schedule's state (False: none)."""
        return await self._call(
            self._db.run, "removing a schedule", True, schedules.remove, tenant_id, name
        )

    async def request_cancel(self, key: JobKey, reason: str) -> bool:
        """Ask the scheduler to cancel a job (False: no such job, or it is terminal). The
        request stays with the job until the scheduler writes it terminal."""
        done = await self._call(self._db.request_cancel, key, str(reason))
        if done:
            self._local_change = True
        return done

    async def wait_for_change(self, timeout: float) -> bool:
        """Wait until another connection committed (or this object submitted or asked to
        cancel) since the last ``inbox()`` or True answer (True), or ``timeout`` seconds passed
        (False). Polls every ``poll_interval_s``."""
        if not (isinstance(timeout, int | float) and timeout >= 0 and math.isfinite(timeout)):
            raise ValidationError(
                f"timeout must be finite seconds >= 0, got {timeout!r}", path="$.timeout"
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._local_change:
                self._local_change = False
                return True
            if await self._call(self._db.changed):
                return True
            left = deadline - loop.time()
            if left <= 0:
                return False
            await asyncio.sleep(min(self.poll_interval_s, left))

    async def lease(self) -> Lease | None:
        """The current holder of the scheduler lease as its row names it, or None."""
        return await self._call(self._db.lease)


# ---- the URL ------------------------------------------------------------------------------------


def _parse_url(url: str) -> tuple[str, dict[str, str]]:
    """(the absolute path, the options of the query string) of a ``sqlite://`` URL."""
    if not isinstance(url, str):
        raise ConfigurationError(f"a SQLite store URL is a str, got {url!r}")
    fix = "write sqlite:///absolute/path/work.db (three slashes, then the absolute path)"
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"malformed SQLite store URL {url!r} ({exc}); {fix}") from None
    if parts.scheme.lower() != "sqlite":
        raise ConfigurationError(f"a SQLite store URL starts with sqlite://, got {url!r}")
    path = unquote(parts.path)
    query = parts.query
    if ":memory:" in (parts.netloc, path.lstrip("/")) or "mode=memory" in query:
        raise ConfigurationError(
            f"{url!r}: an in-memory SQLite database keeps nothing and is not shared with client "
            f"processes; use memory:// for a store that keeps nothing, or {fix}"
        )
    if parts.netloc not in ("", "localhost"):
        raise ConfigurationError(
            f"{url!r} names a host ({parts.netloc!r}), or a relative path: a SQLite store is a "
            f"local file named by its absolute path; {fix}"
        )
    if parts.fragment:
        raise ConfigurationError(f"{url!r} has a #fragment, which a SQLite URL does not use; {fix}")
    if not path.strip("/"):
        raise ConfigurationError(f"{url!r} names no file; {fix}")
    if "\x00" in path:
        raise ConfigurationError(f"{url!r}: a path cannot hold a NUL character; {fix}")
    path = os.path.normpath("/" + path.lstrip("/"))
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True) if query else []
    except ValueError:
        raise ConfigurationError(
            f"{url!r}: the query string must be name=value pairs joined by &"
        ) from None
    options: dict[str, str] = {}
    for name, value in pairs:
        if name not in _DEFAULTS:
            raise ConfigurationError(
                f"{url!r}: unknown SQLite store option {name!r}; one of {', '.join(_DEFAULTS)}"
            )
        if name in options:
            raise ConfigurationError(f"{url!r}: the option {name} is given twice")
        options[name] = value
    return path, options


def _from_text(name: str, value: str, url: str) -> Any:
    if name == "synchronous":
        return value
    try:
        return int(value) if name == "max_size_mb" else float(value)
    except ValueError:
        kind = "an integer" if name == "max_size_mb" else "a number"
        raise ConfigurationError(f"{url!r}: {name} must be {kind}, got {value!r}") from None


def _check_options(options: dict[str, Any], url: str) -> None:
    synchronous = options["synchronous"]
    if not isinstance(synchronous, str) or synchronous.upper() not in SYNCHRONOUS_MODES:
        raise ConfigurationError(
            f"{url}: synchronous must be one of {', '.join(SYNCHRONOUS_MODES)} (OFF is not "
            f"offered: a power loss could damage the file), got {synchronous!r}"
        )
    for name, low, high in (("busy_timeout_s", 0.0, 86_400.0), ("poll_interval_s", 0.001, 10.0)):
        value = options[name]
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not (low <= value <= high):
            raise ConfigurationError(
                f"{url}: {name} must be seconds from {low:g} to {high:g}, got {value!r}"
            )
    size = options["max_size_mb"]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ConfigurationError(f"{url}: max_size_mb must be an int >= 1, got {size!r}")

"""Clients: processes that use the jobs of a store a scheduler (in another process) serves.

``Client`` is an engine behind the same ``Verbs`` as the scheduler, carried out against a store
opened with ``role="client"``:

- a submit validates the jobs (``validate_new_job``, as the scheduler does) and commits them
  to the store (``store.submit``: returns after the commit; a (tenant_id, id) the store holds
  is a ``ConflictError``). The scheduler admits them from its inbox (engine/_inbox.py); a job
  it declines (quota, rate, full queue, no backend) ends ``canceled`` with ``cancel_reason
  "rejected"`` and the admission error as its ``error``;
- get and list read the store (``get_many``, ``owners``, ``list``): what the scheduler last
  committed, which is at most its ``store_flush_s`` (5 ms) behind its memory;
- cancel commits a request (``store.request_cancel``) that the scheduler carries out; it
  returns the job as it is then (not yet canceled: wait for it to see it end);
- wait, wait_many and as_completed are served by one poller task per client, which runs while
  something is watched. It reads the watched jobs (one ``get_many``) whenever
  ``store.wait_for_change`` reports a change (SQLite reports any commit of another process, so
  the scheduler's too, within its own ``poll_interval_s``: 10 ms), and when none is reported
  after ``poll_interval_s`` (10 ms; doubled after each read that finds nothing finished, up to
  5 times that), for stores that report only clients' commits; PostgreSQL's NOTIFY reports
  each of the scheduler's commits. Reads are paced so that they take at most a tenth of the
  time, whatever the number of watched jobs (but a read of a few jobs from a remote database,
  mostly its round trip, does not hold back the next). Measured (bench/clients.py): a client
  sees its job end 20-28 ms (p50) after submitting it, on SQLite and on PostgreSQL: the
  scheduler notices the submit (SQLite: within its store's 10 ms poll), the end is committed
  within ``store_flush_s`` (5 ms), the client notices that commit (SQLite: its store's poll).

The verbs that need the scheduler's memory (``stats``, ``set_tenant``, ``wait_idle``...) are
not on a client. A client needs a store that other processes can open: ``memory://`` (or any
store whose ``durable`` is False) is refused with a ``ConfigurationError``.

``SyncClient`` is the blocking face, on a loop thread of its own (``LoopThread``, shared with
``SyncScheduler``); ``work.connect(store=...)`` returns one, open.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from .._errors import ConfigurationError, NotFoundError, NotStartedError, StoreError
from .._ir import TERMINAL_STATUSES, Actor, Job
from .._schedule import Schedule
from .._validate import DEFAULT_MAX_PAYLOAD_BYTES, validate_new_job
from ..stores import JobKey, ListQuery, Store, redact, store_from_url
from ._audit import pack
from ._blocking import SyncVerbs
from ._cron_rules import CronSpec
from ._lookups import JobLookups
from ._loop_thread import LoopThread
from ._unique import answer_duplicates, holders_of, kept
from ._verbs import Page, Verbs
from ._watchers import Watcher

if TYPE_CHECKING:
    from ..telemetry.otel import Tracing

__all__ = ["Client", "StoreClient", "SyncClient", "connect"]

_log = logging.getLogger("nsai_work.client")
#: While no watched job finishes, the interval between polls doubles up to this many times
#: ``poll_interval_s``.
_BACKOFF: Final = 5.0
#: A read's next one comes at least this many times its own duration after it starts, so
#: reading takes at most 1/_PACE of the time (reading many watched jobs is not free) ...
_PACE: Final = 10.0
#: ... but no later than this per watched job after it: a read of a few jobs from a remote
#: database takes its round trip, not work (reading a job costs about 10 us on SQLite).
_PACE_PER_JOB_S: Final = 0.0001
#: How long the poller waits before it tries again after the store failed.
_RETRY_S: Final = 0.5


def _check_store(store: object) -> str | Store:
    """A store a client may use: a URL, or a Store object, that other processes can open."""
    if isinstance(store, str):
        scheme = store.split("://", 1)[0].lower() if "://" in store else ""
        if scheme == "memory":
            raise ConfigurationError(_NOT_SHARED.format(url=store))
        return store
    if not isinstance(store, Store):
        raise ConfigurationError(
            f"store is a URL (sqlite:///path/work.db, postgresql://user@host/db) or a Store "
            f"object, got {type(store).__name__}"
        )
    if not store.durable:
        raise ConfigurationError(_NOT_SHARED.format(url=store.url))
    return store


_NOT_SHARED: Final = (
    "a client works with a scheduler in another process through a store both open, and {url} "
    "keeps its jobs in one process's memory: no other process can see them. Use a store that "
    "keeps jobs (sqlite:///path/work.db, postgresql://user@host/db) for the scheduler and its "
    "clients, or, in the scheduler's own process, its verbs (work.Scheduler, work.SyncScheduler)"
)


def _check_interval(value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0.001 <= value <= 10.0
    ):
        raise ConfigurationError(f"poll_interval_s is seconds from 0.001 to 10, got {value!r}")
    return float(value)


def _check_payload_limit(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigurationError(f"max_payload_bytes must be an int >= 0, got {value!r}")
    return value


def _which(url: object, store: object, api_key: object) -> str:
    """Which client the arguments ask for: "http" (a server's URL) or "store"."""
    if (url is None) == (store is None):
        raise ConfigurationError(
            "a client reaches jobs through a server, work.Client(url, api_key=...), or through "
            "a store a scheduler serves, work.Client(store=...): give one of url and store"
            + ("" if url is None else f"; got url={url!r} and store={store!r}")
        )
    if store is not None and api_key is not None:
        raise ConfigurationError(
            "api_key is a server's (work.Client(url, api_key=...)); a client of a store "
            "(store=...) takes none"
        )
    return "store" if url is None else "http"


class Client(Verbs):
    """A client of the scheduler that serves jobs somewhere else, with the scheduler's verbs on
    jobs (``submit``, ``get``, ``list``, ``wait``, ``cancel``, ``retry``...):

    - ``work.Client(url, api_key=...)``: of a server's HTTP API (``nsai-work server``), with
      the verbs of the key's tenant (``stats`` too); see docs/service.md;
    - ``work.Client(store=url)``: of a store (SQLite, PostgreSQL) that a scheduler in another
      process serves; see docs/stores.md, "Clients".

    ``async with work.Client(...) as client:``; the blocking twin is ``work.SyncClient`` (or
    ``work.connect(...)``). Either is an instance of ``Client``: ``StoreClient`` or
    ``HttpClient``, chosen by the arguments.
    """

    _reads_lag = False
    _loop: asyncio.AbstractEventLoop
    _state: str

    def __new__(
        cls,
        url: str | None = None,
        *,
        store: str | Store | None = None,
        api_key: str | None = None,
        poll_interval_s: float = 0.01,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        timeout_s: float = 30.0,
    ) -> Client:
        if cls is Client:
            if _which(url, store, api_key) == "http":
                from ._http_client import HttpClient

                cls = HttpClient
            else:
                cls = StoreClient
        return object.__new__(cls)

    def __init__(
        self,
        url: str | None = None,
        *,
        store: str | Store | None = None,
        api_key: str | None = None,
        poll_interval_s: float = 0.01,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        timeout_s: float = 30.0,
    ) -> None:
        raise NotImplementedError  # pragma: no cover - __new__ makes a subclass

    async def __aenter__(self) -> Client:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def opened(self) -> bool:
        """True between ``open()`` and ``close()``."""
        raise NotImplementedError

    async def open(self) -> Client:
        """Open the client (idempotent)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close the client (idempotent); waits still in progress raise ``NotStartedError``."""
        raise NotImplementedError

    def call_threadsafe(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the client's loop soon (the blocking face's hand-off)."""
        self._loop.call_soon_threadsafe(callback)

    def abandon(self) -> None:
        """The loop is gone (the blocking face's thread died): the client is closed."""
        self._state = "closed"

    # ---- cron schedules live in the scheduler's process ----------------------------------------

    async def _cron_declare(self, spec: CronSpec) -> Schedule:
        raise _no_schedules("cron")

    async def _cron_list(self, tenant_id: str | None) -> builtins.list[Schedule]:
        raise _no_schedules("schedules")

    async def _cron_pause(self, name: object, tenant_id: str | None, paused: bool) -> Schedule:
        raise _no_schedules("pause_schedule" if paused else "resume_schedule")

    async def _cron_remove(self, name: object, tenant_id: str | None) -> Schedule:
        raise _no_schedules("remove_schedule")


def _no_schedules(verb: str) -> ConfigurationError:
    return ConfigurationError(
        f"{verb}(): cron schedules are declared and managed in the scheduler's process "
        f"(work.cron on a Scheduler, a SyncScheduler or the default scheduler), not through a "
        f"client"
    )


class StoreClient(JobLookups, Client):
    """A client of a store that a scheduler serves: ``async with work.Client(store=url) as c:``.

    Its verbs on jobs are the scheduler's (``submit``, ``get``, ``list``, ``wait``, ``cancel``,
    ``retry``...), with the same arguments; they reach the scheduler through the store (see the
    module docstring for what that means for each). ``store`` is a URL (``sqlite:///...``) or a
    Store object, not opened yet. ``poll_interval_s``: how long a wait waits for a change the
    store reports before it reads the watched jobs anyway (doubled while none of them finishes,
    up to 5 times). ``max_payload_bytes``: the largest JSON payload (and metadata) a submit
    sends; the scheduler applies its own limit too.
    """

    #: The OpenTelemetry submit spans of this client (``telemetry.otel.instrument``), or None.
    _tracing: Tracing | None = None

    def __init__(
        self,
        url: str | None = None,
        *,
        store: str | Store | None = None,
        api_key: str | None = None,
        poll_interval_s: float = 0.01,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        timeout_s: float = 30.0,
    ) -> None:
        _which(url, store, api_key)
        self._store_spec = _check_store(store)
        self.poll_interval_s = _check_interval(poll_interval_s)
        self.max_payload_bytes = _check_payload_limit(max_payload_bytes)
        self._state = "new"
        self._watchers: dict[JobKey, builtins.list[Watcher]] = {}
        self._poller: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Client({self.url!r}, {self._state})"

    @property
    def url(self) -> str:
        """The store's URL, without a password."""
        spec = self._store_spec
        return redact(spec) if isinstance(spec, str) else spec.url

    # ---- lifecycle ----------------------------------------------------------------------------

    @property
    def opened(self) -> bool:
        """True between ``open()`` and ``close()``."""
        return self._state == "open"

    async def open(self) -> StoreClient:
        """Open the store as a client (idempotent): a malformed or unreachable URL fails here."""
        if self._state == "open":
            return self
        if self._state == "closed":
            raise NotStartedError("this Client was closed; create a new one")
        spec = self._store_spec
        store = store_from_url(spec) if isinstance(spec, str) else spec
        if not store.durable:  # a URL of a scheme that keeps nothing
            raise ConfigurationError(_NOT_SHARED.format(url=store.url))
        await store.open("client")
        self._store: Store = store
        self._loop = asyncio.get_running_loop()
        self._state = "open"
        return self

    async def close(self) -> None:
        """Close the store (idempotent); waits still in progress raise ``NotStartedError``."""
        if self._state != "open":
            self._state = "closed"
            return
        self._state = "closed"
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
        self._fail_all(NotStartedError("the client was closed while this call waited"))
        await self._store.close()

    def _require_open(self) -> None:
        if self._state != "open":
            how = "was closed" if self._state == "closed" else "is not open"
            raise NotStartedError(
                f"this Client {how}: use `async with work.Client(store=...) as client:` or "
                f"`await client.open()` (blocking: `work.connect(store=...)`)"
            )

    # ---- what the verbs do --------------------------------------------------------------------

    @property
    def _engine(self) -> StoreClient:
        return self

    async def _admit(self, jobs: Sequence[Job], *, batch: bool) -> builtins.list[Job]:
        """Validate the jobs and commit them for the scheduler (all or nothing); the jobs as
        stored: pending, until the scheduler admits them. A job whose unique key another
        holds is not committed: that one comes back instead, with ``duplicate=True``."""
        self._require_open()
        validated = [
            validate_new_job(job, index if batch else None, self.max_payload_bytes)
            for index, job in enumerate(jobs)
        ]
        if not validated:
            return validated
        if self._tracing is not None:  # (telemetry/otel.py: None unless instrumented)
            validated = self._tracing.submitting(validated)
        holders = await self._store.submit(validated)
        duplicates = {n: holder for n, holder in enumerate(holders or ()) if holder is not None}
        if not duplicates:
            return validated
        found = await holders_of(lambda *_: None, self._store, validated, duplicates)
        return answer_duplicates(validated, kept(validated, duplicates), duplicates, found)

    async def _owners(self, job_id: str) -> builtins.list[str]:
        """The tenants with a job with this id in the store."""
        self._require_open()
        return await self._store.owners(job_id)

    async def _find_many(self, job_ids: Sequence[str]) -> dict[str, builtins.list[Job]]:
        """Every job with each of these ids in the store (one query)."""
        self._require_open()
        return await self._store.find_many(job_ids) if job_ids else {}

    async def _read(self, keys: Sequence[JobKey]) -> builtins.list[Job | None]:
        """Each job as the store holds it (None when it does not)."""
        self._require_open()
        return await self._store.get_many(keys)

    def not_found(self, job_id: str) -> NotFoundError:
        """The one answer for an unknown id, another tenant's job, or a pruned one."""
        return NotFoundError(
            f"no job {job_id!r} in the store {self.url}: unknown, another tenant's, or "
            f"finished and pruned"
        )

    def _current(self, job: Job) -> Job:
        """A client sees the job as the store holds it."""
        return job

    async def _list(self, query: ListQuery) -> Page:
        """A page from the store's indexes."""
        self._require_open()
        jobs, next_cursor = await self._store.list(query)
        return Page(jobs=jobs, next_cursor=next_cursor)

    async def _cancel(self, key: JobKey, reason: str, actor: Actor | None = None) -> Job:
        """Ask the scheduler to cancel the job; the job as it is once the request is committed
        (it may have finished meanwhile: then the request is moot)."""
        self._require_open()
        await self._store.request_cancel(key, pack(reason, actor))
        return await self._stored(key)

    # ---- waiting: the poller ------------------------------------------------------------------

    def _watch(self, job_id: str, watcher: Watcher) -> None:
        """Have ``watcher.done(job)`` called when the job is terminal in the store."""
        self._require_open()
        tenant_id = watcher.tenant_of(job_id)
        if tenant_id is None:  # pragma: no cover - Verbs watches only jobs it has looked up
            return
        self._watchers.setdefault((tenant_id, job_id), []).append(watcher)
        if self._poller is None:
            self._poller = self._loop.create_task(self._poll(), name="nsai-work-client-poller")

    def _unwatch(self, job_id: str, watcher: Watcher) -> None:
        tenant_id = watcher.tenant_of(job_id)
        if tenant_id is None:  # finished: it left the watchers when it was told
            return
        key = (tenant_id, job_id)
        found = self._watchers.get(key)
        if found is not None and watcher in found:
            found.remove(watcher)
            if not found:
                del self._watchers[key]

    async def _poll(self) -> None:
        """While something is watched: read the watched jobs, tell the watchers of those that
        finished; wake on a change the store reports, or after the interval. While the store
        fails it tries again every ``_RETRY_S``; an unexpected error ends every wait with it."""
        loop = self._loop
        store = self._store
        shortest = self.poll_interval_s
        interval = shortest
        earliest = 0.0  # loop time before which the next poll does not start (pacing)
        try:
            while self._watchers:
                try:
                    await store.wait_for_change(interval)
                    pause = earliest - loop.time()
                    if pause > 0:
                        await asyncio.sleep(pause)
                    if not self._watchers:
                        break
                    started = loop.time()
                    watched = len(self._watchers)
                    finished = await self._look()
                except StoreError as exc:
                    _log.warning("nsai-work client: reading %s failed (%s); again", self.url, exc)
                    await asyncio.sleep(_RETRY_S)
                    continue
                took = loop.time() - started
                earliest = started + min(took * _PACE, watched * _PACE_PER_JOB_S)
                interval = shortest if finished else min(interval * 2, shortest * _BACKOFF)
        except Exception as exc:  # a bug: say so, and let no wait hang
            _log.exception("nsai-work client: the poller of %s failed", self.url)
            self._fail_all(exc)
        finally:
            if self._poller is asyncio.current_task():
                self._poller = None

    def _fail_all(self, error: BaseException) -> None:
        """End every wait in progress with ``error``."""
        watchers = {id(w): w for found in self._watchers.values() for w in found}
        self._watchers.clear()
        for watcher in watchers.values():
            watcher.fail(error)

    async def _look(self) -> int:
        """Read every watched job once; tell the watchers of the finished ones. How many
        finished. A watched job the store no longer holds finished and was pruned (retention)
        before a read saw it: its waits raise ``NotFoundError``."""
        keys = builtins.list(self._watchers)
        found = await self._store.get_many(keys)
        finished = 0
        for key, job in zip(keys, found, strict=True):
            if job is not None and job.status not in TERMINAL_STATUSES:
                continue
            watchers = self._watchers.pop(key, None)
            if watchers is None:  # unwatched while the read was in flight
                continue
            finished += 1
            for watcher in watchers:
                if job is None:
                    watcher.fail(self._pruned(key[1]))
                else:
                    watcher.done(job)
        return finished

    def _pruned(self, job_id: str) -> NotFoundError:
        return NotFoundError(
            f"job {job_id!r} left the store {self.url} while this call waited for it: it "
            f"finished and was pruned (the scheduler's finished_ttl_s and finished_max) before "
            f"a read saw it; wait sooner, or keep finished jobs longer"
        )


class SyncClient(LoopThread[Client], SyncVerbs):
    """The blocking client: ``with work.connect(url, api_key=...) as c:`` (a server's API) or
    ``with work.connect(store=url) as c:`` (a store a scheduler serves); verbs wait for their
    answer.

    The same verbs on jobs as ``work.SyncScheduler`` (see ``work.Client``); takes ``Client``'s
    options, and runs a ``Client`` on a loop thread of its own. ``work.connect(...)`` returns
    one open; with a server's URL it is a ``SyncHttpClient``, which has ``stats`` too.
    """

    _not_started = (
        "this SyncClient is not open: use `with work.connect(...) as client:` (or call open())"
    )
    _dead_hint = "close it and connect again"
    _whose = "the client's"
    _thread_name = "nsai-work-client"

    def __new__(
        cls,
        url: str | None = None,
        *,
        store: str | Store | None = None,
        api_key: str | None = None,
        poll_interval_s: float = 0.01,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        timeout_s: float = 30.0,
    ) -> SyncClient:
        if cls is SyncClient and _which(url, store, api_key) == "http":
            from ._http_client import SyncHttpClient

            cls = SyncHttpClient
        return object.__new__(cls)

    def __init__(
        self,
        url: str | None = None,
        *,
        store: str | Store | None = None,
        api_key: str | None = None,
        poll_interval_s: float = 0.01,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        timeout_s: float = 30.0,
    ) -> None:
        super().__init__()
        options: dict[str, Any] = {
            "store": store,
            "api_key": api_key,
            "poll_interval_s": poll_interval_s,
            "max_payload_bytes": max_payload_bytes,
            "timeout_s": timeout_s,
        }
        Client(url, **options)  # checks the options now, not at open()
        self._url = url
        self._options = options

    def __enter__(self) -> SyncClient:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def opened(self) -> bool:
        """True between ``open()`` and ``close()``, unless the loop thread died."""
        return self._engine is not None and self._engine.opened and self._death is None

    @property
    def engine(self) -> Client:
        """The async client inside (``NotStartedError`` when it is not open)."""
        if self._engine is None:
            raise NotStartedError(self._not_started)
        return self._engine

    def open(self) -> SyncClient:
        """Start the loop thread and open the client (idempotent)."""
        with self._lock:
            self._start_engine(lambda: Client(self._url, **self._options), _open)
        return self

    def close(self) -> None:
        """Close the client and stop its thread (idempotent)."""
        with self._lock:
            self._stop_engine(_close)


async def _open(client: Client) -> Client:
    return await client.open()


async def _close(client: Client) -> None:
    await client.close()


def connect(
    url: str | None = None,
    *,
    store: str | Store | None = None,
    api_key: str | None = None,
    poll_interval_s: float = 0.01,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    timeout_s: float = 30.0,
) -> SyncClient:
    """A blocking client, open: of a server's API, ``work.connect("http://host:8080",
    api_key=...)``, or of the store a scheduler serves, ``work.connect(store=url)``. See
    ``work.Client`` for what each verb and option does."""
    client = SyncClient(
        url,
        store=store,
        api_key=api_key,
        poll_interval_s=poll_interval_s,
        max_payload_bytes=max_payload_bytes,
        timeout_s=timeout_s,
    )
    return client.open()

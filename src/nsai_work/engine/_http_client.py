"""``HttpClient``: the verbs of a server's HTTP API, as ``work.Client(url, api_key=...)``.

It is a ``Client``: the verbs are ``Verbs``' (the same arguments, checks and errors as the
scheduler's), carried out by requests to the server, which runs the same verbs as the key's
caller. What a request looks like and how an answer or a problem becomes a Job or an error is
``nsai_work._wire``'s, shared with the server. At ``open()`` the client asks the server whose
key it holds (``GET /v1/auth``): with a tenant's key it is scoped to that tenant exactly as
``scheduler.as_tenant(tenant)`` is (``list()`` needs no tenant, another tenant's id is refused),
with an admin key it has full rights, as a ``Scheduler`` does.

Each verb is one request, but waits: ``wait``, ``wait_many`` and ``as_completed`` long-poll
``POST /v1/jobs/wait`` (at most 60 s a poll, again until their own timeout). Errors come back as
the class the server raised (``ValidationError`` with its path, rule and index,
``NotFoundError``...); a server that cannot be reached is a ``NotStartedError``, a key it
refuses a ``ConfigurationError``.

``SyncHttpClient`` is the blocking face (``work.connect(url, api_key=...)``), a ``SyncClient``:
the same coroutines on a loop thread of its own.
"""

from __future__ import annotations

import asyncio
import builtins
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import msgspec

from .._bulk import BulkFilter, BulkResult
from .._errors import (
    ConfigurationError,
    NotFoundError,
    NotStartedError,
    ValidationError,
    WaitTimeoutError,
    WorkError,
)
from .._ir import TERMINAL_STATUSES, Job
from .._schedule import Schedule, ScheduleList
from .._stats import Stats, TenantStats
from .._validate import DEFAULT_MAX_PAYLOAD_BYTES, check_status, validate_new_job
from .._wire import (
    MAX_POLL_S,
    PREFIX,
    PROBLEM_TYPE,
    Caller,
    JobBatch,
    JobPage,
    Problem,
    WaitResult,
    error_from_problem,
)
from ..stores import JobKey, ListQuery, Store
from ._blocking import blocking, blocking_iter
from ._client import Client, SyncClient, _check_payload_limit
from ._verbs import Engine, Page, Verbs, check_timeout
from ._watchers import Watcher

__all__ = ["Caller", "HttpClient", "SyncHttpClient"]

T = TypeVar("T")


_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def _decoder(kind: Any) -> msgspec.json.Decoder[Any]:
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    return decoder


_encoder = msgspec.json.Encoder()


class HttpClient(Client):
    """A client of a server's HTTP API: ``async with work.Client(url, api_key=key) as c:``.

    ``url`` is the server's (``http://127.0.0.1:8080``; a path prefix is kept, for a server
    behind a proxy), ``api_key`` a key of ``nsai-work keys create``. ``timeout_s``: how long a
    request may take (a long poll gets its own time on top). ``max_payload_bytes``: the largest
    JSON payload (and metadata) a submit sends. ``store`` and ``poll_interval_s`` are a store
    client's; here they are not used."""

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
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"url is a server's http:// or https:// URL, got {url!r}")
        if store is not None:
            raise ConfigurationError("give url or store, not both")
        if api_key is not None and not isinstance(api_key, str):
            raise ConfigurationError(f"api_key is a string, got {type(api_key).__name__}")
        if (
            isinstance(timeout_s, bool)
            or not isinstance(timeout_s, int | float)
            or not (0 < timeout_s <= 3600)
        ):
            raise ConfigurationError(f"timeout_s is seconds, above 0 up to 3600; got {timeout_s!r}")
        self.url = url.rstrip("/")
        self.timeout_s = float(timeout_s)
        self.max_payload_bytes = _check_payload_limit(max_payload_bytes)
        self._api_key = api_key
        self._state = "new"
        self._caller: Caller | None = None
        self._http: Any = None

    def __repr__(self) -> str:
        return f"HttpClient({self.url!r}, {self._state})"

    # ---- lifecycle ----------------------------------------------------------------------------

    @property
    def opened(self) -> bool:
        """True between ``open()`` and ``close()``."""
        return self._state == "open"

    @property
    def caller(self) -> Caller:
        """Whose key this client holds (known once it is open)."""
        if self._caller is None:
            raise NotStartedError(self._closed_message())
        return self._caller

    async def open(self) -> HttpClient:
        """Connect and ask the server whose key this is (idempotent): an unreachable server
        (``NotStartedError``) or a key it refuses (``ConfigurationError``) fails here."""
        if self._state == "open":
            return self
        if self._state == "closed":
            raise NotStartedError("this Client was closed; create a new one")
        import httpx

        headers = {"Accept": "application/json", "User-Agent": "nsai-work"}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key}"
        self._http = httpx.AsyncClient(
            base_url=self.url + PREFIX, headers=headers, timeout=self.timeout_s
        )
        self._loop = asyncio.get_running_loop()
        self._state = "open"
        try:
            self._caller = await self._call("GET", "/auth", Caller)
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        """Close the connections (idempotent)."""
        state, self._state = self._state, "closed"
        if state == "open" and self._http is not None:
            await self._http.aclose()

    def _closed_message(self) -> str:
        how = "was closed" if self._state == "closed" else "is not open"
        return (
            f"this Client {how}: use `async with work.Client(url, api_key=...) as client:` or "
            f"`await client.open()` (blocking: `work.connect(url, api_key=...)`)"
        )

    # ---- requests -----------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        kind: Any,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        extra_time: float = 0.0,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """One request; its answer decoded as ``kind``, or its problem raised as the error."""
        if self._state != "open":
            raise NotStartedError(self._closed_message())
        import httpx

        if asyncio.current_task() is None:
            # The blocking face runs a verb's first step eagerly, outside any task; httpx
            # (through sniffio) needs one: go on as the task the face makes after this step.
            await asyncio.sleep(0)
        content = None if body is None else _encoder.encode(body)
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = await self._http.request(
                method,
                path,
                content=content,
                params=query,
                headers=_headers(content is not None, headers),
                timeout=self.timeout_s + extra_time,
            )
        except httpx.TransportError as exc:
            raise NotStartedError(
                f"the server {self.url} cannot be reached ({type(exc).__name__}: {exc}); is "
                f"`nsai-work server` running there?"
            ) from None
        if response.status_code >= 400:
            raise _error(response)
        return _decoder(kind).decode(response.content)

    @staticmethod
    def _job_path(job_id: object, action: str = "") -> str:
        if not isinstance(job_id, str):
            raise ValidationError(
                f"a job id is a string, got {type(job_id).__name__}", path="$.job_id"
            )
        if not job_id:
            raise NotFoundError("no job '': a job id is not empty")
        return f"/jobs/{quote(job_id, safe='')}{action}"

    # ---- what Verbs calls ---------------------------------------------------------------------

    @property
    def _engine(self) -> Engine:
        # (Verbs calls only _admit, _one, _current and _list here: the waits, cancel and retry
        # are one request each, below)
        return self  # type: ignore[return-value]

    @property
    def _scope(self) -> str | None:
        caller = self._caller
        return None if caller is None or caller.admin else caller.tenant_id

    async def _admit(self, jobs: Sequence[Job], *, batch: bool) -> builtins.list[Job]:
        """Check the jobs here as the server will (a bad job fails before any request), then
        submit them in one request (all or nothing)."""
        validated = [
            validate_new_job(job, index if batch else None, self.max_payload_bytes)
            for index, job in enumerate(jobs)
        ]
        trace = _trace_headers() if "opentelemetry.trace" in sys.modules else None
        if not batch:
            return [await self._call("POST", "/jobs", Job, body=validated[0], headers=trace)]
        if not validated:
            return []
        batch_body = JobBatch(jobs=validated)
        answer = await self._call("POST", "/jobs/batch", JobBatch, body=batch_body, headers=trace)
        return answer.jobs  # type: ignore[no-any-return]

    async def _one(self, job_id: object, tenant_id: object) -> Job:
        """The job as the server has it now."""
        params = {"tenant_id": tenant_id}
        return await self._call("GET", self._job_path(job_id), Job, params=params)  # type: ignore[no-any-return]

    def _current(self, job: Job) -> Job:
        return job

    async def _list(self, query: ListQuery) -> Page:
        """A page of the server's list."""
        params = {
            "tenant_id": query.tenant_id,
            "namespace": query.namespace,
            "status": None if query.status is None else str(query.status),
            "kind": query.kind,
            "limit": query.limit,
            "cursor": query.cursor,
        }
        page = await self._call("GET", "/jobs", JobPage, params=params)
        return Page(jobs=page.jobs, next_cursor=page.next_cursor)

    async def _poll(
        self, ids: builtins.list[str], timeout: float, tenant_id: str | None, return_when: str
    ) -> WaitResult:
        body = {"job_ids": ids, "timeout": timeout, "return_when": return_when}
        if tenant_id is not None:
            body["tenant_id"] = tenant_id
        return await self._call(  # type: ignore[no-any-return]
            "POST", "/jobs/wait", WaitResult, body=body, extra_time=timeout
        )

    # ---- the verbs that are one request each (checked as Verbs checks them) -------------------

    async def wait(
        self, job_id: str, timeout: float | None = None, *, tenant_id: str | None = None
    ) -> Job:
        return (await self.wait_many([job_id], timeout, tenant_id=tenant_id))[0]

    async def wait_many(
        self,
        job_ids: Iterable[str],
        timeout: float | None = None,
        *,
        tenant_id: str | None = None,
    ) -> builtins.list[Job]:
        ids = _ids(job_ids)
        tenant_id = self._tenant(tenant_id)
        check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = MAX_POLL_S if deadline is None else max(0.0, deadline - time.monotonic())
            result = await self._poll(ids, min(left, MAX_POLL_S), tenant_id, "all")
            if result.done:
                return result.jobs
            if deadline is not None and time.monotonic() >= deadline:
                waiting = [j for j in result.jobs if j.status not in TERMINAL_STATUSES]
                one = f" (job {ids[0]} is {waiting[0].status})" if len(ids) == 1 else ""
                raise WaitTimeoutError(
                    f"{len({j.id for j in waiting})} of {len(ids)} jobs are not finished after "
                    f"{timeout} s{one}"
                )

    async def as_completed(
        self,
        job_ids: Iterable[str],
        timeout: float | None = None,
        *,
        tenant_id: str | None = None,
    ) -> AsyncIterator[Job]:
        ids = _ids(job_ids)
        tenant_id = self._tenant(tenant_id)
        check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        result = (
            await self._poll(ids, 0.0, tenant_id, "all") if ids else WaitResult(jobs=[], done=True)
        )
        pending: dict[str, None] = {}
        for job in result.jobs:
            if job.status in TERMINAL_STATUSES:
                yield job
            else:
                pending[job.id] = None
        while pending:
            left = MAX_POLL_S if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeoutError(f"not every job finished after {timeout} s")
            result = await self._poll(
                builtins.list(pending), min(left, MAX_POLL_S), tenant_id, "first"
            )
            for job in result.jobs:
                if job.status in TERMINAL_STATUSES and job.id in pending:
                    del pending[job.id]
                    yield job

    async def cancel(
        self, job_id: str, reason: str | None = None, *, tenant_id: str | None = None
    ) -> Job:
        if reason is not None and not isinstance(reason, str):
            raise ValidationError(f"reason is a string, got {reason!r}", path="$.reason")
        params = {"tenant_id": self._tenant(tenant_id)}
        path = self._job_path(job_id, "/cancel")
        return await self._call("POST", path, Job, body={"reason": reason}, params=params)  # type: ignore[no-any-return]

    async def retry(self, job_id: str, *, tenant_id: str | None = None) -> Job:
        params = {"tenant_id": self._tenant(tenant_id)}
        return await self._call("POST", self._job_path(job_id, "/retry"), Job, params=params)  # type: ignore[no-any-return]

    async def _bulk(self, action: Literal["cancel", "retry"], where: BulkFilter) -> BulkResult:
        """``POST /v1/ops/<action>`` (admin keys), the filter checked here as the server checks
        it."""
        where.check()
        where.tenant_id = self._tenant(where.tenant_id)
        if where.status is not None:
            where.status = check_status(where.status)
        return await self._call("POST", f"/ops/{action}", BulkResult, body=where)  # type: ignore[no-any-return]

    for _verb in (wait, wait_many, as_completed, cancel, retry):
        _verb.__doc__ = getattr(Verbs, _verb.__name__).__doc__
    del _verb

    # ---- beyond the verbs on jobs -------------------------------------------------------------

    async def stats(self) -> Stats | TenantStats:
        """The scheduler's stats: the whole scheduler's (``work.Stats``) with an admin key, the
        key's tenant's (``work.TenantStats``) with a tenant's key."""
        return await self._call("GET", "/stats", Stats if self.caller.admin else TenantStats)  # type: ignore[no-any-return]

    async def request(self, method: str, path: str, /, *, body: Any = None, **params: Any) -> Any:
        """Any call of the API (``path`` under ``/v1``), its answer as plain JSON values."""
        return await self._call(method, path, Any, body=body, params=params)

    # ---- cron schedules (declared in the scheduler's process; listed and changed here) --------

    async def _cron_list(self, tenant_id: str | None) -> builtins.list[Schedule]:
        found = await self._call("GET", "/schedules", ScheduleList, params={"tenant_id": tenant_id})
        return found.schedules  # type: ignore[no-any-return]

    async def _cron_pause(self, name: object, tenant_id: str | None, paused: bool) -> Schedule:
        path = self._schedule_path(name, "/pause" if paused else "/resume")
        return await self._call("POST", path, Schedule, params={"tenant_id": tenant_id})  # type: ignore[no-any-return]

    async def _cron_remove(self, name: object, tenant_id: str | None) -> Schedule:
        path = self._schedule_path(name)
        return await self._call("DELETE", path, Schedule, params={"tenant_id": tenant_id})  # type: ignore[no-any-return]

    @staticmethod
    def _schedule_path(name: object, action: str = "") -> str:
        if not isinstance(name, str) or not name:
            raise ValidationError(
                f"a schedule name is a non-empty string, got {name!r}", path="$.name"
            )
        return f"/schedules/{quote(name, safe='')}{action}"

    # (the poller of a store client has no counterpart here: waits are long polls)
    def _watch(self, job_id: str, watcher: Watcher) -> None:  # pragma: no cover - unused
        raise NotImplementedError

    def _unwatch(self, job_id: str, watcher: Watcher) -> None:  # pragma: no cover - unused
        raise NotImplementedError

    async def _read(self, keys: Sequence[JobKey]) -> builtins.list[Job | None]:  # pragma: no cover
        raise NotImplementedError


_JSON_HEADERS: dict[str, str] = {"Content-Type": "application/json"}


def _headers(json: bool, extra: dict[str, str] | None) -> dict[str, str] | None:
    if extra:
        return {**_JSON_HEADERS, **extra} if json else extra
    return _JSON_HEADERS if json else None


def _trace_headers() -> dict[str, str] | None:
    """The caller's current trace context as W3C ``traceparent`` headers, when the caller uses
    OpenTelemetry (its API is imported) and a span is current: the server puts it in the
    submitted jobs' metadata, so their spans join the caller's trace."""
    from opentelemetry import propagate, trace

    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {k: v for k, v in carrier.items() if k in ("traceparent", "tracestate")} or None


def _ids(job_ids: object) -> builtins.list[str]:
    if isinstance(job_ids, str) or not isinstance(job_ids, Iterable):
        raise ValidationError(
            f"job_ids is a list (or other iterable) of job id strings, got "
            f"{type(job_ids).__name__}",
            path="$.job_ids",
        )
    ids = [*job_ids]
    for job_id in ids:
        if not isinstance(job_id, str):
            raise ValidationError(
                f"a job id is a string, got {type(job_id).__name__}", path="$.job_id"
            )
    return ids


def _error(response: Any) -> WorkError:
    """The error an answer of 400 or more carries."""
    kind = response.headers.get("content-type", "").split(";")[0].strip()
    if kind == PROBLEM_TYPE:
        try:
            return error_from_problem(_decoder(Problem).decode(response.content))
        except msgspec.DecodeError:
            pass
    text = response.text[:200]
    status = response.status_code
    message = f"the server answered {status} {response.reason_phrase}: {text}"
    if status == 404:
        return NotFoundError(message)
    if status in (401, 403):
        return ConfigurationError(message)
    if status in (502, 503, 504):
        return NotStartedError(message)
    return WorkError(message)


class SyncHttpClient(SyncClient):
    """The blocking client of a server's API: ``with work.connect(url, api_key=key) as c:``
    (see ``work.Client``)."""

    # the verbs HttpClient carries out as one request each, not as Verbs does
    wait = blocking(HttpClient.wait)
    wait_many = blocking(HttpClient.wait_many)
    as_completed = blocking_iter(HttpClient.as_completed)
    cancel = blocking(HttpClient.cancel)
    retry = blocking(HttpClient.retry)
    cancel_where = blocking(HttpClient.cancel_where)
    retry_where = blocking(HttpClient.retry_where)
    stats = blocking(HttpClient.stats)
    request = blocking(HttpClient.request)

    @property
    def caller(self) -> Caller:
        """Whose key this client holds."""
        engine = self.engine
        assert isinstance(engine, HttpClient)
        return engine.caller

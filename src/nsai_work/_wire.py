"""The HTTP API's wire format, shared by the server and the HTTP client (no I/O here).

Everything both ends must agree on lives in this one module, as httpx keeps its sans-I/O
request building apart from the transports: the paths, the bodies (msgspec Structs, so the
OpenAPI document is generated from these very types), how a body becomes Jobs with the IR's
errors, and how an error travels as ``application/problem+json`` (RFC 9457) and comes back as
the same ``WorkError`` subclass with the same message, path, rule and index.
"""

from __future__ import annotations

import math
from typing import Any, Final, Literal

import msgspec
from msgspec import Struct

from ._errors import (
    AdmissionError,
    BackendError,
    ConfigurationError,
    ConflictError,
    NotFoundError,
    NotStartedError,
    QueueFullError,
    QuotaExceededError,
    RateLimitedError,
    StoreError,
    StoreUnavailableError,
    UnschedulableError,
    ValidationError,
    WaitTimeoutError,
    WorkError,
)
from ._ir import Job, Quota
from ._validate import from_msgspec_error

__all__ = [
    "PREFIX",
    "PROBLEM_TYPE",
    "Caller",
    "CancelBody",
    "JobBatch",
    "JobPage",
    "Problem",
    "TenantBody",
    "WaitBody",
    "WaitResult",
    "decode_body",
    "decode_jobs",
    "error_from_problem",
    "problem_for",
]

#: Every route of the API lives under this prefix.
PREFIX: Final = "/v1"
#: The media type of an error's body.
PROBLEM_TYPE: Final = "application/problem+json"
#: The base of the ``type`` URI of each problem (``<base>validation``...).
PROBLEM_BASE: Final = "https://nsai-work.dev/problems/"
#: The longest long poll a server holds (seconds); a client waiting longer polls again.
MAX_POLL_S: Final = 60.0


class Problem(Struct, kw_only=True, omit_defaults=True):
    """An error, as RFC 9457 ``application/problem+json``: ``type``, ``title``, ``status`` and
    ``detail`` (the error's message), plus what a program needs: ``error`` (the ``WorkError``
    class, e.g. ``ValidationError``), and for a bad field its ``path`` (``$.resources.cpu``),
    ``rule`` and ``index`` in a batch; ``retry_after_s`` when trying again later may work."""

    type: str
    title: str
    status: int
    detail: str
    error: str
    instance: str | None = None
    path: str | None = None
    rule: str | None = None
    index: int | None = None
    retry_after_s: float | None = None


class Caller(Struct, kw_only=True):
    """Whose key a request carries: a tenant's (``tenant_id``) or an admin's (``admin``)."""

    key_id: str
    tenant_id: str | None = None
    admin: bool = False


class JobBatch(Struct, kw_only=True):
    """Jobs to submit together (all or nothing), or the jobs a batch submit accepted."""

    jobs: list[Job]


class JobPage(Struct, kw_only=True):
    """A page of jobs, newest first; ``next_cursor`` asks for the next page (None: the last)."""

    jobs: list[Job]
    next_cursor: str | None = None


class CancelBody(Struct, kw_only=True, forbid_unknown_fields=True):
    """Why a job is canceled (recorded as its ``cancel_reason``; default ``requested``)."""

    reason: str | None = None


class WaitBody(Struct, kw_only=True, forbid_unknown_fields=True):
    """A long poll on jobs: answer once all of them (``return_when="all"``) or one of them
    (``"first"``) are terminal, or after ``timeout`` seconds (at most 60) with the jobs as they
    are then."""

    job_ids: list[str]
    timeout: float = 30.0
    return_when: Literal["all", "first"] = "all"
    tenant_id: str | None = None


class WaitResult(Struct, kw_only=True):
    """The jobs of a long poll as they are now, in the order asked; ``done`` says whether the
    condition (all, or one, terminal) was met before the timeout."""

    jobs: list[Job]
    done: bool


class TenantBody(Struct, kw_only=True, forbid_unknown_fields=True):
    """A tenant's weight and limits (``work.Tenant`` without its id, which is in the path)."""

    weight: float = 1.0
    quota: Quota = Quota()
    namespaces: dict[str, Quota] = {}


_raw_batch = msgspec.json.Decoder(dict[str, list[msgspec.Raw]])
_job_decoder = msgspec.json.Decoder(Job)


def decode_jobs(body: bytes, *, batch: bool) -> list[Job]:
    """The Jobs of a submit's body (one Job, or ``{"jobs": [...]}``), with the IR's errors: a
    bad field is a ``ValidationError`` naming its path (and, in a batch, the job's index)."""
    if not batch:
        return [_decode_job(body, None)]
    try:
        raw = _raw_batch.decode(body)
    except msgspec.DecodeError as exc:
        raise _not_json(exc, '{"jobs": [<job>, ...]}') from None
    jobs = raw.get("jobs")
    if jobs is None or set(raw) != {"jobs"}:
        raise ValidationError(
            'a batch is an object with one field, "jobs": a list of jobs', path="$.jobs"
        )
    return [_decode_job(item, index) for index, item in enumerate(jobs)]


def _decode_job(body: bytes | msgspec.Raw, index: int | None) -> Job:
    try:
        return _job_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise from_msgspec_error(exc, index) from None
    except msgspec.DecodeError as exc:
        raise _not_json(exc, "a job: an object with kind and tenant_id", index) from None


def decode_body(body: bytes, kind: type[Any], what: str) -> Any:
    """A request body as ``kind``, with the IR's errors (an empty body is ``kind()``)."""
    if not body.strip():
        body = b"{}"
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise from_msgspec_error(exc) from None
    except msgspec.DecodeError as exc:
        raise _not_json(exc, what) from None


def _not_json(exc: Exception, what: str, index: int | None = None) -> ValidationError:
    return ValidationError(f"the body is not valid JSON ({exc}); expected {what}", index=index)


# ---- errors as problems, and back ----------------------------------------------------------------

#: Each error class: (HTTP status, problem slug, title). The most specific class first.
_STATUS: Final[list[tuple[type[WorkError], int, str, str]]] = [
    (ValidationError, 422, "validation", "A field breaks a rule"),
    (NotFoundError, 404, "not-found", "No such job"),
    (ConflictError, 409, "conflict", "Conflict with the current state"),
    (WaitTimeoutError, 408, "wait-timeout", "The wait timed out"),
    (RateLimitedError, 429, "rate-limited", "Too many requests"),
    (QuotaExceededError, 429, "quota-exceeded", "A tenant limit is reached"),
    (QueueFullError, 503, "queue-full", "The scheduler's queue is full"),
    (UnschedulableError, 422, "unschedulable", "No backend or pool could ever run it"),
    (AdmissionError, 422, "rejected", "The scheduler declined the job"),
    (NotStartedError, 503, "not-started", "The scheduler is not running"),
    (StoreUnavailableError, 503, "store-unavailable", "The store did not commit in time"),
    (StoreError, 503, "store", "The store failed"),
    (BackendError, 502, "backend", "A backend failed"),
    (ConfigurationError, 500, "configuration", "The server's configuration is wrong"),
    (WorkError, 500, "error", "The scheduler failed"),
]
_BY_NAME: Final[dict[str, type[WorkError]]] = {cls.__name__: cls for cls, *_ in _STATUS}


def problem_for(error: WorkError, instance: str | None = None) -> Problem:
    """The problem that carries ``error`` (its class, message, path, rule, index, and how long
    to wait before trying again for a 429 or 503)."""
    cls, status, slug, title = next(row for row in _STATUS if isinstance(error, row[0]))
    retry_after: float | None = None
    if isinstance(error, RateLimitedError):
        retry_after = max(error.retry_after_s, 0.001)
    elif status in (429, 503):
        retry_after = 1.0
    problem = Problem(
        type=PROBLEM_BASE + slug,
        title=title,
        status=status,
        detail=str(error),
        error=cls.__name__,
        instance=instance,
        retry_after_s=retry_after,
    )
    if isinstance(error, ValidationError):
        problem.path, problem.rule, problem.index = error.path, error.rule, error.index
    return problem


def retry_after_header(problem: Problem) -> str | None:
    """The ``Retry-After`` header (whole seconds, at least 1) of a 429 or 503 problem."""
    if problem.retry_after_s is None:
        return None
    return str(max(1, math.ceil(problem.retry_after_s)))


def error_from_problem(problem: Problem) -> WorkError:
    """The ``WorkError`` a problem carries, rebuilt: the same class, message and fields."""
    cls = _BY_NAME.get(problem.error, WorkError)
    if cls is ValidationError:
        return ValidationError(
            problem.rule or problem.detail, path=problem.path or "$", index=problem.index
        )
    if cls is RateLimitedError:
        return RateLimitedError(problem.detail, retry_after_s=problem.retry_after_s or 0.0)
    return cls(problem.detail)

"""The one error tree of nsai-work.

Every error the library raises is a ``WorkError``; subclasses say what the caller can do::

    WorkError
    ├── ValidationError          a field breaks a rule: fix the input ($.path names the field)
    ├── NotFoundError            unknown id, another tenant's job, or pruned
    ├── ConflictError            duplicate id, or an operation that needs another state
    ├── NotStartedError          the default scheduler is not started: call work.start()
    ├── WaitTimeoutError         wait() gave up (also a builtin TimeoutError)
    ├── AdmissionError           the scheduler declined the job at submit
    │   ├── QuotaExceededError   a tenant limit is reached
    │   ├── RateLimitedError     too many submits: retry after ``retry_after_s``
    │   ├── QueueFullError       the global cap on waiting jobs is reached (back-pressure)
    │   └── UnschedulableError   no backend or pool could ever run it
    ├── BackendError             a backend misbehaved
    ├── StoreError               the store failed
    │   └── StoreUnavailableError  it did not commit in time (kept, retried)
    └── ConfigurationError       the scheduler's configuration is wrong

``NonRetryableError`` is raised by user code (handlers, tools) to fail a job at once, without
retries. It is not a ``WorkError``: it is a signal from the user's code, not an error of ours.

Messages say what was expected, what was found, where, and how to fix it.
"""

from __future__ import annotations

import sys

__all__ = [
    "AdmissionError",
    "BackendError",
    "ConfigurationError",
    "ConflictError",
    "NonRetryableError",
    "NotFoundError",
    "NotStartedError",
    "QueueFullError",
    "QuotaExceededError",
    "RateLimitedError",
    "StoreError",
    "StoreUnavailableError",
    "UnschedulableError",
    "ValidationError",
    "WaitTimeoutError",
    "WorkError",
    "public_type_name",
]


class WorkError(Exception):
    """Root of every error nsai-work raises."""


class ValidationError(WorkError, ValueError):
    """A value breaks a rule of the Job IR or of an API call.

    ``path`` is the JSON path of the field (``$.resources.cpu``), or ``$`` for the whole value;
    ``index`` is the position of the job in a ``submit_many`` batch, when there is one.
    """

    def __init__(self, message: str, *, path: str = "$", index: int | None = None) -> None:
        self.path = path
        self.index = index
        self.rule = message
        where = f"at {path}" if index is None else f"at {path} of job #{index}"
        super().__init__(f"{message} - {where}")


class NotFoundError(WorkError, LookupError):
    """No job with this id is visible here (unknown, another tenant's, or pruned)."""


class ConflictError(WorkError):
    """The operation conflicts with the current state (duplicate id, job not terminal...)."""


class NotStartedError(WorkError, RuntimeError):
    """The scheduler is not running (call ``work.start()`` or enter the context manager)."""


class WaitTimeoutError(WorkError, TimeoutError):
    """``wait`` gave up before the job reached a terminal state."""


class AdmissionError(WorkError):
    """The scheduler declined the job at submit; nothing was admitted."""

    reason: str = "rejected"


class QuotaExceededError(AdmissionError):
    """A tenant limit (queued, running, resources, budget) does not allow this job."""

    reason = "quota_exceeded"


class RateLimitedError(AdmissionError):
    """The submit rate is over its limit; retry after ``retry_after_s`` seconds."""

    reason = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float = 0.0) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class QueueFullError(AdmissionError):
    """The global cap on waiting jobs (``max_waiting``) is reached: back off and retry."""

    reason = "queue_full"


class UnschedulableError(AdmissionError):
    """No configured backend and pool could ever run this job."""

    reason = "unschedulable"


class BackendError(WorkError):
    """A backend failed outside of the job's own code."""


class StoreError(WorkError):
    """The job store failed."""


class StoreUnavailableError(StoreError):
    """The store did not commit in time (a database restarting, a full disk): the call gave
    up waiting; what it wrote is kept and retried."""


class ConfigurationError(WorkError, ValueError):
    """The scheduler's configuration is invalid."""


class NonRetryableError(Exception):
    """Raise from a handler or tool to fail the job at once, without further attempts."""


def public_type_name(kind: type) -> str:
    """How an exception type is named to users (``JobError.type``): its qualname for builtins
    and ``__main__``, else ``module.qualname`` by the most public module that exposes it, so
    ``nsai_work._errors.ValidationError`` reads ``nsai_work.ValidationError``."""
    module = str(getattr(kind, "__module__", None) or "?")
    qualname = str(getattr(kind, "__qualname__", None) or getattr(kind, "__name__", "?"))
    if module in ("builtins", "__main__"):
        return qualname
    parts = module.split(".")
    if any(part.startswith("_") for part in parts):
        public = [part for part in parts if not part.startswith("_")]
        for end in range(1, len(public) + 1):  # the shortest public path first
            candidate = ".".join(public[:end])
            found = sys.modules.get(candidate)
            if found is not None and getattr(found, qualname, None) is kind:
                return f"{candidate}.{qualname}"
    return f"{module}.{qualname}"

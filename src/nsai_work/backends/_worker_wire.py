"""The wire between the process backend and its workers, and how an exception crosses a process
boundary as data.

Each message is a 4-byte big-endian length (``LENGTH``) and a JSON document (``frame``). The
parent sends a ``Request`` (``RunHandler`` or ``RunCommand``); the worker answers with
``Reply`` messages: ``Hello`` once, then for each request ``Started``, ``ProgressReport`` and
``Heartbeat`` as they come, perhaps a ``Recycle``, and one outcome (``Ok``, ``Err``,
``MemoryExceeded``, ``CommandDone`` or ``Refused``). Nothing but JSON crosses: the Job, the
handler's ``module:qualname``, its result, an exception as its type's name, message and
traceback.

``Err`` (built by ``error_reply``) is also how the Ray and Modal backends bring back what a
remote handler raised.
"""

from __future__ import annotations

import traceback
from typing import Any, Final

from msgspec import Raw, Struct

from .._errors import NonRetryableError
from .._ir import Job

__all__ = [
    "LENGTH",
    "CommandDone",
    "Err",
    "Heartbeat",
    "Hello",
    "MemoryExceeded",
    "Ok",
    "ProgressReport",
    "Recycle",
    "Refused",
    "Reply",
    "Request",
    "RunCommand",
    "RunHandler",
    "Started",
    "describe",
    "error_reply",
    "format_exception",
    "frame",
]

#: The size of a message's length prefix, in bytes.
LENGTH: Final = 4


class RunHandler(Struct, tag="handler", tag_field="t", omit_defaults=True):
    """Run ``ref`` (``module:qualname``) with the job (and, for a job with dependencies, their
    results: the handler's ``ctx.upstream``)."""

    job: Job
    ref: str
    memory_mb: int | None = None
    limit_address_space: bool = True
    sys_path: list[str] | None = None
    upstream: dict[str, Any] | None = None


class RunCommand(Struct, tag="command", tag_field="t", omit_defaults=True):
    """Run ``argv`` (in ``cwd``, with ``env`` over the worker's environment)."""

    argv: list[str]
    env: dict[str, str] | None = None
    cwd: str | None = None
    memory_mb: int | None = None
    tail_bytes: int = 4096


Request = RunHandler | RunCommand


class Hello(Struct, tag="hello", tag_field="t"):
    """The worker is ready."""

    pid: int


class Started(Struct, tag="started", tag_field="t"):
    """The job is about to run (sent for memory-watched jobs): the worker's resident size now,
    with no process of an earlier job left (they end before that job's reply)."""

    rss_mb: float


class ProgressReport(Struct, tag="progress", tag_field="t"):
    """``ctx.progress(fraction, message)`` in the handler."""

    fraction: float
    message: str | None = None


class Heartbeat(Struct, tag="heartbeat", tag_field="t"):
    """``ctx.heartbeat()`` in the handler."""


class Ok(Struct, tag="ok", tag_field="t"):
    """The handler returned ``result`` (JSON)."""

    result: Raw


class Err(Struct, tag="error", tag_field="t"):
    """The handler raised: the exception's type (module and qualname), message, traceback."""

    module: str
    qualname: str
    message: str
    traceback: str
    retryable: bool = True


class MemoryExceeded(Struct, tag="memory", tag_field="t"):
    """An allocation past the job's address-space limit was refused (``MemoryError``): what the
    job had taken of its limit then (``used_mb`` of ``limit_mb``), what was left under the limit
    (so the allocation asked for more), and the ``MemoryError``'s own message, which may say how
    much it asked for (numpy's does)."""

    used_mb: float
    limit_mb: int
    traceback: str
    left_mb: float = 0.0
    message: str = ""


class CommandDone(Struct, tag="done", tag_field="t"):
    """A command exited (``exit_code``) or was killed by ``signal``."""

    exit_code: int | None
    signal: int | None
    stdout_tail: str
    stderr_tail: str
    stdout_bytes: int
    stderr_bytes: int
    max_rss_mb: float


class Recycle(Struct, tag="recycle", tag_field="t"):
    """Sent before a job's reply: the job left something running that cannot be ended
    (``reason``), so the worker must be replaced; the reply that follows is the job's outcome
    all the same."""

    reason: str


class Refused(Struct, tag="refused", tag_field="t"):
    """The reply to a request the worker did not run: an earlier job changed it in a way it
    cannot set back (``reason``). The job is intact, for another worker."""

    reason: str


Reply = (
    Hello
    | Started
    | ProgressReport
    | Heartbeat
    | Ok
    | Err
    | MemoryExceeded
    | CommandDone
    | Recycle
    | Refused
)


def frame(body: bytes) -> bytes:
    """One message on the wire: its length, then its bytes."""
    return len(body).to_bytes(LENGTH, "big") + body


# ---- exceptions as data ---------------------------------------------------------------------


def _type_name(exc: BaseException) -> tuple[str, str]:
    kind = type(exc)
    return (getattr(kind, "__module__", "builtins"), getattr(kind, "__qualname__", kind.__name__))


def describe(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__qualname__} whose str() raised>"


def format_exception(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(exc))
    except Exception:  # pragma: no cover - a pathological exception
        return f"{type(exc).__qualname__}: <traceback unavailable>"


def error_reply(exc: BaseException, *, retryable: bool | None = None) -> Err:
    module, qualname = _type_name(exc)
    if retryable is None:
        # like the engine: a BaseException that is not an Exception (SystemExit...) is final
        retryable = isinstance(exc, Exception) and not isinstance(exc, NonRetryableError)
    return Err(
        module=module,
        qualname=qualname,
        message=describe(exc),
        traceback=format_exception(exc),
        retryable=retryable,
    )

"""``JobContext``: what a running handler may know and tell about its own run."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from ._errors import ValidationError
from ._ir import Progress
from ._validate import is_utf8

if TYPE_CHECKING:
    from ._ir import Job

__all__ = ["HandleSink", "JobContext"]

_job_log = logging.getLogger("nsai_work.job")
_MAX_HANDLE: Final = 512


class HandleSink(Protocol):
    """Who hears of a run's backend handle (the engine)."""

    def handle_reported(self, ctx: JobContext, handle: str) -> None:
        """``ctx``'s backend says where its run lives (called from any thread)."""
        ...


def _preview(value: object) -> str:
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    return type(value).__name__


class JobContext:
    """Passed as the second argument to handlers that take ``(job, ctx)``.

    ``attempt`` counts from 1. ``cancelled`` turns True when the run is canceled or timed out:
    a sync handler (which cannot be interrupted in its thread) should check it and return early.
    """

    __slots__ = (
        "_cancelled",
        "_handle",
        "_heartbeat",
        "_logger",
        "_progress",
        "_running",
        "_sink",
        "_upstream",
        "_upstream_source",
        "attempt",
        "job",
    )

    def __init__(self, job: Job, sink: HandleSink | None = None) -> None:
        self.job = job
        self._sink = sink  # the engine, told of the run's backend handle
        self.attempt = job.attempt
        self._cancelled = False
        self._running = False  # set by the engine when the backend is called
        self._progress: Progress | None = None
        self._heartbeat: float | None = None
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None
        self._handle: str | None = None
        self._upstream: dict[str, Any] | None = None
        self._upstream_source: Callable[[], dict[str, Any]] | None = None

    @property
    def upstream(self) -> dict[str, Any]:
        """The results of the job's dependencies (``constraints.depends_on``), keyed by job id
        and, for a step of a ``work.Workflow``, by step name too. A dependency that did not
        succeed (one ``allow_failure`` let the job survive) maps to None. Empty for a job
        without dependencies."""
        if self._upstream is None:  # read on first use (the memory store's reads do not wait)
            source = self._upstream_source
            self._upstream = {} if source is None else source()
        return self._upstream

    @property
    def cancelled(self) -> bool:
        """True once the run should stop (cancel, timeout or shutdown)."""
        return self._cancelled

    def cancel(self) -> None:
        """Mark the run as stopping (the scheduler does this; handlers read ``cancelled``)."""
        self._cancelled = True

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress; ``get(job_id)`` shows it while the job runs."""
        if not isinstance(fraction, int | float) or not 0.0 <= fraction <= 1.0:
            raise ValidationError(
                f"progress is a fraction in [0, 1], got {fraction!r}", path="$.fraction"
            )
        if message is not None:
            if not isinstance(message, str):
                raise ValidationError(
                    f"a progress message is a string or None, got {type(message).__name__}",
                    path="$.message",
                )
            if not is_utf8(message):
                raise ValidationError(
                    "a progress message is text UTF-8 can encode; it holds a lone surrogate",
                    path="$.message",
                )
        self._progress = Progress(fraction=float(fraction), message=message)
        self._heartbeat = time.time()

    def set_handle(self, handle: str) -> None:
        """Say where this run lives (for backends): a process id, a Ray task or job id, a Modal
        call id; at most 512 characters. It is stored on the attempt (``Attempt.handle``), so a
        scheduler restarted after a crash can stop a run its predecessor left going
        (``Backend.cancel_orphan``). May be called from any thread; a later call replaces it."""
        if not isinstance(handle, str) or not 0 < len(handle) <= _MAX_HANDLE:
            raise ValidationError(
                f"a backend handle is a non-empty string of at most {_MAX_HANDLE} characters, "
                f"got {_preview(handle)}",
                path="$.handle",
            )
        if not is_utf8(handle):
            raise ValidationError(
                "a backend handle is text UTF-8 can encode; it holds a lone surrogate",
                path="$.handle",
            )
        self._handle = handle
        if self._sink is not None:
            self._sink.handle_reported(self, handle)

    @property
    def handle(self) -> str | None:
        """The backend handle of this run, once the backend has set it."""
        return self._handle

    @property
    def last_progress(self) -> Progress | None:
        """The last reported progress, if any."""
        return self._progress

    def heartbeat(self) -> None:
        """Say the run is alive (recorded as ``last_heartbeat``)."""
        self._heartbeat = time.time()

    @property
    def last_heartbeat(self) -> float | None:
        """Unix time of the last heartbeat or progress report."""
        return self._heartbeat

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry the job id, tenant and attempt."""
        if self._logger is None:
            extra: dict[str, Any] = {
                "job_id": self.job.id,
                "tenant_id": self.job.tenant_id,
                "attempt": self.attempt,
            }
            self._logger = logging.LoggerAdapter(_job_log, extra)
        return self._logger

"""The Backend Protocol: what a backend must offer to run jobs.

Required: ``name``; ``supports(job) -> bool``; ``execute(job, ctx) -> result`` (sync or async:
raising fails the attempt; a sync one runs in a thread); ``cancel(job_id)`` (sync or async, best
effort for threads). A backend says what it can run and what capacity it offers; it never picks
jobs. Nothing here needs to be imported by a third-party backend: it is a structural Protocol,
and ``work.testing.check_backend(factory)`` proves an implementation against it.

Optional members, used when present:

- ``pools() -> list[Pool]``: the capacity offered (default: one pool named after the backend
  with 64 slots and nothing else).
- ``pools_for(job) -> tuple[str, ...]``: which of its pools a job may use (default: all).
- ``validate(job) -> None``: raise ``ValidationError`` at submit for a job it would refuse.
- ``explain(job) -> str``: why ``supports(job)`` is False, for the submit error.
- ``auto_select: bool``: False means "only when a job or the config names me" (the mock).
- ``shared_limits(job) -> tuple[nsai_work.core.Limit, ...]``: limits across tenants the
  scheduler enforces at dispatch (the altar backend's per-tool ``max_concurrency`` and rate).
- ``start()`` / ``stop()``: sync or async, called when the scheduler starts and stops.
- ``cancel_orphan(job, handle)``: sync or async, best effort. A backend whose runs outlive the
  scheduler process (a cluster's task, a cloud call) tells where each run lives with
  ``ctx.set_handle(handle)`` inside ``execute``; the handle is stored on the attempt. When a
  scheduler restarts after a crash, it calls ``cancel_orphan`` for each run the dead one left
  going (that attempt ends ``engine_lost`` and its retry policy decides), so the work is not
  paid for twice. Without it, recovery logs a warning that the run may still be going.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .._context import JobContext
    from .._ir import Job

__all__ = ["Backend"]


@runtime_checkable
class Backend(Protocol):
    """A place where jobs run (see the module docstring for the optional members)."""

    name: str

    def supports(self, job: Job) -> bool:
        """Whether this backend can run ``job`` at all."""
        ...

    def execute(self, job: Job, ctx: JobContext) -> Any:
        """Run one attempt of ``job``; return its result or raise."""
        ...

    def cancel(self, job_id: str) -> Any:
        """Stop the running attempt of ``job_id`` (best effort)."""
        ...

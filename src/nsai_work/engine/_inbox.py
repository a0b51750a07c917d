"""``ClientInbox``: the scheduler's side of its clients (docs/design.md, "One scheduler, many
clients").

Clients (``work.Client``, ``work.connect``) commit their jobs and cancel requests to the store;
the scheduler reads them with ``store.inbox()`` whenever ``store.wait_for_change`` says a client
may have committed something (SQLite: within its ``poll_interval_s``, 10 ms; at least every
second in any case), and:

- admits each client job through the core as a local ``submit`` of it is admitted (validated,
  routed, a core ``Submit``). Each job is admitted on its own: a client's ``submit_many`` is
  committed all or nothing, but one of its jobs that the scheduler declines does not take the
  others with it. The job is a row of the store already, so the engine writes its admission as
  an update of that row, not an insert: its key is in the scheduler's ``_adopted`` set, which
  ``Scheduler._apply`` consults. A job the scheduler declines (invalid, unroutable, quota, rate
  limit, full queue: what would raise at a local submit) is written ``canceled``,
  ``cancel_reason="rejected"``, with the admission error as its ``error``
  (``JobError(type="nsai_work.QuotaExceededError", message=...)``), so the client's wait sees
  it end; it counts as a rejection in the scheduler's stats and telemetry, as a local one does;
- feeds the core a ``Cancel`` (with the request's reason) for each cancel request of a job it
  runs or holds; a request for a job it does not hold (not admitted yet, or finished) waits:
  it comes again with every read until the job is written terminal.

A read returns the same rows until the scheduler's writes settle them, so after each read the
inbox waits for the commit of what it wrote (``writes.commit()``) and only then reads again;
until that commit the read's keys stay in ``_adopted``, so a job seen twice (a read after a
failed commit) is not admitted twice, even if it has finished meanwhile. A scheduler that
crashes before the commit admits the jobs again at its next start: none is lost.

The inbox runs only for a durable store (``store.durable``): a store that keeps nothing lives
in one process, and a client refuses it (it would have no other process to serve).
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as _dt
import logging
from typing import TYPE_CHECKING, Final

from msgspec.structs import replace

from .._errors import StoreError, WorkError, public_type_name
from .._ir import Job, JobError, Status
from .._validate import validate_new_job
from ..core import Cancel, Finished, Reject, Rejected, Submit
from ..stores import Inbox
from ._audit import unpack
from ._deps import dependency_keys, settled
from ._emit import rejection_reason

if TYPE_CHECKING:
    from ._scheduler import Scheduler

__all__ = ["ClientInbox"]

_log = logging.getLogger("nsai_work.engine")
#: Jobs per read of the inbox (a full read is followed by another at once).
_READ: Final = 1000
#: The longest wait between reads when no change is reported.
_WAIT_S: Final = 1.0
#: Backoff after a failed read or commit: doubled from the first to the last.
_RETRY_FIRST_S: Final = 0.05
_RETRY_MAX_S: Final = 2.0
#: A client job the scheduler declines ends canceled with this reason.
REJECTED: Final = "rejected"


class ClientInbox:
    """Reads the store's inbox for ``scheduler`` while it runs (``start``/``stop``)."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the reader task (on the running loop)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="nsai-work-inbox")

    async def stop(self) -> None:
        """Stop the reader (jobs it has not admitted stay in the store for the next start)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        store = self._scheduler._store
        delay = _RETRY_FIRST_S
        while True:
            try:
                await self._drain()
                delay = _RETRY_FIRST_S
                await store.wait_for_change(_WAIT_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, StoreError):
                    _log.warning("nsai-work: the client inbox of %s: %s", store.url, exc)
                else:  # an engine bug: say so loudly, and go on serving the clients
                    _log.exception("nsai-work: reading the client inbox of %s failed", store.url)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)

    async def _drain(self) -> None:
        """Read the inbox until a read is not full, taking what each read holds."""
        scheduler = self._scheduler
        adopted = scheduler._adopted
        while True:
            inbox = await scheduler._store.inbox(_READ)
            if scheduler._state != "running":
                return  # stopping: what was not admitted waits in the store
            deps = dependency_keys(inbox.jobs)
            finished = (
                await settled(scheduler, deps, await scheduler._store.get_many(deps))
                if deps
                else ()
            )
            self._take(inbox, finished)
            if adopted:
                await scheduler._writes.commit()
                adopted.clear()  # committed: the store's inbox no longer returns them
            if len(inbox.jobs) < _READ:
                return

    def _take(self, inbox: Inbox, finished: tuple[Finished, ...] = ()) -> None:
        """Admit the read's jobs the engine does not hold yet, then carry out its cancel
        requests for jobs it holds."""
        scheduler = self._scheduler
        adopted = scheduler._adopted
        live = scheduler._core.get
        fresh = [
            job
            for job in inbox.jobs
            if (job.tenant_id, job.id) not in adopted and live(job.tenant_id, job.id) is None
        ]
        if fresh:
            self._admit(fresh, finished)
        for (tenant_id, job_id), request in inbox.cancels:
            if live(tenant_id, job_id) is not None:
                reason, actor = unpack(request)
                scheduler._feed(Cancel(tenant_id, job_id, reason, actor))

    def _admit(self, jobs: builtins.list[Job], finished: tuple[Finished, ...] = ()) -> None:
        """Admit each job on its own, as a local ``submit`` of it would be: validated, routed,
        one core Submit; the jobs the scheduler declines are written declined."""
        scheduler = self._scheduler
        adopted = scheduler._adopted
        core = scheduler._core
        for job in jobs:
            adopted.add((job.tenant_id, job.id))
            try:
                checked = _validated(job, scheduler.config.max_payload_bytes)
                route, shared = scheduler._router.route(checked)
            except WorkError as exc:
                scheduler._feed(Rejected((job,), rejection_reason(exc)))
                scheduler._emitter.rejected([job], exc)
                self._decline(job, exc)
                continue
            now = scheduler._monotonic()
            submit = Submit((checked,), (route,), (shared,) if shared else (), finished)
            decisions = core.handle(submit, now, scheduler._wall_time())
            rejection = decisions[0] if decisions else None
            if type(rejection) is Reject:
                scheduler._emitter.rejected([checked], rejection.error)
                self._decline(job, rejection.error)
            else:
                scheduler._apply(decisions, now)

    def _decline(self, job: Job, error: WorkError) -> None:
        """Write a client job the scheduler will not run as canceled, with the reason."""
        scheduler = self._scheduler
        ended = replace(
            job,
            status=Status.CANCELED,
            cancel_reason=REJECTED,
            error=JobError(type=public_type_name(type(error)), message=str(error)),
            finished_at=_dt.datetime.fromtimestamp(scheduler._wall_time(), _dt.UTC),
        )
        scheduler._writes.update(ended, scheduler._monotonic())
        scheduler._writes.after_commit(lambda: scheduler._notify(ended))


def _validated(job: Job, max_payload_bytes: int) -> Job:
    """A stored client job, checked as a local submit is. ``retry_of`` and ``audit`` are the
    fields a client's job may carry that a new job may not: the client's ``retry()`` set them."""
    if job.retry_of is None:
        return validate_new_job(job, None, max_payload_bytes)
    fresh = validate_new_job(replace(job, retry_of=None, audit=()), None, max_payload_bytes)
    return replace(fresh, retry_of=job.retry_of, audit=job.audit)

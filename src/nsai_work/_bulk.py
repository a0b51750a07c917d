"""Bulk operations by filter: ``cancel_where`` and ``retry_where``, what they match and answer.

A bulk call names one tenant's jobs the way ``list`` does (namespace, status, kind) plus the
filters the store does not index (priority, a time range on ``created_at``), and acts on at
most ``limit`` of them (``MAX_BULK``, 1,000). It reads the newest first, page by page, and
stops after ``limit`` jobs acted on or ``BULK_SCAN_PAGES`` pages read: then ``next_cursor`` is
where to go on from (None: nothing is left to match). Types only here; the verbs are
``engine/_bulk.py``'s.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

from msgspec import Struct

from ._errors import ValidationError
from ._ir import Job, Priority, Status

__all__ = ["BULK_SCAN_PAGES", "MAX_BULK", "BulkFailure", "BulkFilter", "BulkResult"]

#: The most jobs one bulk call acts on.
MAX_BULK: Final = 1000
#: The most store pages (of at most ``limit`` jobs each) one bulk call reads.
BULK_SCAN_PAGES: Final = 10


class BulkFilter(Struct, kw_only=True, forbid_unknown_fields=True):
    """Which of a tenant's jobs a bulk operation acts on (``POST /v1/ops/cancel`` and
    ``/v1/ops/retry``): the filters of ``list``, at most ``limit`` jobs (1 to 1,000), after
    ``cursor`` (a previous answer's ``next_cursor``). ``reason`` is a cancel's."""

    tenant_id: str | None = None
    namespace: str | None = None
    status: Status | None = None
    kind: str | None = None
    priority: Priority | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    reason: str | None = None
    limit: int = 100
    cursor: str | None = None

    def check(self) -> None:
        """Refuse a limit out of range or a naive time (the other fields are ``list``'s)."""
        limit = self.limit
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_BULK:
            raise ValidationError(
                f"limit is an int in [1, {MAX_BULK}] (jobs acted on per call; go on with "
                f"next_cursor), got {limit!r}",
                path="$.limit",
            )
        for name in ("created_after", "created_before"):
            moment = getattr(self, name)
            if moment is not None and (not isinstance(moment, datetime) or moment.tzinfo is None):
                raise ValidationError(
                    f"{name} is a datetime with its time zone, got {moment!r}", path=f"$.{name}"
                )
        if self.priority is not None:
            try:
                self.priority = Priority(self.priority)
            except ValueError:
                raise ValidationError(
                    f"priority is one of {', '.join(p.value for p in Priority)}, got "
                    f"{self.priority!r}",
                    path="$.priority",
                ) from None
        if self.reason is not None and not isinstance(self.reason, str):
            raise ValidationError(f"reason is a string, got {self.reason!r}", path="$.reason")

    def keeps(self, job: Job) -> bool:
        """Whether a job the store's page holds passes the filters the store does not apply."""
        if self.priority is not None and job.priority != self.priority:
            return False
        if self.created_after is not None and job.created_at < self.created_after:
            return False
        return self.created_before is None or job.created_at < self.created_before


class BulkFailure(Struct, kw_only=True):
    """A matched job the operation could not act on, and why (the error's class and message)."""

    job_id: str
    error: str
    message: str


class BulkResult(Struct, kw_only=True):
    """What a bulk cancel or retry did.

    ``count``: how many jobs it acted on; ``job_ids``: those jobs, canceled (or asked to
    cancel, on a store client) or retried; ``new_job_ids``: for a retry, each copy's id, in
    the order of ``job_ids``. ``matched``: how many jobs passed the filters; ``skipped``: those
    there was nothing to do for (already finished, for a cancel; not finished yet, for a
    retry); ``failed``: those refused (a retry copy over a quota...). ``next_cursor``: more
    jobs may match after this one (call again with it); None: every match was seen."""

    action: Literal["cancel", "retry"]
    tenant_id: str
    count: int = 0
    job_ids: list[str] = []
    new_job_ids: list[str] = []
    matched: int = 0
    skipped: int = 0
    failed: list[BulkFailure] = []
    next_cursor: str | None = None

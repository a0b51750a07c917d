"""Wait for a scheduler's cron schedules to catch up with its clock (tests with a FakeClock)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._errors import NotStartedError

if TYPE_CHECKING:
    from ..engine import Scheduler

__all__ = ["wait_schedules_settled"]


async def wait_schedules_settled(scheduler: Scheduler) -> None:
    """Wait until ``scheduler`` has settled every fire of its cron schedules that is due at
    its clock's current time: after ``clock.advance(...)``, the jobs of the fires it passed
    are submitted (or, for missed fires, run once or skipped) when this returns."""
    table = getattr(scheduler, "_cron", None)
    if table is None or not scheduler.running:
        raise NotStartedError("wait_schedules_settled needs a running work.Scheduler")
    await table.wait_pass()

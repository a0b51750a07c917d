"""Cron schedules in a store: each schedule's state, keyed by (tenant_id, name).

A schedule is declared in code (``work.cron``); what the store keeps is what must survive a
restart: up to when its fires are settled (each fired or skipped), its last fire, and whether
it is paused. ``settled_through`` moves only by compare-and-set (``Store.advance_schedule``),
so of two processes that settle the same fires, one wins and the other re-reads.
"""

from __future__ import annotations

import datetime as _dt

from msgspec import Struct

__all__ = ["ScheduleState"]


class ScheduleState(Struct, frozen=True, kw_only=True):
    """A schedule's stored state.

    ``settled_through``: every fire at or before this instant is settled (fired or skipped);
    at the declaration it is the declaration's time, so a schedule never fires for the past.
    ``last_fire``: the fire time of the last job it submitted (None: none yet). ``paused``:
    no fire while True; a resume settles the fires that fell during the pause (skipped)."""

    tenant_id: str
    name: str
    settled_through: _dt.datetime
    last_fire: _dt.datetime | None = None
    paused: bool = False

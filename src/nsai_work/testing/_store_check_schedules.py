"""``check_store``'s section on cron schedules: ``add_schedule`` keeps the first state of a
(tenant_id, name), ``advance_schedule`` is a compare-and-set that a paused or removed schedule
refuses, ``pause_schedule`` resumes settling the pause's fires, states survive a reopen
(durable stores), and racing compare-and-sets from many store objects make one winner."""

from __future__ import annotations

import asyncio
import datetime as _dt

from msgspec.structs import replace

from ..stores._schedules import ScheduleState
from ._store_harness import T0, Check, fail

__all__ = ["check_schedules"]


def _expect(check: Check, got: object, want: object, what: str) -> None:
    if got != want:
        fail(f"{check.section}: {what}: got {got!r}, expected {want!r}")


def _at(seconds: float) -> _dt.datetime:
    return T0 + _dt.timedelta(seconds=seconds)


async def check_schedules(check: Check) -> None:
    """Add, read, compare-and-set, pause and resume, remove, reopen, races."""
    store = await check.opened()
    tenant, other = check.tenant("cron"), check.tenant("cron-other")
    first = ScheduleState(tenant_id=tenant, name="nightly", settled_through=T0)
    _expect(check, await store.add_schedule(first), first, "a new schedule's state")
    again = ScheduleState(tenant_id=tenant, name="nightly", settled_through=_at(99), paused=True)
    _expect(check, await store.add_schedule(again), first, "adding a kept schedule again")
    elsewhere = ScheduleState(tenant_id=other, name="nightly", settled_through=_at(5))
    await store.add_schedule(elsewhere)
    b = ScheduleState(tenant_id=tenant, name="b-hourly", settled_through=T0)
    await store.add_schedule(b)
    _expect(check, await store.schedules(tenant), [b, first], "one tenant's schedules, by name")
    _expect(check, await store.schedules(other), [elsewhere], "another tenant's schedules")

    ok = await store.advance_schedule(tenant, "nightly", T0, _at(60), _at(60))
    _expect(check, ok, True, "a compare-and-set from the stored value")
    ok = await store.advance_schedule(tenant, "nightly", T0, _at(120), _at(120))
    _expect(check, ok, False, "a compare-and-set from a stale value")
    ok = await store.advance_schedule(tenant, "nightly", _at(60), _at(90), None)
    _expect(check, ok, True, "a compare-and-set that settles without a fire")
    want = ScheduleState(
        tenant_id=tenant, name="nightly", settled_through=_at(90), last_fire=_at(60)
    )
    _expect(check, (await store.schedules(tenant))[1], want, "the state after two sets")

    paused = await store.pause_schedule(tenant, "nightly", True, _at(100))
    _expect(check, paused, replace(want, paused=True), "a pause")
    ok = await store.advance_schedule(tenant, "nightly", _at(90), _at(200), _at(200))
    _expect(check, ok, False, "a compare-and-set of a paused schedule")
    resumed = await store.pause_schedule(tenant, "nightly", False, _at(300))
    _expect(check, resumed, replace(want, settled_through=_at(300)), "a resume")
    resumed = await store.pause_schedule(tenant, "nightly", False, _at(10))
    _expect(check, resumed and resumed.settled_through, _at(300), "a resume never goes back")
    _expect(
        check, await store.pause_schedule(tenant, "unknown", True, T0), None, "an unknown pause"
    )

    if check.durable:
        store = await check.reopened(store)
        got = await store.schedules(tenant)
        _expect(check, [s.name for s in got], ["b-hourly", "nightly"], "names after a reopen")
        _expect(check, got[1].settled_through, _at(300), "settled_through after a reopen")
        _expect(check, got[1].last_fire, _at(60), "last_fire after a reopen")
        racers = [await check.client_for(store) for _ in range(4)]
        wins = await asyncio.gather(
            *(
                racers[n % 4].advance_schedule(tenant, "b-hourly", T0, _at(n + 1), _at(n + 1))
                for n in range(20)
            )
        )
        if sum(wins) != 1:
            fail(f"{check.section}: 20 racing compare-and-sets made {sum(wins)} winners")

    _expect(check, await store.remove_schedule(tenant, "nightly"), True, "a removal")
    _expect(check, await store.remove_schedule(tenant, "nightly"), False, "a second removal")
    ok = await store.advance_schedule(tenant, "nightly", _at(300), _at(400), None)
    _expect(check, ok, False, "a compare-and-set of a removed schedule")
    for tenant_id, name in ((tenant, "b-hourly"), (other, "nightly")):
        await store.remove_schedule(tenant_id, name)
    _expect(check, await store.schedules(tenant), [], "schedules after removing them all")

"""Cron schedules (``work.cron``) with a fake clock: a schedule fires exactly its times, as its
tenant, in its time zone; across a restart on a durable store no fire is doubled and none is
lost, and the fires missed while it was down run once or are skipped per ``missed``; pause,
resume and remove by name on every face; and bad declarations name the field."""

from __future__ import annotations

import datetime as _dt
import sqlite3
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

import nsai_work as work
from nsai_work.telemetry.events import (
    ALL_EVENTS,
    SCHEDULE_FIRED,
    SCHEDULE_MISSED,
    SCHEDULE_PAUSED,
    SCHEDULE_REMOVED,
    SCHEDULE_RESUMED,
)
from nsai_work.testing import FakeClock, capture_events, wait_schedules_settled

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]

UTC = _dt.UTC
T0 = _dt.datetime(2026, 1, 1, tzinfo=UTC)
MINUTE = 60.0


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/work.db"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(params=["sqlite", "postgres"])
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/work.db"
    return str(request.getfixturevalue("postgres_url"))


def clock_at(when: _dt.datetime) -> FakeClock:
    return FakeClock(wall=when.timestamp())


def template(tenant_id: str = "acme", **fields: Any) -> work.Job:
    return work.Job(kind="tool_call", tenant_id=tenant_id, payload={"tool": "echo"}, **fields)


def fire_id(name: str, when: _dt.datetime) -> str:
    return f"cron:{name}:{when.astimezone(UTC):%Y%m%dT%H%M%SZ}"


async def step(s: work.Scheduler, clock: FakeClock, seconds: float, steps: int = 1) -> None:
    """Move the clock ``steps`` times by ``seconds``, settling the due fires after each."""
    for _ in range(steps):
        clock.advance(seconds)
        await wait_schedules_settled(s)


async def cron_ids(s: work.Scheduler, tenant_id: str = "acme") -> list[str]:
    """The ids of the tenant's jobs that schedules submitted, oldest first."""
    page = await s.list(tenant_id, limit=1000)
    return sorted(job.id for job in page if job.id.startswith("cron:"))


def test_a_schedule_fires_exactly_its_times(url: str, arun: Run[Any]) -> None:
    clock = clock_at(T0)

    async def run() -> None:
        async with work.Scheduler(store=url, clock=clock) as s:
            with capture_events([SCHEDULE_FIRED]) as fired:
                made = await s.cron("every5", "*/5 * * * *", template())
                assert made.next_fire == T0 + _dt.timedelta(minutes=5)
                assert made.last_fire is None
                assert not made.paused
                await step(s, clock, MINUTE, 61)  # one pass a minute for 61 minutes
            want = [fire_id("every5", T0 + _dt.timedelta(minutes=5 * n)) for n in range(1, 13)]
            assert await cron_ids(s) == want
            assert [e.metadata["job_id"] for e in fired] == want
            assert {e.metadata["decision"] for e in fired} == {"submitted"}
            assert all(e.measurements["late_ms"] == 0.0 for e in fired)
            job = await s.wait(want[0], timeout=10)
            assert job.status is work.Status.SUCCEEDED
            assert job.tenant_id == "acme"
            assert job.metadata == {"schedule": "every5", "fire_time": "2026-01-01T00:05:00+00:00"}
            (listed,) = await s.schedules()
            assert listed.last_fire == T0 + _dt.timedelta(hours=1)
            assert listed.next_fire == T0 + _dt.timedelta(hours=1, minutes=5)

    arun(run())


def test_a_clock_that_jumps_fires_each_time_within_the_grace(arun: Run[Any]) -> None:
    """Fires found within ``grace_s`` run each; a pass seeing several at once runs them all."""
    clock = clock_at(T0)

    async def run() -> None:
        async with work.Scheduler(clock=clock) as s:
            await s.cron("minutely", "* * * * *", template(), grace_s=300)
            await step(s, clock, 4 * MINUTE)
            assert await cron_ids(s) == [
                fire_id("minutely", T0 + _dt.timedelta(minutes=n)) for n in range(1, 5)
            ]

    arun(run())


@pytest.mark.parametrize("missed", ["run_once", "skip"])
def test_a_restart_on_a_durable_store_doubles_no_fire_and_loses_none(
    missed: str, durable_url: str, arun: Run[Any]
) -> None:
    """Stop the scheduler, move the clock past four fires, start another on the same store."""
    clock = clock_at(T0)
    url = durable_url
    every5 = [T0 + _dt.timedelta(minutes=5 * n) for n in range(0, 20)]

    async def first_life() -> None:
        async with work.Scheduler(store=url, clock=clock) as s:
            await s.cron("every5", "*/5 * * * *", template(), missed=missed)
            await step(s, clock, MINUTE, 11)  # 00:11: fired 00:05 and 00:10
            assert await cron_ids(s) == [fire_id("every5", every5[n]) for n in (1, 2)]

    async def second_life() -> None:
        async with work.Scheduler(store=url, clock=clock) as s:
            with capture_events([SCHEDULE_FIRED, SCHEDULE_MISSED]) as seen:
                await s.cron("every5", "*/5 * * * *", template(), missed=missed)
                await wait_schedules_settled(s)
                await step(s, clock, MINUTE, 10)  # 00:42: on time again at 00:35 and 00:40
            kept = [1, 2] + ([6] if missed == "run_once" else []) + [7, 8]
            assert await cron_ids(s) == [fire_id("every5", every5[n]) for n in kept]
            (miss,) = seen.named(*SCHEDULE_MISSED)
            assert miss.measurements == {"missed_count": 4.0}  # 00:15, 00:20, 00:25, 00:30
            assert miss.metadata["policy"] == missed
            assert miss.metadata["last_missed"] == every5[6].isoformat()
            late = [e for e in seen.named(*SCHEDULE_FIRED) if e.measurements["late_ms"] > 0]
            assert [e.metadata["job_id"] for e in late] == (
                [fire_id("every5", every5[6])] if missed == "run_once" else []
            )
            (listed,) = await s.schedules()
            assert listed.last_fire == every5[8]

    arun(first_life())
    clock.advance(21 * MINUTE)  # 00:32, nobody running: 00:15 ... 00:30 fall
    arun(second_life())


def test_a_fire_submitted_but_not_settled_before_a_crash_is_not_submitted_again(
    tmp_path: Path, arun: Run[Any]
) -> None:
    """A crash between a fire's commit and its settling (simulated: the stored schedule is put
    back) leaves the fire unsettled; the next start finds its job and submits no other."""
    clock = clock_at(T0)
    path = tmp_path / "work.db"

    async def life(check: Callable[[work.Scheduler], Coroutine[Any, Any, None]]) -> None:
        async with work.Scheduler(store=f"sqlite://{path}", clock=clock) as s:
            await s.cron("every5", "*/5 * * * *", template(), grace_s=3600)
            await check(s)

    async def fire_once(s: work.Scheduler) -> None:
        await step(s, clock, 5 * MINUTE)
        assert await cron_ids(s) == [fire_id("every5", T0 + _dt.timedelta(minutes=5))]

    async def again(s: work.Scheduler) -> None:
        with capture_events([SCHEDULE_FIRED]) as fired:
            await wait_schedules_settled(s)
        assert await cron_ids(s) == [fire_id("every5", T0 + _dt.timedelta(minutes=5))]
        assert [e.metadata["decision"] for e in fired] == ["already_submitted"]

    arun(life(fire_once))
    with sqlite3.connect(path) as conn:  # as if the process died before settling the fire
        conn.execute("UPDATE schedules SET settled_through = ?", (int(T0.timestamp() * 1e6),))
    conn.close()
    arun(life(again))


def test_a_fire_another_process_settled_first_is_not_doubled(
    durable_url: str, arun: Run[Any]
) -> None:
    """Another process (a client store object here) commits a fire's job and settles it by
    compare-and-set before this scheduler's pass: the pass finds the job, its own
    compare-and-set fails, and it goes on from the state the other process wrote."""
    clock = clock_at(T0)

    async def run() -> None:
        async with work.Scheduler(store=durable_url, clock=clock) as s:
            with capture_events([SCHEDULE_FIRED]) as fired:
                await s.cron("every5", "*/5 * * * *", template())
                other = work.stores.store_from_url(durable_url)
                await other.open("client")
                try:
                    first = at_minutes(5)
                    job = template()
                    stolen = work.Job(
                        kind=job.kind,
                        tenant_id="acme",
                        payload=job.payload,
                        id=fire_id("every5", first),
                    )
                    assert await other.submit([stolen]) == [None]
                    assert await other.advance_schedule("acme", "every5", T0, first, first)
                finally:
                    await other.close()
                await step(s, clock, 5 * MINUTE)  # 00:05: settled elsewhere
                await step(s, clock, 5 * MINUTE)  # 00:10: fired here
            assert await cron_ids(s) == [fire_id("every5", at_minutes(m)) for m in (5, 10)]
            assert [e.metadata["decision"] for e in fired] == ["already_submitted", "submitted"]
            (listed,) = await s.schedules()
            assert listed.last_fire == at_minutes(10)

    arun(run())


def at_minutes(minutes: float) -> _dt.datetime:
    return T0 + _dt.timedelta(minutes=minutes)


def test_a_time_zone_with_daylight_saving(arun: Run[Any]) -> None:
    """02:30 Paris time every day, across the spring gap (29 March 2026: 02:00 -> 03:00)."""
    start = _dt.datetime(2026, 3, 27, 12, tzinfo=UTC)
    clock = clock_at(start)

    async def run() -> None:
        async with work.Scheduler(clock=clock) as s:
            with capture_events([SCHEDULE_FIRED]) as fired:
                await s.cron("night", "30 2 * * *", template(), tz="Europe/Paris")
                await step(s, clock, 30 * MINUTE, 4 * 48)  # four days, a pass every 30 min
            # (the memory store prunes finished jobs after an hour: the events tell the fires)
            assert [e.metadata["job_id"] for e in fired] == [
                fire_id("night", _dt.datetime(2026, 3, 28, 1, 30, tzinfo=UTC)),  # 02:30 CET
                fire_id("night", _dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),  # 03:00 CEST
                fire_id("night", _dt.datetime(2026, 3, 30, 0, 30, tzinfo=UTC)),  # 02:30 CEST
                fire_id("night", _dt.datetime(2026, 3, 31, 0, 30, tzinfo=UTC)),
            ]

    arun(run())


def test_pause_resume_and_remove_by_name(url: str, arun: Run[Any]) -> None:
    clock = clock_at(T0)

    async def run() -> None:
        async with work.Scheduler(store=url, clock=clock) as s:
            with capture_events([SCHEDULE_PAUSED, SCHEDULE_RESUMED, SCHEDULE_REMOVED]) as seen:
                await s.cron("every5", "*/5 * * * *", template())
                await step(s, clock, 5 * MINUTE)  # 00:05 fires
                paused = await s.pause_schedule("every5")
                assert paused.paused
                assert paused.next_fire is None
                await step(s, clock, 5 * MINUTE, 4)  # 00:10 ... 00:25: paused
                resumed = await s.resume_schedule("every5", tenant_id="acme")
                assert resumed.next_fire == T0 + _dt.timedelta(minutes=30)
                await step(s, clock, 5 * MINUTE)  # 00:30 fires
                removed = await s.remove_schedule("every5")
                assert removed.last_fire == T0 + _dt.timedelta(minutes=30)
                await step(s, clock, 5 * MINUTE, 2)
                assert await s.schedules() == []
                assert await s._store.schedules("acme") == []
            assert await cron_ids(s) == [
                fire_id("every5", T0 + _dt.timedelta(minutes=m)) for m in (5, 30)
            ]
            assert [e.event[-1] for e in seen] == ["paused", "resumed", "removed"]
            assert {e.metadata["schedule"] for e in seen} == {"every5"}
            with pytest.raises(work.NotFoundError, match="no schedule named 'every5'"):
                await s.pause_schedule("every5")

    arun(run())


def test_a_pause_is_kept_across_a_restart(tmp_path: Path, arun: Run[Any]) -> None:
    clock = clock_at(T0)
    url = f"sqlite://{tmp_path}/work.db"

    async def life(pause: bool) -> list[str]:
        async with work.Scheduler(store=url, clock=clock) as s:
            await s.cron("every5", "*/5 * * * *", template())
            if pause:
                await s.pause_schedule("every5")
            assert [x.paused for x in await s.schedules()] == [True]
            await step(s, clock, 5 * MINUTE, 3)
            return await cron_ids(s)

    assert arun(life(True)) == []
    assert arun(life(False)) == []


def test_schedules_are_per_tenant_and_scoped_handles_see_their_own(arun: Run[Any]) -> None:
    clock = clock_at(T0)

    async def run() -> None:
        async with work.Scheduler(clock=clock) as s:
            acme, beta = s.as_tenant("acme"), s.as_tenant("beta")
            await acme.cron("nightly", "0 3 * * *", template("acme"))
            await beta.cron("nightly", "0 4 * * *", template("beta"))
            assert [x.tenant_id for x in await s.schedules()] == ["acme", "beta"]
            assert [x.cron for x in await beta.schedules()] == ["0 4 * * *"]
            with pytest.raises(work.ValidationError, match="pass tenant_id") as bad:
                await s.pause_schedule("nightly")
            assert bad.value.path == "$.tenant_id"
            with pytest.raises(work.ValidationError, match="for tenant 'acme' only") as bad:
                await acme.cron("x", "* * * * *", template("beta"))
            assert bad.value.path == "$.tenant_id"
            await beta.pause_schedule("nightly")
            assert [x.paused for x in await s.schedules()] == [False, True]
            await acme.remove_schedule("nightly")
            with pytest.raises(work.NotFoundError):
                await acme.remove_schedule("nightly")
            await step(s, clock, 3600.0, 4)
            assert await cron_ids(s, "acme") == []
            assert await cron_ids(s, "beta") == []

    arun(run())


@pytest.mark.parametrize(
    ("args", "options", "path", "words"),
    [
        (("bad name", "* * * * *"), {}, "$.name", "a schedule name is an identifier"),
        (("n", "61 * * * *"), {}, "$.cron", "is not a cron expression (Bad minute)"),
        (("n", "* * *"), {}, "$.cron", "is not a cron expression"),
        (("n", ""), {}, "$.cron", "a cron expression is a non-empty string"),
        (("n", "* * * * *"), {"tz": "Mars/Olympus"}, "$.tz", "unknown time zone 'Mars/Olympus'"),
        (("n", "* * * * *"), {"tz": 2}, "$.tz", "an IANA time zone name"),
        (("n", "* * * * *"), {"missed": "all"}, "$.missed", "missed is one of"),
        (("n", "* * * * *"), {"grace_s": -1}, "$.grace_s", "grace_s is seconds"),
    ],
)
def test_a_bad_declaration_names_the_field(
    args: tuple[str, str], options: dict[str, Any], path: str, words: str, arun: Run[Any]
) -> None:
    async def run() -> None:
        async with work.Scheduler() as s:
            with pytest.raises(work.ValidationError) as bad:
                await s.cron(*args, template(), **options)
            assert bad.value.path == path
            assert words in str(bad.value)
            assert await s.schedules() == []

    arun(run())


def test_a_bad_template_a_duplicate_name_and_a_client_are_refused(
    tmp_path: Path, arun: Run[Any]
) -> None:
    async def run() -> None:
        async with work.Scheduler(store=f"sqlite://{tmp_path}/w.db") as s:
            with pytest.raises(work.ValidationError) as bad:
                await s.cron("n", "* * * * *", work.Job(kind="tool_call", tenant_id="a b"))
            assert bad.value.path == "$.template.tenant_id"
            with pytest.raises(work.UnschedulableError, match="no backend runs kind 'nobody'"):
                await s.cron("n", "* * * * *", work.Job(kind="nobody", tenant_id="acme"))
            with pytest.raises(work.ValidationError, match=r"work\.Job") as bad:
                await s.cron("n", "* * * * *", {"kind": "x"})  # type: ignore[arg-type]
            assert bad.value.path == "$.template"
            await s.cron("n", "* * * * *", template())
            with pytest.raises(work.ConflictError, match="already has a schedule named 'n'"):
                await s.cron("n", "*/2 * * * *", template())
            assert [x.cron for x in await s.schedules()] == ["* * * * *"]
            async with work.Client(store=f"sqlite://{tmp_path}/w.db") as client:
                with pytest.raises(work.ConfigurationError, match="scheduler's process"):
                    await client.schedules()

    arun(run())


def test_the_blocking_faces_and_the_module_functions() -> None:
    clock = clock_at(T0)
    with work.SyncScheduler(clock=clock) as s:
        s.cron("every5", "*/5 * * * *", template())
        assert [x.name for x in s.as_tenant("acme").schedules()] == ["every5"]
        assert s.as_tenant("beta").schedules() == []
        assert s.pause_schedule("every5").paused
        assert not s.resume_schedule("every5").paused
        assert s.remove_schedule("every5").name == "every5"
    work.start(clock=clock)
    try:
        made = work.cron("hourly", "0 * * * *", template(), tz="Europe/Paris")
        assert made.tz == "Europe/Paris"
        assert made.next_fire == T0 + _dt.timedelta(hours=1)
        assert [x.name for x in work.schedules()] == ["hourly"]
        assert work.pause_schedule("hourly").paused
        assert not work.as_tenant("acme").resume_schedule("hourly").paused
        work.remove_schedule("hourly")
        assert work.schedules() == []
    finally:
        work.stop()


def test_schedule_events_are_catalogued() -> None:
    for event in (SCHEDULE_FIRED, SCHEDULE_MISSED, SCHEDULE_PAUSED, SCHEDULE_RESUMED):
        assert event in ALL_EVENTS
    assert SCHEDULE_REMOVED in ALL_EVENTS

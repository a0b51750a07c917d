"""The cron rules alone (``engine/_cron_rules.py``): which fires are due between two instants,
which run on time, which were missed and what the policy does with them, in a time zone with
daylight saving; no loop, no clock."""

from __future__ import annotations

import datetime as _dt

import pytest

import nsai_work as work
from nsai_work.engine._cron_rules import check_cron, fire_job, fire_job_id, next_fire, plan

UTC = _dt.UTC
T0 = _dt.datetime(2026, 1, 1, tzinfo=UTC)
TEMPLATE = work.Job(kind="tool_call", tenant_id="acme", payload={"tool": "echo"})


def at(minutes: float) -> _dt.datetime:
    return T0 + _dt.timedelta(minutes=minutes)


def test_on_time_fires_run_each() -> None:
    spec = check_cron("n", "*/5 * * * *", TEMPLATE)
    todo = plan(spec, T0, at(10))
    assert todo.fires == (at(5), at(10))  # 00:05 is 5 minutes late: missed (grace 60 s), run once
    assert todo.missed == 1
    assert todo.last_missed == at(5)
    spec = check_cron("n", "*/5 * * * *", TEMPLATE, grace_s=600)
    todo = plan(spec, T0, at(10))
    assert todo.fires == (at(5), at(10))
    assert todo.missed == 0
    assert todo.settled_through == at(10)
    assert todo.next_fire == at(15)


def test_nothing_due_leaves_the_state_alone() -> None:
    spec = check_cron("n", "*/5 * * * *", TEMPLATE)
    todo = plan(spec, at(5), at(9.99))
    assert todo.fires == ()
    assert todo.settled_through == at(5)
    assert todo.next_fire == at(10)


@pytest.mark.parametrize(("missed", "fires"), [("run_once", (at(55), at(60))), ("skip", (at(60),))])
def test_missed_fires_run_once_or_are_skipped(missed: str, fires: tuple[_dt.datetime]) -> None:
    spec = check_cron("n", "*/5 * * * *", TEMPLATE, missed=missed)
    todo = plan(spec, T0, at(60))  # 00:05 ... 00:55 missed, 01:00 on time
    assert todo.missed == 11
    assert todo.last_missed == at(55)
    assert todo.fires == fires
    assert todo.settled_through == at(60)


def test_a_long_outage_is_counted_up_to_a_limit_and_jumps() -> None:
    spec = check_cron("n", "* * * * *", TEMPLATE)
    now = T0 + _dt.timedelta(days=30, seconds=30)
    todo = plan(spec, T0, now)
    assert todo.missed == 10_000
    assert todo.last_missed == T0 + _dt.timedelta(days=30) - _dt.timedelta(minutes=1)
    assert todo.fires == (todo.last_missed, T0 + _dt.timedelta(days=30))
    assert todo.settled_through == T0 + _dt.timedelta(days=30)


def test_daylight_saving_in_paris() -> None:
    spec = check_cron("n", "30 2 * * *", TEMPLATE, tz="Europe/Paris")
    # spring: 02:30 does not exist on 29 March 2026; cron fires at 03:00 (01:00 UTC)
    assert next_fire(spec, _dt.datetime(2026, 3, 28, 12, tzinfo=UTC)) == _dt.datetime(
        2026, 3, 29, 1, 0, tzinfo=UTC
    )
    # autumn: 02:30 happens twice on 25 October 2026; a daily schedule fires once
    spec = check_cron("n", "30 2 * * *", TEMPLATE, tz="Europe/Paris", grace_s=86_400)
    start = _dt.datetime(2026, 10, 24, 12, tzinfo=UTC)
    todo = plan(spec, start, start + _dt.timedelta(days=2))
    assert todo.fires == (
        _dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        _dt.datetime(2026, 10, 26, 1, 30, tzinfo=UTC),
    )
    hourly = check_cron("n", "30 * * * *", TEMPLATE, tz="Europe/Paris", grace_s=86_400)
    night = _dt.datetime(2026, 10, 24, 23, 0, tzinfo=UTC)  # 01:00 CEST
    got = plan(hourly, night, night + _dt.timedelta(hours=3)).fires
    assert got == tuple(night + _dt.timedelta(minutes=30 + 60 * n) for n in range(3))


def test_the_job_of_a_fire() -> None:
    template = work.Job(
        kind="tool_call", tenant_id="acme", payload={"tool": "echo"}, metadata={"a": 1}
    )
    spec = check_cron("nightly", "0 2 * * *", template)
    fire = _dt.datetime(2026, 1, 2, 2, tzinfo=UTC)
    job = fire_job(spec, fire, fire)
    assert job.id == fire_job_id("nightly", fire) == "cron:nightly:20260102T020000Z"
    assert job.metadata == {"a": 1, "schedule": "nightly", "fire_time": "2026-01-02T02:00:00+00:00"}
    assert job.created_at == fire
    assert job.tenant_id == "acme"


@pytest.mark.parametrize(
    ("cron", "words"),
    [
        ("* * * *", "is not a cron expression"),
        ("0 0 30 2 *", "Bad day-of-month"),
        ("*/0 * * * *", "is not a cron expression"),
        (5, "a cron expression is a non-empty string"),
    ],
)
def test_bad_expressions_name_the_field(cron: object, words: str) -> None:
    with pytest.raises(work.ValidationError, match=words) as bad:
        check_cron("n", cron, TEMPLATE)
    assert bad.value.path == "$.cron"

"""Retries and timeouts in the pure core: DESIGN.md's backoff formulas (directly and through the
core with a fake clock), the final failure's error and attempts, non-retryable failures, and
timeouts (StopRun, the reservation kept until the run really ended, retry_on_timeout)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsai_work._ir import Backoff, JobError, Pool, RetryPolicy, Status
from nsai_work.core import (
    ArmTimer,
    Dispatch,
    Failed,
    Stopped,
    StopRun,
    Succeeded,
    backoff_delay_ms,
    base_delay_ms,
)
from tests._core_builders import Driver, make_job, of_type, records_of, route

POOLS = {"b1": [Pool(name="p1", slots=1)]}
R = route("b1", "p1")


def formula(kind: Backoff, base: int, cap: int, attempt: int) -> float:
    """DESIGN.md: attempt n (the one that just failed, from 1), capped at max_delay_ms."""
    if kind is Backoff.EXPONENTIAL:
        delay = base * 2 ** (attempt - 1)
    elif kind is Backoff.LINEAR:
        delay = base * attempt
    else:
        delay = base
    return float(min(delay, cap))


def fixed(*values: float) -> Callable[[], float]:
    """A rand() that returns these values in turn."""
    it: Iterator[float] = iter(values)
    return lambda: next(it)


def never() -> float:
    raise AssertionError("rand() must not be drawn without jitter")


# ---- the formulas, directly ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (Backoff.EXPONENTIAL, [100.0, 200.0, 400.0, 800.0, 1000.0, 1000.0]),
        (Backoff.LINEAR, [100.0, 200.0, 300.0, 400.0, 500.0, 600.0]),
        (Backoff.CONSTANT, [100.0] * 6),
    ],
)
def test_delays_follow_the_design_formulas(kind: Backoff, expected: list[float]) -> None:
    policy = RetryPolicy(backoff=kind, base_delay_ms=100, max_delay_ms=1000, jitter=False)
    got = [backoff_delay_ms(policy, n, never) for n in range(1, 7)]
    assert got == expected
    assert [base_delay_ms(policy, n) for n in range(1, 7)] == expected


def test_linear_and_constant_are_capped_too() -> None:
    linear = RetryPolicy(backoff=Backoff.LINEAR, base_delay_ms=400, max_delay_ms=1000, jitter=False)
    assert backoff_delay_ms(linear, 3, never) == 1000.0
    constant = RetryPolicy(
        backoff=Backoff.CONSTANT, base_delay_ms=5000, max_delay_ms=1000, jitter=False
    )
    assert backoff_delay_ms(constant, 1, never) == 1000.0


def test_the_defaults_are_exponential_from_one_second_capped_at_a_minute() -> None:
    policy = RetryPolicy(jitter=False)
    assert [backoff_delay_ms(policy, n, never) for n in (1, 2, 3, 7, 1000)] == [
        1000.0,
        2000.0,
        4000.0,
        60_000.0,
        60_000.0,
    ]


@pytest.mark.parametrize(("r", "fraction"), [(0.0, 0.5), (0.5, 0.75), (0.999, 0.9995)])
def test_jitter_draws_uniformly_between_half_and_the_whole_delay(r: float, fraction: float) -> None:
    policy = RetryPolicy(backoff=Backoff.CONSTANT, base_delay_ms=2000, jitter=True)
    assert backoff_delay_ms(policy, 1, lambda: r) == pytest.approx(2000 * fraction)


@given(
    kind=st.sampled_from(list(Backoff)),
    base=st.integers(0, 86_400_000),
    cap=st.integers(0, 86_400_000),
    attempt=st.integers(1, 1000),
    r=st.floats(0.0, 1.0, exclude_max=True),
    jitter=st.booleans(),
)
def test_every_delay_matches_the_formula(
    kind: Backoff, base: int, cap: int, attempt: int, r: float, jitter: bool
) -> None:
    policy = RetryPolicy(backoff=kind, base_delay_ms=base, max_delay_ms=cap, jitter=jitter)
    delay = formula(kind, base, cap, attempt)
    got = backoff_delay_ms(policy, attempt, lambda: r)
    if jitter:
        assert delay / 2 <= got <= delay
        assert got == pytest.approx(delay / 2 + r * delay / 2)
    else:
        assert got == delay


# ---- the formulas, through the core ----------------------------------------------------------


def fail(attempt: int) -> Failed:
    return Failed(
        JobError(type="ValueError", message=f"bad input {attempt}", traceback=f"tb {attempt}")
    )


@pytest.mark.parametrize("kind", list(Backoff))
def test_the_core_waits_the_formula_delay_between_attempts(kind: Backoff) -> None:
    policy = RetryPolicy(
        max_attempts=5, backoff=kind, base_delay_ms=300, max_delay_ms=2000, jitter=False
    )
    d = Driver(POOLS, rand=never)
    out = d.submit([make_job("j", policy=policy)], R)
    assert [x.job.attempt for x in of_type(out, Dispatch)] == [1]
    for attempt in range(1, 5):
        d.now += 0.25  # the run took a while
        out = d.end("j", attempt, fail(attempt))
        delay = formula(kind, 300, 2000, attempt)
        (record,) = records_of(out, "j")
        assert (record.previous, record.job.status) == (Status.RUNNING, Status.PENDING)
        assert record.backoff_ms == delay
        assert record.elapsed_ms == pytest.approx(250.0)
        (timer,) = of_type(out, ArmTimer)
        assert timer.key == ("ready", "acme", "j", attempt)
        assert timer.at - d.now == pytest.approx(delay / 1000.0)
        assert record.job.next_attempt_at == dt.datetime.fromtimestamp(timer.at, dt.UTC)
        assert not of_type(out, Dispatch), "nothing runs before the backoff is over"
        out = d.fire(timer)
        assert [(r.previous, r.job.status) for r in records_of(out, "j")] == [
            (Status.PENDING, Status.QUEUED)
        ]
        (dispatch,) = of_type(out, Dispatch)
        assert dispatch.job.attempt == attempt + 1


def test_jitter_through_the_core_uses_the_injected_random_source() -> None:
    policy = RetryPolicy(
        max_attempts=4, backoff=Backoff.EXPONENTIAL, base_delay_ms=1000, jitter=True
    )
    d = Driver(POOLS, rand=fixed(0.0, 0.5, 0.25))
    d.submit([make_job("j", policy=policy)], R)
    backoffs = []
    for attempt in (1, 2, 3):
        out = d.end("j", attempt, fail(attempt))
        (record,) = records_of(out, "j")
        (timer,) = of_type(out, ArmTimer)
        assert timer.at - d.now == pytest.approx(record.backoff_ms / 1000.0)
        backoffs.append(record.backoff_ms)
        d.fire(timer)
    # delays 1000, 2000, 4000; drawn at 0.0, 0.5, 0.25 of the [delay/2, delay] range
    assert backoffs == [500.0, 1500.0, 2500.0]


def test_after_the_last_attempt_the_job_fails_with_every_error_kept() -> None:
    policy = RetryPolicy(max_attempts=3, backoff=Backoff.CONSTANT, base_delay_ms=10, jitter=False)
    d = Driver(POOLS, rand=never)
    d.submit([make_job("j", policy=policy)], R)
    for attempt in (1, 2):
        out = d.end("j", attempt, fail(attempt))
        d.fire(of_type(out, ArmTimer)[0])
    out = d.end("j", 3, fail(3))
    (record,) = records_of(out, "j")
    job = record.job
    assert (record.previous, job.status) == (Status.RUNNING, Status.FAILED)
    assert not of_type(out, ArmTimer)
    assert job.error == JobError(
        type="ValueError", message="bad input 3", traceback="tb 3", attempt=3
    )
    assert job.attempt == 3
    assert [a.number for a in job.attempts] == [1, 2, 3]
    assert [a.status for a in job.attempts] == [Status.FAILED] * 3
    assert [a.error.message if a.error else None for a in job.attempts] == [
        "bad input 1",
        "bad input 2",
        "bad input 3",
    ]
    assert all(a.error and a.error.attempt == a.number for a in job.attempts)
    assert all(a.finished_at is not None for a in job.attempts)
    assert d.core.get("acme", "j") is None
    assert d.core.live_jobs == 0
    assert d.core.active_runs == 0


def test_a_non_retryable_failure_fails_at_once() -> None:
    policy = RetryPolicy(max_attempts=5, jitter=False)
    d = Driver(POOLS, rand=never)
    d.submit([make_job("j", policy=policy)], R)
    error = JobError(type="NonRetryableError", message="bad key", traceback="tb")
    out = d.end("j", 1, Failed(error, retryable=False))
    (record,) = records_of(out, "j")
    assert record.job.status is Status.FAILED
    assert record.job.error is not None
    assert (record.job.error.type, record.job.error.message) == ("NonRetryableError", "bad key")
    assert len(record.job.attempts) == 1
    assert not of_type(out, ArmTimer)


def test_a_zero_delay_retry_is_queued_and_started_again_at_once() -> None:
    policy = RetryPolicy(max_attempts=2, base_delay_ms=0, jitter=True)
    d = Driver(POOLS)
    d.submit([make_job("j", policy=policy)], R)
    out = d.end("j", 1, fail(1))
    assert [(r.previous, r.job.status) for r in records_of(out, "j")] == [
        (Status.RUNNING, Status.PENDING),
        (Status.PENDING, Status.QUEUED),
    ]
    assert not of_type(out, ArmTimer)
    assert [x.job.attempt for x in of_type(out, Dispatch)] == [2]


def test_success_after_a_retry_clears_the_error_and_keeps_the_failed_attempt() -> None:
    policy = RetryPolicy(max_attempts=2, base_delay_ms=0, jitter=False)
    d = Driver(POOLS)
    d.submit([make_job("j", policy=policy)], R)
    d.end("j", 1, fail(1))
    out = d.end("j", 2, Succeeded({"answer": 42}))
    (record,) = records_of(out, "j")
    assert record.job.status is Status.SUCCEEDED
    assert record.job.result == {"answer": 42}
    assert record.job.error is None
    assert [a.status for a in record.job.attempts] == [Status.FAILED, Status.SUCCEEDED]


# ---- timeouts --------------------------------------------------------------------------------


def test_a_timeout_stops_the_run_and_keeps_its_slot_until_the_run_ended() -> None:
    d = Driver(POOLS, rand=never)
    slow = make_job("slow", timeout_ms=500, policy=RetryPolicy(max_attempts=1))
    waiting = make_job("waiting")
    out = d.submit([slow, waiting], R)
    assert [x.job.id for x in of_type(out, Dispatch)] == ["slow"]
    (timer,) = of_type(out, ArmTimer)
    assert timer.key == ("timeout", "acme", "slow", 1)
    assert timer.at - d.now == pytest.approx(0.5)

    out = d.fire(timer)
    assert of_type(out, StopRun) == [StopRun("acme", "slow", 1, "b1", "timeout")]
    (record,) = records_of(out, "slow")
    assert (record.previous, record.job.status) == (Status.RUNNING, Status.TIMEOUT)
    assert record.job.error is not None
    assert record.job.error.type == "TimeoutError"
    assert "500" in record.job.error.message
    assert record.job.attempts[-1].status is Status.TIMEOUT
    assert not of_type(out, Dispatch), "the stopped run still holds the only slot"
    assert d.core.pool_states()["p1"].used_slots == 1
    assert d.core.active_runs == 1
    assert d.status("waiting") is Status.QUEUED

    d.now += 2.0
    out = d.end("slow", 1, Stopped())
    assert records_of(out, "slow") == [], "the job already ended; only its slot comes back"
    assert [x.job.id for x in of_type(out, Dispatch)] == ["waiting"]
    assert d.core.active_runs == 1


def test_a_retry_may_start_while_the_timed_out_attempt_still_holds_a_slot() -> None:
    d = Driver({"b1": [Pool(name="p1", slots=2)]}, rand=never)
    policy = RetryPolicy(max_attempts=2, backoff=Backoff.CONSTANT, base_delay_ms=0, jitter=False)
    d.submit([make_job("j", timeout_ms=100, policy=policy)], R)
    out = d.fire(ArmTimer(d.now + 0.1, ("timeout", "acme", "j", 1)))
    (dispatch,) = of_type(out, Dispatch)
    assert (dispatch.job.id, dispatch.job.attempt) == ("j", 2)
    assert d.core.active_runs == 2  # the first attempt's thread has not returned yet
    assert d.core.pool_states()["p1"].used_slots == 2

    out = d.end("j", 1, Succeeded("late"))  # the outlived run ends: only its slot comes back
    assert records_of(out, "j") == []
    assert d.core.active_runs == 1
    assert d.core.pool_states()["p1"].used_slots == 1
    assert d.end("j", 1, Succeeded("again")) == []  # reported twice: nothing more

    (record,) = records_of(d.end("j", 2, Succeeded("ok")), "j")
    assert (record.job.status, record.job.result, record.job.attempt) == (Status.SUCCEEDED, "ok", 2)
    assert d.core.active_runs == 0
    assert d.core.pool_states()["p1"].used_slots == 0


def test_a_run_that_finishes_after_its_timeout_does_not_change_the_job() -> None:
    d = Driver(POOLS, rand=never)
    d.submit([make_job("j", timeout_ms=100, policy=RetryPolicy(max_attempts=1))], R)
    d.fire(ArmTimer(d.now + 0.1, ("timeout", "acme", "j", 1)))
    out = d.end("j", 1, Succeeded("late"))
    assert out == []
    assert d.core.live_jobs == 0
    assert d.core.pool_states()["p1"].used_slots == 0


def test_a_timeout_is_retried_like_a_failure() -> None:
    policy = RetryPolicy(max_attempts=2, backoff=Backoff.CONSTANT, base_delay_ms=200, jitter=False)
    d = Driver({"b1": [Pool(name="p1", slots=2)]}, rand=never)
    out = d.submit([make_job("j", timeout_ms=1000, policy=policy)], R)
    out = d.fire(of_type(out, ArmTimer)[0])
    assert of_type(out, StopRun) == [StopRun("acme", "j", 1, "b1", "timeout")]
    (record,) = records_of(out, "j")
    assert (record.previous, record.job.status) == (Status.RUNNING, Status.PENDING)
    assert record.backoff_ms == 200.0
    assert record.job.attempts[0].status is Status.TIMEOUT
    (ready,) = of_type(out, ArmTimer)
    out = d.fire(ready)
    (dispatch,) = of_type(out, Dispatch)
    assert dispatch.job.attempt == 2
    # The first run still holds its slot until its RunEnded: two slots are in use.
    assert d.core.pool_states()["p1"].used_slots == 2
    d.end("j", 1, Stopped())
    assert d.core.pool_states()["p1"].used_slots == 1
    assert d.status("j") is Status.RUNNING


def test_retry_on_timeout_false_makes_a_timeout_final() -> None:
    policy = RetryPolicy(max_attempts=3, retry_on_timeout=False, jitter=False)
    d = Driver(POOLS, rand=never)
    out = d.submit([make_job("j", timeout_ms=1000, policy=policy)], R)
    out = d.fire(of_type(out, ArmTimer)[0])
    assert of_type(out, StopRun) == [StopRun("acme", "j", 1, "b1", "timeout")]
    (record,) = records_of(out, "j")
    assert record.job.status is Status.TIMEOUT
    assert not of_type(out, ArmTimer)
    assert d.core.get("acme", "j") is None


def test_a_stale_timeout_timer_changes_nothing() -> None:
    policy = RetryPolicy(max_attempts=2, base_delay_ms=0, jitter=False)
    d = Driver(POOLS)
    out = d.submit([make_job("j", timeout_ms=1000, policy=policy)], R)
    first_timeout = of_type(out, ArmTimer)[0]
    d.end("j", 1, fail(1))  # retried at once: attempt 2 runs
    assert d.fire(first_timeout) == []
    job = d.core.get("acme", "j")
    assert job is not None
    assert (job.status, job.attempt) == (Status.RUNNING, 2)


def test_records_chain_through_retries() -> None:
    policy = RetryPolicy(max_attempts=2, base_delay_ms=100, jitter=False)
    d = Driver(POOLS)
    seen: list[tuple[Status | None, Status]] = []
    out = d.submit([make_job("j", policy=policy)], R)
    seen += [(r.previous, r.job.status) for r in records_of(out, "j")]
    out = d.end("j", 1, fail(1))
    seen += [(r.previous, r.job.status) for r in records_of(out, "j")]
    out = d.fire(of_type(out, ArmTimer)[0])
    seen += [(r.previous, r.job.status) for r in records_of(out, "j")]
    out = d.end("j", 2, Succeeded())
    seen += [(r.previous, r.job.status) for r in records_of(out, "j")]
    assert seen == [
        (None, Status.QUEUED),
        (Status.RUNNING, Status.PENDING),
        (Status.PENDING, Status.QUEUED),
        (Status.RUNNING, Status.SUCCEEDED),
    ]

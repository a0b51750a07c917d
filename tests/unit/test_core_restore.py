"""Restore (DESIGN.md principle 6, state is data): a fresh core rebuilt from the live jobs and
the ``CoreState`` a store kept, after a crash (``lost_reason``) or for a standby (re-attach).

The property test (tests/property/test_restore_machine.py) shows that a restored core decides
as the original would; these are the cases one by one: crash recovery per status, waits that
continue, order, limits that hold, what the state carries, and errors."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import pytest

from nsai_work import (
    Constraints,
    Job,
    Pool,
    Prices,
    Priority,
    Quota,
    QuotaExceededError,
    RateLimitedError,
    Resources,
    RetryPolicy,
    Tenant,
    ValidationError,
)
from nsai_work._ir import JobError, Status
from nsai_work.core import (
    CORE_STATE_VERSION,
    ArmTimer,
    Cancel,
    ConcurrencyLimitChanged,
    CoreState,
    Decision,
    DisarmTimer,
    Dispatch,
    Failed,
    Limit,
    Record,
    Reject,
    Restore,
    Route,
    RunEnded,
    SchedulingCore,
    Submit,
    Succeeded,
    TenantChanged,
    TimerFired,
)
from tests._core_builders import of_type

#: The wall clock of the first core runs this far ahead of its monotonic clock.
W = 1_700_000_000.0
ROUTE: Route = (("b", ("p",)),)
LOST = "engine_lost"
RETRY = RetryPolicy(max_attempts=3, base_delay_ms=2000, jitter=False)


def make(
    slots: int = 1, *, tenants: Sequence[Tenant] = (), prices: Prices | None = None, **kw: Any
) -> SchedulingCore:
    pool = (
        Pool(name="p", slots=slots, cpu=64)
        if prices is None
        else Pool(name="p", slots=slots, cpu=64, prices=prices)
    )
    return SchedulingCore(
        pools={"b": [pool]},
        rand=random.Random(0).random,
        tenants=tenants,
        tenant_idle_ttl_s=None,
        **kw,
    )


def job(job_id: str, tenant: str = "acme", **fields: Any) -> Job:
    fields.setdefault("constraints", Constraints(retry_policy=RETRY))
    return Job(kind="k", tenant_id=tenant, id=job_id, **fields)


def submit(core: SchedulingCore, jobs: Sequence[Job], now: float) -> list[Decision]:
    return core.handle(Submit(tuple(jobs), (ROUTE,) * len(jobs)), now, now + W)


def stored(core: SchedulingCore, now: float) -> tuple[tuple[Job, ...], CoreState]:
    """What a store keeps at ``now``: the live jobs and the state, through JSON."""
    state = msgspec.json.encode(core.export_state(now, now + W))
    jobs = core.live_jobs_in_order()
    return (
        tuple(msgspec.json.decode(msgspec.json.encode(j), type=Job) for j in jobs),
        msgspec.json.decode(state, type=CoreState),
    )


def restore(
    fresh: SchedulingCore,
    saved: tuple[tuple[Job, ...], CoreState | None],
    now: float,
    wall: float,
    lost: str | None = None,
) -> list[Decision]:
    jobs, state = saved
    return fresh.handle(Restore(jobs, (ROUTE,) * len(jobs), (), state, lost), now, wall)


def ids(decisions: Sequence[Decision], kind: type[Record] | type[Dispatch]) -> list[str]:
    return [d.job.id for d in decisions if isinstance(d, kind)]


def records(decisions: Sequence[Decision]) -> list[tuple[str, Status | None, Status]]:
    return [(d.job.id, d.previous, d.job.status) for d in of_type(decisions, Record)]


# ---- crash recovery: a run lost with the engine ------------------------------------------------


def test_a_lost_run_with_attempts_left_is_retried_after_its_backoff() -> None:
    core = make()
    submit(core, [job("a")], now=100.0)  # running since 100
    saved = stored(core, now=130.0)
    fresh = make()
    # the new process: its monotonic clock starts elsewhere; 50 s of wall time went by
    out = restore(fresh, saved, now=7.0, wall=W + 150.0, lost=LOST)
    assert records(out) == [("a", Status.RUNNING, Status.PENDING)]
    [record] = of_type(out, Record)
    after = record.job
    assert after.waiting_reason == "backoff"
    assert after.attempt == 1
    [attempt] = after.attempts
    assert attempt.status is Status.FAILED
    assert attempt.error is not None
    assert attempt.error.type == "EngineLostError"
    assert attempt.error.message.startswith("engine_lost:")
    assert after.error == attempt.error
    assert record.backoff_ms == 2000.0
    assert record.elapsed_ms == pytest.approx(50_000.0)  # running since wall W + 100
    assert of_type(out, ArmTimer) == [ArmTimer(9.0, ("ready", "acme", "a", 1))]
    assert of_type(out, Dispatch) == []
    assert of_type(out, DisarmTimer) == []
    # the retry: a second attempt, on the restored core's clock
    out = fresh.handle(TimerFired(("ready", "acme", "a", 1)), 9.0, W + 152.0)
    assert records(out) == [("a", Status.PENDING, Status.QUEUED)]
    [dispatch] = of_type(out, Dispatch)
    assert dispatch.job.attempt == 2
    assert len(dispatch.job.attempts) == 2


def test_a_lost_run_without_attempts_left_fails_and_frees_its_slot() -> None:
    core = make()
    one_shot = Constraints(retry_policy=RetryPolicy(max_attempts=1))
    submit(core, [job("a", constraints=one_shot), job("b")], now=100.0)  # b waits for a's slot
    fresh = make()
    out = restore(fresh, stored(core, 101.0), now=200.0, wall=W + 200.0, lost=LOST)
    assert records(out) == [("a", Status.RUNNING, Status.FAILED)]
    [failed] = of_type(out, Record)
    assert failed.job.error is not None
    assert failed.job.error.type == "EngineLostError"
    assert "engine_lost" in failed.job.error.message
    assert failed.job.attempts[-1].status is Status.FAILED
    assert ids(out, Dispatch) == ["b"]  # the lost run held nothing: b starts
    stats = fresh.stats().totals
    assert (stats.submitted, stats.failed, stats.running) == (2, 1, 1)


def test_every_job_retried_after_a_crash_shows_engine_lost_in_its_attempts() -> None:
    core = make(slots=3)
    submit(core, [job(n) for n in "abc"], now=100.0)
    out = restore(make(slots=3), stored(core, 101.0), now=300.0, wall=W + 300.0, lost=LOST)
    for record in of_type(out, Record):
        assert record.job.status is Status.PENDING
        assert [a.error.type for a in record.job.attempts if a.error] == ["EngineLostError"]


def test_a_rerun_after_a_crash_is_not_given_a_new_timer_for_the_lost_attempt() -> None:
    core = make()
    submit(core, [job("a", resources=Resources(timeout_ms=60_000))], now=100.0)
    out = restore(make(), stored(core, 101.0), now=200.0, wall=W + 200.0, lost=LOST)
    # the lost attempt's timeout timer was never armed here: nothing to disarm
    assert [d.key[0] for d in of_type(out, ArmTimer)] == ["ready"]
    assert of_type(out, DisarmTimer) == []


# ---- re-attach: the run is still going ---------------------------------------------------------


def test_a_reattached_run_keeps_its_slot_its_timeout_and_its_end() -> None:
    core = make()
    submit(core, [job("a", resources=Resources(timeout_ms=60_000)), job("b")], now=100.0)
    fresh = make()
    out = restore(fresh, stored(core, 101.0), now=5.0, wall=W + 110.0)
    # no transition, so no Record; the timeout runs from the attempt's start (wall W + 100)
    assert records(out) == []
    assert of_type(out, Dispatch) == []
    assert of_type(out, ArmTimer) == [ArmTimer(55.0, ("timeout", "acme", "a", 1))]
    assert fresh.pool_states()["p"].used_slots == 1
    assert fresh.stats().by_tenant["acme"].usage.running == 1
    out = fresh.handle(RunEnded("acme", "a", 1, Succeeded(7)), 6.0, W + 111.0)
    assert records(out) == [("a", Status.RUNNING, Status.SUCCEEDED)]
    assert ids(out, Dispatch) == ["b"]
    [done] = of_type(out, Record)
    assert done.job.result == 7
    assert done.elapsed_ms == pytest.approx(11_000.0)  # running since wall W + 100
    assert done.total_ms == pytest.approx(11_000.0)


def test_a_reattached_run_that_timed_out_meanwhile_times_out_at_once() -> None:
    core = make()
    submit(core, [job("a", resources=Resources(timeout_ms=1000))], now=100.0)
    fresh = make()
    out = restore(fresh, stored(core, 100.5), now=0.0, wall=W + 200.0)
    [timer] = of_type(out, ArmTimer)
    assert timer.at == pytest.approx(-99.0)  # due long ago: the engine fires it at once
    out = fresh.handle(TimerFired(timer.key), 0.0, W + 200.0)
    assert records(out) == [("a", Status.RUNNING, Status.PENDING)]
    assert of_type(out, Record)[0].job.error.type == "TimeoutError"  # type: ignore[union-attr]


# ---- waits continue --------------------------------------------------------------------------


def test_a_backoff_continues_until_its_next_attempt_at_and_one_already_due_is_queued() -> None:
    core = make(slots=2)
    submit(core, [job("a"), job("b")], now=100.0)
    core.handle(RunEnded("acme", "a", 1, Failed(_error())), 101.0, W + 101.0)  # retry at 103
    core.handle(RunEnded("acme", "b", 1, Failed(_error())), 102.0, W + 102.0)  # retry at 104
    saved = stored(core, 102.0)
    assert [j.status for j in saved[0]] == [Status.PENDING, Status.PENDING]
    fresh = make(slots=2)
    out = restore(fresh, saved, now=50.0, wall=W + 103.5)
    # a was due at wall W + 103 (queued and started now); b waits half a second more
    assert records(out) == [("a", Status.PENDING, Status.QUEUED)]
    assert ids(out, Dispatch) == ["a"]
    assert of_type(out, ArmTimer) == [ArmTimer(50.5, ("ready", "acme", "b", 1))]


def test_queued_jobs_come_back_in_their_order_across_tenants_and_priorities() -> None:
    def scenario(core: SchedulingCore) -> list[str]:
        """Run the one slot's jobs to the end, one at a time; the order they start in."""
        started: list[str] = []
        now = 300.0
        while core.live_jobs:
            [running] = [e for e in core.live_entries() if e.status is Status.RUNNING]
            out = core.handle(RunEnded(running.tenant, running.job.id, 1, Succeeded()), now)
            started += ids(out, Dispatch)
            now += 1.0
        return started

    tenants = [Tenant("t1", weight=1.0), Tenant("t2", weight=2.0), Tenant("t3", weight=0.5)]
    original = make(tenants=tenants)
    levels = [Priority.BATCH, Priority.INTERACTIVE, Priority.OFFLINE]
    batch = [job(f"j{i:02d}", tenant=f"t{i % 4}", priority=levels[i % 3]) for i in range(24)]
    submit(original, batch[:1], now=100.0)  # j00 holds the slot
    for i, one in enumerate(batch[1:]):
        submit(original, [one], now=101.0 + i)
    saved = stored(original, 130.0)
    fresh = make(tenants=tenants)
    assert of_type(restore(fresh, saved, now=130.0, wall=W + 130.0), Dispatch) == []
    assert [j.id for j in fresh.live_jobs_in_order()] == [j.id for j in saved[0]]
    assert scenario(fresh) == scenario(original)


# ---- limits hold, and never drop a restored job ------------------------------------------------


def test_restored_jobs_are_never_rejected_by_quotas_rate_limits_or_max_waiting() -> None:
    roomy = make()
    submit(roomy, [job(f"j{i}", tenant="t") for i in range(6)], now=100.0)  # 1 runs, 5 wait
    strict = [Tenant("t", quota=Quota(max_queued=1, submit_rate=0.01, burst=1, max_running=1))]
    fresh = make(tenants=strict, max_waiting=2, default_tenant=None)
    out = restore(fresh, stored(roomy, 101.0), now=101.0, wall=W + 101.0)
    assert of_type(out, Reject) == []
    assert records(out) == []
    assert (fresh.live_jobs, fresh.waiting) == (6, 5)
    # new submits do meet the limits
    [reject] = submit(fresh, [job("new", tenant="t")], now=102.0)
    assert isinstance(reject, Reject)


def test_a_rate_limited_tenant_gets_no_fresh_burst_from_a_restart() -> None:
    tenants = [Tenant("t", quota=Quota(submit_rate=0.5, burst=2))]
    core = make(slots=10, tenants=tenants)
    submit(core, [job("a", tenant="t"), job("b", tenant="t")], now=100.0)  # the burst is spent
    saved = stored(core, 100.0)
    fresh = make(slots=10, tenants=tenants)
    restore(fresh, saved, now=0.0, wall=W + 101.0)  # 1 s later: half a token earned
    [reject] = submit(fresh, [job("c", tenant="t")], now=0.0)
    assert isinstance(reject, Reject)
    assert isinstance(reject.error, RateLimitedError)
    assert reject.error.retry_after_s == pytest.approx(1.0)
    assert ids(submit(fresh, [job("c", tenant="t")], now=1.0), Record) == ["c"]
    # without the state the bucket would have started full
    bare = make(slots=10, tenants=tenants)
    restore(bare, (saved[0], None), now=0.0, wall=W + 101.0)
    assert ids(submit(bare, [job("c", tenant="t")], now=0.0), Record) == ["c"]


def test_a_tenant_at_its_budget_stays_at_its_budget() -> None:
    prices = Prices(cpu_hour=1.0, slot_hour=0.0)
    tenants = [Tenant("t", quota=Quota(budget_usd=2.0, budget_period_s=86_400))]
    hour = 3_600_000
    one_cpu = Resources(cpu=1.0, timeout_ms=hour)
    core = make(slots=4, tenants=tenants, prices=prices)
    submit(core, [job("a", tenant="t", resources=one_cpu)], now=0.0)
    core.handle(RunEnded("t", "a", 1, Succeeded()), 3600.0, W + 3600.0)  # spent $1
    submit(core, [job("b", tenant="t", resources=one_cpu)], now=3600.0)  # commits $1 more
    [reject] = submit(core, [job("c", tenant="t", resources=one_cpu)], now=3600.0)
    assert isinstance(reject, Reject)
    fresh = make(slots=4, tenants=tenants, prices=prices)
    restore(fresh, stored(core, 3600.0), now=10.0, wall=W + 3700.0)
    stats = fresh.stats().by_tenant["t"]
    assert (stats.spend_usd, stats.spend_total_usd, stats.committed_usd) == (1.0, 1.0, 1.0)
    [again] = submit(fresh, [job("c", tenant="t", resources=one_cpu)], now=10.0)
    assert isinstance(again, Reject)
    assert isinstance(again.error, QuotaExceededError)
    assert "$1.0000 spent and $1.0000 committed" in str(again.error)


def test_tenants_and_limits_set_at_run_time_win_over_the_configuration() -> None:
    configured = [Tenant("t", quota=Quota(max_running=5))]
    core = make(slots=5, tenants=configured)
    core.handle(TenantChanged(Tenant("t", weight=3.0, quota=Quota(max_running=1))), 1.0)
    core.handle(ConcurrencyLimitChanged("g", 2), 1.0)
    fresh = make(slots=5, tenants=configured)
    restore(fresh, stored(core, 1.0), now=1.0, wall=W + 1.0)
    spec = fresh.tenant("t")
    assert spec is not None
    assert spec.weight == 3.0
    assert spec.quota.max_running == 1
    assert fresh.concurrency_usage("g") == (0, 2)
    in_group = Constraints(retry_policy=RETRY, concurrency_group="g")
    out = submit(fresh, [job(f"j{i}", tenant="t", constraints=in_group) for i in range(3)], 2.0)
    assert ids(out, Dispatch) == ["j0"]  # max_running=1 (the run-time spec), not 5


def test_counters_continue_and_only_changes_are_recorded() -> None:
    core = make(slots=2)
    submit(core, [job(n) for n in "abcde"], now=100.0)
    core.handle(RunEnded("acme", "a", 1, Succeeded()), 101.0)
    core.handle(Cancel("acme", "e"), 101.0)
    submit(core, [Job(kind="k", tenant_id="acme", id="a")], now=102.0)  # the id is free again
    fresh = make(slots=2)
    out = restore(fresh, stored(core, 102.0), now=103.0, wall=W + 103.0)
    assert records(out) == []
    assert of_type(out, Dispatch) == []
    assert fresh.stats().totals == core.stats().totals
    assert fresh.stats().by_tenant["acme"].rejections == core.stats().by_tenant["acme"].rejections


def test_a_rate_limited_tool_keeps_its_bucket_its_parked_jobs_and_its_refill_timer() -> None:
    api = (Limit(name="api", rate=0.5, burst=1, max_concurrency=5),)
    core = make(slots=8)
    jobs = (job("a"), job("b"), job("c"))
    out = core.handle(Submit(jobs, (ROUTE,) * 3, (api,) * 3), 10.0, W + 10.0)
    assert ids(out, Dispatch) == ["a"]  # the one token; b waits for the next, due at 12
    [refill] = of_type(out, ArmTimer)
    assert refill == ArmTimer(12.0, ("limit", "", "api", 0))
    saved = stored(core, 11.0)
    fresh = make(slots=8)
    restored = saved[0]
    out = fresh.handle(Restore(restored, (ROUTE,) * 3, (api,) * 3, saved[1], None), 1.0, W + 11.0)
    assert of_type(out, ArmTimer) == [ArmTimer(2.0, ("limit", "", "api", 0))]
    assert ids(out, Dispatch) == []
    assert fresh.waiting_reason("acme", "b") == "tool_rate:api"
    assert fresh.limit_usage("api") == (1, 5, 0.0)  # (its tokens as of its last refill)
    out = fresh.handle(TimerFired(("limit", "", "api", 0)), 2.0, W + 12.0)
    assert ids(out, Dispatch) == ["b"]


# ---- the state as data, and errors ---------------------------------------------------------------


def test_the_state_is_plain_data_for_json_and_msgpack() -> None:
    tenants = [Tenant("t", quota=Quota(submit_rate=1.0, budget_usd=5.0), namespaces={"n": Quota()})]
    core = make(slots=1, tenants=tenants)
    submit(core, [job("a", tenant="t", resources=Resources(timeout_ms=1000)), job("b")], 1.0)
    core.handle(ConcurrencyLimitChanged("g", 3), 2.0)
    state = core.export_state(2.0, W + 2.0)
    assert state.version == CORE_STATE_VERSION
    assert msgspec.json.decode(msgspec.json.encode(state), type=CoreState) == state
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=CoreState) == state
    assert [r.job_id for r in state.runs] == ["a"]
    assert state.group_limits == {"g": 3}


@pytest.mark.parametrize(
    ("broken", "path"),
    [
        pytest.param(lambda s: msgspec.structs.replace(s, version=0), "$.version", id="older"),
        pytest.param(lambda s: msgspec.structs.replace(s, version=99), "$.version", id="newer"),
        pytest.param(
            lambda s: msgspec.structs.replace(s, wall="yesterday"), "$.wall", id="wrong-type"
        ),
        pytest.param(
            lambda s: msgspec.structs.replace(s, hold_seq=-1), "$.hold_seq", id="out-of-range"
        ),
        pytest.param(
            lambda s: msgspec.structs.replace(
                s, tenants=(msgspec.structs.replace(s.tenants[0], tokens=float("nan")),)
            ),
            "$.tenants[0].tokens",
            id="not-finite",
        ),
    ],
)
def test_a_state_of_another_version_or_garbage_is_refused_naming_the_field(
    broken: Callable[[CoreState], CoreState], path: str
) -> None:
    core = make()
    submit(core, [job("a")], now=1.0)
    jobs, state = stored(core, 1.0)
    fresh = make()
    with pytest.raises(ValidationError) as caught:
        restore(fresh, (jobs, broken(state)), now=1.0, wall=W + 1.0)
    assert caught.value.path == path
    assert fresh.live_jobs == 0  # nothing changed: it can be restored without the state
    restore(fresh, (jobs, None), now=1.0, wall=W + 1.0)
    assert fresh.live_jobs == 1


def test_stored_garbage_is_refused_when_decoded() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.tenants"):
        msgspec.json.decode(b'{"version": 1, "wall": 0, "tenants": 3}', type=CoreState)
    # a state from a newer release decodes (unknown fields are kept out) and is then refused
    newer = msgspec.json.decode(b'{"version": 2, "wall": 0, "future": []}', type=CoreState)
    with pytest.raises(ValidationError, match="version 2 is not supported"):
        make().handle(Restore((), (), (), newer, None), 0.0)


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        pytest.param(
            (job("a", status=Status.SUCCEEDED),), "pending, queued or running", id="terminal"
        ),
        pytest.param((job("a", status=Status.QUEUED),) * 2, "given twice", id="twice"),
        pytest.param(
            (job("a", status=Status.RUNNING, attempt=1),), "needs its current attempt", id="attempt"
        ),
    ],
)
def test_a_restore_that_cannot_be_carried_out_is_refused_before_anything_changes(
    jobs: tuple[Job, ...], message: str
) -> None:
    core = make()
    with pytest.raises(ValidationError, match=message):
        core.handle(Restore(jobs, (ROUTE,) * len(jobs), (), None, None), 0.0)
    assert core.live_jobs == 0
    assert core.stats().totals.submitted == 0


def test_only_a_fresh_core_is_restored() -> None:
    core = make()
    submit(core, [job("a")], now=1.0)
    with pytest.raises(ValueError, match="only a fresh core"):
        core.handle(Restore((), (), (), None, None), 2.0)
    with pytest.raises(ValueError, match="one route per job"):
        make().handle(Restore((job("a", status=Status.QUEUED),), (), (), None, None), 2.0)


def test_a_job_whose_backend_is_gone_ends_with_the_reason() -> None:
    core = make(slots=1)
    submit(core, [job("a"), job("b")], now=1.0)
    jobs, state = stored(core, 1.0)
    elsewhere: Route = (("other", ("q",)),)
    fresh = SchedulingCore(pools={"other": [Pool(name="q", slots=1)]}, rand=random.Random(0).random)
    out = fresh.handle(Restore(jobs, (elsewhere,) * 2, (), state, None), 2.0, W + 2.0)
    assert records(out) == [
        ("a", Status.RUNNING, Status.FAILED),
        ("b", Status.QUEUED, Status.CANCELED),
    ]
    canceled = of_type(out, Record)[1].job
    assert canceled.cancel_reason is not None
    assert canceled.cancel_reason.startswith("unschedulable: its backend 'b'")
    assert fresh.live_jobs == 0


def _error() -> JobError:
    return JobError(type="RuntimeError", message="boom")

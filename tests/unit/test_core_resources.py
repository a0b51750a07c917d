"""Placement among many pools, pool labels, backfill with holds, and cost (estimates, caps,
actual cost, budgets) in the pure core, with a fake clock."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from nsai_work import (
    Constraints,
    Job,
    Pool,
    Prices,
    Priority,
    Quota,
    QuotaExceededError,
    Resources,
    Tenant,
    UnschedulableError,
)
from nsai_work.core import (
    Cancel,
    Decision,
    Dispatch,
    Record,
    Reject,
    RunEnded,
    SchedulingCore,
    Submit,
    Succeeded,
)
from tests._core_builders import key_of

#: A known price table: $1 per cpu-hour, $0.5 per GB-hour, $10 per A100-hour, nothing per slot.
PRICES = Prices(
    cpu_hour=1.0, memory_gb_hour=0.5, gpu_hour={"A100": 10.0}, default_gpu_hour=20.0, slot_hour=0
)
CHEAP = Prices(cpu_hour=0.5, memory_gb_hour=0.25, gpu_hour={"A100": 5.0}, slot_hour=0)


def core_with(*pools: Pool, tenants: Sequence[Tenant] = ()) -> SchedulingCore:
    return SchedulingCore(
        pools={"b": list(pools)},
        rand=random.Random(0).random,
        tenants=tenants,
        tenant_idle_ttl_s=None,
    )


def route(*names: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return (("b", names),)


def submit(
    core: SchedulingCore, jobs: Sequence[Job], names: Sequence[str], now: float = 0.0
) -> list[Decision]:
    return core.handle(Submit(tuple(jobs), (route(*names),) * len(jobs)), now)


def dispatched(decisions: Sequence[Decision]) -> list[Dispatch]:
    return [d for d in decisions if isinstance(d, Dispatch)]


def job(job_id: str, **fields: object) -> Job:
    return Job(kind="k", tenant_id=str(fields.pop("tenant", "acme")), id=job_id, **fields)  # type: ignore[arg-type]


def end(core: SchedulingCore, d: Dispatch, now: float) -> list[Decision]:
    return core.handle(RunEnded(d.job.tenant_id, d.job.id, d.job.attempt, Succeeded(None)), now)


# ---- placement ------------------------------------------------------------------------------


def test_the_cheapest_pool_that_fits_is_chosen_then_the_least_loaded() -> None:
    core = core_with(
        Pool(name="pricey", slots=4, cpu=8, prices=PRICES),
        Pool(name="cheap-a", slots=4, cpu=8, prices=CHEAP),
        Pool(name="cheap-b", slots=4, cpu=8, prices=CHEAP),
    )
    names = ("pricey", "cheap-a", "cheap-b")
    first = dispatched(
        submit(core, [job(f"j{i}", resources=Resources(cpu=1)) for i in range(4)], names)
    )
    pools = [d.pool for d in first]
    # cheap pools first, spread by load (least loaded next), never the pricey one
    assert sorted(pools) == ["cheap-a", "cheap-a", "cheap-b", "cheap-b"]
    # when the cheap pools are full, the pricey one takes the rest
    more = dispatched(
        submit(core, [job(f"k{i}", resources=Resources(cpu=8)) for i in range(2)], names)
    )
    assert [d.pool for d in more] == ["pricey"]


def test_pool_labels_choose_pools_and_unknown_labels_are_rejected() -> None:
    core = core_with(
        Pool(name="us-1", slots=2, labels={"region": "us"}),
        Pool(name="eu-1", slots=2, labels={"region": "eu", "tier": "gold"}),
    )
    names = ("us-1", "eu-1")
    eu = job("eu", constraints=Constraints(pool_labels={"region": "eu"}))
    assert [d.pool for d in dispatched(submit(core, [eu], names))] == ["eu-1"]
    [reject] = submit(
        core, [job("mars", constraints=Constraints(pool_labels={"region": "mars"}))], names
    )
    assert isinstance(reject, Reject)
    assert isinstance(reject.error, UnschedulableError)
    assert "$.constraints.pool_labels" in str(reject.error)
    assert "region=eu" in str(reject.error)


# ---- backfill with holds ----------------------------------------------------------------------


def test_backfill_lets_fitting_jobs_pass_a_blocked_head_without_starving_it() -> None:
    core = core_with(Pool(name="p", slots=8, cpu=4))
    small = [job(f"s{i}", resources=Resources(cpu=1)) for i in range(3)]
    running = dispatched(submit(core, small, ("p",), now=0.0))  # 3 of 4 cpu in use
    big = job("big", resources=Resources(cpu=4))
    assert not dispatched(submit(core, [big], ("p",), now=1.0))
    assert core.waiting_reason(*key_of(core, "big")) == "capacity_held:p"
    # a stream of small jobs: they may not take the capacity held for big
    stream = [job(f"x{i}", tenant="other", resources=Resources(cpu=1)) for i in range(5)]
    assert not dispatched(submit(core, stream, ("p",), now=2.0))
    # big starts as soon as the jobs running when its hold began have freed what it needs
    assert not dispatched(end(core, running[0], 3.0))
    assert not dispatched(end(core, running[1], 4.0))
    started = dispatched(end(core, running[2], 5.0))
    assert [d.job.id for d in started] == ["big"]


def test_backfill_uses_what_is_left_beyond_the_hold() -> None:
    core = core_with(Pool(name="p", slots=8, cpu=8))
    running = dispatched(submit(core, [job("r", resources=Resources(cpu=6))], ("p",)))
    assert not dispatched(submit(core, [job("big", resources=Resources(cpu=4))], ("p",), 1.0))
    # 2 cpu are free but big needs 4 and 2 of them are held: nothing else of big's level runs...
    assert not dispatched(
        submit(core, [job("one", tenant="other", resources=Resources(cpu=1))], ("p",), 2.0)
    )
    # ...but a higher priority may (strict priority beats a lower level's hold)
    urgent = job("urgent", priority=Priority.REALTIME, resources=Resources(cpu=1))
    assert [d.job.id for d in dispatched(submit(core, [urgent], ("p",), 3.0))] == ["urgent"]
    # and jobs that need nothing the hold needs (no cpu) still use free slots
    free = job("slot-only", tenant="third")
    assert [d.job.id for d in dispatched(submit(core, [free], ("p",), 4.0))] == ["slot-only"]
    assert running


def test_canceling_a_held_job_releases_its_hold() -> None:
    core = core_with(Pool(name="p", slots=8, cpu=4))
    dispatched(submit(core, [job("r", resources=Resources(cpu=3))], ("p",)))
    submit(core, [job("big", resources=Resources(cpu=4))], ("p",), 1.0)
    submit(core, [job("small", resources=Resources(cpu=1))], ("p",), 2.0)
    assert core.pool_states()["p"].holds

    after = core.handle(Cancel(*key_of(core, "big")), 3.0)
    assert [d.job.id for d in dispatched(after)] == ["small"]
    assert not core.pool_states()["p"].holds


# ---- cost -------------------------------------------------------------------------------------


def test_estimate_and_actual_cost_follow_the_price_table() -> None:
    core = core_with(
        Pool(name="p", slots=4, cpu=8, memory_mb=65536, gpus={"A100": 2}, prices=PRICES)
    )
    resources = Resources(cpu=2, memory_mb=4096, gpu="A100", timeout_ms=1_800_000)
    decisions = submit(core, [job("j", resources=resources)], ("p",), now=0.0)
    # $/h: 2 cpu x 1 + 4 GB x 0.5 + 1 A100 x 10 = 14; estimate for the 30 min timeout = 7
    admitted = next(d for d in decisions if isinstance(d, Record))
    assert admitted.job.estimated_cost_usd == pytest.approx(7.0)
    [started] = dispatched(decisions)
    finished = end(core, started, now=900.0)  # ran 15 minutes
    record = next(d for d in finished if isinstance(d, Record))
    assert record.job.cost_usd == pytest.approx(3.5)
    assert record.job.attempts[-1].cost_usd == pytest.approx(3.5)
    stats = core.stats().by_tenant["acme"]
    assert stats.spend_usd == pytest.approx(3.5)
    assert stats.committed_usd == pytest.approx(0.0)


def test_max_cost_goes_to_a_cheaper_pool_or_is_rejected_with_the_figures() -> None:
    core = core_with(
        Pool(name="pricey", slots=4, cpu=8, prices=PRICES),
        Pool(name="cheap", slots=4, cpu=8, prices=CHEAP),
    )
    names = ("pricey", "cheap")
    # 4 cpu for an hour: $4 on pricey, $2 on cheap
    capped = job("capped", resources=Resources(cpu=4, timeout_ms=3_600_000, max_cost_usd=2.5))
    [started] = dispatched(submit(core, [capped], names))
    assert started.pool == "cheap"
    too_cheap = job("tight", resources=Resources(cpu=4, timeout_ms=3_600_000, max_cost_usd=1.0))
    [reject] = submit(core, [too_cheap], names)
    assert isinstance(reject, Reject)
    assert isinstance(reject.error, UnschedulableError)
    message = str(reject.error)
    assert "$2.0000" in message
    assert "max_cost_usd=$1.0" in message
    assert "cheap" in message
    assert "$.resources.max_cost_usd" in message


def test_a_tenant_budget_is_checked_against_estimates_and_reconciled_with_actual_cost() -> None:
    tenant = Tenant("acme", quota=Quota(budget_usd=10.0, budget_period_s=3600))
    core = core_with(Pool(name="p", slots=8, cpu=8, prices=PRICES), tenants=[tenant])
    hour = 3_600_000
    first = job("a", resources=Resources(cpu=4, timeout_ms=hour))  # estimate $4
    second = job("b", resources=Resources(cpu=4, timeout_ms=hour))  # estimate $4
    [a] = dispatched(submit(core, [first], ("p",), now=0.0))
    [b] = dispatched(submit(core, [second], ("p",), now=0.0))
    [reject] = submit(core, [job("c", resources=Resources(cpu=4, timeout_ms=hour))], ("p",), 0.0)
    assert isinstance(reject.error, QuotaExceededError)  # type: ignore[union-attr]
    text = str(reject.error)  # type: ignore[union-attr]
    assert "budget_usd=10.0" in text
    assert "$8.0000 committed" in text
    # a finished after 6 minutes: it cost $0.40, not its $4 estimate; room for c now
    end(core, a, now=360.0)
    stats = core.stats().by_tenant["acme"]
    assert stats.spend_usd == pytest.approx(0.4)
    assert stats.committed_usd == pytest.approx(4.0)
    assert dispatched(
        submit(core, [job("c", resources=Resources(cpu=4, timeout_ms=hour))], ("p",), 360.0)
    )
    # a job without a timeout cannot be bounded, so a budgeted tenant must give one
    [no_timeout] = submit(core, [job("d", resources=Resources(cpu=1))], ("p",), 400.0)
    assert "timeout_ms" in str(no_timeout.error)  # type: ignore[union-attr]
    # spend counts in the period a run ends in: b ends in the second hour, which starts afresh
    end(core, b, now=4000.0)
    stats = core.stats().by_tenant["acme"]
    assert stats.spend_usd == pytest.approx(4 * 4000 / 3600)
    assert stats.spend_total_usd == pytest.approx(0.4 + 4 * 4000 / 3600)

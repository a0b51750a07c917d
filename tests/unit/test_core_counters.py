"""Counters and stats in the core: one tenant's stats from its own counters, the whole stats
built in bounded steps that still add up, rejections counted from the first, idle tenants
dropped without losing anything that decides, and runs told to stop kept visible."""

from __future__ import annotations

import random
from collections.abc import Sequence

from nsai_work._errors import RateLimitedError
from nsai_work._ir import Job, Pool, Priority, Quota, Resources, Tenant
from nsai_work.core import (
    ArmTimer,
    Cancel,
    Decision,
    Dispatch,
    Reject,
    Rejected,
    RunEnded,
    SchedulingCore,
    Submit,
    Succeeded,
    TimerFired,
)

ROUTE = (("b", ("p",)),)


def core_with(
    *, slots: int = 4, ttl: float | None = 100.0, tenants: Sequence[Tenant] = ()
) -> SchedulingCore:
    return SchedulingCore(
        pools={"b": [Pool(name="p", slots=slots)]},
        rand=random.Random(0).random,
        tenants=tenants,
        tenant_idle_ttl_s=ttl,
    )


def job(tenant: str, job_id: str | None = None, **fields: object) -> Job:
    extra = {} if job_id is None else {"id": job_id}
    return Job(kind="k", tenant_id=tenant, **extra, **fields)  # type: ignore[arg-type]


def submit(core: SchedulingCore, now: float, *jobs: Job) -> list[Decision]:
    return core.handle(Submit(jobs, (ROUTE,) * len(jobs)), now)


def finish_all(core: SchedulingCore, decisions: list[Decision], now: float) -> list[Decision]:
    """End every run dispatched in ``decisions`` (and those their ends dispatch)."""
    out: list[Decision] = []
    pending = [d.job for d in decisions if isinstance(d, Dispatch)]
    while pending:
        done = pending.pop()
        more = core.handle(RunEnded(done.tenant_id, done.id, done.attempt, Succeeded()), now)
        out += more
        pending += [d.job for d in more if isinstance(d, Dispatch)]
    return out


def sweep_timers(decisions: list[Decision]) -> list[ArmTimer]:
    return [d for d in decisions if isinstance(d, ArmTimer) and d.key[0] == "sweep"]


def test_a_tenants_first_rejection_is_counted() -> None:
    """The first rejection of a tenant the core had no state for was missing from its stats."""
    core = core_with(tenants=[Tenant("capped", quota=Quota(max_queued=0))])
    (reject,) = submit(core, 1.0, job("capped"))
    assert isinstance(reject, Reject)
    core.handle(Rejected((job("fresh"),), "invalid"), 2.0)  # refused before the core
    stats = core.stats()
    assert stats.by_tenant["capped"].rejections == {"max_queued": 1}
    assert stats.by_tenant["capped"].rejected == 1
    assert stats.by_tenant["fresh"].rejections == {"invalid": 1}
    assert core.tenant_stats("fresh").rejected == 1
    assert stats.totals.rejected == 2


def test_one_tenants_stats_match_the_whole_stats() -> None:
    core = core_with(slots=2)
    out = submit(core, 1.0, *(job(t) for t in ("a", "a", "b") for _ in range(3)))
    finish_all(core, out[:2], 2.0)
    whole = core.stats()
    for tenant in ("a", "b"):
        assert core.tenant_stats(tenant) == whole.by_tenant[tenant]
    a = whole.by_tenant["a"]
    assert a.submitted == 6
    assert a.fair_share == 0.5  # weights 1 and 1, both still waiting or running
    assert core.tenant_stats("nobody").submitted == 0


def test_stats_built_in_steps_add_up_while_jobs_move() -> None:
    """Between steps the core goes on (jobs start and end); every cell is read at one instant,
    so the totals still satisfy submitted = waiting + running + finished."""
    core = core_with(slots=3)
    tenants = [f"t{i}" for i in range(40)]
    decisions = submit(core, 1.0, *(job(t) for t in tenants for _ in range(3)))
    builder = core.stats_builder()
    now = 2.0
    steps = 0
    while not builder.step(5):
        steps += 1
        decisions = finish_all(core, [d for d in decisions if isinstance(d, Dispatch)][:1], now)
        now += 0.1
    stats = builder.result()
    assert steps >= 8  # it really was built in steps
    totals = stats.totals
    assert totals.submitted == 120
    assert totals.submitted == totals.waiting + totals.running + totals.finished
    assert sum(s.submitted for s in stats.by_tenant.values()) == 120
    assert sum(stats.waiting_reasons.values()) <= totals.waiting + 120  # reasons of live jobs


def test_an_idle_tenant_is_dropped_and_comes_back_as_configured() -> None:
    spec = Tenant("acme", weight=3.0, quota=Quota(max_running=2))
    core = core_with(ttl=100.0, tenants=[spec])
    out = submit(core, 1.0, job("acme"), job("walk-in"))
    (armed,) = sweep_timers(out)  # the first admitted submit arms the sweep
    finish_all(core, out, 2.0)
    assert core.tenants_kept == 2
    before = core.stats().totals
    later = core.handle(TimerFired(armed.key), armed.at)  # idle for 99 s only: kept
    assert core.tenants_kept == 2
    (again,) = sweep_timers(later)
    core.handle(TimerFired(again.key), again.at)
    assert core.tenants_kept == 0  # both dropped after 100 s idle
    stats = core.stats()
    assert stats.by_tenant == {}
    assert stats.totals == before  # their counts live on in the totals
    assert core.tenant("acme") == spec  # configuration is never dropped
    submit(core, again.at + 1, job("acme"))
    assert core.tenant_stats("acme").weight == 3.0
    assert core.tenant_stats("acme").quota == spec.quota


def test_a_tenant_that_owes_submit_tokens_is_kept_until_it_does_not() -> None:
    limited = Tenant("slow", quota=Quota(submit_rate=0.01, burst=1))  # a token per 100 s
    core = core_with(ttl=10.0, tenants=[limited])
    out = submit(core, 1.0, job("slow"))
    (armed,) = sweep_timers(out)
    finish_all(core, out, 1.0)
    (reject,) = submit(core, 2.0, job("slow"))
    assert isinstance(reject.error, RateLimitedError)
    now = armed.at
    while now < 60.0:  # the bucket is still short: the tenant stays, with its debt
        (armed,) = sweep_timers(core.handle(TimerFired(armed.key), now))
        assert core.tenants_kept == 1
        (reject,) = submit(core, now, job("slow"))  # still refused: the debt was not forgiven
        assert isinstance(reject.error, RateLimitedError)
        now = armed.at
    core.handle(TimerFired(armed.key), 250.0)  # the bucket is full again: dropped
    assert core.tenants_kept == 0


def test_tenants_seen_only_through_rejections_do_not_grow_memory() -> None:
    core = core_with(ttl=50.0)
    core.handle(Rejected(tuple(job(f"x{i}") for i in range(2000)), "invalid"), 1.0)
    assert core.tenants_kept == 2000
    armed = sweep_timers(core.handle(Rejected((job("late"),), "invalid"), 2.0))
    assert armed == []  # already armed by the first Rejected event
    now = 60.0
    for _ in range(10):  # a sweep drops at most a batch, then the next follows at once
        timers = sweep_timers(core.handle(TimerFired(("sweep", "", "", 0)), now))
        if not timers:
            break
        now = max(now, timers[0].at)
    assert core.tenants_kept == 0
    assert core.stats().totals.rejected == 2001


def test_a_run_told_to_stop_keeps_its_slot_visibly() -> None:
    """A canceled run holds its capacity until it has really ended: stats show it as
    ``stopping`` and a job waiting for that capacity says so."""
    core = core_with(slots=1, ttl=None)
    out = submit(core, 1.0, job("t", "first"), job("t", "second"))
    assert [d.job.id for d in out if isinstance(d, Dispatch)] == ["first"]
    core.handle(Cancel("t", "first"), 2.0)
    used = core.stats().pools["p"].used
    assert (used.slots, used.stopping) == (1, 1)
    assert core.waiting_reason("t", "second") == "stopping_runs:p"
    assert core.stats().waiting_reasons == {"stopping_runs:p": 1}
    after = core.handle(RunEnded("t", "first", 1, Succeeded()), 3.0)
    assert [d.job.id for d in after if isinstance(d, Dispatch)] == ["second"]
    used = core.stats().pools["p"].used
    assert (used.slots, used.stopping) == (1, 0)


def test_a_timed_out_run_is_counted_stopping_until_its_end() -> None:
    core = core_with(slots=1, ttl=None)
    out = submit(
        core,
        1.0,
        job("t", "slow", resources=Resources(timeout_ms=1000), priority=Priority.REALTIME),
    )
    (timeout,) = [d for d in out if isinstance(d, ArmTimer)]
    core.handle(TimerFired(timeout.key), timeout.at)
    assert core.stats().pools["p"].used.stopping == 1
    core.handle(RunEnded("t", "slow", 1, Succeeded()), timeout.at + 5)
    assert core.stats().pools["p"].used.stopping == 0

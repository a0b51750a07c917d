"""Tenancy in the pure core, driven by a fake clock: weighted dominant-resource fair share,
quotas, rate limits, concurrency groups, the starvation guard, and waiting reasons."""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Sequence

import pytest

from nsai_work import (
    ConfigurationError,
    Constraints,
    Job,
    Pool,
    Priority,
    PriorityGuard,
    Quota,
    QuotaExceededError,
    RateLimitedError,
    Resources,
    Tenant,
    UnschedulableError,
)
from nsai_work.core import (
    ConcurrencyLimitChanged,
    Decision,
    Dispatch,
    Reject,
    RunEnded,
    SchedulingCore,
    Submit,
    Succeeded,
    TenantChanged,
)

ROUTE = (("b", ("p",)),)


def make_core(
    *,
    pool: Pool | None = None,
    tenants: Sequence[Tenant] = (),
    **options: object,
) -> SchedulingCore:
    options.setdefault("tenant_idle_ttl_s", None)  # (no sweep timers among the decisions)
    return SchedulingCore(
        pools={"b": [pool or Pool(name="p", slots=4)]},
        rand=random.Random(0).random,
        tenants=tenants,
        **options,  # type: ignore[arg-type]
    )


def job(tenant: str = "acme", **fields: object) -> Job:
    return Job(kind="k", tenant_id=tenant, **fields)  # type: ignore[arg-type]


def submit(core: SchedulingCore, jobs: Sequence[Job], now: float = 0.0) -> list[Decision]:
    return core.handle(Submit(tuple(jobs), (ROUTE,) * len(jobs)), now)


def started(decisions: Sequence[Decision]) -> list[Job]:
    return [d.job for d in decisions if isinstance(d, Dispatch)]


def end(core: SchedulingCore, finished: Job, now: float = 0.0) -> list[Decision]:
    return core.handle(
        RunEnded(finished.tenant_id, finished.id, finished.attempt, Succeeded(None)), now
    )


class Simulation:
    """Runs the core against a fake clock: every dispatched job runs ``duration(job)`` seconds,
    and the resource-time each tenant was dispatched (slots x seconds, or cpu x seconds) is
    summed up to ``horizon``."""

    def __init__(self, core: SchedulingCore, duration: Callable[[Job], float]) -> None:
        self.core = core
        self.duration = duration
        self.now = 0.0
        self.ends: list[tuple[float, int, Job]] = []
        self.dispatched: Counter[str] = Counter()
        self.order: list[Job] = []
        self._seq = 0

    def take(self, decisions: Sequence[Decision], weight: Callable[[Job], float]) -> None:
        for job_started in started(decisions):
            self._seq += 1
            seconds = self.duration(job_started)
            heapq.heappush(self.ends, (self.now + seconds, self._seq, job_started))
            self.dispatched[job_started.tenant_id] += seconds * weight(job_started)
            self.order.append(job_started)

    def run(self, until: float, weight: Callable[[Job], float] = lambda j: 1.0) -> None:
        while self.ends and self.ends[0][0] <= until:
            self.now, _, finished = heapq.heappop(self.ends)
            self.take(end(self.core, finished, self.now), weight)

    def shares(self) -> dict[str, float]:
        total = sum(self.dispatched.values())
        return {tenant: value / total for tenant, value in self.dispatched.items()}


def test_weights_1_1_2_share_dispatched_resource_time_25_25_50() -> None:
    tenants = [Tenant("a", weight=1), Tenant("b", weight=1), Tenant("c", weight=2)]
    core = make_core(pool=Pool(name="p", slots=8), tenants=tenants)
    jobs = [job(t.id) for t in tenants for _ in range(3000)]
    random.Random(1).shuffle(jobs)
    durations = {"a": 1.0, "b": 1.0, "c": 1.0}
    sim = Simulation(core, lambda j: durations[j.tenant_id])
    sim.take(submit(core, jobs), lambda j: 1.0)
    sim.run(until=300.0)  # the backlog (9000 jobs of 1 s on 8 slots) outlasts the horizon
    shares = sim.shares()
    assert shares["a"] == pytest.approx(0.25, abs=0.02)
    assert shares["b"] == pytest.approx(0.25, abs=0.02)
    assert shares["c"] == pytest.approx(0.50, abs=0.02)


def test_fair_share_holds_with_different_job_durations() -> None:
    """Resource-time, not job counts: a tenant with 4x longer jobs gets 1/4 of the jobs."""
    tenants = [Tenant("short"), Tenant("long")]
    core = make_core(pool=Pool(name="p", slots=8), tenants=tenants)
    jobs = [job(t.id) for t in tenants for _ in range(4000)]
    sim = Simulation(core, lambda j: 0.5 if j.tenant_id == "short" else 2.0)
    sim.take(submit(core, jobs), lambda j: 1.0)
    sim.run(until=400.0)
    assert sim.shares()["short"] == pytest.approx(0.5, abs=0.02)


def test_a_huge_batch_backlog_does_not_delay_another_tenants_interactive_job() -> None:
    core = make_core(pool=Pool(name="p", slots=4))
    backlog = [job("hog") for _ in range(100_000)]
    first = started(submit(core, backlog))
    assert len(first) == 4
    assert not started(submit(core, [job("other", priority=Priority.INTERACTIVE)], now=0.1))
    # the next free slot goes to the interactive job
    after = started(end(core, first[0], now=0.2))
    assert [j.tenant_id for j in after] == ["other"]


def test_mixed_resource_shapes_converge_to_the_drf_allocation() -> None:
    """The DRF paper's example: 9 cpu and 18 GB; A's tasks need <1 cpu, 4 GB>, B's <3 cpu,
    1 GB>: DRF gives A three tasks and B two (both dominant shares 2/3)."""
    pool = Pool(name="p", slots=100, cpu=9, memory_mb=18)
    core = make_core(pool=pool)
    shapes = {"A": Resources(cpu=1, memory_mb=4), "B": Resources(cpu=3, memory_mb=1)}
    jobs = [job(t, resources=shapes[t]) for _ in range(400) for t in "AB"]
    running = Counter(j.tenant_id for j in started(submit(core, jobs)))
    assert running == {"A": 3, "B": 2}
    # and it stays there as tasks finish and are replaced
    sim = Simulation(core, lambda j: 1.0)
    sim.take([], lambda j: 1.0)
    for entry in list(core.live_entries()):
        if entry.job.pool is not None:
            sim.ends.append((1.0, len(sim.ends), entry.job))
    heapq.heapify(sim.ends)
    sim.run(until=20.0)  # 400 jobs each outlast the horizon
    counts = Counter(j.tenant_id for j in sim.order)
    assert counts["A"] / counts["B"] == pytest.approx(1.5, rel=0.1)


def test_max_running_keeps_a_tenants_jobs_queued_while_others_proceed() -> None:
    core = make_core(
        pool=Pool(name="p", slots=4), tenants=[Tenant("capped", quota=Quota(max_running=1))]
    )
    capped = [job("capped") for _ in range(3)]
    free = [job("free") for _ in range(3)]
    first = started(submit(core, [*capped, *free]))
    assert Counter(j.tenant_id for j in first) == {"capped": 1, "free": 3}
    assert core.waiting_reason(capped[1].tenant_id, capped[1].id) == "tenant_max_running"
    # when the capped tenant's job ends, its next one starts
    nxt = started(end(core, next(j for j in first if j.tenant_id == "capped")))
    assert [j.tenant_id for j in nxt] == ["capped"]


def test_a_resource_quota_holds_and_names_the_resource() -> None:
    core = make_core(
        pool=Pool(name="p", slots=8, cpu=16), tenants=[Tenant("t", quota=Quota(cpu=4))]
    )
    jobs = [job("t", resources=Resources(cpu=2)) for _ in range(3)]
    assert len(started(submit(core, jobs))) == 2
    assert core.waiting_reason(jobs[2].tenant_id, jobs[2].id) == "tenant_quota:cpu"


def test_a_job_the_quota_could_never_allow_is_rejected_with_the_figures() -> None:
    core = make_core(
        pool=Pool(name="p", slots=8, cpu=16), tenants=[Tenant("t", quota=Quota(cpu=4))]
    )
    [reject] = submit(core, [job("t", resources=Resources(cpu=8))])
    assert isinstance(reject, Reject)
    assert isinstance(reject.error, QuotaExceededError)
    assert "cpu=4" in str(reject.error)
    assert "8" in str(reject.error)
    assert "$.resources.cpu" in str(reject.error)


def test_max_queued_rejects_with_limit_and_usage_and_changes_nothing() -> None:
    core = make_core(pool=Pool(name="p", slots=1), tenants=[Tenant("t", quota=Quota(max_queued=2))])
    submit(core, [job("t") for _ in range(2)])  # 1 running, 1 waiting
    assert started(submit(core, [job("t")])) == []  # admitted: 2 waiting
    before = core.stats()
    [reject] = submit(core, [job("t")])
    assert isinstance(reject, Reject)
    assert isinstance(reject.error, QuotaExceededError)
    assert "max_queued=2" in str(reject.error)
    assert "2 jobs waiting" in str(reject.error)
    after = core.stats()
    assert after.totals.waiting == before.totals.waiting
    assert after.by_tenant["t"].rejections == {"max_queued": 1}
    assert submit(core, [job("other")])  # another tenant is not affected


def test_submit_rate_is_a_token_bucket_and_says_when_to_retry() -> None:
    core = make_core(
        pool=Pool(name="p", slots=100),
        tenants=[Tenant("t", quota=Quota(submit_rate=2.0, burst=2))],
    )
    assert started(submit(core, [job("t"), job("t")], now=10.0))
    [reject] = submit(core, [job("t")], now=10.0)
    assert isinstance(reject.error, RateLimitedError)  # type: ignore[union-attr]
    assert reject.error.retry_after_s == pytest.approx(0.5)  # type: ignore[union-attr]
    assert "retry after 0.500 s" in str(reject.error)  # type: ignore[union-attr]
    assert started(submit(core, [job("t")], now=10.5))  # one token earned
    [too_big] = submit(core, [job("t") for _ in range(3)], now=100.0)
    assert "burst=2" in str(too_big.error)  # type: ignore[union-attr]


def test_unknown_tenants_can_be_rejected() -> None:
    core = make_core(tenants=[Tenant("known")], default_tenant=None)
    assert started(submit(core, [job("known")]))
    [reject] = submit(core, [job("stranger")])
    assert isinstance(reject.error, UnschedulableError)  # type: ignore[union-attr]
    assert "unknown tenant 'stranger'" in str(reject.error)  # type: ignore[union-attr]


def test_unknown_tenants_get_the_default_weight_and_quota() -> None:
    core = make_core(default_tenant=Tenant("*", quota=Quota(max_running=1)))
    jobs = [job("anyone") for _ in range(2)]
    assert len(started(submit(core, jobs))) == 1
    assert core.waiting_reason(jobs[1].tenant_id, jobs[1].id) == "tenant_max_running"


def test_namespaces_share_the_tenant_quota_and_may_be_tighter() -> None:
    tenant = Tenant("t", quota=Quota(max_running=3), namespaces={"ci": Quota(max_running=1)})
    core = make_core(pool=Pool(name="p", slots=10), tenants=[tenant])
    ci = [job("t", namespace="ci") for _ in range(3)]
    prod = [job("t", namespace="prod") for _ in range(3)]
    first = started(submit(core, [*ci, *prod]))
    assert Counter(j.namespace for j in first) == {"ci": 1, "prod": 2}
    assert core.waiting_reason(ci[1].tenant_id, ci[1].id) == "namespace_max_running"
    assert core.waiting_reason(prod[2].tenant_id, prod[2].id) == "tenant_max_running"


def test_set_tenant_below_current_use_stops_nothing_and_new_dispatches_wait() -> None:
    core = make_core(pool=Pool(name="p", slots=10), tenants=[Tenant("t")])
    jobs = [job("t") for _ in range(6)]
    first = started(submit(core, jobs))
    assert len(first) == 6
    decisions = core.handle(TenantChanged(Tenant("t", quota=Quota(max_running=2))), 1.0)
    assert decisions == []  # nothing is stopped
    more = [job("t") for _ in range(2)]
    assert not started(submit(core, more, now=2.0))
    for done in first[:4]:
        assert not started(end(core, done, now=3.0))  # 5, 4, 3, 2 running: still >= 2
    assert len(started(end(core, first[4], now=4.0))) == 1  # 1 running: one more may go


def test_a_concurrency_group_runs_one_at_a_time_in_order_across_tenants() -> None:
    """The seed's Crucible example: one experiment's stages run one at a time, in order."""
    core = make_core(pool=Pool(name="p", slots=8))
    group = Constraints(concurrency_group="experiment:exp-1")
    stages = [job("lab", payload={"stage": i}, constraints=group) for i in range(4)]
    other = job("other", constraints=group)  # another tenant naming the same group shares it
    free = job("lab")
    first = started(submit(core, [*stages, other, free]))
    assert [j.payload.get("stage") for j in first] == [0, None]
    assert (
        core.waiting_reason(stages[1].tenant_id, stages[1].id)
        == "concurrency_group:experiment:exp-1"
    )
    order = [first[0]]
    running = first[0]
    while True:
        nxt = started(end(core, running))
        if not nxt:
            break
        assert len(nxt) == 1
        order.append(nxt[0])
        running = nxt[0]
    labs = [j.payload.get("stage") for j in order if j.tenant_id == "lab"]
    assert labs == [0, 1, 2, 3]
    assert other.id in {j.id for j in order}


def test_set_concurrency_limit_lets_more_run() -> None:
    core = make_core(pool=Pool(name="p", slots=8))
    group = Constraints(concurrency_group="g")
    jobs = [job("t", constraints=group) for _ in range(4)]
    assert len(started(submit(core, jobs))) == 1
    assert len(started(core.handle(ConcurrencyLimitChanged("g", 3), 1.0))) == 2
    with pytest.raises(ConfigurationError):
        core.handle(ConcurrencyLimitChanged("g", 0), 1.0)


def test_strict_priority_by_default_and_the_guard_gives_offline_its_minimum_share() -> None:
    def run(guard: PriorityGuard | None) -> Counter[str]:
        core = make_core(pool=Pool(name="p", slots=2), guard=guard)
        batch = [job("b", priority=Priority.BATCH) for _ in range(2000)]
        offline = [job("o", priority=Priority.OFFLINE) for _ in range(200)]
        sim = Simulation(core, lambda j: 1.0)
        sim.take(submit(core, [*batch, *offline]), lambda j: 1.0)
        sim.run(until=500.0)
        return Counter(j.priority.value for j in sim.order)

    strict = run(None)
    assert strict["offline"] == 0
    guarded = run(PriorityGuard(min_share={Priority.OFFLINE: 0.05}, window=100))
    share = guarded["offline"] / sum(guarded.values())
    assert 0.04 <= share <= 0.07


def test_fair_share_reason_and_stats() -> None:
    core = make_core(pool=Pool(name="p", slots=2), tenants=[Tenant("a"), Tenant("b")])
    a_jobs = [job("a") for _ in range(4)]
    first = started(submit(core, a_jobs))
    b_jobs = [job("b") for _ in range(2)]
    submit(core, b_jobs)
    assert core.waiting_reason(a_jobs[2].tenant_id, a_jobs[2].id) == "fair_share"
    assert core.waiting_reason(b_jobs[0].tenant_id, b_jobs[0].id) == "no_capacity"
    # the next slot goes to b, whose share is lower
    assert [j.tenant_id for j in started(end(core, first[0], now=1.0))] == ["b"]
    stats = core.stats()
    a = stats.by_tenant["a"]
    assert a.usage.running == 1
    assert a.dominant_share == pytest.approx(0.5)
    assert a.fair_share == pytest.approx(0.5)
    assert a.by_priority["batch"].queued == 2
    assert stats.waiting_reasons == {"no_capacity": 3}  # equal shares now: capacity decides


def test_a_tool_limit_caps_running_calls_across_tenants() -> None:
    from nsai_work.core import Limit

    core = make_core(pool=Pool(name="p", slots=8))
    limit = (Limit(name="geocode", max_concurrency=2),)
    jobs = [job(t) for t in ("a", "b", "c", "a")]
    decisions = core.handle(Submit(tuple(jobs), (ROUTE,) * 4, (limit,) * 4), 0.0)
    first = started(decisions)
    assert len(first) == 2
    waiting = next(j for j in jobs if j.id not in {s.id for s in first})
    assert core.waiting_reason(waiting.tenant_id, waiting.id) == "tool_concurrency:geocode"
    assert len(started(end(core, first[0], 1.0))) == 1
    assert core.limit_usage("geocode") == (2, 2, None)


def test_a_tool_rate_limit_waits_for_tokens_with_a_timer() -> None:
    from nsai_work.core import ArmTimer, Limit, TimerFired

    core = make_core(pool=Pool(name="p", slots=8))
    limit = (Limit(name="api", rate=2.0, burst=1),)
    jobs = [job("t") for _ in range(3)]
    decisions = core.handle(Submit(tuple(jobs), (ROUTE,) * 3, (limit,) * 3), 10.0)
    assert len(started(decisions)) == 1
    [timer] = [d for d in decisions if isinstance(d, ArmTimer)]
    assert timer.at == pytest.approx(10.5)  # one token every 0.5 s
    assert core.waiting_reason(jobs[1].tenant_id, jobs[1].id) == "tool_rate:api"
    after = core.handle(TimerFired(timer.key), 10.5)
    assert len(started(after)) == 1
    [again] = [d for d in after if isinstance(d, ArmTimer)]
    assert again.at == pytest.approx(11.0)


def test_a_start_that_uses_up_a_quota_releases_capacity_held_for_that_tenant() -> None:
    """a's big batch job waits for cpu on p1 with capacity held for it. An offline job of a then
    starts on p2 and takes a to max_running, so the big job cannot start whatever frees up: the
    capacity held for it goes to b's job in that same decision, not at the next event."""
    core = SchedulingCore(
        pools={"b": [Pool(name="p1", slots=2, cpu=2.0), Pool(name="p2", slots=1)]},
        rand=random.Random(0).random,
        tenants=[Tenant("a", quota=Quota(max_running=2)), Tenant("b")],
    )

    def on(pool: str, jobs: Sequence[Job]) -> list[Decision]:
        return core.handle(Submit(tuple(jobs), ((("b", (pool,)),),) * len(jobs)), 0.0)

    small = job("a", resources=Resources(cpu=1.0))
    assert [j.id for j in started(on("p1", [small]))] == [small.id]
    big = job("a", resources=Resources(cpu=2.0))
    assert started(on("p1", [big])) == []
    assert core.waiting_reason(big.tenant_id, big.id) == "capacity_held:p1"
    other = job("b")
    assert started(on("p1", [other])) == []  # the held capacity is not b's
    offline = job("a", priority=Priority.OFFLINE)
    assert [j.id for j in started(on("p2", [offline]))] == [offline.id, other.id]


def _serve_one_slot(resolution: float, run_s: float) -> str:
    """Two backlogged tenants on one slot, acme's jobs submitted first: the order in which
    their jobs start (a letter each) when every run takes ``run_s`` seconds."""
    core = make_core(pool=Pool(name="p", slots=1), fair_share_resolution_s=resolution)
    now = 0.0
    running = started(submit(core, [job("acme") for _ in range(12)]))
    submit(core, [job("beta") for _ in range(12)])
    order = ""
    while running and len(order) < 20:
        finished = running.pop()
        order += finished.tenant_id[0]
        now += run_s
        running += started(end(core, finished, now))
    return order


def test_the_fair_share_resolution_is_how_finely_tenants_are_told_apart() -> None:
    # 1 ms runs on one slot, resolution finer than a run: the tenants take turns (a float
    # rounding may give one of them two in a row, never three)
    fine = _serve_one_slot(0.0001, 0.001)
    assert fine.count("a") == fine.count("b") == 10
    assert "aaa" not in fine
    assert "bbb" not in fine
    # resolution 5 ms: a tenant is served until it is 5 ms of the slot ahead; within a step the
    # oldest job goes first (acme's), so the two take turns of five 1 ms runs
    assert _serve_one_slot(0.005, 0.001) == "aaaaabbbbbaaaaabbbbb"


@pytest.mark.parametrize("bad", [0, -0.5, float("nan"), float("inf"), True, "1ms"])
def test_a_fair_share_resolution_that_is_not_a_positive_number_is_refused(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="fair_share_resolution_s must be a finite"):
        make_core(fair_share_resolution_s=bad)

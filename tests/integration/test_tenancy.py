"""Tenancy through the real engine: fair share counted from starts, tenant-scoped handles,
runtime changes, concurrency groups and bad tenant configuration."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable

import pytest

import nsai_work as work


def test_fair_share_end_to_end_counts_starts_per_tenant(
    handlers: Callable[..., str],
) -> None:
    starts: list[str] = []

    async def record(job: work.Job) -> None:
        starts.append(job.tenant_id)
        await asyncio.sleep(0.002)  # similar run times: fairness is over resource-time

    kind = handlers(record)
    tenants = [work.Tenant("a", weight=1), work.Tenant("b", weight=1), work.Tenant("c", weight=2)]
    with work.SyncScheduler(
        tenants=tenants, pools={"local": [work.Pool(name="local:async", slots=4)]}
    ) as s:
        jobs = [work.Job(kind=kind, tenant_id=t.id) for t in tenants for _ in range(400)]
        s.wait_many([j.id for j in s.submit_many(jobs)], timeout=30)
    # while all three are backlogged (the first 800 starts), starts follow the weights
    window = Counter(starts[:800])
    assert window["a"] / 800 == pytest.approx(0.25, abs=0.03)
    assert window["b"] / 800 == pytest.approx(0.25, abs=0.03)
    assert window["c"] / 800 == pytest.approx(0.50, abs=0.03)


@pytest.mark.parametrize(("resolution", "expected"), [(None, "ab"), (3600.0, "aaaa")])
def test_the_fair_share_resolution_reaches_the_engine(
    handlers: Callable[..., str], resolution: float | None, expected: str
) -> None:
    """One slot, 20 ms jobs, acme's submitted first: at the default resolution (1 ms of the
    pool) acme's first run puts it 20 steps ahead, so beta goes next; at an hour, both stay in
    one step and the older jobs (acme's) go first."""
    starts: list[str] = []

    async def record(job: work.Job) -> None:
        starts.append(job.tenant_id[0])
        await asyncio.sleep(0.02)

    kind = handlers(record)
    options = {} if resolution is None else {"fair_share_resolution_s": resolution}
    with work.SyncScheduler(
        pools={"local": [work.Pool(name="local:async", slots=1)]}, **options
    ) as s:
        jobs = [work.Job(kind=kind, tenant_id=t) for t in ("acme", "beta") for _ in range(4)]
        s.wait_many([j.id for j in s.submit_many(jobs)], timeout=30)
    assert "".join(starts[: len(expected)]) == expected


def test_a_tenant_handle_sees_and_changes_only_its_jobs(handlers: Callable[..., str]) -> None:
    kind = handlers(lambda job: job.payload["n"])
    with work.SyncScheduler() as s:
        acme, globex = s.as_tenant("acme"), s.as_tenant("globex")
        mine = acme.submit(work.Job(kind=kind, tenant_id="acme", payload={"n": 1}))
        theirs = globex.submit(work.Job(kind=kind, tenant_id="globex", payload={"n": 2}))
        assert acme.wait(mine.id, timeout=5).result == 1
        for verb in (acme.get, acme.wait, acme.cancel, acme.retry):
            with pytest.raises(work.NotFoundError) as other:
                verb(theirs.id)
            with pytest.raises(work.NotFoundError) as unknown:
                verb("no-such-job")
            assert str(other.value) == str(unknown.value).replace("no-such-job", theirs.id)
        assert [j.id for j in acme.list()] == [mine.id]
        with pytest.raises(work.ValidationError, match=r"tenant 'acme' only") as refused:
            acme.submit(work.Job(kind=kind, tenant_id="globex", payload={"n": 3}))
        assert refused.value.path == "$.tenant_id"
        stats = acme.stats()
        assert stats.submitted == 1
        assert stats.succeeded == 1
        assert globex.get(theirs.id).tenant_id == "globex"


def test_job_ids_tell_a_tenant_nothing_about_another_tenants_jobs(
    handlers: Callable[..., str], arun: Callable[..., object]
) -> None:
    """Jobs are keyed by (tenant_id, id): submitting another tenant's id is neither refused
    (no existence oracle) nor a way to reach their job, and squatting an id blocks nobody."""
    kind = handlers(lambda job: job.tenant_id)

    async def main() -> None:
        async with work.Scheduler() as s:
            acme, globex = s.as_tenant("acme"), s.as_tenant("globex")
            theirs = await globex.submit(work.Job(kind=kind, tenant_id="globex"))
            # acme reuses globex's id: accepted, exactly like an unknown id would be
            mine = await acme.submit(work.Job(kind=kind, tenant_id="acme", id=theirs.id))
            assert mine.id == theirs.id
            assert (await acme.wait(mine.id, timeout=5)).result == "acme"
            assert (await globex.wait(theirs.id, timeout=5)).result == "globex"
            # a squatted id: acme takes an id first, globex still gets to use it
            squat = work.new_job_id()
            await acme.submit(work.Job(kind=kind, tenant_id="acme", id=squat))
            later = await globex.submit(work.Job(kind=kind, tenant_id="globex", id=squat))
            assert (await globex.wait(later.id, timeout=5)).tenant_id == "globex"
            # the same id twice for one tenant is still a conflict
            with pytest.raises(work.ConflictError, match="tenant 'acme'"):
                await acme.submit(work.Job(kind=kind, tenant_id="acme", id=squat))
            # the full-rights face needs tenant_id only when the id is ambiguous
            with pytest.raises(work.ValidationError, match="2 tenants") as ambiguous:
                await s.get(squat)
            assert ambiguous.value.path == "$.tenant_id"
            assert (await s.get(squat, tenant_id="globex")).tenant_id == "globex"
            assert (await s.wait(squat, tenant_id="acme", timeout=5)).result == "acme"
            unique = await s.submit(work.Job(kind=kind, tenant_id="initech"))
            assert (await s.wait(unique.id, timeout=5)).tenant_id == "initech"
            with pytest.raises(work.NotFoundError):
                await s.get(unique.id, tenant_id="acme")
            # canceling one tenant's job never touches the other's job with the same id
            slow_kind = handlers(_sleep_a_while)
            a = await acme.submit(work.Job(kind=slow_kind, tenant_id="acme"))
            g = await globex.submit(work.Job(kind=slow_kind, tenant_id="globex", id=a.id))
            await acme.cancel(a.id)
            assert (await acme.get(a.id)).status == "canceled"
            assert (await globex.get(g.id)).status in ("queued", "running")
            await globex.cancel(g.id)

    arun(main())


async def _sleep_a_while(job: work.Job) -> None:
    await asyncio.sleep(30)


def test_a_tenant_handle_names_the_index_of_the_foreign_job_in_a_batch(
    handlers: Callable[..., str],
) -> None:
    kind = handlers(lambda job: None)
    with work.SyncScheduler() as s:
        acme = s.as_tenant("acme")
        for first, index in ((True, 0), (False, 1)):
            jobs = [work.Job(kind=kind, tenant_id="acme"), work.Job(kind=kind, tenant_id="acme")]
            jobs[0 if first else 1] = work.Job(kind=kind, tenant_id="globex")
            with pytest.raises(work.ValidationError) as refused:
                acme.submit_many(jobs)
            assert refused.value.index == index
            assert f"of job #{index}" in str(refused.value)
        with pytest.raises(work.ValidationError) as single:
            acme.submit(work.Job(kind=kind, tenant_id="globex"))
        assert single.value.index is None


@pytest.mark.parametrize("bad", [None, 42, "abc"])
def test_batch_verbs_refuse_what_is_not_a_list_naming_the_argument(
    handlers: Callable[..., str], bad: object
) -> None:
    with work.SyncScheduler() as s:
        for verb, path in (
            (s.submit_many, "$.jobs"),
            (s.wait_many, "$.job_ids"),
            (s.as_tenant("acme").submit_many, "$.jobs"),
        ):
            with pytest.raises(work.ValidationError) as refused:
                verb(bad)  # type: ignore[operator]
            assert refused.value.path == path
        assert s.stats().totals.submitted == 0


def test_module_functions_set_tenant_and_as_tenant(handlers: Callable[..., str]) -> None:
    release = threading.Event()
    kind = handlers(lambda job: release.wait(5))
    work.start(pools={"local": [work.Pool(name="local:threads", slots=4)]})
    try:
        work.set_tenant(work.Tenant("acme", quota=work.Quota(max_running=1)))
        scope = work.as_tenant("acme")
        first = scope.submit(work.Job(kind=kind, tenant_id="acme"))
        second = scope.submit(work.Job(kind=kind, tenant_id="acme"))
        assert scope.get(second.id).waiting_reason == "tenant_max_running"
        stats = work.stats().by_tenant["acme"]
        assert stats.quota.max_running == 1
        assert stats.usage.running == 1
        work.set_tenant(work.Tenant("acme", quota=work.Quota(max_running=2)))
        release.set()
        assert [j.status for j in scope.wait_many([first.id, second.id], timeout=5)] == [
            "succeeded",
            "succeeded",
        ]
    finally:
        release.set()
        work.stop()


def test_the_crucible_pipeline_runs_stages_one_at_a_time_in_order(
    handlers: Callable[..., str],
) -> None:
    """The seed's Crucible example: each stage of one experiment is a job in the concurrency
    group ``experiment:<id>``; stages run one at a time, in submit order."""
    running = 0
    most = 0
    order: list[str] = []
    lock = threading.Lock()

    def stage(job: work.Job) -> str:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            order.append(job.payload["stage_name"])
        with lock:
            running -= 1
        return job.payload["stage_name"]

    kind = handlers(stage)

    def run_stage(s: work.SyncScheduler, experiment: str, name: str, context: dict) -> work.Job:
        return s.submit(
            work.Job(
                kind=kind,
                tenant_id=context["tenant_id"],
                namespace=experiment,
                priority=work.Priority.BATCH,
                payload={"experiment_id": experiment, "stage_name": name, "input_context": context},
                constraints=work.Constraints(concurrency_group=f"experiment:{experiment}"),
            )
        )

    with work.SyncScheduler() as s:
        names = ["load", "train", "eval", "report"]
        jobs = [run_stage(s, "exp-7", n, {"tenant_id": "lab"}) for n in names]
        s.wait_many([j.id for j in jobs], timeout=10)
    assert order == names
    assert most == 1


def test_set_concurrency_limit_on_an_instance(handlers: Callable[..., str]) -> None:
    gate = threading.Event()
    kind = handlers(lambda job: gate.wait(5))
    with work.SyncScheduler(concurrency_limits={"gpu-lock": 1}) as s:
        group = work.Constraints(concurrency_group="gpu-lock")
        jobs = [s.submit(work.Job(kind=kind, tenant_id="t", constraints=group)) for _ in range(3)]
        assert s.stats().totals.running == 1
        assert s.get(jobs[1].id).waiting_reason == "concurrency_group:gpu-lock"
        s.set_concurrency_limit("gpu-lock", 3)
        assert s.stats().totals.running == 3
        gate.set()
        s.wait_many([j.id for j in jobs], timeout=5)


@pytest.mark.parametrize(
    ("tenant", "path", "rule"),
    [
        ({"id": "t", "weight": 0}, "$.tenant.weight", ">= 1e-06"),
        ({"id": "t", "weight": -1}, "$.tenant.weight", ">= 1e-06"),
        ({"id": "t", "quota": {"cpuz": 1}}, "$.tenant.quota", "unknown field `cpuz`"),
        ({"id": "t", "quota": {"gpus": {1: 2}}}, "$.tenant.quota.gpus", "Expected `str`"),
        ({"id": "", "weight": 1}, "$.tenant.id", "length >= 1"),
        ({"id": "t", "quota": {"max_running": -1}}, "$.tenant.quota.max_running", ">= 0"),
        ({"id": "ac me"}, "$.tenant.id", "a tenant id is an identifier"),
        ({"id": "acme\n"}, "$.tenant.id", "a tenant id is an identifier"),
        ({"id": "t", "namespaces": {"prod/eu": {}}}, "$.tenant.namespaces", "'prod/eu'"),
    ],
)
def test_bad_tenant_configuration_is_refused_naming_the_field(
    tenant: dict, path: str, rule: str
) -> None:
    with work.SyncScheduler() as s:
        with pytest.raises(work.ValidationError) as refused:
            s.set_tenant(tenant)  # type: ignore[arg-type]
        assert refused.value.path == path
        assert rule in str(refused.value)
    with pytest.raises(work.ConfigurationError, match="tenants\\[0\\]"):
        work.SyncScheduler(tenants=[tenant])


def test_unknown_quota_keyword_is_a_clear_type_error() -> None:
    with pytest.raises(TypeError, match="cpuz"):
        work.Quota(cpuz=1)  # type: ignore[call-arg]


def test_set_tenant_below_current_usage_is_allowed_and_kills_nothing(
    handlers: Callable[..., str],
) -> None:
    gate = threading.Event()
    kind = handlers(lambda job: gate.wait(5))
    with work.SyncScheduler(pools={"local": [work.Pool(name="local:threads", slots=8)]}) as s:
        jobs = [s.submit(work.Job(kind=kind, tenant_id="t")) for _ in range(4)]
        s.set_tenant(work.Tenant("t", quota=work.Quota(max_running=1)))
        assert s.stats().by_tenant["t"].usage.running == 4  # nothing was stopped
        late = s.submit(work.Job(kind=kind, tenant_id="t"))
        assert s.get(late.id).waiting_reason == "tenant_max_running"
        gate.set()
        done = s.wait_many([*(j.id for j in jobs), late.id], timeout=5)
        assert {j.status for j in done} == {"succeeded"}


def test_reject_unknown_tenants_through_the_engine(handlers: Callable[..., str]) -> None:
    kind = handlers(lambda job: None)
    with work.SyncScheduler(tenants=[work.Tenant("known")], unknown_tenants="reject") as s:
        s.wait(s.submit(work.Job(kind=kind, tenant_id="known")).id, timeout=5)
        with pytest.raises(work.UnschedulableError, match="unknown tenant 'nobody'"):
            s.submit(work.Job(kind=kind, tenant_id="nobody"))


def test_a_wait_is_not_woken_by_another_tenants_job_with_the_same_id(
    handlers: Callable[..., str], arun: Callable[..., object]
) -> None:
    gates = {"acme": asyncio.Event(), "globex": asyncio.Event()}

    async def gated(job: work.Job) -> str:
        await gates[job.tenant_id].wait()
        return job.tenant_id

    kind = handlers(gated)

    async def main() -> None:
        async with work.Scheduler() as s:
            shared = work.new_job_id()
            for tenant in ("acme", "globex"):
                await s.submit(work.Job(kind=kind, tenant_id=tenant, id=shared))
            acme_wait = asyncio.create_task(s.wait(shared, tenant_id="acme", timeout=10))
            globex_wait = asyncio.create_task(s.wait(shared, tenant_id="globex", timeout=10))
            many = asyncio.create_task(s.as_tenant("acme").wait_many([shared], timeout=10))
            gates["globex"].set()
            assert (await globex_wait).result == "globex"
            assert not acme_wait.done()
            assert not many.done()
            gates["acme"].set()
            assert (await acme_wait).result == "acme"
            assert [j.result for j in await many] == ["acme"]

    arun(main())

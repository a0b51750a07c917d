"""nsai-work's scheduling on top of a real Ray cluster: placement by resource on a two-node
cluster (a second node with one fake A100), a node that leaves, strict priority and weighted
fair share. The tests of this module run in order: the last one stops the GPU node."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

import nsai_work as work
from nsai_work.backends import RayBackend
from tests._ray import RayCluster
from tests.integration._ray_handlers import ray_registry

pytestmark = pytest.mark.slow

ONCE = work.Constraints(retry_policy=work.RetryPolicy(max_attempts=1))
A100 = work.Resources(gpu="A100", gpu_count=1)


def _job(kind: str, **fields: Any) -> work.Job:
    fields.setdefault("tenant_id", "acme")
    fields.setdefault("constraints", ONCE)
    return work.Job(kind=kind, **fields)


def _scheduler(cluster: RayCluster, **options: Any) -> work.Scheduler:
    backend = RayBackend(cluster.address, handlers=ray_registry(), poll_s=0.5)
    return work.Scheduler(backends=[backend], **options)


async def _until(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


# ---- strict priority and fair share on the 2-CPU head node -------------------------------------


def test_a_realtime_job_starts_before_every_queued_offline_job(ray_cluster: RayCluster) -> None:
    async def main() -> None:
        async with _scheduler(ray_cluster) as s:
            offline = await s.submit_many(
                [
                    _job("ray.sleeps", payload={"s": 0.4}, priority="offline", id=f"off-{i}")
                    for i in range(8)
                ]
            )

            async def full() -> bool:
                return (
                    sum(1 for j in [await s.get(o.id) for o in offline] if j.status == "running")
                    == 2
                )

            await _until(full)
            queued = [o.id for o in offline if (await s.get(o.id)).status == "queued"]
            assert len(queued) == 6
            realtime = await s.submit(_job("ray.noop", priority="realtime"))
            done = await s.wait_many([realtime.id, *queued], timeout=60)
            assert all(j.status == "succeeded" for j in done)
            first = done[0].started_at
            assert first is not None
            assert all(first < j.started_at for j in done[1:])  # type: ignore[operator]
            assert (await s.get(realtime.id)).waiting_reason is None

    asyncio.run(main())


def test_two_tenants_weighted_1_to_3_share_the_cluster_25_75(ray_cluster: RayCluster) -> None:
    async def main() -> None:
        tenants = [work.Tenant("light", weight=1.0), work.Tenant("heavy", weight=3.0)]
        async with _scheduler(ray_cluster, tenants=tenants) as s:
            batch = await s.submit_many(  # both backlogged from the start
                [
                    _job("ray.sleeps", tenant_id=tenant, payload={"s": 0.05})
                    for _ in range(120)
                    for tenant in ("light", "heavy")
                ]
            )
            jobs = {t: [j.id for j in batch if j.tenant_id == t] for t in ("light", "heavy")}
            # measure while both tenants are backlogged: until the first of them runs dry
            done = {t: await s.wait_many(ids, timeout=120) for t, ids in jobs.items()}
            ends = [j.finished_at for js in done.values() for j in js]
            window_end = min(max(j.started_at for j in js) for js in done.values())  # type: ignore[type-var]
            served = {
                t: sum(
                    (j.finished_at - j.started_at).total_seconds()  # type: ignore[operator]
                    for j in js
                    if j.started_at < window_end  # type: ignore[operator]
                )
                for t, js in done.items()
            }
            assert ends
            share = served["heavy"] / (served["light"] + served["heavy"])
            assert abs(share - 0.75) <= 0.05, f"heavy got {share:.3f} of the task time"

    asyncio.run(main())


# ---- placement on a two-node cluster ------------------------------------------------------------


@pytest.fixture(scope="module")
def two_nodes(ray_cluster: RayCluster) -> Iterator[RayCluster]:
    """The head node plus a node with 1 CPU and one (fake) A100."""
    ray_cluster.start_gpu_node()
    try:
        yield ray_cluster
    finally:
        ray_cluster.stop_gpu_node()


def _gpu_node_id(cluster: RayCluster) -> str:
    (node,) = [n for n in cluster.alive_nodes() if n["Resources"].get("GPU")]  # type: ignore[union-attr]
    return str(node["NodeID"])


def test_an_a100_job_runs_only_on_the_a100_node(two_nodes: RayCluster) -> None:
    gpu_node = _gpu_node_id(two_nodes)

    async def main() -> None:
        async with _scheduler(two_nodes) as s:
            pools = (await s.stats()).pools
            (gpu_pool,) = [name for name, p in pools.items() if p.capacity.gpus]
            assert pools[gpu_pool].capacity.gpus == {"A100": 1}
            assert pools[gpu_pool].capacity.labels["ray.io/accelerator-type"] == "A100"
            jobs = await s.submit_many(
                [_job("ray.where", resources=A100) for _ in range(3)]
                + [_job("ray.where") for _ in range(3)]
            )
            done = await s.wait_many([j.id for j in jobs], timeout=60)
            assert all(j.status == "succeeded" for j in done), [j.error for j in done]
            for job in done[:3]:
                assert job.pool == gpu_pool
                assert job.result["node"] == gpu_node
                assert len(job.result["gpus"]) == 1
            for job in done[3:]:
                assert job.result["gpus"] == []

    asyncio.run(main())


def test_a_job_needing_two_a100s_is_rejected_at_submit(two_nodes: RayCluster) -> None:
    async def main() -> None:
        async with _scheduler(two_nodes) as s:
            with pytest.raises(work.UnschedulableError, match=r"\$\.resources\.gpu"):
                await s.submit(_job("ray.where", resources=work.Resources(gpu="A100", gpu_count=2)))

    asyncio.run(main())


def test_a_node_that_stops_takes_its_pool_and_queued_jobs_say_why(two_nodes: RayCluster) -> None:
    async def main() -> None:
        async with _scheduler(two_nodes) as s:
            pools = (await s.stats()).pools
            (gpu_pool,) = [name for name, p in pools.items() if p.capacity.gpus]
            running = await s.submit(_job("ray.sleeps", payload={"s": 300}, resources=A100))
            # (with retries: should Ray tell the running task's end before its control store
            # tells the node's, this job may be sent to the dying node; it then comes back)
            retry = work.Constraints(
                retry_policy=work.RetryPolicy(max_attempts=5, base_delay_ms=10, jitter=False)
            )
            queued = await s.submit(_job("ray.where", resources=A100, constraints=retry))

            async def started() -> bool:
                return (await s.get(running.id)).status == "running"

            await _until(started)
            assert (await s.get(queued.id)).waiting_reason in (
                "no_capacity",
                f"capacity_held:{gpu_pool}",
            )
            await asyncio.to_thread(two_nodes.stop_gpu_node)

            async def gone() -> bool:
                return gpu_pool not in (await s.stats()).pools

            await _until(gone)

            async def says_why() -> bool:
                job = await s.get(queued.id)
                return job.waiting_reason == f"pool_removed:{gpu_pool}"

            await _until(says_why, timeout=30)
            assert (await s.get(queued.id)).status == "queued"
            assert (await s.stats()).waiting_reasons == {f"pool_removed:{gpu_pool}": 1}
            lost = await s.wait(running.id, timeout=60)
            assert lost.status == "failed"
            assert lost.error is not None
            assert lost.error.type in (
                "BackendLostError",
                "ray.exceptions.WorkerCrashedError",
                "ray.exceptions.NodeDiedError",
            )
            # a new A100 job can never fit now: refused at submit
            with pytest.raises(work.UnschedulableError):
                await s.submit(_job("ray.where", resources=A100))
            await s.cancel(queued.id)

    asyncio.run(main())

"""The Ray backend: 2,000 no-op jobs through nsai-work to a local 2-CPU Ray cluster, against the
same number of direct ``ray.remote`` calls in the same run.

A throwaway cluster (``ray start --head --block``, 2 CPUs, loopback only) is started for the
scenario and stopped after it. Each run times, interleaved: direct Ray (``ray.get`` of 2,000
``noop.remote()``, each task asking Ray's default of 1 CPU), then nsai-work (build 2,000 jobs
asking ``cpu=1``, ``submit_many``, ``wait_many``) with ``RayBackend(prefetch=0)`` (every waiting
job waits in nsai-work's queues) and with ``prefetch=PREFETCH`` (that many more tasks per node
than it has CPUs are handed to Ray at once, so Ray keeps its worker leases: see docs/ray.md). The
overhead ratio is nsai-work's time over direct Ray's.

A third timing, the floor, is a bare asyncio loop with no scheduler at all that sends the same
Ray task nsai-work sends (the job's JSON as its one argument), keeps as many in flight as
``prefetch`` allows, and awaits their ends with the backend's own waiting thread: the cost of
that task shape on its own, which no scheduler on top can go below.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import nsai_work as work
from nsai_work._handlers import HandlerRegistry

from ._common import QUICK, Figure, Params, ScenarioResult, settle

KIND: Final = "bench.ray.noop"
PREFETCH: Final = 64
TARGET_RATIO: Final = 1.3
AIM_RATIO: Final = 1.1
ONCE: Final = work.RetryPolicy(max_attempts=1)
_WAIT_S: Final = 300.0


def noop(job: work.Job) -> None:
    """The no-op job."""
    return None


def _direct_noop() -> None:
    return None


def _registry() -> HandlerRegistry:
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # (workers cannot import bench)
    registry = HandlerRegistry()
    registry.register(KIND, noop)
    return registry


def direct(n: int) -> float:
    """Seconds for ``n`` direct no-op tasks."""
    import ray

    remote = ray.remote(max_retries=0)(_direct_noop)
    ray.get([remote.remote() for _ in range(min(n, 200))])  # warm
    settle()
    t0 = time.perf_counter()
    ray.get([remote.remote() for _ in range(n)])
    return time.perf_counter() - t0


async def through_nsai(address: str, n: int, prefetch: int) -> float:
    """Seconds for ``n`` no-op jobs through nsai-work to Ray."""
    from nsai_work.backends import RayBackend
    from nsai_work.telemetry import Telemetry

    backend = RayBackend(address, handlers=_registry(), prefetch=prefetch)
    one_cpu = work.Resources(cpu=1.0)

    def jobs(count: int) -> list[work.Job]:
        return [
            work.Job(
                kind=KIND,
                tenant_id="bench",
                resources=one_cpu,
                constraints=work.Constraints(retry_policy=ONCE),
            )
            for _ in range(count)
        ]

    async with work.Scheduler(backends=[backend], telemetry=Telemetry()) as s:
        warm = await s.submit_many(jobs(min(n, 200)))
        await s.wait_many([j.id for j in warm], _WAIT_S)
        settle()
        t0 = time.perf_counter()
        accepted = await s.submit_many(jobs(n))
        done = await s.wait_many([j.id for j in accepted], _WAIT_S)
        elapsed = time.perf_counter() - t0
    bad = [j for j in done if j.status is not work.Status.SUCCEEDED]
    if bad:
        raise RuntimeError(f"{len(bad)} Ray bench jobs did not succeed, e.g. {bad[0].error}")
    return elapsed


async def floor(n: int, in_flight: int) -> float:
    """Seconds for ``n`` tasks of nsai-work's shape sent by a bare loop, ``in_flight`` at once."""
    import ray

    from nsai_work._ir import json_encoder
    from nsai_work.backends._ray_remote import make_runner
    from nsai_work.backends._ray_waits import TaskEnds

    _registry()
    runner = make_runner(noop, False, 1 << 20)
    task = ray.remote(max_retries=0, retry_exceptions=False)(runner).options(num_cpus=1.0)
    job_json = json_encoder.encode(work.Job(kind=KIND, tenant_id="bench"))
    ends = TaskEnds(asyncio.get_running_loop(), ray)
    slots = asyncio.Semaphore(in_flight)

    async def one() -> None:
        async with slots:
            await ends.watch(task.remote(job_json))

    try:
        await asyncio.gather(*(one() for _ in range(min(n, 200))))  # warm
        settle()
        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return time.perf_counter() - t0
    finally:
        ends.close()


def run(params: Params, runs: int) -> ScenarioResult:
    from tests._ray import RayCluster, ray_available

    if not ray_available():
        raise RuntimeError("the ray scenario needs Ray: pip install 'nsai-work[ray]'")
    n = 200 if params == QUICK else 2_000
    direct_rates: list[float] = []
    strict: list[float] = []
    prefetched: list[float] = []
    floors: list[float] = []
    strict_rates: list[float] = []
    prefetched_rates: list[float] = []
    with tempfile.TemporaryDirectory(prefix="nsai-bench-ray-") as root:
        cluster = RayCluster(Path(root))
        try:
            cluster.start_head()
            for _ in range(runs):
                settle()
                t_direct = direct(n)
                settle()
                t_strict = asyncio.run(through_nsai(cluster.address, n, 0))
                settle()
                t_prefetch = asyncio.run(through_nsai(cluster.address, n, PREFETCH))
                settle()
                t_floor = asyncio.run(floor(n, PREFETCH + 2))  # (the 2 CPUs, plus prefetch)
                direct_rates.append(n / t_direct)
                strict_rates.append(n / t_strict)
                prefetched_rates.append(n / t_prefetch)
                strict.append(t_strict / t_direct)
                prefetched.append(t_prefetch / t_direct)
                floors.append(t_floor / t_direct)
        finally:
            cluster.stop()

    def ratio(figure_id: str, label: str, values: list[float], note: str, **kw: Any) -> Figure:
        return Figure(
            id=figure_id,
            label=label,
            unit="x",
            runs=values,
            note=note,
            digits=2,
            **kw,
        )

    return ScenarioResult(
        name="ray",
        description=(
            f"Ray backend: {n:,} no-op jobs (cpu=1) through nsai-work to a local 2-CPU Ray "
            f"cluster vs {n:,} direct ray.remote no-op tasks (1 CPU each), interleaved in each "
            f"of {runs} run(s); ratio = nsai-work's time / direct Ray's time."
        ),
        figures=[
            Figure(
                id="ray.direct_tasks_per_s",
                label="direct ray.remote no-op tasks",
                unit="tasks/s",
                runs=direct_rates,
                target="-",
                check=lambda m: None,
                digits=0,
            ),
            ratio(
                "ray.overhead_ratio_prefetch",
                f"nsai-work to Ray, prefetch={PREFETCH}: overhead vs direct",
                prefetched,
                f"{n:,} jobs, RayBackend(prefetch={PREFETCH}); jobs/s per run: "
                + ", ".join(f"{r:,.0f}" for r in prefetched_rates),
                target=f"<= {TARGET_RATIO} (aim {AIM_RATIO})",
                check=lambda m: m <= TARGET_RATIO,
                aim=lambda m: m <= AIM_RATIO,
            ),
            ratio(
                "ray.floor_ratio",
                f"bare loop, nsai-work's task shape, {PREFETCH + 2} in flight: vs direct",
                floors,
                "no scheduler: the job's JSON as the task's one argument, ends awaited by the "
                "backend's waiting thread; what the task shape costs by itself",
                target="-",
                check=lambda m: None,
            ),
            ratio(
                "ray.overhead_ratio_strict",
                "nsai-work to Ray, prefetch=0 (strict): overhead vs direct",
                strict,
                f"{n:,} jobs, RayBackend() (nothing waits in Ray's queues: a worker lease per "
                f"task); jobs/s per run: " + ", ".join(f"{r:,.0f}" for r in strict_rates),
                target="-",
                check=lambda m: None,
            ),
        ],
        notes={"jobs": n, "prefetch": PREFETCH, "cluster": "local, 2 CPUs, loopback"},
    )

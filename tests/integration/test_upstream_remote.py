"""``ctx.upstream`` reaches handlers that run out of the scheduler's process: in a process
backend's worker and in a Ray task, by job id and by step name, as the local backend gives it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import nsai_work as work
from nsai_work.backends import ProcessBackend, RayBackend
from tests._ray import RayCluster
from tests.integration import _process_handlers as h
from tests.integration._ray_handlers import ray_registry

WAIT_S = 60.0


def flow(first: str, last: str, backend: str | None = None) -> work.Workflow:
    """Two steps that return numbers (on the local backend), then one that reports its
    ``ctx.upstream``; a failed optional step shows as None."""
    f = work.Workflow("upstream", tenant_id="acme")
    f.step("two", first, payload={"n": 2})
    f.step("three", first, payload={"n": 3})
    f.step("broken", first, payload={"fail": True})
    f.step(
        "report",
        last,
        after=["two", "three", "broken"],
        allow_failure=True,
        constraints=work.Constraints(backend=backend),
    )
    return f


def _expected(run: work.WorkflowRun) -> dict[str, Any]:
    ids = run.job_ids
    return {
        "two": {"n": 2},
        "three": {"n": 3},
        "broken": None,
        ids["two"]: {"n": 2},
        ids["three"]: {"n": 3},
        ids["broken"]: None,
    }


def _number(job: work.Job) -> dict[str, Any]:
    if job.payload.get("fail"):
        raise work.NonRetryableError("this step fails")
    return {"n": job.payload["n"]}


def test_a_process_worker_gets_the_upstream_results(handlers: Callable[..., str]) -> None:
    first, last = handlers(_number), handlers(h.upstream_total)

    async def main() -> work.WorkflowRun:
        backend = ProcessBackend(workers=1)
        async with work.Scheduler(backends=["local", backend]) as s:
            await backend.wait_ready(WAIT_S)
            f = flow(first, last, backend=backend.name)
            return await s.wait_workflow(await s.submit_workflow(f), timeout=WAIT_S)

    run = asyncio.run(main())
    report = run.results["report"]
    assert report["pid"] != os.getpid(), "the step did not run in a worker process"
    assert report["upstream"] == _expected(run)


def test_a_ray_task_gets_the_upstream_results(
    ray_cluster: RayCluster, handlers: Callable[..., str]
) -> None:
    first = handlers(_number)

    async def main() -> work.WorkflowRun:
        backend = RayBackend(ray_cluster.address, handlers=ray_registry(), poll_s=0.5)
        async with work.Scheduler(backends=["local", backend]) as s:
            f = flow(first, "ray.upstream")
            return await s.wait_workflow(await s.submit_workflow(f), timeout=WAIT_S)

    run = asyncio.run(main())
    report = run.results["report"]
    assert report["pid"] != os.getpid(), "the step did not run in a Ray worker"
    assert report["upstream"] == _expected(run)

"""Memory per waiting job: 100,000 jobs waiting behind one blocked slot.

The scheduler's only async slot (``local:async`` with 1 slot) is held by a job whose handler
awaits an ``asyncio.Event``. Then, traced by ``tracemalloc``: build 100,000 no-op jobs and
``submit_many`` them (the job objects are what the scheduler stores, so building them is in the
measured region); drop the caller's references and collect; the traced memory delta divided by
the number of jobs is what one waiting job costs. The scenario also counts asyncio tasks,
futures and timer handles before and after: a waiting job must not own any.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from typing import Any

import nsai_work as work
from nsai_work.telemetry import Telemetry

from ._common import BLOCK, NOOP, TENANTS, Figure, Params, ScenarioResult, register_handlers, settle

TARGET_BYTES = 1536


async def _noop_handler(job: work.Job) -> None:
    return None


def _asyncio_objects(loop: asyncio.AbstractEventLoop) -> dict[str, int]:
    """Live asyncio tasks, futures (tasks included) and scheduled timer handles."""
    futures = sum(1 for o in gc.get_objects() if isinstance(o, asyncio.Future))
    scheduled: Any = getattr(loop, "_scheduled", ())
    return {
        "tasks": len(asyncio.all_tasks(loop)),
        "futures": futures,
        "timer_handles": len(scheduled),
    }


async def measure(n: int) -> dict[str, Any]:
    """One run: returns bytes per waiting job, the asyncio object deltas and top allocators."""
    release = asyncio.Event()
    running = asyncio.Event()

    async def block(job: work.Job) -> None:
        running.set()
        await release.wait()

    register_handlers({BLOCK: block, NOOP: _noop_handler})
    loop = asyncio.get_running_loop()
    pools = {"local": [work.Pool(name="local:async", slots=1)]}
    async with work.Scheduler(telemetry=Telemetry(), pools=pools) as s:
        await s.submit(work.Job(kind=BLOCK, tenant_id=TENANTS[0]))
        await running.wait()
        settle()
        before = _asyncio_objects(loop)

        tracemalloc.start()
        first = tracemalloc.take_snapshot()
        base, _ = tracemalloc.get_traced_memory()
        jobs = [work.Job(kind=NOOP, tenant_id=TENANTS[i % len(TENANTS)]) for i in range(n)]
        accepted = await s.submit_many(jobs)
        del jobs, accepted
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
        second = tracemalloc.take_snapshot()
        tracemalloc.stop()

        after = _asyncio_objects(loop)
        stats = await s.stats()
        waiting = stats.totals.waiting
        top = [
            f"{stat.traceback[0].filename.rsplit('/', 2)[-1]}:{stat.traceback[0].lineno} "
            f"{stat.size_diff / n:+.0f} B/job"
            for stat in second.compare_to(first, "lineno")[:6]
        ]
        del first, second
        release.set()
    return {
        "bytes_per_job": (current - base) / n,
        "peak_bytes_per_job": (peak - base) / n,
        "delta": {k: after[k] - before[k] for k in before},
        "waiting": waiting,
        "top": top,
    }


def run(params: Params, runs: int) -> ScenarioResult:
    n = params.memory_jobs
    results: list[dict[str, Any]] = []
    for _ in range(runs):
        settle()
        results.append(asyncio.run(measure(n)))
    per_job = [r["bytes_per_job"] for r in results]
    created = [float(sum(r["delta"].values())) for r in results]
    figures = [
        Figure(
            id="memory.bytes_per_waiting_job",
            label=f"memory per waiting job ({n:,} waiting)",
            unit="B",
            runs=per_job,
            target=f"<= {TARGET_BYTES} B",
            check=lambda m: m <= TARGET_BYTES,
            note="tracemalloc delta / jobs. Building the jobs is inside the measured region; "
            "the caller's references are dropped before measuring, so this is what the "
            "scheduler keeps.",
            digits=0,
        ),
        Figure(
            id="memory.asyncio_objects_per_waiting_job",
            label="asyncio objects created per waiting job",
            unit="",
            runs=[c / n for c in created],
            target="0 (none per waiting job)",
            check=lambda m: m * n < 1,
            note="Counted with asyncio.all_tasks(), gc.get_objects() (asyncio.Future "
            "instances) and the loop's scheduled timers, before and after submit_many.",
            digits=4,
        ),
    ]
    return ScenarioResult(
        name="memory",
        description=(
            f"{n:,} no-op jobs ({len(TENANTS)} tenants) submitted with submit_many to a fresh "
            f"Scheduler whose only local:async slot is held by a blocked job; {runs} run(s)."
        ),
        figures=figures,
        notes={
            "peak traced bytes per job during submit_many": [
                round(r["peak_bytes_per_job"]) for r in results
            ],
            "asyncio objects created (tasks, futures, timer handles), per run": [
                r["delta"] for r in results
            ],
            "jobs waiting after submit_many (stats().totals.waiting)": [
                r["waiting"] for r in results
            ],
            "largest allocation sites (last run, tracemalloc compare_to)": results[-1]["top"],
        },
    )

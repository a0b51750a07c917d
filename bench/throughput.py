"""Throughput: the bare asyncio pipeline (baseline) and nsai-work end to end: with no telemetry
handler, with one handler attached the way the seed README attaches one (to
``work.job.completed``), and, as a stretch figure, with one handler on every event of the
catalogue (8 calls per job).

The pipelines run interleaved within each run (bare, plain, one handler, every event), each on
a fresh event loop and a fresh scheduler, so the ratio of a run compares like with like; the
reported ratio is the median of the per-run ratios.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Mapping
from typing import Any

import nsai_work as work
from nsai_work.telemetry import ALL_EVENTS, Telemetry
from nsai_work.telemetry.events import JOB_COMPLETED

from ._common import NOOP, TENANTS, Figure, Params, ScenarioResult, register_handlers, settle

MUST_RATIO = 1 / 6
AIM_RATIO = 1 / 3


async def _noop_handler(job: work.Job) -> None:
    return None


async def _nothing() -> None:
    return None


async def bare_pipeline(n: int, width: int) -> float:
    """``n`` tasks running a no-op coroutine, at most ``width`` in flight (a done-callback starts
    the next one), until all have finished. Returns jobs/s."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    started = 0
    left = n

    def on_done(_: asyncio.Task[None]) -> None:
        nonlocal started, left
        left -= 1
        if started < n:
            started += 1
            loop.create_task(_nothing()).add_done_callback(on_done)
        elif left == 0:
            finished.set_result(None)

    t0 = time.perf_counter()
    for _ in range(min(width, n)):
        started += 1
        loop.create_task(_nothing()).add_done_callback(on_done)
    await finished
    return n / (time.perf_counter() - t0)


async def bare_pipeline_gather(n: int) -> float:
    """DESIGN.md's reference loop: create ``n`` tasks running a no-op coroutine, then gather
    them. Returns jobs/s."""
    t0 = time.perf_counter()
    await asyncio.gather(*[asyncio.create_task(_nothing()) for _ in range(n)])
    return n / (time.perf_counter() - t0)


async def bare_pipeline_semaphore(n: int, width: int) -> float:
    """The same with a semaphore: the producer acquires a slot before creating each task, the
    task's done-callback releases it. Returns jobs/s."""
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(width)

    def release(_: asyncio.Task[None]) -> None:
        sem.release()

    t0 = time.perf_counter()
    for _ in range(n):
        await sem.acquire()
        loop.create_task(_nothing()).add_done_callback(release)
    for _ in range(width):
        await sem.acquire()
    return n / (time.perf_counter() - t0)


class _Counter:
    """The cheap telemetry handler: counts the events it is called for."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def __call__(
        self,
        event: tuple[str, ...],
        measurements: Mapping[str, float],
        metadata: Mapping[str, Any],
        config: Any,
    ) -> None:
        self.count += 1


async def nsai_pipeline(n: int, bus: Telemetry) -> dict[str, float]:
    """``n`` no-op jobs through a fresh ``work.Scheduler``: build them, ``submit_many``,
    ``wait_many``. Returns the end-to-end rate (construction included) and its parts."""
    async with work.Scheduler(telemetry=bus) as s:
        settle()
        t0 = time.perf_counter()
        jobs = [work.Job(kind=NOOP, tenant_id=TENANTS[i % len(TENANTS)]) for i in range(n)]
        t1 = time.perf_counter()
        accepted = await s.submit_many(jobs)
        t2 = time.perf_counter()
        done = await s.wait_many([job.id for job in accepted])
        t3 = time.perf_counter()
        bad = [job for job in done if job.status is not work.Status.SUCCEEDED]
        if bad:
            raise RuntimeError(f"{len(bad)} bench jobs did not succeed, e.g. {bad[0]!r}")
    return {
        "end_to_end": n / (t3 - t0),
        "build": n / (t1 - t0),
        "submit": n / (t2 - t1),
        "wait": n / (t3 - t2),
    }


def run(params: Params, runs: int) -> ScenarioResult:
    register_handlers({NOOP: _noop_handler})
    n, width = params.throughput_jobs, params.bare_width

    # Warm-up, not reported: imports, first calls, allocator arenas.
    asyncio.run(bare_pipeline(params.warmup_jobs, width))
    asyncio.run(bare_pipeline_gather(params.warmup_jobs))
    asyncio.run(bare_pipeline_semaphore(params.warmup_jobs, width))
    asyncio.run(nsai_pipeline(params.warmup_jobs, Telemetry()))

    bare: list[float] = []
    bare_gather: list[float] = []
    bare_sem: list[float] = []
    plain: list[dict[str, float]] = []
    telem: list[dict[str, float]] = []
    completed: list[dict[str, float]] = []
    events_per_job: list[float] = []
    for _ in range(runs):
        settle()
        bare.append(asyncio.run(bare_pipeline(n, width)))
        settle()
        bare_gather.append(asyncio.run(bare_pipeline_gather(n)))
        settle()
        bare_sem.append(asyncio.run(bare_pipeline_semaphore(n, width)))
        settle()
        plain.append(asyncio.run(nsai_pipeline(n, Telemetry())))
        settle()
        bus = Telemetry()
        bus.attach("bench.completed", JOB_COMPLETED, _Counter())
        completed.append(asyncio.run(nsai_pipeline(n, bus)))
        settle()
        bus = Telemetry()
        counter = _Counter()
        bus.attach_many("bench.count", ALL_EVENTS, counter)
        telem.append(asyncio.run(nsai_pipeline(n, bus)))
        events_per_job.append(counter.count / n)

    def ratio_figure(
        id_: str,
        label: str,
        rates: list[dict[str, float]],
        base: list[float],
        verdict: bool,
        stretch: bool = False,
    ) -> Figure:
        return Figure(
            id=id_,
            label=label,
            unit="x",
            runs=[r["end_to_end"] / b for r, b in zip(rates, base, strict=True)],
            target=">= 1/6 (0.167), aim 1/3 (0.333)" if verdict else "-",
            check=(lambda m: m >= MUST_RATIO) if verdict else None,
            aim=(lambda m: m >= AIM_RATIO) if verdict else None,
            note="Median of the per-run ratios (each run: same process, back to back).",
            digits=3,
            stretch=stretch,
        )

    def rate_figure(id_: str, label: str, values: list[float], note: str = "") -> Figure:
        return Figure(id=id_, label=label, unit="jobs/s", runs=values, note=note, digits=0)

    bare_median = statistics.median(bare_gather)

    def end_to_end_figure(
        id_: str, label: str, values: list[float], note: str, stretch: bool = False
    ) -> Figure:
        return Figure(
            id=id_,
            label=label,
            unit="jobs/s",
            runs=values,
            target=f">= bare/6 (~{bare_median / 6:,.0f}), aim bare/3",
            check=lambda m: m >= bare_median * MUST_RATIO,
            aim=lambda m: m >= bare_median * AIM_RATIO,
            note=note,
            digits=0,
            stretch=stretch,
        )

    end_to_end_note = (
        "Timed: building the Job objects, submit_many, wait_many (what a user pays); "
        "fresh Scheduler, private Telemetry bus"
    )
    figures = [
        rate_figure(
            "throughput.bare_asyncio_gather",
            "bare asyncio pipeline (baseline: create the tasks, gather them)",
            bare_gather,
            f"DESIGN.md's reference ('a bare asyncio loop that only creates and finishes "
            f"tasks', ~150k jobs/s on 2 cores): {n:,} tasks running a no-op coroutine, created "
            "in a loop and gathered. The verdicts below are against this baseline.",
        ),
        rate_figure(
            "throughput.bare_asyncio",
            "bare asyncio pipeline (leaner: done-callback, 256 in flight)",
            bare,
            f"{n:,} tasks running a no-op coroutine, {width} in flight; each task's "
            "done-callback creates the next (for context: the leanest loop).",
        ),
        rate_figure(
            "throughput.bare_asyncio_semaphore",
            "bare asyncio pipeline (semaphore variant)",
            bare_sem,
            "The same, the producer awaiting an asyncio.Semaphore before each create_task "
            "(for context only).",
        ),
        end_to_end_figure(
            "throughput.nsai",
            "nsai-work end to end, no telemetry handler",
            [r["end_to_end"] for r in plain],
            end_to_end_note + " with no handler attached.",
        ),
        ratio_figure(
            "throughput.nsai_ratio", "no handler: ratio to bare", plain, bare_gather, True
        ),
        ratio_figure(
            "throughput.nsai_ratio_lean",
            "no handler: ratio to the leaner done-callback loop",
            plain,
            bare,
            False,
        ),
        ratio_figure(
            "throughput.nsai_ratio_semaphore",
            "no handler: ratio to bare (semaphore variant)",
            plain,
            bare_sem,
            False,
        ),
        rate_figure(
            "throughput.nsai_submit_only",
            "no handler: submit_many only",
            [r["submit"] for r in plain],
            "submit_many alone: validation, admission, enqueue, the first dispatches.",
        ),
        rate_figure(
            "throughput.nsai_build_only",
            "building the work.Job objects only",
            [r["build"] for r in plain],
        ),
        end_to_end_figure(
            "throughput.nsai_completed",
            "nsai-work end to end, one handler attached (work.job.completed)",
            [r["end_to_end"] for r in completed],
            end_to_end_note + " with one counting handler attached to work.job.completed, as "
            "the seed README's telemetry example attaches one.",
        ),
        ratio_figure(
            "throughput.nsai_completed_ratio",
            "one handler attached: ratio to bare",
            completed,
            bare_gather,
            True,
        ),
        end_to_end_figure(
            "throughput.nsai_telemetry",
            "stretch: one handler on every event (8 per job)",
            [r["end_to_end"] for r in telem],
            end_to_end_note + " with one counting handler attached to every event of "
            "ALL_EVENTS: 8 calls per job, each with its DESIGN.md metadata. Beyond the issue's "
            "configuration; the same line is reported as a stretch goal.",
            stretch=True,
        ),
        ratio_figure(
            "throughput.nsai_telemetry_ratio",
            "stretch: handler on every event, ratio to bare",
            telem,
            bare_gather,
            True,
            stretch=True,
        ),
        rate_figure(
            "throughput.nsai_telemetry_submit_only",
            "handler on every event: submit_many only",
            [r["submit"] for r in telem],
        ),
    ]
    return ScenarioResult(
        name="throughput",
        description=(
            f"{n:,} jobs per pipeline, {runs} run(s), each on a fresh event loop "
            f"(asyncio.run) and a fresh Scheduler with default pools (local:async, 256 slots), "
            f"async no-op handler, {len(TENANTS)} tenants round-robin. The timed region of the "
            f"nsai-work figures includes building the Job objects. One warm-up of "
            f"{params.warmup_jobs:,} jobs per pipeline is not reported."
        ),
        figures=figures,
        notes={
            "telemetry events per job (counting handler)": sorted(events_per_job)[
                len(events_per_job) // 2
            ],
            "wait_many rate, no handler (jobs/s)": [round(r["wait"]) for r in plain],
        },
    )

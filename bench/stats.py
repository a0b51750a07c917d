"""Realtime submit-to-start latency while ``stats()`` is called in a loop, at 20,000 tenants.

A fresh ``work.Scheduler`` gets a backlog of batch jobs spread over many tenants (each job
sleeps a little, so the backlog lasts) on the ``local:async`` pool; while it drains, realtime
no-op jobs are submitted one at a time through the async API to a pool of their own (so they
never wait for a backlog job to end: what delays them is the engine), and their submit-to-start
latency is measured as in the latency scenario. Each run measures twice, interleaved: once
with another task calling ``await s.stats()`` in a loop (every tenant's entry and every waiting
job's reason each time), once without. ``stats()`` is built in slices of about a quarter of a
millisecond between which the engine dispatches, so the realtime p99 should stay within 2x of
the same p99 without the loop (aim).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import nsai_work as work
from nsai_work.telemetry import Telemetry

from ._common import BACKLOG, RT, Figure, Params, ScenarioResult, percentile, register_handlers
from ._common import settle as _settle

TENANTS_FULL = 20_000
QUEUED_FULL = 50_000
SLOTS = 256
#: How long a backlog job runs: long enough that the backlog lasts through the samples.
BACKLOG_RUN_S = 0.05
AIM_RATIO = 2.0
BACKLOG_LANE = work.Constraints(pool_labels={"runs": "async"})
REALTIME_LANE = work.Constraints(pool_labels={"lane": "realtime"})


class _Probe:
    def __init__(self) -> None:
        self.starts: dict[int, float] = {}
        self.backlog_done = 0

    async def backlog(self, job: work.Job) -> None:
        await asyncio.sleep(BACKLOG_RUN_S)
        self.backlog_done += 1

    async def realtime(self, job: work.Job) -> None:
        self.starts[job.payload["i"]] = time.perf_counter()


async def _one(
    tenants: int, queued: int, samples: int, spacing_s: float, with_stats: bool
) -> tuple[list[float], list[float], int]:
    """Latencies (ms) of the realtime jobs, durations (ms) of the stats calls, tenants seen."""
    probe = _Probe()
    register_handlers({BACKLOG: probe.backlog, RT: probe.realtime})
    durations: list[float] = []
    seen = 0
    async with work.Scheduler(
        telemetry=Telemetry(),
        finished_max=1_000_000,
        max_waiting=None,
        pools={
            "local": [
                work.Pool(name="local:async", slots=SLOTS, labels={"runs": "async"}),
                work.Pool(name="realtime", slots=16, labels={"lane": "realtime"}),
            ]
        },
    ) as s:
        await s.submit_many(
            work.Job(
                kind=BACKLOG,
                tenant_id=f"tenant-{i % tenants}",
                priority="batch",
                constraints=BACKLOG_LANE,
            )
            for i in range(queued + SLOTS)
        )
        running = True

        async def stats_loop() -> None:
            nonlocal seen
            while running:
                t0 = time.perf_counter()
                stats = await s.stats()
                durations.append((time.perf_counter() - t0) * 1000.0)
                seen = len(stats.by_tenant)
                await asyncio.sleep(0)

        loop_task = asyncio.create_task(stats_loop()) if with_stats else None
        await asyncio.sleep(0.2)  # the backlog runs and (when on) the stats loop is going
        submitted: dict[int, float] = {}
        ids = []
        for i in range(samples):
            if queued + SLOTS - probe.backlog_done < 2 * SLOTS:
                break  # measure only under backlog
            job = work.Job(
                kind=RT,
                tenant_id="rt",
                priority="realtime",
                payload={"i": i},
                constraints=REALTIME_LANE,
            )
            t0 = time.perf_counter()
            await s.submit(job)
            submitted[i] = t0
            ids.append(job.id)
            await asyncio.sleep(spacing_s)
        running = False
        if loop_task is not None:
            await loop_task
        await s.wait_many(ids)
        await s.stop(timeout=0)  # the rest of the backlog is canceled
    latencies = [(probe.starts[i] - t0) * 1000.0 for i, t0 in submitted.items()]
    return latencies, durations, seen


def run(params: Params, runs: int) -> ScenarioResult:
    quick = params.backlog_jobs < 50_000
    tenants = 500 if quick else TENANTS_FULL
    queued = 2_000 if quick else QUEUED_FULL
    samples = 30 if quick else 400
    spacing = 0.005
    with_p99: list[float] = []
    without_p99: list[float] = []
    ratios: list[float] = []
    stats_ms: list[float] = []
    counts: list[int] = []
    seen_tenants: list[int] = []
    for _ in range(runs):
        pair: dict[bool, float] = {}
        for with_stats in (False, True):  # interleaved: one of each per run
            _settle()
            latencies, durations, seen = asyncio.run(
                _one(tenants, queued, samples, spacing, with_stats)
            )
            if not latencies:
                raise RuntimeError("stats: the backlog drained before the first realtime job")
            pair[with_stats] = percentile(latencies, 99)
            counts.append(len(latencies))
            if with_stats:
                stats_ms.append(statistics.median(durations) if durations else 0.0)
                seen_tenants.append(seen)
        without_p99.append(pair[False])
        with_p99.append(pair[True])
        ratios.append(pair[True] / pair[False])
    notes: dict[str, Any] = {
        "tenants, queued jobs, pool slots": (tenants, queued, SLOTS),
        "realtime samples per measurement": counts,
        "tenants in stats().by_tenant, per run": seen_tenants,
    }
    return ScenarioResult(
        name="stats",
        description=(
            f"A backlog of {queued + SLOTS:,} batch jobs ({BACKLOG_RUN_S * 1000:g} ms each) "
            f"over {tenants:,} tenants on one pool of {SLOTS} slots ({queued:,} queued); "
            f"realtime no-op jobs, on a pool of their own, submitted every "
            f"{spacing * 1000:g} ms through `await "
            f"s.submit(job)` while the backlog lasts, once with another task calling `await "
            f"s.stats()` in a loop and once without (interleaved, one of each per run). "
            f"Latency: perf_counter before the submit call to the handler's first line; p99 "
            f"nearest-rank per measurement; medians over {runs} run(s); the ratio is per run."
        ),
        figures=[
            Figure(
                id="stats.realtime_p99_ms",
                label=f"realtime p99 while stats() loops, {tenants:,} tenants",
                unit="ms",
                runs=with_p99,
                digits=3,
            ),
            Figure(
                id="stats.realtime_p99_baseline_ms",
                label="the same p99 without the stats() loop",
                unit="ms",
                runs=without_p99,
                digits=3,
            ),
            Figure(
                id="stats.realtime_p99_ratio",
                label="realtime p99 with / without the stats() loop",
                unit="x",
                runs=ratios,
                target=f"aim <= {AIM_RATIO:g}x",
                check=lambda m: m <= AIM_RATIO,
                digits=2,
                stretch=True,  # an aim: "met" or "missed", never FAIL
            ),
            Figure(
                id="stats.call_ms",
                label=f"one stats() call, {tenants:,} tenants, {queued:,} queued",
                unit="ms",
                runs=stats_ms,
                digits=1,
            ),
        ],
        notes=notes,
    )

"""Realtime submit-to-start latency while a batch backlog drains.

A fresh scheduler (default pools: ``local:async`` with 256 slots) gets 100,000 batch no-op jobs
in one ``submit_many``; while they drain, realtime jobs are submitted one at a time, spaced by a
short sleep. For each, the time from just before the submit call to the first line of its
handler (which records ``time.perf_counter()`` under the index carried in its payload) is the
latency. Two faces:

- ``async``: ``await s.submit(job)`` on the engine's own loop (``work.Scheduler``);
- ``facade``: ``SyncScheduler.submit(job)`` from the main thread while the engine runs on its
  own loop thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import nsai_work as work
from nsai_work.telemetry import Telemetry

from ._common import (
    BACKLOG,
    RT,
    TENANTS,
    Figure,
    Params,
    ScenarioResult,
    percentile,
    register_handlers,
    settle,
)

TARGET_P99_MS = {"async": 1.0, "facade": 5.0}
ASYNC_SLOTS = 256  # local:async's default slots, which the backlog fills
_START_TIMEOUT_S = 60.0


class _Probe:
    """Handlers of one run: the backlog counts what it ran, realtime jobs record their start."""

    def __init__(self) -> None:
        self.backlog_done = 0
        self.starts: dict[int, float] = {}
        self.backlog_left: list[int] = []
        self.submitted_at = 0.0
        self.submit_calls: list[float] = []
        self.first_ran = threading.Event()
        self.first_ran_async: asyncio.Event | None = None
        self.last_backlog_at = 0.0

    async def backlog(self, job: work.Job) -> None:
        self.backlog_done += 1
        if self.backlog_done == 1:
            self.first_ran.set()
            if self.first_ran_async is not None:
                self.first_ran_async.set()
        self.last_backlog_at = time.perf_counter()

    def drain_rate(self, n: int) -> float:
        """Backlog jobs per second, from its submit_many to the start of its last job."""
        return n / (self.last_backlog_at - self.submitted_at)

    async def realtime(self, job: work.Job) -> None:
        self.starts[job.payload["i"]] = time.perf_counter()

    def backlog_queued(self, n: int) -> bool:
        """Whether batch jobs are surely still queued: more than twice the pool's slots are
        left (at most one pool's worth runs), so every slot is busy and more wait behind."""
        return n - self.backlog_done > 2 * ASYNC_SLOTS

    def check_drained(self, n: int) -> None:
        if self.backlog_done != n:
            raise RuntimeError(f"the backlog ran {self.backlog_done} of {n} jobs")

    def install(self) -> None:
        register_handlers({BACKLOG: self.backlog, RT: self.realtime})


def _backlog_jobs(n: int) -> list[work.Job]:
    return [
        work.Job(kind=BACKLOG, tenant_id=TENANTS[i % len(TENANTS)], priority=work.Priority.BATCH)
        for i in range(n)
    ]


def _realtime_job(i: int) -> work.Job:
    return work.Job(kind=RT, tenant_id="rt", priority=work.Priority.REALTIME, payload={"i": i})


async def _run_async(params: Params, probe: _Probe) -> dict[int, float]:
    submitted: dict[int, float] = {}
    draining = probe.first_ran_async = asyncio.Event()
    async with work.Scheduler(telemetry=Telemetry(), finished_max=1_000_000) as s:
        jobs = _backlog_jobs(params.backlog_jobs)
        probe.submitted_at = time.perf_counter()
        backlog = await s.submit_many(jobs)
        async with asyncio.timeout(_START_TIMEOUT_S):
            await draining.wait()  # the backlog runs: every slot is busy
        ids = []
        for i in range(params.realtime_jobs):
            if not probe.backlog_queued(params.backlog_jobs):
                break
            job = _realtime_job(i)
            t0 = time.perf_counter()
            await s.submit(job)
            probe.submit_calls.append(time.perf_counter() - t0)
            submitted[i] = t0
            ids.append(job.id)
            await asyncio.sleep(params.realtime_spacing_s)
        probe.backlog_left.append(params.backlog_jobs - probe.backlog_done)
        await s.wait_many(ids)
        await s.wait_idle()
    probe.check_drained(len(backlog))
    return submitted


def _run_facade(params: Params, probe: _Probe) -> dict[int, float]:
    submitted: dict[int, float] = {}
    with work.SyncScheduler(telemetry=Telemetry(), finished_max=1_000_000) as s:
        jobs = _backlog_jobs(params.backlog_jobs)
        probe.submitted_at = time.perf_counter()
        backlog = s.submit_many(jobs)
        if not probe.first_ran.wait(_START_TIMEOUT_S):  # the backlog runs: every slot is busy
            raise RuntimeError("the backlog did not start")
        ids = []
        for i in range(params.realtime_jobs):
            if not probe.backlog_queued(params.backlog_jobs):
                break
            job = _realtime_job(i)
            t0 = time.perf_counter()
            s.submit(job)
            probe.submit_calls.append(time.perf_counter() - t0)
            submitted[i] = t0
            ids.append(job.id)
            time.sleep(params.realtime_spacing_s)
        probe.backlog_left.append(params.backlog_jobs - probe.backlog_done)
        s.wait_many(ids)
        s.wait_idle()
    probe.check_drained(len(backlog))
    return submitted


def run_face(face: str, params: Params, runs: int) -> ScenarioResult:
    one_run: Callable[[Params, _Probe], dict[int, float]]
    if face == "async":

        def one_run(p: Params, probe: _Probe) -> dict[int, float]:
            return asyncio.run(_run_async(p, probe))

        how = "`await s.submit(job)` on the engine's loop (work.Scheduler)"
        face_label = "async API"
        spacing = "await asyncio.sleep"
    else:
        one_run = _run_facade
        how = "SyncScheduler.submit(job) from the main thread, engine on its loop thread"
        face_label = "blocking facade"
        spacing = "time.sleep"

    p50s: list[float] = []
    p99s: list[float] = []
    maxima: list[float] = []
    left: list[int] = []
    samples: list[int] = []
    drain: list[int] = []
    calls: list[float] = []
    for _ in range(runs):
        settle()
        probe = _Probe()
        probe.install()
        submitted = one_run(params, probe)
        latencies = [(probe.starts[i] - t0) * 1000.0 for i, t0 in submitted.items()]
        if not latencies:
            raise RuntimeError(
                f"latency-{face}: the backlog of {params.backlog_jobs:,} jobs drained before "
                f"the first realtime submit; nothing was measured"
            )
        p50s.append(percentile(latencies, 50))
        p99s.append(percentile(latencies, 99))
        maxima.append(max(latencies))
        left.extend(probe.backlog_left)
        samples.append(len(latencies))
        drain.append(round(probe.drain_rate(params.backlog_jobs)))
        calls.append(round(1000.0 * percentile(probe.submit_calls, 99), 3))

    target = TARGET_P99_MS[face]
    notes: dict[str, Any] = {
        "realtime samples per run": samples,
        "backlog jobs not yet run after the last realtime submit, per run": left,
        "backlog drain rate (jobs/s), per run": drain,
        "p99 duration of the submit call itself (ms), per run": calls,
    }
    return ScenarioResult(
        name=f"latency-{face}",
        description=(
            f"{params.backlog_jobs:,} batch no-op jobs submitted at once (default pools, "
            f"local:async {ASYNC_SLOTS} slots), then up to {params.realtime_jobs} realtime no-op "
            f"jobs submitted one at a time through {how}, {spacing}"
            f"({params.realtime_spacing_s}) between them, as long as batch jobs are surely "
            f"still queued (more than {2 * ASYNC_SLOTS} not yet run): every sample is taken "
            f"under backlog, so a run has fewer samples when the backlog drains first. "
            f"Latency: perf_counter just before the submit call to the first line of the "
            f"handler. Percentiles are nearest-rank over one run's samples; median over "
            f"{runs} run(s)."
        ),
        figures=[
            Figure(
                id=f"latency.{face}.p50_ms",
                label=f"realtime submit-to-start p50, {face_label}",
                unit="ms",
                runs=p50s,
                digits=3,
            ),
            Figure(
                id=f"latency.{face}.p99_ms",
                label=f"realtime submit-to-start p99, {face_label}",
                unit="ms",
                runs=p99s,
                target=f"<= {target:g} ms",
                check=lambda m: m <= target,
                digits=3,
            ),
            Figure(
                id=f"latency.{face}.max_ms",
                label=f"realtime submit-to-start max, {face_label}",
                unit="ms",
                runs=maxima,
                digits=3,
            ),
        ],
        notes=notes,
    )


def run_async(params: Params, runs: int) -> ScenarioResult:
    return run_face("async", params, runs)


def run_facade(params: Params, runs: int) -> ScenarioResult:
    return run_face("facade", params, runs)

"""The process backend: throughput of short jobs through real worker processes, and the delay
from a job's timeout to the kill of its process.

- Throughput: 5,000 no-op jobs (500 with ``--quick``) pinned to a fresh ``ProcessBackend`` with
  one worker per usable core, its workers up before the clock starts; timed from building the
  Job objects to ``wait_many`` returning (every job's round trip: encode, pipe, decode in the
  worker, call, reply).
- Timeout to kill: one spinning job at a time (a busy loop that never returns) with
  ``timeout_ms=20``, on a pool whose workers are all up and idle. The delay is the time from the
  job's deadline (its ``job.started`` event plus the timeout) to ``wait_idle()`` returning, which
  happens once the worker's process group got SIGKILL and the worker was reaped (the run's
  capacity is released only then). 100 kills (10 with ``--quick``) per run.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Mapping
from typing import Any, Final

import nsai_work as work
from nsai_work.backends import ProcessBackend
from nsai_work.backends._functions import machine_cpu
from nsai_work.telemetry import Telemetry
from nsai_work.telemetry.events import JOB_STARTED

from ._common import QUICK, TENANTS, Figure, Params, ScenarioResult, percentile, settle

NOOP: Final = "bench.process.noop"
SPIN: Final = "bench.process.spin"
TIMEOUT_MS: Final = 20
TARGET_JOBS_PER_S: Final = 1_000.0
TARGET_KILL_P50_MS: Final = 10.0
TARGET_KILL_P99_MS: Final = 50.0
_WAIT_S: Final = 120.0
ONCE: Final = work.RetryPolicy(max_attempts=1)


def noop(job: work.Job) -> None:
    """The short job: a worker imports it as ``bench.process:noop``."""
    return None


def spin(job: work.Job) -> None:
    """Never returns: only a kill ends it."""
    n = 0
    while True:
        n += 1


def _pinned(kind: str, i: int, **fields: Any) -> work.Job:
    return work.Job(
        kind=kind,
        tenant_id=TENANTS[i % len(TENANTS)],
        constraints=work.Constraints(backend="process", retry_policy=ONCE),
        **fields,
    )


async def throughput(n: int, workers: int) -> float:
    """``n`` no-op jobs through the process backend; returns jobs/s."""
    backend = ProcessBackend(workers=workers)
    async with work.Scheduler(backends=["local", backend], telemetry=Telemetry()) as s:
        await backend.wait_ready(_WAIT_S)
        warm = await s.submit_many([_pinned(NOOP, i) for i in range(min(n, 200))])
        await s.wait_many([job.id for job in warm], _WAIT_S)
        settle()
        t0 = time.perf_counter()
        jobs = [_pinned(NOOP, i) for i in range(n)]
        accepted = await s.submit_many(jobs)
        done = await s.wait_many([job.id for job in accepted], _WAIT_S)
        elapsed = time.perf_counter() - t0
    bad = [job for job in done if job.status is not work.Status.SUCCEEDED]
    if bad:
        raise RuntimeError(f"{len(bad)} process bench jobs did not succeed, e.g. {bad[0].error}")
    return n / elapsed


async def kill_delays(n: int) -> list[float]:
    """``n`` spinning jobs, one at a time, each killed at its timeout; the delays in ms."""
    bus = Telemetry()
    started: dict[str, float] = {}

    def on_started(
        event: tuple[str, ...],
        measurements: Mapping[str, float],
        metadata: Mapping[str, Any],
        config: Any,
    ) -> None:
        started[metadata["job_id"]] = time.perf_counter()

    bus.attach("bench.process.started", JOB_STARTED, on_started)
    backend = ProcessBackend(workers=2)
    delays: list[float] = []
    async with work.Scheduler(backends=["local", backend], telemetry=bus) as s:
        for i in range(n):
            await backend.wait_ready(_WAIT_S)
            job = await s.submit(_pinned(SPIN, i, resources=work.Resources(timeout_ms=TIMEOUT_MS)))
            ended = await s.wait(job.id, _WAIT_S)
            await s.wait_idle(_WAIT_S)
            gone = time.perf_counter()
            if ended.status is not work.Status.TIMEOUT:
                raise RuntimeError(f"a spinning job ended {ended.status}, not timeout")
            delays.append((gone - started[job.id]) * 1000.0 - TIMEOUT_MS)
    return delays


def run(params: Params, runs: int) -> ScenarioResult:
    quick = params == QUICK
    n_jobs = 500 if quick else 5_000
    n_kills = 10 if quick else 100
    workers = max(1, int(machine_cpu()))
    work.register_handler(NOOP, noop, replace=True)
    work.register_handler(SPIN, spin, replace=True)

    rates: list[float] = []
    p50s: list[float] = []
    p99s: list[float] = []
    for _ in range(runs):
        settle()
        rates.append(asyncio.run(throughput(n_jobs, workers)))
        settle()
        delays = asyncio.run(kill_delays(n_kills))
        p50s.append(statistics.median(delays))
        p99s.append(percentile(delays, 99))

    return ScenarioResult(
        name="process",
        description=(
            f"Process backend: {n_jobs:,} no-op jobs on {workers} worker process(es), and "
            f"{n_kills} spinning jobs killed at timeout_ms={TIMEOUT_MS}, one at a time, on 2 "
            f"workers; {runs} run(s), each on a fresh event loop and scheduler."
        ),
        figures=[
            Figure(
                id="process.throughput",
                label="process backend: short jobs end to end",
                unit="jobs/s",
                runs=rates,
                target=f">= {TARGET_JOBS_PER_S:,.0f} jobs/s",
                check=lambda m: m >= TARGET_JOBS_PER_S,
                note=f"{n_jobs:,} no-op jobs pinned to the process backend, {workers} workers, "
                "build + submit_many + wait_many.",
                digits=0,
            ),
            Figure(
                id="process.timeout_kill_p50_ms",
                label="process backend: timeout to kill, median",
                unit="ms",
                runs=p50s,
                target=f"<= {TARGET_KILL_P50_MS:.0f} ms",
                check=lambda m: m <= TARGET_KILL_P50_MS,
                note="From the job's deadline (started event + timeout_ms) to wait_idle() "
                "returning after the worker's process group was killed and reaped.",
                digits=2,
            ),
            Figure(
                id="process.timeout_kill_p99_ms",
                label="process backend: timeout to kill, p99",
                unit="ms",
                runs=p99s,
                target=f"<= {TARGET_KILL_P99_MS:.0f} ms",
                check=lambda m: m <= TARGET_KILL_P99_MS,
                digits=2,
            ),
        ],
        notes={"jobs": n_jobs, "kills per run": n_kills, "workers (throughput)": workers},
    )

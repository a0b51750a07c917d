"""HTTP: submits through the HTTP API with the real client, over loopback, in one process.

The server is ``create_app`` (the memory store, the scheduler in the server) on uvicorn, on a
thread of its own (``nsai_work.server.Server``, 127.0.0.1); the client is ``work.Client(url,
api_key=<admin key>)`` (httpx, async) on the main thread's loop. The jobs are no-ops that run
while the submits go on (the scheduler shares the process, and its GIL, with the client).

- Single: ``SINGLE`` submits one after the other (``await client.submit(job)``): each call's
  time (p50, p99) and the rate.
- Batch: ``submit_many`` of ``BATCH`` (1,000) jobs, ``BATCHES`` times: the median call (the
  jobs of one batch are waited for, off the clock, before the next).

The same client also runs in a child process (``python -m bench.http client URL KEY ...``)
against the same server: the figures marked "client in its own process" leave out what sharing
one process (and its GIL) with the server costs each request, as a real client would.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

import nsai_work as work
from nsai_work.server import KeyRing, Server, create_app

from ._common import QUICK, Figure, Params, ScenarioResult, percentile, settle

KIND: Final = "bench.http.noop"
BATCH: Final = 1_000
SINGLE_FULL: Final = 2_000
SINGLE_QUICK: Final = 200
BATCHES_FULL: Final = 10
BATCHES_QUICK: Final = 3
WARMUP: Final = 50
ROOT: Final = Path(__file__).resolve().parents[1]


async def _noop(job: work.Job) -> None:  # (async: no thread pool in the way)
    return None


async def _measure(url: str, key: str, single: int, batches: int) -> dict[str, float]:
    async with work.Client(url, api_key=key) as client:
        for _ in range(WARMUP):  # connections, first-call costs
            await client.submit(work.Job(kind=KIND, tenant_id="acme"))
        await client.submit_many(work.Job(kind=KIND, tenant_id="acme") for _ in range(100))
        times: list[float] = []
        t0 = time.perf_counter()
        for _ in range(single):
            job = work.Job(kind=KIND, tenant_id="acme")
            t = time.perf_counter()
            await client.submit(job)
            times.append((time.perf_counter() - t) * 1000.0)
        single_s = time.perf_counter() - t0
        batch_ms: list[float] = []
        for _ in range(batches):
            jobs = [work.Job(kind=KIND, tenant_id="acme") for _ in range(BATCH)]
            t = time.perf_counter()
            await client.submit_many(jobs)
            batch_ms.append((time.perf_counter() - t) * 1000.0)
            await client.wait_many([job.id for job in jobs], 60)  # run them, off the clock
    return {
        "single_p50_ms": statistics.median(times),
        "single_p99_ms": percentile(times, 99),
        "single_per_s": single / single_s,
        "batch_ms": statistics.median(batch_ms),
        "batch_per_s": BATCH / (statistics.median(batch_ms) / 1000.0),
    }


def run(params: Params, runs: int) -> ScenarioResult:
    quick = params == QUICK
    single = SINGLE_QUICK if quick else SINGLE_FULL
    batches = BATCHES_QUICK if quick else BATCHES_FULL
    work.register_handler(KIND, _noop, replace=True)
    keys = KeyRing()
    _, key = keys.create(admin=True)
    results = []
    apart = []
    for _ in range(runs):
        settle()
        with Server(create_app(keys=keys, max_waiting=1_000_000)) as server:
            results.append(asyncio.run(_measure(server.url, key, single, batches)))
            child = subprocess.run(
                [sys.executable, "-m", "bench.http", "client", server.url, key, str(single),
                 str(batches)],
                cwd=ROOT, capture_output=True, text=True, timeout=600, check=True,
            )  # fmt: skip
            apart.append(json.loads(child.stdout.strip().splitlines()[-1]))

    def runs_of(name: str) -> list[float]:
        return [r[name] for r in results]

    def apart_of(name: str) -> list[float]:
        return [r[name] for r in apart]

    figures = [
        Figure(
            "http.batch_1000_ms",
            "HTTP submit_many of 1,000 jobs (one call)",
            "ms",
            runs_of("batch_ms"),
            target="< 50 ms (aim)",
            check=lambda v: v < 50.0,
        ),
        Figure(
            "http.batch_jobs_per_s",
            "HTTP submit_many of 1,000: jobs/s",
            "jobs/s",
            runs_of("batch_per_s"),
            digits=0,
        ),
        Figure(
            "http.single_p50_ms",
            "HTTP submit, one job a call: p50",
            "ms",
            runs_of("single_p50_ms"),
            digits=2,
        ),
        Figure(
            "http.single_p99_ms",
            "HTTP submit, one job a call: p99",
            "ms",
            runs_of("single_p99_ms"),
            target="< 5 ms (aim)",
            check=lambda v: v < 5.0,
            digits=2,
        ),
        Figure(
            "http.single_per_s",
            "HTTP submit, one job a call: calls/s (sequential)",
            "calls/s",
            runs_of("single_per_s"),
            digits=0,
        ),
        Figure(
            "http.apart_batch_1000_ms",
            "HTTP submit_many of 1,000, client in its own process",
            "ms",
            apart_of("batch_ms"),
        ),
        Figure(
            "http.apart_single_p50_ms",
            "HTTP submit, client in its own process: p50",
            "ms",
            apart_of("single_p50_ms"),
            digits=2,
        ),
        Figure(
            "http.apart_single_p99_ms",
            "HTTP submit, client in its own process: p99",
            "ms",
            apart_of("single_p99_ms"),
            digits=2,
        ),
    ]
    return ScenarioResult(
        name="http",
        description=(
            "submits through the HTTP API: work.Client (httpx) to create_app (uvicorn, the memory "
            "store, the scheduler in the server) over loopback, in one process; no-op jobs run "
            "meanwhile"
        ),
        figures=figures,
        notes={
            "single_calls": single,
            "batch": BATCH,
            "batches": batches,
            "why_p99": "client and server share one process and its GIL: each request hands "
            "the GIL over twice; the load average is in the results' machine info",
        },
    )


if __name__ == "__main__":  # python -m bench.http client URL KEY SINGLE BATCHES
    _, _, url, key, single, batches = sys.argv
    work.register_handler(KIND, _noop, replace=True)
    print(json.dumps(asyncio.run(_measure(url, key, int(single), int(batches)))))

"""Clients: a scheduler process and client processes on one store, SQLite (``synchronous=FULL``,
the default; a fresh file in a temporary directory per run) and PostgreSQL (stock durability; a
fresh database per run on one throwaway cluster, tests/_postgres.py; run through
``scripts/in-netns.sh``, as ``make bench`` does).

- Latency: one client submits ``LATENCY_JOBS`` jobs one at a time, each waited for before the
  next (an idle scheduler). Per job: the ``submit`` call (a validated insert, committed: one
  fsync), submit to start (from the wall clock before the ``submit`` call to the wall clock
  when the handler starts, in the scheduler process: SQLite's ``wait_for_change`` polls the
  file's ``data_version`` every 10 ms, PostgreSQL's is woken by a NOTIFY), and submit to the end
  as the client's ``wait`` sees it (the scheduler commits the end within ``store_flush_s``,
  5 ms; the client's poller reads after each change its store reports).
- Throughput: ``CLIENTS`` client processes at once each submit ``JOBS`` no-op jobs (the first 50
  one by one, the rest in batches of 50) and ``wait_many`` for all of them; timed from the
  first submit to the last ``wait_many`` returning, over all clients (wall clock).

``python -m bench.clients scheduler URL`` and ``python -m bench.clients client ...`` are the
processes (run by ``run``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import nsai_work as work

from ._common import QUICK, Figure, Params, ScenarioResult, percentile, settle

KIND: Final = "bench.clients.noop"
CLIENTS: Final = 4
JOBS_FULL: Final = 2_000
JOBS_QUICK: Final = 200
LATENCY_JOBS_FULL: Final = 500
LATENCY_JOBS_QUICK: Final = 50
SINGLE: Final = 50  # jobs a throughput client submits one by one before it goes to batches
BATCH: Final = 50
ROOT: Final = Path(__file__).resolve().parents[1]


# ---- the processes ------------------------------------------------------------------------------


async def _scheduler(url: str) -> None:
    async def started_at(job: work.Job) -> float:
        return time.time()

    work.register_handler(KIND, started_at, replace=True)
    async with work.Scheduler(store=url):
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def _latency(url: str, count: int) -> dict[str, list[float]]:
    submit_ms: list[float] = []
    start_ms: list[float] = []
    done_ms: list[float] = []
    async with work.Client(store=url) as client:
        for _ in range(count):
            job = work.Job(kind=KIND, tenant_id="acme")
            wall, t0 = time.time(), time.perf_counter()
            await client.submit(job)
            t1 = time.perf_counter()
            done = await client.wait(job.id, timeout=30)
            t2 = time.perf_counter()
            submit_ms.append((t1 - t0) * 1e3)
            start_ms.append((done.result - wall) * 1e3)
            done_ms.append((t2 - t0) * 1e3)
    return {"submit_ms": submit_ms, "start_ms": start_ms, "done_ms": done_ms}


async def _throughput(url: str, tenant: str, count: int) -> dict[str, float]:
    jobs = [work.Job(kind=KIND, tenant_id=tenant) for _ in range(count)]
    async with work.Client(store=url) as client:
        first = time.time()
        for job in jobs[:SINGLE]:
            await client.submit(job)
        for at in range(SINGLE, count, BATCH):
            await client.submit_many(jobs[at : at + BATCH])
        submitted = time.time()
        done = await client.wait_many([job.id for job in jobs], timeout=300)
        last = time.time()
    if any(job.status != work.Status.SUCCEEDED for job in done):
        raise SystemExit("a job did not succeed")
    return {"first": first, "submitted": submitted, "last": last}


def main() -> None:
    role, url, *rest = sys.argv[1:]
    if role == "scheduler":
        asyncio.run(_scheduler(url))
    elif role == "latency":
        print(json.dumps(asyncio.run(_latency(url, int(rest[0])))))
    elif role == "throughput":
        print(json.dumps(asyncio.run(_throughput(url, rest[0], int(rest[1])))))
    else:
        raise SystemExit(f"unknown role {role!r}")


# ---- the scenario -------------------------------------------------------------------------------


def _spawn(*args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.clients", *args],
        cwd=ROOT,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _answer(process: subprocess.Popen[str]) -> Any:
    out, err = process.communicate(timeout=600)
    if process.returncode != 0:
        raise RuntimeError(f"a bench process failed: {err}")
    return json.loads(out)


def _one_run(url: str, latency_jobs: int, jobs: int) -> dict[str, Any]:
    scheduler = _spawn("scheduler", url, stdin=subprocess.PIPE)
    try:
        assert scheduler.stdout is not None
        if scheduler.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the scheduler did not start: {scheduler.stderr}")
        latency = _answer(_spawn("latency", url, str(latency_jobs)))
        clients = [_spawn("throughput", url, f"tenant-{n}", str(jobs)) for n in range(CLIENTS)]
        spans = [_answer(process) for process in clients]
        scheduler.communicate(timeout=60)  # closes its stdin: it stops
    finally:
        if scheduler.poll() is None:
            scheduler.kill()
            scheduler.wait()
    first = min(span["first"] for span in spans)
    last = max(span["last"] for span in spans)
    return {
        **{f"{key}_p50": percentile(values, 50) for key, values in latency.items()},
        **{f"{key}_p99": percentile(values, 99) for key, values in latency.items()},
        "jobs_per_s": CLIENTS * jobs / (last - first),
        "submit_jobs_per_s": CLIENTS * jobs / (max(s["submitted"] for s in spans) - first),
    }


@contextlib.contextmanager
def _stores() -> Iterator[dict[str, Callable[[], str]]]:
    """A factory of fresh store URLs per kind of store (Postgres: a throwaway cluster)."""
    with tempfile.TemporaryDirectory(prefix="nsai-bench-clients-") as scratch:
        counter = iter(range(1_000_000))

        def sqlite() -> str:
            return f"sqlite://{Path(scratch) / f'work-{next(counter)}.db'}"

        from tests._postgres import PostgresCluster

        with PostgresCluster() as cluster:

            def postgres() -> str:
                return cluster.create_database(f"bench_clients_{next(counter)}")

            yield {"sqlite": sqlite, "postgres": postgres}


STORES: Final = {
    "sqlite": "SQLite (synchronous=FULL)",
    "postgres": "PostgreSQL (fsync, synchronous_commit on)",
}


def run(params: Params, runs: int) -> ScenarioResult:
    quick = params == QUICK
    latency_jobs = LATENCY_JOBS_QUICK if quick else LATENCY_JOBS_FULL
    jobs = JOBS_QUICK if quick else JOBS_FULL
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in STORES}
    with _stores() as stores:
        for _ in range(runs):
            for name, fresh in stores.items():
                settle()
                results[name].append(_one_run(fresh(), latency_jobs, jobs))
    labels = {
        "submit_ms": "a client's submit (committed)",
        "start_ms": "submit to the handler's start (in the scheduler process)",
        "done_ms": "submit to the client's wait seeing the end",
    }
    figures: list[Figure] = []
    for name, store in STORES.items():
        figures += [
            Figure(
                id=f"clients.{name}.{key.removesuffix('_ms')}_{q}_ms",
                label=f"clients, {store}: {label}, {q}",
                unit="ms",
                runs=[r[f"{key}_{q}"] for r in results[name]],
                digits=2,
            )
            for key, label in labels.items()
            for q in ("p50", "p99")
        ]
        figures += [
            Figure(
                id=f"clients.{name}.jobs_per_s",
                label=f"clients, {store}: {CLIENTS} processes x {jobs:,} jobs, submit to all done",
                unit="jobs/s",
                runs=[r["jobs_per_s"] for r in results[name]],
                digits=0,
            ),
            Figure(
                id=f"clients.{name}.submit_jobs_per_s",
                label=f"clients, {store}: {CLIENTS} processes x {jobs:,} jobs, submits alone",
                unit="jobs/s",
                runs=[r["submit_jobs_per_s"] for r in results[name]],
                digits=0,
            ),
        ]
    return ScenarioResult(
        name="clients",
        description=(
            f"A scheduler process and client processes on one store (a fresh SQLite file, "
            f"synchronous=FULL; a fresh PostgreSQL database, stock durability): "
            f"{latency_jobs} jobs submitted one at a time and waited for (latency), then "
            f"{CLIENTS} clients x {jobs:,} no-op jobs at once (the first {SINGLE} one by one, "
            f"then batches of {BATCH}), each client waiting for all of its own."
        ),
        figures=figures,
    )


if __name__ == "__main__":
    main()

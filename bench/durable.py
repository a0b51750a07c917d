"""Durable stores: the scheduler end to end on SQLite and on PostgreSQL with stock durability
(SQLite ``synchronous=FULL``; Postgres fsync and synchronous_commit on).

- ``end to end``: build, ``submit_many``, run and complete 20,000 no-op jobs (``wait_many``),
  every transition committed (group commit);
- ``submit-to-start p50/p99``: no-op jobs submitted one at a time with ``await s.submit(job)``
  at about 500 jobs/s, from just before the call to the first line of the handler; measured in
  its own run, not inside the batch.

Each run gets a fresh SQLite file in a temporary directory, and a fresh database on one
throwaway Postgres cluster (tests/_postgres.py: initdb as the postgres user, 127.0.0.1 only).
Run through ``scripts/in-netns.sh``, as ``make bench`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nsai_work as work
from nsai_work.telemetry import Telemetry

from ._common import NOOP, TENANTS, Figure, Params, ScenarioResult, percentile, register_handlers

#: Jobs of the end-to-end figure, and of the latency figure, per run (full; --quick uses less).
E2E_JOBS = 20_000
LATENCY_JOBS = 1_000
LATENCY_SPACING_S = 0.002  # about 500 submits per second

_started: dict[str, float] = {}


async def _noop(job: work.Job) -> None:
    return None


async def _stamp(job: work.Job) -> None:
    _started[job.id] = time.perf_counter()


async def end_to_end(store: str, n: int) -> float:
    """``n`` no-op jobs built, submitted in one batch, run and waited for; jobs/s."""
    async with work.Scheduler(store=store, telemetry=Telemetry()) as s:
        t0 = time.perf_counter()
        jobs = [work.Job(kind=NOOP, tenant_id=TENANTS[i % len(TENANTS)]) for i in range(n)]
        accepted = await s.submit_many(jobs)
        done = await s.wait_many([job.id for job in accepted])
        elapsed = time.perf_counter() - t0
    bad = [job for job in done if job.status is not work.Status.SUCCEEDED]
    if bad:
        raise RuntimeError(f"{len(bad)} jobs did not succeed, e.g. {bad[0]!r}")
    return n / elapsed


async def submit_to_start(store: str, n: int) -> list[float]:
    """Milliseconds from before each ``submit`` to its handler's first line."""
    _started.clear()
    submitted: dict[str, float] = {}
    async with work.Scheduler(store=store, telemetry=Telemetry()) as s:
        for i in range(n):
            job = work.Job(kind="bench.stamp", tenant_id=TENANTS[i % len(TENANTS)])
            submitted[job.id] = time.perf_counter()
            await s.submit(job)
            await asyncio.sleep(LATENCY_SPACING_S)
        await s.wait_many(list(submitted))
    return [(_started[i] - t) * 1000 for i, t in submitted.items()]


@contextlib.contextmanager
def _stores() -> Iterator[dict[str, Callable[[], str]]]:
    """A factory of fresh store URLs per kind of store."""
    with tempfile.TemporaryDirectory(prefix="nsai-bench-durable-") as scratch:
        counter = iter(range(1_000_000))

        def sqlite() -> str:
            return f"sqlite://{Path(scratch) / f'work-{next(counter)}.db'}"

        from tests._postgres import PostgresCluster

        with PostgresCluster() as cluster:

            def postgres() -> str:
                return cluster.create_database(f"bench_{next(counter)}")

            yield {"sqlite": sqlite, "postgres": postgres}


def run(params: Params, runs: int) -> ScenarioResult:
    register_handlers({NOOP: _noop, "bench.stamp": _stamp})
    quick = params.throughput_jobs < 50_000
    e2e_jobs = 2_000 if quick else E2E_JOBS
    latency_jobs = 200 if quick else LATENCY_JOBS
    rates: dict[str, list[float]] = {"sqlite": [], "postgres": []}
    p50: dict[str, list[float]] = {"sqlite": [], "postgres": []}
    p99: dict[str, list[float]] = {"sqlite": [], "postgres": []}
    with _stores() as stores:
        for _ in range(runs):
            for name, fresh in stores.items():
                rates[name].append(asyncio.run(end_to_end(fresh(), e2e_jobs)))
                samples = asyncio.run(submit_to_start(fresh(), latency_jobs))
                p50[name].append(percentile(samples, 50))
                p99[name].append(percentile(samples, 99))

    def check_rate(must: float) -> Callable[[float], bool]:
        return lambda median: median >= must

    figures: list[Figure] = []
    for name, label, must, aim, p99_must, p99_aim in (
        ("sqlite", "SQLite (synchronous=FULL)", None, None, None, None),
        ("postgres", "PostgreSQL 15 (fsync, synchronous_commit on)", 5_000, 10_000, 10.0, 5.0),
    ):
        figures.append(
            Figure(
                id=f"durable.{name}.jobs_s",
                label=f"no-op jobs end to end, {label}: build, submit_many, run, wait_many",
                unit="jobs/s",
                runs=rates[name],
                target="-" if must is None else f">= {must:,}, aim {aim:,}",
                check=None if must is None else check_rate(must),
                aim=None if aim is None else check_rate(aim),
                note=f"{e2e_jobs:,} jobs per run, every transition committed",
                digits=0,
            )
        )
        figures.append(
            Figure(
                id=f"durable.{name}.p50_ms",
                label=f"submit-to-start p50, one at a time at ~500/s, {label}",
                unit="ms",
                runs=p50[name],
                digits=2,
            )
        )
        figures.append(
            Figure(
                id=f"durable.{name}.p99_ms",
                label=f"submit-to-start p99, one at a time at ~500/s, {label}",
                unit="ms",
                runs=p99[name],
                target="-" if p99_must is None else f"<= {p99_must:g} ms, aim {p99_aim:g}",
                check=None if p99_must is None else (lambda m, t=p99_must: m <= t),
                aim=None if p99_aim is None else (lambda m, t=p99_aim: m <= t),
                note=f"{latency_jobs:,} jobs per run",
                digits=2,
            )
        )
    return ScenarioResult(
        name="durable",
        description=__doc__.split("\n\n")[0].replace("\n", " ") if __doc__ else "durable",
        figures=figures,
        notes={"end-to-end jobs per run": e2e_jobs, "latency jobs per run": latency_jobs},
    )

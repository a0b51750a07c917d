"""Dependencies: the dispatch throughput of a random DAG against the same number of independent
jobs (issue 15: within 1.5x).

Each run builds, on a fresh scheduler with the memory store, ``n`` no-op jobs (10,000 in a full
run): once independent, once as a random DAG in which each job depends on 0 to 3 of the 50
jobs submitted just before it (so work is always ready and the DAG is deep). Both go in with
one ``submit_many`` and are waited for with one ``wait_many``; the clock runs from the submit
to the last end. The two are interleaved within each run; the reported cost is the median of
the per-run ratios (DAG time / independent time).

The cost of dependency tracking alone is measured on the pure core: the same jobs submitted
to a ``SchedulingCore`` with 256 slots, each run ended as soon as it is dispatched (first in,
first out), timing every ``handle`` call: the core's time per job, DAG against independent.
End to end, a DAG also has fewer jobs ready at once than a flat batch (less work per turn of
the loop), which is not the tracking's cost but is part of what a user sees.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from typing import Any

import nsai_work as work
from nsai_work._ir import Pool
from nsai_work._validate import validate_new_job
from nsai_work.core import Dispatch, RunEnded, SchedulingCore, Submit, Succeeded

from ._common import Figure, Params, ScenarioResult, register_handlers, settle

AIM_RATIO = 1.5
KIND = "bench_dag_noop"


async def _noop(job: work.Job) -> None:
    return None


def _jobs(n: int, dag: bool, seed: int) -> list[work.Job]:
    rng = random.Random(seed)
    jobs: list[work.Job] = []
    for i in range(n):
        deps: tuple[str, ...] = ()
        if dag and i:
            window = jobs[max(0, i - 50) : i]
            deps = tuple(j.id for j in rng.sample(window, min(len(window), rng.randint(0, 3))))
        constraints = work.Constraints(depends_on=deps) if deps else work.Constraints()
        jobs.append(work.Job(kind=KIND, tenant_id="bench", constraints=constraints))
    return jobs


async def _measure(n: int, dag: bool, seed: int) -> float:
    register_handlers({KIND: _noop})
    jobs = _jobs(n, dag, seed)
    async with work.Scheduler() as s:
        t0 = time.perf_counter()
        await s.submit_many(jobs)
        done = await s.wait_many([j.id for j in jobs], timeout=600)
        elapsed = time.perf_counter() - t0
    assert all(j.status == "succeeded" for j in done)
    return elapsed


def _core_time(n: int, dag: bool, seed: int) -> float:
    """Seconds the pure core spends on ``n`` jobs (see the module docstring)."""
    jobs = tuple(validate_new_job(job) for job in _jobs(n, dag, seed))
    core = SchedulingCore(pools={"b": [Pool(name="p", slots=256)]}, rand=lambda: 0.5)
    route = (("b", ("p",)),)
    ok = Succeeded(None)
    t0 = time.perf_counter()
    out = core.handle(Submit(jobs, (route,) * n), 0.0)
    running = [d.job for d in out if type(d) is Dispatch]
    index = 0
    while index < len(running):
        job = running[index]
        index += 1
        out = core.handle(RunEnded(job.tenant_id, job.id, job.attempt, ok), index * 1e-3)
        running += [d.job for d in out if type(d) is Dispatch]
    elapsed = time.perf_counter() - t0
    assert index == n, index
    return elapsed


def run(params: Params, runs: int) -> ScenarioResult:
    n = 10_000 if params.throughput_jobs >= 10_000 else 1_000
    independent: list[float] = []
    dags: list[float] = []
    ratios: list[float] = []
    core_plain: list[float] = []
    core_dag: list[float] = []
    edges = sum(len(j.constraints.depends_on) for j in _jobs(n, True, 0))
    for index in range(runs):
        settle()
        plain = asyncio.run(_measure(n, False, index))
        settle()
        graph = asyncio.run(_measure(n, True, index))
        independent.append(n / plain)
        dags.append(n / graph)
        ratios.append(graph / plain)
        settle()
        core_plain.append(_core_time(n, False, index) * 1e6 / n)
        core_dag.append(_core_time(n, True, index) * 1e6 / n)
    figures = [
        Figure(
            id="dag.independent_jobs_per_s",
            label=f"{n:,} independent no-op jobs, submit to last end",
            unit="jobs/s",
            runs=independent,
            digits=0,
        ),
        Figure(
            id="dag.dag_jobs_per_s",
            label=f"{n:,}-node random DAG ({edges:,} edges), submit to last end",
            unit="jobs/s",
            runs=dags,
            digits=0,
        ),
        Figure(
            id="dag.cost_ratio",
            label="end to end: time of the DAG / time of the independent jobs",
            unit="x",
            runs=ratios,
            target=f"aim <= {AIM_RATIO}",
            note="median of the per-run ratios (each run interleaves the two); info: includes "
            "the DAG's narrower ready set",
            digits=2,
        ),
        Figure(
            id="dag.core_us_per_job_independent",
            label="core time per independent job",
            unit="us",
            runs=core_plain,
            digits=1,
        ),
        Figure(
            id="dag.core_us_per_job_dag",
            label="core time per DAG job (dependency tracking included)",
            unit="us",
            runs=core_dag,
            digits=1,
        ),
        Figure(
            id="dag.core_cost_ratio",
            label="dependency tracking: core time per DAG job / per independent job",
            unit="x",
            runs=[d / p for d, p in zip(core_dag, core_plain, strict=True)],
            target=f"<= {AIM_RATIO}",
            check=lambda m: m <= AIM_RATIO,
            note="the pure core, every run ended as soon as it is dispatched",
            digits=2,
        ),
    ]
    notes: dict[str, Any] = {"nodes": n, "edges": edges, "ratio_stdev": statistics.pstdev(ratios)}
    return ScenarioResult(
        name="dag",
        description=(
            f"{n:,} no-op jobs as independent jobs and as a random DAG (0-3 dependencies each "
            f"among the previous 50), one submit_many and one wait_many each; {runs} run(s)."
        ),
        figures=figures,
        notes=notes,
    )

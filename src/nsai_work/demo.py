"""``make demo``: a realistic multi-tenant workload on the embedded default scheduler.

Four tenants share one small machine: ``umbrella`` serves realtime inference, ``acme`` makes
interactive tool calls (ALTAR tools with validated arguments; the search API allows 4 calls at
once), ``globex`` runs batch embeddings and GPU training steps with a cost cap on two priced A100
pools (on-demand and spot), ``initech`` runs offline ETL that fails now and then (and is
retried) and a report that always overruns its timeout. Tenants have weights and quotas. A live
table shows the scheduler's counters and why jobs wait; the summary gives throughput,
submit-to-start latency by priority, outcomes and spend per tenant.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

import nsai_work as work

__all__ = ["add_arguments", "main", "run"]

_TENANTS = ("umbrella", "acme", "globex", "initech")


class _Latencies:
    """Submit-to-start latency of first attempts, by priority: from just before the submit call
    to the job's ``job.started`` event, both read on the monotonic clock (a job's own
    timestamps are wall-clock and equal when it is dispatched in the same step it is admitted;
    what the caller waits for is the hand-off into the engine and the queueing after it)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_priority: dict[str, list[float]] = defaultdict(list)
        self.retries = 0
        self.submitted: dict[str, float] = {}  # job id -> monotonic time of its submit call

    def submitting(self, jobs: list[work.Job]) -> list[work.Job]:
        """Note when these jobs are submitted (just before the call)."""
        now = time.monotonic()
        with self.lock:
            for job in jobs:
                self.submitted[job.id] = now
        return jobs

    def on_event(
        self,
        event: tuple[str, ...],
        measurements: Mapping[str, float],
        metadata: Mapping[str, Any],
        _: Any,
    ) -> None:
        with self.lock:
            if event == work.telemetry.events.JOB_STARTED and metadata["attempt"] == 1:
                since = self.submitted.pop(metadata["job_id"], None)
                if since is not None:
                    waited = (time.monotonic() - since) * 1000.0
                    self.by_priority[metadata["priority"]].append(waited)
            elif event == work.telemetry.events.JOB_RETRY:
                self.retries += 1


def _register(rng: random.Random) -> None:
    @work.handler("inference", replace=True)
    async def inference(job: work.Job) -> dict[str, Any]:
        await asyncio.sleep(rng.uniform(0.002, 0.010))
        return {"tokens": rng.randint(20, 200), "model": job.payload["model"]}

    @work.handler("embed_batch", replace=True)
    async def embed_batch(job: work.Job) -> dict[str, int]:
        await asyncio.sleep(rng.uniform(0.005, 0.030))
        return {"vectors": job.payload["docs"]}

    @work.handler("train_step", replace=True)
    def train_step(job: work.Job, ctx: work.JobContext) -> dict[str, float]:
        for step in range(5):
            if ctx.cancelled:
                break
            time.sleep(0.01)
            ctx.progress((step + 1) / 5)
        return {"loss": round(rng.uniform(0.1, 2.0), 3)}

    @work.handler("etl", replace=True)
    def etl(job: work.Job) -> dict[str, int]:
        time.sleep(rng.uniform(0.002, 0.010))
        if rng.random() < 0.3:
            raise ConnectionError("warehouse connection reset")
        return {"rows": rng.randint(100, 10_000)}

    @work.handler("report", replace=True)
    async def report(job: work.Job) -> str:
        await asyncio.sleep(2.0)  # always longer than its timeout
        return "never"

    def calculator_add(args: dict[str, float]) -> float:
        return args["a"] + args["b"]

    def search_documents(args: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.003)
        return {"query": args["query"], "hits": rng.randint(0, args.get("limit", 10))}

    work.altar.register(
        "calculator_add",
        "Add two numbers",
        {
            "type": "OBJECT",
            "properties": {"a": {"type": "NUMBER"}, "b": {"type": "NUMBER"}},
            "required": ["a", "b"],
        },
        calculator_add,
        replace=True,
    )
    work.altar.register(
        "search_documents",
        "Search document corpus with filters",
        {
            "type": "OBJECT",
            "properties": {"query": {"type": "STRING"}, "limit": {"type": "NUMBER"}},
            "required": ["query"],
        },
        search_documents,
        replace=True,
        max_concurrency=4,  # the upstream search API allows 4 calls at once, across tenants
    )


def _wave(rng: random.Random, wave: int) -> list[work.Job]:
    """One round of arrivals from every tenant."""
    jobs: list[work.Job] = []
    for _ in range(rng.randint(2, 5)):
        jobs.append(
            work.Job(
                kind="inference",
                tenant_id="umbrella",
                namespace="chat",
                priority=work.Priority.REALTIME,
                payload={"model": "llama-3.1-8b", "prompt_tokens": rng.randint(10, 400)},
            )
        )
    for _ in range(rng.randint(3, 8)):
        call = (
            {"tool_name": "calculator_add", "args": {"a": rng.random(), "b": wave}}
            if rng.random() < 0.5
            else {"tool_name": "search_documents", "args": {"query": "fusion", "limit": 20}}
        )
        jobs.append(
            work.Job(
                kind="tool_call",
                tenant_id="acme",
                namespace="agents",
                priority=work.Priority.INTERACTIVE,
                payload=call,
            )
        )
    for _ in range(rng.randint(10, 30)):
        jobs.append(
            work.Job(
                kind="embed_batch",
                tenant_id="globex",
                namespace="search",
                priority=work.Priority.BATCH,
                payload={"docs": rng.randint(16, 256)},
            )
        )
    if wave % 2 == 0:
        jobs.append(
            work.Job(
                kind="train_step",
                tenant_id="globex",
                namespace="ml",
                priority=work.Priority.BATCH,
                payload={"model": "llama-3.1-8b", "step": wave},
                resources=work.Resources(
                    cpu=4.0,
                    memory_mb=8192,
                    gpu="A100",
                    gpu_count=1,
                    timeout_ms=60_000,
                    max_cost_usd=0.03,  # too much for on-demand: it goes to spot
                ),
            )
        )
    for _ in range(rng.randint(4, 10)):
        jobs.append(
            work.Job(
                kind="etl",
                tenant_id="initech",
                namespace="warehouse",
                priority=work.Priority.OFFLINE,
                payload={"table": f"events_{wave}"},
                constraints=work.Constraints(
                    retry_policy=work.RetryPolicy(
                        max_attempts=4, backoff=work.Backoff.EXPONENTIAL, base_delay_ms=20
                    )
                ),
            )
        )
    if wave % 10 == 5:
        jobs.append(
            work.Job(
                kind="report",
                tenant_id="initech",
                namespace="finance",
                priority=work.Priority.OFFLINE,
                resources=work.Resources(timeout_ms=200),
                constraints=work.Constraints(retry_policy=work.RetryPolicy(max_attempts=1)),
            )
        )
    return jobs


def _live_table(stats: work.Stats, elapsed: float, submitted: int) -> Group:
    table = Table(title=f"nsai-work demo - {elapsed:5.1f} s, {submitted} jobs submitted")
    for column in ("tenant", "queued", "running", "succeeded", "failed", "timeout", "canceled"):
        table.add_column(column, justify="right" if column != "tenant" else "left")
    for tenant in _TENANTS:
        counts = stats.by_tenant.get(tenant, work.TenantStats())
        table.add_row(
            tenant,
            str(counts.queued + counts.pending),
            str(counts.running),
            str(counts.succeeded),
            str(counts.failed),
            str(counts.timeout),
            str(counts.canceled),
        )
    pools = Table(title="pools (slots in use)")
    pools.add_column("pool")
    pools.add_column("in use", justify="right")
    for name, pool in stats.pools.items():
        if pool.backend != "mock":
            pools.add_row(name, f"{pool.used.slots}/{pool.capacity.slots}")
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(stats.waiting_reasons.items())) or "-"
    return Group(table, pools, f"waiting because: {reasons}")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def run(*, quick: bool = False, seed: int = 7) -> int:
    """Run the demo; returns the process exit code (0 when every job reached an end)."""
    console = Console()
    rng = random.Random(seed)
    waves = 12 if quick else 80
    _register(rng)
    latencies = _Latencies()
    work.telemetry.attach_many(
        "nsai-work-demo",
        [work.telemetry.events.JOB_STARTED, work.telemetry.events.JOB_RETRY],
        latencies.on_event,
    )
    spot = work.Prices(cpu_hour=0.01, memory_gb_hour=0.001, gpu_hour={"A100": 1.2})
    scheduler = work.start(
        pools={
            "local": [
                # A small machine on purpose: priorities, fair share and quotas have work to do.
                work.Pool(name="local:async", slots=16, cpu=64, memory_mb=262_144),
                work.Pool(name="local:threads", slots=6, cpu=64, memory_mb=262_144),
                work.Pool(
                    name="a100-on-demand", slots=2, cpu=32, memory_mb=131_072, gpus={"A100": 2}
                ),
                work.Pool(
                    name="a100-spot",
                    slots=2,
                    cpu=32,
                    memory_mb=131_072,
                    gpus={"A100": 2},
                    prices=spot,
                ),
            ]
        },
        tenants=[
            work.Tenant("umbrella", weight=2.0),
            work.Tenant("acme", weight=2.0, quota=work.Quota(submit_rate=500.0, burst=100)),
            work.Tenant("globex", quota=work.Quota(gpus={"A100": 2}, budget_usd=5.0)),
            work.Tenant("initech", weight=0.5, quota=work.Quota(max_running=4)),
        ],
        seed=seed,
    )
    console.print(
        "[bold]nsai-work demo[/]: 4 tenants with weights and quotas, 4 priorities, ALTAR tools "
        "with a per-tool limit, async and sync handlers, priced A100 pools with a cost cap, "
        "flaky ETL with retries and a report that times out\n"
    )
    ids: list[str] = []
    seen: dict[str, int] = {}  # the most jobs seen waiting for each reason
    started = time.perf_counter()
    try:
        with Live(console=console, refresh_per_second=8, transient=False) as live:
            for wave in range(waves):
                wave_jobs = latencies.submitting(_wave(rng, wave))
                ids.extend(job.id for job in work.submit_many(wave_jobs))
                now = work.stats()
                for reason, count in now.waiting_reasons.items():
                    seen[reason] = max(seen.get(reason, 0), count)
                live.update(_live_table(now, time.perf_counter() - started, len(ids)))
                time.sleep(0.05)
            pending = set(ids)
            for job in work.as_completed(ids, timeout=60):
                pending.discard(job.id)
                if len(pending) % 50 == 0:
                    live.update(_live_table(work.stats(), time.perf_counter() - started, len(ids)))
            elapsed = time.perf_counter() - started
            stats = work.stats()
            live.update(_live_table(stats, elapsed, len(ids)))
        _summary(console, stats, latencies, elapsed, len(ids), seen, scheduler)
    finally:
        work.telemetry.detach("nsai-work-demo")
        work.stop()
    finished = stats.totals.finished
    return 0 if finished == len(ids) and stats.totals.timeout >= 1 else 1


def _summary(
    console: Console,
    stats: work.Stats,
    latencies: _Latencies,
    elapsed: float,
    total: int,
    seen_reasons: dict[str, int],
    scheduler: work.SyncScheduler,
) -> None:
    del scheduler
    overview = Table(title="summary")
    overview.add_column("figure")
    overview.add_column("value", justify="right")
    overview.add_row("jobs", str(total))
    overview.add_row("wall time", f"{elapsed:.2f} s")
    overview.add_row("throughput (arrival-paced)", f"{total / elapsed:,.0f} jobs/s")
    overview.add_row("retries scheduled", str(latencies.retries))
    overview.add_row("succeeded / failed / timeout", _outcome(stats.totals))
    latency = Table(title="submit-to-start latency (first attempt)")
    for column in ("priority", "jobs", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        latency.add_column(column, justify="right" if column != "priority" else "left")
    with latencies.lock:
        for priority in ("realtime", "interactive", "batch", "offline"):
            values = latencies.by_priority.get(priority, [])
            if not values:
                continue
            latency.add_row(
                priority,
                str(len(values)),
                f"{statistics.median(values):.2f}",
                f"{_percentile(values, 0.95):.2f}",
                f"{_percentile(values, 0.99):.2f}",
                f"{max(values):.2f}",
            )
    outcomes = Table(title="outcomes and spend by tenant")
    for column in ("tenant", "weight", "submitted", "succeeded", "failed", "timeout", "spend"):
        outcomes.add_column(column, justify="right" if column != "tenant" else "left")
    for tenant in _TENANTS:
        counts = stats.by_tenant.get(tenant, work.TenantStats())
        outcomes.add_row(
            tenant,
            f"{counts.weight:g}",
            str(counts.submitted),
            str(counts.succeeded),
            str(counts.failed),
            str(counts.timeout),
            f"${counts.spend_total_usd:.4f}",
        )
    reasons = ", ".join(f"{k} ({v})" for k, v in sorted(seen_reasons.items())) or "none"
    console.print(Group(overview, latency, outcomes, f"waiting reasons seen: {reasons}"))


def _outcome(counts: work.Counts) -> str:
    return f"{counts.succeeded} / {counts.failed} / {counts.timeout}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nsai_work.demo [--quick]``: the options of ``nsai-work demo``."""
    parser = argparse.ArgumentParser(
        prog="python -m nsai_work.demo",
        description="Run the multi-tenant demo on the embedded scheduler (what `make demo` and "
        "`nsai-work demo` run).",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(quick=args.quick)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options, shared by ``nsai-work demo`` and ``python -m nsai_work.demo``."""
    parser.add_argument("--quick", action="store_true", help="a short run (for tests)")


if __name__ == "__main__":
    raise SystemExit(main())

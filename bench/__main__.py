"""``python -m bench [--quick] [--runs N] [--only NAME ...]``: run the benchmarks, print the
table, write ``bench/results/foundation.{json,md}`` (``quick.{json,md}`` with ``--quick``,
``partial.{json,md}`` for a full run of only some scenarios)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Final

from rich.console import Console
from rich.table import Table

from . import (
    altar,
    clients,
    dag,
    dashboard,
    durable,
    http,
    latency,
    listing,
    memory,
    process,
    ray_bench,
    stats,
    tenancy,
    throughput,
)
from ._common import FULL, QUICK, Params, ScenarioResult, load_average, write_results

SCENARIOS: Final[dict[str, Callable[[Params, int], ScenarioResult]]] = {
    "throughput": throughput.run,
    "memory": memory.run,
    "latency-async": latency.run_async,
    "latency-facade": latency.run_facade,
    "stats": stats.run,
    "tenancy": tenancy.run,
    "process": process.run,
    "altar": altar.run,
    "list": listing.run,
    "durable": durable.run,
    "clients": clients.run,
    "ray": ray_bench.run,
    "dag": dag.run,
    "http": http.run,
    "dashboard": dashboard.run,
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="nsai-work foundation benchmarks; each scenario runs --runs times and the "
        "median is reported.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a fast smoke run with small sizes; writes bench/results/quick.{json,md}",
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="runs per scenario (default 3); the median is kept"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(SCENARIOS),
        metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}; a full run of "
        "some scenarios writes bench/results/partial.{json,md}",
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    return args


def render(results: list[ScenarioResult], console: Console) -> None:
    table = Table(title="nsai-work foundation benchmarks (median of runs)")
    table.add_column("figure")
    table.add_column("median", justify="right")
    table.add_column("target")
    table.add_column("verdict")
    styles = {"FAIL": "bold red", "info": "dim", "missed (stretch)": "yellow"}
    for result in results:
        for figure in result.figures:
            verdict = figure.verdict
            style = styles.get(verdict, "green")
            table.add_row(
                figure.label,
                figure.fmt(figure.median),
                figure.target,
                f"[{style}]{verdict}[/{style}]",
            )
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    params = QUICK if args.quick else FULL
    names = [name for name in SCENARIOS if not args.only or name in args.only]
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    load_at_start = load_average()
    started = time.perf_counter()
    results: list[ScenarioResult] = []
    for name in names:
        console.print(f"[bold]{name}[/bold]: {args.runs} run(s)...", highlight=False)
        t0 = time.perf_counter()
        results.append(SCENARIOS[name](params, args.runs))
        console.print(f"  done in {time.perf_counter() - t0:.1f} s", highlight=False)
    elapsed = time.perf_counter() - started
    json_path, md_path = write_results(
        results,
        quick=args.quick,
        partial=bool(args.only),
        runs=args.runs,
        params=params,
        elapsed_s=elapsed,
        load_at_start=load_at_start,
    )
    render(results, console)
    console.print(f"wrote {json_path} and {md_path} ({elapsed:.1f} s)", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``make demo``: a multi-tenant AI platform's workload on the embedded scheduler, live.

Five tenants with weights, quotas and budgets share L4 and A100 pools with prices, ALTAR tools
and worker processes: realtime inference, interactive tool calls, batch evaluation sweeps and
fine-tuning, offline ETL commands. Bursts build a backlog in which priorities and fair share
decide; there are failures with retries, a timeout, a cancel and a budget that runs out. The
jobs are kept in a SQLite store: Ctrl-C stops the run and ``--resume FILE`` continues it.
A live view shows queues, pools, fair share, spend, latency and why jobs wait; the summary at
the end gives throughput, latency by priority, each tenant's share against its weight,
outcomes, spend and the top waiting reasons (``--json`` writes it for scripts). docs/demo.md
explains each panel.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ._run import Settings, run

__all__ = ["DEFAULT_DURATION_S", "QUICK_DURATION_S", "add_arguments", "main", "run", "settings"]

#: The default length of the workload, in seconds (arrivals stop at 80%; the backlog drains).
DEFAULT_DURATION_S = 45.0
#: ``--quick``: the same workload, scaled down (what the tests run).
QUICK_DURATION_S = 8.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options, shared by ``nsai-work demo`` and ``python -m nsai_work.demo``."""
    length = parser.add_mutually_exclusive_group()
    length.add_argument(
        "--duration",
        type=_seconds,
        metavar="SECONDS",
        help=f"how long the workload runs (default {DEFAULT_DURATION_S:g}); jobs arrive for "
        "the first 80%% of it, then the backlog drains",
    )
    length.add_argument(
        "--quick",
        action="store_true",
        help=f"a short run of {QUICK_DURATION_S:g} s with the same workload scaled down",
    )
    parser.add_argument(
        "--store",
        metavar="FILE",
        help="keep the jobs in this SQLite file, kept after the run (default: a temporary "
        "file, removed after a complete run and kept when interrupted); also "
        "sqlite:///absolute/path.db, or memory:// for no durability",
    )
    parser.add_argument(
        "--resume",
        metavar="FILE",
        help="continue a run that Ctrl-C interrupted, from its store (the file the "
        "interrupted run printed); says how many jobs were recovered and that none was lost",
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="write the summary as JSON to stdout (the live view and text then go to "
        "stderr), or to FILE",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="print a line of figures every few seconds instead of the live view (the "
        "default when the output is not a terminal)",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="also serve the web dashboard of the demo's scheduler while it runs, on "
        "http://127.0.0.1:PORT/ (keys printed at the start; needs the [server] extra)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8080,
        metavar="PORT",
        help="the dashboard's port with --serve (default 8080; 0: any free port)",
    )
    parser.add_argument(
        "--seed", type=int, metavar="N", help="the workload's random seed (default 7)"
    )


def settings(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Settings:
    """The run's settings from parsed options (``parser.error`` on a bad combination)."""
    if args.resume is not None:
        given = [
            name
            for name, value in (
                ("--duration", args.duration),
                ("--quick", args.quick or None),
                ("--store", args.store),
                ("--seed", args.seed),
            )
            if value is not None
        ]
        if given:
            parser.error(f"--resume continues a run with its own settings; drop {', '.join(given)}")
    duration = QUICK_DURATION_S if args.quick else args.duration or DEFAULT_DURATION_S
    return Settings(
        duration_s=duration,
        seed=7 if args.seed is None else args.seed,
        store=args.store,
        resume=args.resume,
        json_to=args.json,
        plain=args.plain,
        serve=args.serve,
        port=args.port,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nsai_work.demo [options]`` (``--help`` lists them)."""
    parser = argparse.ArgumentParser(
        prog="python -m nsai_work.demo",
        description="Run the multi-tenant demo on the embedded scheduler (what `make demo` and "
        "`nsai-work demo` run): a live view, then a summary.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(settings(args, parser))


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 2.0 <= value <= 3600.0:
        raise argparse.ArgumentTypeError(f"expected 2 to 3600 seconds, got {text}")
    return value

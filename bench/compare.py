"""``python -m bench.compare --base REV [--only NAME ...] [--rounds N]``: this tree against an
earlier commit, interleaved.

Each round runs every chosen scenario once on the base commit, then once on this tree (each
in its own process, ``python -m bench --only NAME --runs 1``), so both see the same machine
load. It prints, per figure, the median over the rounds of both and their ratio (this tree over
the base). Throughput figures are already ratios to the bare asyncio loop measured in the same
run, which is the figure to compare across commits.

The base is checked out with ``git worktree add --detach`` into a temporary directory and
removed at the end. Run it inside the benchmark namespace, as ``make bench`` does:
``scripts/in-netns.sh .venv/bin/python -m bench.compare --base HEAD~1 --only throughput``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_once(tree: Path, scenario: str) -> dict[str, float]:
    """One run of one scenario in ``tree``'s code; its figures by id."""
    env = dict(os.environ, PYTHONPATH=f"{tree / 'src'}{os.pathsep}{tree}")
    subprocess.run(
        [sys.executable, "-m", "bench", "--only", scenario, "--runs", "1"],
        cwd=tree,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    document = json.loads((tree / "bench" / "results" / "partial.json").read_text())
    return {
        figure_id: figure["median"]
        for figure_id, figure in document["figures"].items()
        if isinstance(figure["median"], int | float)
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("--base", required=True, help="the commit to compare against")
    parser.add_argument("--only", action="append", default=None, help="scenario (repeatable)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    args = parser.parse_args(argv)
    scenarios = args.only or ["throughput", "memory", "latency-async", "latency-facade"]
    samples: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="nsai-bench-base-") as scratch:
        base = Path(scratch) / "base"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "--quiet", str(base), args.base],
            cwd=ROOT,
            check=True,
        )
        try:
            for round_number in range(1, args.rounds + 1):
                for scenario in scenarios:
                    for side, tree in (("base", base), ("new", ROOT)):
                        for figure_id, value in run_once(tree, scenario).items():
                            samples.setdefault((figure_id, side), []).append(value)
                print(f"round {round_number}/{args.rounds} done", file=sys.stderr)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT)
    print(f"{'figure':42} {'base':>12} {'new':>12} {'new/base':>9}   (median of {args.rounds})")
    for figure_id in sorted({figure_id for figure_id, _ in samples}):
        old = statistics.median(samples.get((figure_id, "base"), [float("nan")]))
        new = statistics.median(samples.get((figure_id, "new"), [float("nan")]))
        ratio = new / old if old else float("nan")
        print(f"{figure_id:42} {old:12.4g} {new:12.4g} {ratio:9.3f}")


if __name__ == "__main__":
    main()

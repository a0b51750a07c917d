"""What every scenario shares: figures, medians, percentiles, the handlers' kinds, results files."""

from __future__ import annotations

import datetime as dt
import gc
import json
import math
import os
import platform
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import nsai_work as work

RESULTS_DIR: Final = Path(__file__).resolve().parent / "results"

#: The kinds the scenarios register (process-wide registry, ``replace=True``).
NOOP: Final = "bench.noop"
BLOCK: Final = "bench.block"
BACKLOG: Final = "bench.backlog"
RT: Final = "bench.rt"

#: A few tenants, used round-robin.
TENANTS: Final = ("acme", "globex", "initech", "umbrella")


@dataclass(frozen=True)
class Params:
    """Sizes of one bench run (full or ``--quick``)."""

    throughput_jobs: int
    warmup_jobs: int
    bare_width: int
    memory_jobs: int
    backlog_jobs: int
    realtime_jobs: int
    realtime_spacing_s: float


FULL: Final = Params(
    throughput_jobs=50_000,
    warmup_jobs=5_000,
    bare_width=256,
    memory_jobs=100_000,
    backlog_jobs=100_000,
    realtime_jobs=500,
    realtime_spacing_s=0.001,
)
QUICK: Final = Params(
    throughput_jobs=2_000,
    warmup_jobs=200,
    bare_width=256,
    memory_jobs=2_000,
    backlog_jobs=5_000,
    realtime_jobs=20,
    realtime_spacing_s=0.001,
)


@dataclass
class Figure:
    """One reported number: the value of every run, its median, and a verdict on its target.

    ``check(median)`` returns True (target met), False (missed) or None (no target: info only);
    ``aim`` optionally returns whether a stretch goal is met too. A ``stretch`` figure measures
    beyond what its target was set for (a harder configuration): its verdict reads "met" or
    "missed" instead of pass or FAIL.
    """

    id: str
    label: str
    unit: str
    runs: list[float]
    target: str = "-"
    check: Callable[[float], bool | None] | None = None
    aim: Callable[[float], bool] | None = None
    note: str = ""
    digits: int = 1
    stretch: bool = False

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def passed(self) -> bool | None:
        return None if self.check is None else self.check(self.median)

    @property
    def verdict(self) -> str:
        passed = self.passed
        if passed is None:
            return "info"
        if self.stretch:
            return "met (stretch)" if passed else "missed (stretch)"
        if not passed:
            return "FAIL"
        if self.aim is not None:
            return "pass (aim met)" if self.aim(self.median) else "pass (aim not met)"
        return "pass"

    def fmt(self, value: float) -> str:
        return f"{value:,.{self.digits}f} {self.unit}".rstrip()

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "figure": self.label,
            "median": self.median,
            "runs": self.runs,
            "unit": self.unit,
            "target": self.target,
            "pass": self.passed,
            "verdict": self.verdict,
            "note": self.note,
        }


@dataclass
class ScenarioResult:
    """What one scenario reports: its figures, plus notes (parameters, sanity checks)."""

    name: str
    description: str
    figures: list[Figure]
    notes: dict[str, Any] = field(default_factory=dict)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in (0, 100]) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def register_handlers(handlers: dict[str, Callable[..., Any]]) -> None:
    """Register the scenario's handlers process-wide under their bench kinds."""
    for kind, fn in handlers.items():
        work.register_handler(kind, fn, replace=True)


def settle() -> None:
    """Between runs: collect garbage so one run's leftovers are not the next run's cost."""
    gc.collect()


def machine_info() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        usable = os.cpu_count() or 1
    return {
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "cpu_model": _cpu_model(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "nsai_work": work.__version__,
        "load_average_at_end": load_average(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (other work on the machine skews the figures)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not available
        return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover - not Linux
        pass
    return platform.processor() or None


def write_results(
    results: list[ScenarioResult],
    *,
    quick: bool,
    partial: bool,
    runs: int,
    params: Params,
    elapsed_s: float,
    load_at_start: list[float] | None,
) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` under ``bench/results``; returns both paths.

    ``foundation`` is the committed result of a full run of every scenario; a ``--quick`` run
    writes ``quick``, a full run of some scenarios (``--only``) ``partial`` (both ignored by git).
    """
    name = "quick" if quick else "partial" if partial else "foundation"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    machine["load_average_at_start"] = load_at_start
    document = {
        "suite": "nsai-work foundation benchmarks",
        "mode": "quick" if quick else "full",
        "runs": runs,
        "statistic": "median of runs",
        "machine": machine,
        "params": params.__dict__,
        "elapsed_s": round(elapsed_s, 1),
        "scenarios": [
            {
                "name": r.name,
                "description": r.description,
                "notes": r.notes,
                "figures": [f.as_json() for f in r.figures],
            }
            for r in results
        ],
        "figures": {f.id: f.as_json() for r in results for f in r.figures},
    }
    json_path = RESULTS_DIR / f"{name}.json"
    md_path = RESULTS_DIR / f"{name}.md"
    _atomic_write(json_path, json.dumps(document, indent=2) + "\n")
    _atomic_write(md_path, markdown(results, machine=machine, runs=runs, quick=quick))
    return json_path, md_path


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def markdown(
    results: list[ScenarioResult], *, machine: dict[str, Any], runs: int, quick: bool
) -> str:
    lines = [
        f"# nsai-work foundation benchmarks{' (quick smoke run)' if quick else ''}",
        "",
        f"{machine['date']}; {machine['cpu_usable']} usable CPUs ({machine['cpu_model']}); "
        f"Python {machine['python']} ({machine['python_implementation']}); "
        f"nsai-work {machine['nsai_work']}; load average (1, 5, 15 min) "
        f"{machine['load_average_at_start']} at the start, {machine['load_average_at_end']} at "
        f"the end; median of {runs} run(s) in one process.",
        "",
        "| figure | median | target | verdict |",
        "|---|---|---|---|",
    ]
    for result in results:
        for f in result.figures:
            lines.append(f"| {f.label} | {f.fmt(f.median)} | {f.target} | {f.verdict} |")
    lines += ["", "## Scenarios", ""]
    for result in results:
        lines.append(f"### {result.name}")
        lines.append("")
        lines.append(result.description)
        lines.append("")
        for f in result.figures:
            values = ", ".join(f.fmt(v) for v in f.runs)
            note = f" {f.note}" if f.note else ""
            lines.append(f"- {f.label}: runs {values}.{note}")
        if result.notes:
            lines.append("")
            for key, value in result.notes.items():
                lines.append(f"- {key}: {value}")
        lines.append("")
    return "\n".join(lines)

"""``python -m bench --quick --runs 1`` runs every scenario and reports every figure.

Only the shape of the results is checked: timing assertions do not belong in tests.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUICK_JSON = ROOT / "bench" / "results" / "quick.json"
QUICK_MD = ROOT / "bench" / "results" / "quick.md"

#: Figures the issues ask for (scenarios may report more).
FIGURES = (
    "throughput.bare_asyncio_gather",
    "throughput.bare_asyncio",
    "throughput.bare_asyncio_semaphore",
    "throughput.nsai",
    "throughput.nsai_ratio",
    "throughput.nsai_ratio_semaphore",
    "throughput.nsai_submit_only",
    "throughput.nsai_build_only",
    "throughput.nsai_completed",
    "throughput.nsai_completed_ratio",
    "throughput.nsai_telemetry",
    "throughput.nsai_telemetry_ratio",
    "throughput.nsai_telemetry_submit_only",
    "memory.bytes_per_waiting_job",
    "memory.asyncio_objects_per_waiting_job",
    "latency.async.p50_ms",
    "latency.async.p99_ms",
    "latency.async.max_ms",
    "latency.facade.p50_ms",
    "latency.facade.p99_ms",
    "latency.facade.max_ms",
    "tenancy.fairness_tvd_pp",
    "tenancy.throughput_ratio",
    "list.flatness",
    "clients.sqlite.submit_p50_ms",
    "clients.sqlite.start_p50_ms",
    "clients.sqlite.done_p50_ms",
    "clients.sqlite.jobs_per_s",
    "clients.postgres.submit_p50_ms",
    "clients.postgres.start_p50_ms",
    "clients.postgres.done_p50_ms",
    "clients.postgres.jobs_per_s",
    "http.batch_1000_ms",
    "http.single_p50_ms",
    "http.single_p99_ms",
    "http.single_per_s",
    "dashboard.first_page_ms",
)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_bench_quick_writes_every_figure() -> None:
    QUICK_JSON.unlink(missing_ok=True)
    QUICK_MD.unlink(missing_ok=True)

    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--runs", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert QUICK_JSON.is_file()
    assert QUICK_MD.is_file()
    document = json.loads(QUICK_JSON.read_text(encoding="utf-8"))
    assert document["mode"] == "quick"
    assert document["runs"] == 1
    machine = document["machine"]
    for key in ("cpu_count", "python", "date"):
        assert machine[key], key
    figures = document["figures"]
    assert set(FIGURES) <= set(figures), sorted(set(FIGURES) - set(figures))
    table = QUICK_MD.read_text(encoding="utf-8")
    for figure_id in figures:
        figure = figures[figure_id]
        assert len(figure["runs"]) == 1, figure_id
        assert isinstance(figure["median"], int | float), figure_id
        assert math.isfinite(figure["median"]), figure_id
        assert figure["unit"] is not None, figure_id
        assert figure["target"], figure_id
        assert figure["verdict"] in {
            "pass",
            "pass (aim met)",
            "pass (aim not met)",
            "FAIL",
            "info",
            "met (stretch)",
            "missed (stretch)",
        }
        assert figure["figure"] in table, figure_id

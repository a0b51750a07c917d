"""The demo's parts without running it: its measurements, journal, store places, arrivals and
renderings (tests/acceptance/test_demo.py runs the whole)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import nsai_work as work
from nsai_work.demo._durable import Journal, place_for
from nsai_work.demo._live import Frame, bar, plain_line, render_frame
from nsai_work.demo._measure import Recorder, percentile
from nsai_work.demo._summary import render
from nsai_work.demo._workload import CONTEST_KIND, CONTEST_TENANTS, Arrivals

E = work.telemetry.events


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _meta(job_id: str, tenant: str, *, kind: str = CONTEST_KIND, attempt: int = 1) -> Any:
    return {
        "job_id": job_id,
        "tenant_id": tenant,
        "kind": kind,
        "priority": "batch",
        "attempt": attempt,
    }


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([], 0.99) == 0.0
    assert percentile([5.0], 0.5) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile(list(map(float, range(101))), 0.99) == pytest.approx(99.0)


def test_fair_share_counts_gpu_seconds_only_while_every_tenant_is_backlogged() -> None:
    clock = _Clock()
    recorder = Recorder(clock)
    on = recorder.on_event
    # acme alone has work for 10 s: not counted (the others are not backlogged)
    on(E.JOB_QUEUED, {}, _meta("a0", "acme"), None)
    on(E.JOB_STARTED, {}, _meta("a0", "acme"), None)
    clock.now += 10
    for n, tenant in enumerate(CONTEST_TENANTS):  # everyone queues one more
        on(E.JOB_QUEUED, {}, _meta(f"q{n}", tenant), None)
    on(E.JOB_STARTED, {}, _meta("g0", "globex"), None)  # (never seen queued: still counted)
    clock.now += 4  # acme 1 GPU, globex 1 GPU, initech none, all backlogged
    fair = recorder.fair_share()
    assert fair["backlogged_s"] == pytest.approx(4.0)
    tenants = fair["tenants"]
    assert tenants["acme"]["share_pct"] == tenants["globex"]["share_pct"] == 50.0
    assert tenants["initech"]["share_pct"] == 0.0
    assert tenants["acme"]["weight_share_pct"] == 50.0
    assert tenants["initech"]["error_pp"] == pytest.approx(-16.67)
    assert fair["max_error_pp"] == pytest.approx(16.67)
    on(E.JOB_STARTED, {}, _meta("q2", "initech"), None)  # initech's queue empties
    clock.now += 5
    assert recorder.fair_share()["backlogged_s"] == pytest.approx(4.0)
    assert recorder.snapshot()["initech"] == pytest.approx(5.0)  # all-time GPU-seconds
    on(E.JOB_COMPLETED, {}, _meta("q2", "initech"), None)
    on(E.JOB_RETRY, {}, _meta("a0", "acme"), None)  # the run ended; it waits for a retry
    assert recorder.running == {"acme": 0, "globex": 1, "initech": 0}
    assert recorder.retries["acme"] == 1


def test_latency_is_measured_from_the_submit_to_the_first_start() -> None:
    clock = _Clock()
    recorder = Recorder(clock)
    job = work.Job(kind="x", tenant_id="acme", priority="realtime")
    recorder.submitting([job])
    clock.now += 0.004
    meta = {**_meta(job.id, "acme", kind="x"), "priority": "realtime"}
    recorder.on_event(E.JOB_STARTED, {}, meta, None)
    recorder.on_event(E.JOB_STARTED, {}, {**meta, "attempt": 2}, None)  # a retry: not counted
    assert recorder.latencies()["realtime"] == [pytest.approx(4.0)]


def test_the_journal_reads_back_what_was_written_even_cut_short(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "work.db.demo.jsonl")
    journal.open()
    journal.write(settings={"duration_s": 8.0, "seed": 7, "version": 1})
    journal.admitted([work.Job(kind="x", tenant_id="acme", id="j1")])
    journal.write(position_s=2.5)
    journal.write(event="interrupted", position_s=3.0)
    journal.close()
    with journal.path.open("a") as file:
        file.write('{"admitted":[["acme","j2"]')  # a crash in the middle of a line
    record = journal.read()
    assert record.settings["duration_s"] == 8.0
    assert record.admitted == [("acme", "j1")]
    assert record.position_s == 3.0
    assert record.interrupted == 1
    assert not record.finished
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"admitted": []}) + "\n")
    with pytest.raises(ValueError, match="does not start with the demo's settings"):
        Journal(other).read()


def test_store_places(tmp_path: Path) -> None:
    temporary = place_for(None)
    assert temporary.temporary
    assert temporary.path is not None
    assert temporary.url == f"sqlite://{temporary.path}"
    temporary.remove()
    assert not temporary.path.parent.exists()
    named = place_for(str(tmp_path / "work.db"))
    assert named.url == f"sqlite://{tmp_path / 'work.db'}"
    assert not named.temporary
    assert named.journal == tmp_path / "work.db.demo.jsonl"
    assert not place_for("memory://").durable
    with pytest.raises(ValueError, match="does not exist"):
        place_for(str(tmp_path / "missing" / "work.db"))
    with pytest.raises(ValueError, match=r"sqlite:///absolute/path\.db"):
        place_for("postgresql://localhost/db")


def test_arrivals_keep_every_contest_tenant_backlogged_and_stop_at_80_percent() -> None:
    arrivals = Arrivals(duration_s=10.0, seed=1)
    first = list(arrivals.due(0.0, {}, set()))
    sweeps = [s for s in first if s.stream == "sweep:*"]
    assert len(sweeps) == 1  # the first sweeps of all three go in one submit
    assert {job.tenant_id for job in sweeps[0].jobs} == set(CONTEST_TENANTS)
    full = {t: 1_000 for t in CONTEST_TENANTS}
    later = list(arrivals.due(1.0, {**full, "initech": 0}, set()))
    assert [s.tenant for s in later if s.stream.startswith("sweep")] == ["initech"]
    held = list(arrivals.due(1.1, {**full, "initech": 0}, {"sweep:initech"}))
    assert not [s for s in held if s.stream.startswith("sweep")]
    assert list(arrivals.due(8.0, {}, set())) == []  # arrivals stop at 80% of the duration
    resumed = Arrivals(duration_s=10.0, seed=1, start_s=6.0)
    assert not resumed.once("report", 0.25, 7.0)  # the interrupted run had its turn
    assert Arrivals(duration_s=10.0, seed=1).once("report", 0.25, 2.5)


def _stats() -> work.Stats:
    counts = work.Counts(queued=40, running=12, succeeded=300)
    return work.Stats(
        totals=counts,
        by_priority={"batch": counts},
        by_tenant={
            "hooli": work.TenantStats(spend_total_usd=0.05, budget_usd=0.2, committed_usd=0.1)
        },
        by_backend={},
        pools={},
        waiting_reasons={"fair_share": 30, "tenant_quota:gpu:A100": 2},
    )


def test_the_live_view_and_the_plain_line_render() -> None:
    frame = Frame(
        position_s=12.3,
        duration_s=45.0,
        end_s=36.0,
        stats=_stats(),
        admitted=352,
        shares={"acme": 50.0, "globex": 33.0, "initech": 17.0},
        fair={"backlogged_s": 10.0, "max_error_pp": 0.4},
        latencies={"realtime": [1.0, 2.0], "batch": [900.0]},
        notes=["  3.5 s  hooli canceled a diverging training run"],
        store="sqlite:///tmp/work.db",
        max_depth=80,
    )
    out = io.StringIO()
    Console(file=out, width=110, color_system=None).print(render_frame(frame))
    text = out.getvalue()
    for panel in ("queue depth by priority", "fair share", "spend", "latency", "why jobs wait"):
        assert panel in text
    assert "hooli canceled a diverging training run" in text
    line = plain_line(frame)
    assert "\x1b" not in line
    assert "\n" not in line
    assert line.startswith("[ 12.3 s] 352 admitted, 300 finished, 12 running;")
    assert bar(0.5, 4) == "██  "
    assert bar(0.5, 4, marker=0.25) == "█│  "


def test_the_summary_text_keeps_to_100_columns() -> None:
    latency = {"jobs": 10, "p50": 1.5, "p90": 2.0, "p99": 3.25, "max": 4.0}
    tenant = {"weight": 1.0, "weight_share_pct": 16.67, "share_pct": 16.9, "error_pp": 0.23}
    outcome = {
        "submitted": 10,
        "succeeded": 9,
        "failed": 1,
        "timeout": 0,
        "canceled": 0,
        "retries": 2,
        "refused": {},
        "resubmitted": 0,
    }
    summary = {
        "duration_s": 45.0,
        "elapsed_s": 46.1,
        "store": {"url": "sqlite:///" + "x" * 120, "kept": True},
        "jobs": {"admitted": 10, "finished": 10},
        "throughput": {"jobs_per_s": 50.0, "peak_jobs_per_s": 60.0},
        "latency_ms": dict.fromkeys(("realtime", "interactive", "batch", "offline"), latency),
        "fair_share": {
            "pool": "l4-shared",
            "priority": "batch",
            "backlogged_s": 30.0,
            "tenants": dict.fromkeys(CONTEST_TENANTS, tenant),
            "max_error_pp": 0.23,
        },
        "outcomes": {"total": outcome, "by_tenant": {"acme": outcome}},
        "spend": {
            "total_usd": 0.1,
            "by_tenant": {
                "hooli": {"spend_usd": 0.1, "budget_usd": 0.2, "refused_budget": 3},
                "acme": {"spend_usd": 0.01, "budget_usd": None, "refused_budget": 0},
            },
        },
        "waiting_reasons": [
            {
                "reason": "tool_concurrency:search_documents",
                "job_seconds": 12345.6,
                "peak": 12345,
                "hint": "the tool's max_concurrency caps calls",
            }
        ],
        "durability": {"admitted": 10, "in_store": 10, "finished": 10, "lost": 0},
        "recovery": {
            "admitted_before": 123456,
            "in_store": 123456,
            "lost": 0,
            "finished_before": 123000,
            "recovered": 456,
            "recovered_finished": 456,
        },
    }
    lines = render(summary)
    assert [line for line in lines if len(line) > 100] == [
        f"store: {summary['store']['url']} (kept)"
    ]
    assert "  hooli   $0.1000  $0.2000  50% spent                 3" in lines
    assert (
        lines[-1] == "durability: 10 of 10 admitted jobs are in the store, 10 finished; none lost"
    )

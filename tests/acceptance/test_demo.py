"""``make demo`` (``python -m nsai_work.demo``) run as a user would, as subprocesses: the JSON
summary's figures (issue 21's acceptance), the text summary through a pipe, and Ctrl-C in the
middle followed by ``--resume``. Each run is ``--quick`` (about 9 s)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

PRIORITIES = ("realtime", "interactive", "batch", "offline")
_ENV = {**os.environ, "COLUMNS": "120", "PYTHONUNBUFFERED": "1"}


def _demo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nsai_work.demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_ENV,
    )


def _summary(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary: dict[str, Any] = json.loads(done.stdout)  # stdout holds the JSON and nothing else
    return summary


@pytest.mark.slow
def test_quick_json_summary_meets_the_acceptance_figures() -> None:
    summary = _summary(_demo("--quick", "--json"))
    assert summary["interrupted"] is False
    assert summary["drained"] is True
    latency = summary["latency_ms"]
    for priority in PRIORITIES:  # real figures from a monotonic clock, never 0.00
        assert latency[priority]["jobs"] > 0, priority
        assert 0 < latency[priority]["p50"] <= latency[priority]["p99"], latency[priority]
    assert latency["realtime"]["p99"] < latency["batch"]["p99"]
    fair = summary["fair_share"]
    assert fair["backlogged_s"] >= 3.0, fair
    shares = {tenant: t["share_pct"] for tenant, t in fair["tenants"].items()}
    assert set(shares) == {"acme", "globex", "initech"}
    assert sum(shares.values()) == pytest.approx(100.0, abs=0.1)
    for tenant, t in fair["tenants"].items():
        assert abs(t["share_pct"] - t["weight_share_pct"]) <= 5.0, (tenant, t)
    assert fair["max_error_pp"] <= 5.0
    spend = summary["spend"]
    assert spend["total_usd"] > 0
    for tenant, s in spend["by_tenant"].items():
        assert s["spend_usd"] > 0, tenant
        if s["budget_usd"] is not None:
            assert s["spend_usd"] <= s["budget_usd"], (tenant, s)
    assert spend["by_tenant"]["hooli"]["refused_budget"] > 0  # its budget ran out
    total = summary["outcomes"]["total"]
    assert total["retries"] > 0
    assert total["timeout"] >= 1
    assert total["canceled"] >= 1
    assert total["succeeded"] > 0.9 * summary["jobs"]["admitted"]
    assert summary["throughput"]["jobs_per_s"] > 0
    assert summary["waiting_reasons"], "nothing waited: no backlog"
    assert {r["reason"] for r in summary["waiting_reasons"]} & {"fair_share", "no_capacity"}
    durability = summary["durability"]
    assert durability["lost"] == 0
    assert durability["finished"] == durability["in_store"] == durability["admitted"]
    assert durability["admitted"] == summary["jobs"]["admitted"]
    assert summary["store"]["kept"] is False


_ROW = r"\s+(\d[\d,]*)\s+(\d+\.\d\d)\s+(\d+\.\d\d)\s+(\d+\.\d\d)\s+(\d+\.\d\d)"


@pytest.mark.slow
def test_piped_output_is_plain_text_with_the_summary_intact() -> None:
    done = _demo("--quick")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "\x1b" not in out
    assert "\r" not in out
    lines = out.splitlines()
    progress = [line for line in lines if line.startswith("[")]
    assert len(progress) >= 4
    for line in progress:
        assert re.fullmatch(r"\[\s*\d+\.\d s\] [\d,]+ admitted, [\d,]+ finished, .*", line), line
    start = lines.index(next(line for line in lines if line.startswith("nsai-work demo: summary")))
    summary = lines[start:]
    for line in summary:
        assert len(line) <= 100 or line.startswith("store: "), line
    text = "\n".join(summary)
    for heading in (
        "throughput: ",
        "latency, submit to start (first attempts, monotonic clock)",
        "fair share of l4-shared",
        "outcomes (retries:",
        "spend (what finished runs cost;",
        "top waiting reasons",
    ):
        assert any(line.startswith(heading) for line in summary), heading
    latency = {}
    for priority in PRIORITIES:  # one whole row per priority, every figure in its column
        match = re.search(rf"^  {priority}{_ROW}$", text, re.MULTILINE)
        assert match, priority
        latency[priority] = [float(x.replace(",", "")) for x in match.groups()]
        assert latency[priority][1] > 0  # p50
    assert latency["realtime"][3] < latency["batch"][3]  # p99
    for tenant in ("acme", "globex", "initech"):
        match = re.search(
            rf"^  {tenant}\s+\d\s+(\d+\.\d)%\s+(\d+\.\d)%\s+([+-]\d+\.\d) pp$", text, re.MULTILINE
        )
        assert match, tenant
        assert abs(float(match.group(3))) <= 5.0
    for tenant in ("umbrella", "acme", "globex", "initech", "hooli"):
        assert re.search(rf"^  {tenant}(\s+\d[\d,]*){{7}}$", text, re.MULTILINE), tenant
        assert re.search(rf"^  {tenant}\s+\$\d+\.\d{{4}}\s", text, re.MULTILINE), tenant
    assert re.search(r"^durability: ([\d,]+) of \1 admitted jobs .* none lost$", text, re.M)


def _admitted_so_far(journal: Path) -> int:
    if not journal.exists():
        return 0
    count = 0
    for line in journal.read_text().splitlines():
        if line.startswith('{"admitted"'):
            count += len(json.loads(line)["admitted"])
    return count


@pytest.mark.slow
def test_ctrl_c_then_resume_recovers_every_job(tmp_path: Path) -> None:
    store = tmp_path / "work.db"
    journal = tmp_path / "work.db.demo.jsonl"
    first = subprocess.Popen(
        [sys.executable, "-m", "nsai_work.demo", "--quick", "--store", str(store), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_ENV,
    )
    try:
        deadline = time.monotonic() + 30
        while _admitted_so_far(journal) < 150:  # well into the run, with a backlog
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the demo admitted too few jobs"
            time.sleep(0.05)
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, err[-3000:]
    stopped = json.loads(out)
    assert stopped["interrupted"] is True
    assert "resume with: make demo DEMO_ARGS=" in err
    kept = stopped["durability"]
    assert kept["admitted"] == stopped["jobs"]["admitted"] >= 150
    assert kept["lost"] == 0
    assert kept["in_store"] == kept["admitted"]
    assert kept["unfinished"] > 0  # the backlog is in the store, waiting

    summary = _summary(_demo("--resume", str(store), "--json"))
    recovery = summary["recovery"]
    assert recovery["admitted_before"] == kept["admitted"]
    assert recovery["lost"] == 0
    assert recovery["finished_before"] == kept["finished"]
    assert recovery["recovered"] == kept["unfinished"]  # every job it was given
    assert recovery["recovered_finished"] == recovery["recovered"]
    durability = summary["durability"]
    assert durability["admitted"] == kept["admitted"] + summary["jobs"]["admitted"]
    assert durability["lost"] == 0
    assert durability["finished"] == durability["admitted"]
    assert summary["store"]["kept"] is True
    assert store.exists()


def test_help_documents_every_option() -> None:
    done = _demo("--help", timeout=30)
    assert done.returncode == 0, done.stderr
    for option in (
        "--duration",
        "--quick",
        "--store",
        "--resume",
        "--json",
        "--plain",
        "--serve",
        "--port",
    ):
        assert option in done.stdout
    assert "not built yet" not in done.stdout


@pytest.mark.slow
def test_serve_serves_the_dashboard_of_the_demos_scheduler_while_it_runs() -> None:
    import httpx

    demo = subprocess.Popen(
        [sys.executable, "-m", "nsai_work.demo", "--quick", "--plain", "--serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_ENV,
    )
    try:
        assert demo.stdout is not None
        first = demo.stdout.readline()
        assert first.startswith("Dashboard: http://127.0.0.1:"), first
        url = first.split()[1]
        keys = dict(demo.stdout.readline().split() for _ in range(5))
        assert set(keys) == {"admin", "acme", "globex", "initech", "umbrella"}
        with httpx.Client(base_url=url, timeout=10) as browser:
            assert "app.js" in browser.get("/").text
            answer = browser.post("/ui/login", json={"key": keys["admin"]})
            assert answer.status_code == 200, answer.text
            deadline = time.monotonic() + 20
            while browser.get("/v1/stats").json()["totals"].get("submitted", 0) == 0:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            browser.cookies.clear()
            browser.post("/ui/login", json={"key": keys["acme"]})
            assert set(browser.get("/ui/api/waiting").json()["by_tenant"]) <= {"acme"}
        out, err = demo.communicate(timeout=120)
        assert demo.returncode == 0, out[-3000:] + err[-3000:]
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()


def test_bad_option_combinations_are_refused(tmp_path: Path) -> None:
    store = tmp_path / "work.db"
    done = _demo("--resume", str(store), "--quick", timeout=30)
    assert done.returncode == 2
    assert "--resume continues a run with its own settings; drop --quick" in done.stderr
    store.write_text("")
    done = _demo("--store", str(store), timeout=30)
    assert done.returncode == 2
    assert "already holds jobs" in done.stderr
    done = _demo("--resume", str(store), timeout=30)
    assert done.returncode == 2
    assert "no demo journal beside it" in done.stderr

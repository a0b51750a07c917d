"""One scheduler process and four client processes on one store: every job the clients submit
runs exactly once, and each client's ``wait_many`` sees all of its jobs succeed
(tests/acceptance/_client_procs.py holds the processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 4
JOBS = 2_000

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the process tests run on Linux"
)

#: Stores that processes share.
SHARED_STORES = ["sqlite", "postgres"]


@pytest.fixture(params=SHARED_STORES)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/work.db"
    return str(request.getfixturevalue("postgres_url"))


def spawn(*args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.acceptance._client_procs", *args],
        cwd=ROOT,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_four_clients_and_a_scheduler_run_every_job_exactly_once(url: str, tmp_path: Path) -> None:
    summary = tmp_path / "scheduler.json"
    scheduler = spawn("scheduler", url, str(summary), stdin=subprocess.PIPE)
    clients: list[subprocess.Popen[str]] = []
    try:
        assert scheduler.stdout is not None
        assert scheduler.stdout.readline().strip() == "ready", scheduler.stderr
        outs = [tmp_path / f"client-{n}.json" for n in range(CLIENTS)]
        clients = [
            spawn("client", url, f"tenant-{n}", str(JOBS), str(out)) for n, out in enumerate(outs)
        ]
        for process in clients:
            _, stderr = process.communicate(timeout=270)
            assert process.returncode == 0, stderr
        _, stderr = scheduler.communicate(timeout=60)  # closes its stdin: it stops
        assert scheduler.returncode == 0, stderr
    finally:
        for process in [scheduler, *clients]:
            if process.poll() is None:
                process.kill()
                process.wait()
    for out in outs:
        seen = json.loads(out.read_text())
        assert seen["statuses"] == {"succeeded": JOBS}, seen
        assert seen["results_ok"]
    ran = json.loads(summary.read_text())
    assert ran == {"runs": CLIENTS * JOBS, "distinct": CLIENTS * JOBS, "max": 1}

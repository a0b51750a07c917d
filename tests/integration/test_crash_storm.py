"""The crash storm (issue #14's acceptance), on SQLite and on PostgreSQL: a child process runs
10,000 jobs (some fail once and retry, some wait on backoff timers); it is killed with SIGKILL at
random moments, at least 3 times, and started again each time. Then:

- every admitted job (its submit returned) is in the store, in exactly one terminal state;
- no job is recorded as succeeded twice;
- every job announced as succeeded before a kill is still succeeded;
- every attempt that failed without its handler raising ends with ``engine_lost``, and the
  kills did cut runs short (some job shows it).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

import nsai_work as work
from nsai_work.stores import store_from_url

CHILD = Path(__file__).with_name("_crash_child.py")
JOBS = int(os.environ.get("NSAI_CRASH_JOBS", "10000"))
KILLS = 4
Run = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'work.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _start(url: str, out: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    with open(out / "stderr", "ab") as stderr:  # (the child keeps its own copy)
        return subprocess.Popen(
            [sys.executable, str(CHILD), url, str(JOBS), str(out)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def test_sigkill_storm_loses_nothing_and_runs_no_success_twice(
    store_url: str, tmp_path: Path, arun: Run
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    rng = random.Random(1234)
    succeeded_before_kill: set[str] = set()
    kills = 0
    for _ in range(KILLS):
        runs_before = len(_lines(out / "started"))
        child = _start(store_url, out)
        # let it get somewhere: runs started since this start (it has recovered and works),
        # then a random moment while jobs run, retries wait on their backoff, or it submits
        deadline = time.monotonic() + 60
        while len(_lines(out / "started")) < runs_before + 50 and child.poll() is None:
            assert time.monotonic() < deadline, "the child made no progress in 60 s"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.05, 0.6))
        succeeded_before_kill |= set(_lines(out / "succeeded"))
        if child.poll() is not None:
            break  # it finished before this kill
        child.send_signal(signal.SIGKILL)
        child.wait()
        kills += 1
    final = _start(store_url, out)
    assert final.wait(timeout=600) == 0, (out / "stderr").read_text()[-3000:]
    assert (out / "done").exists()
    assert kills >= 3

    admitted = {tuple(line.split()) for line in _lines(out / "admitted")}
    assert len(admitted) == JOBS

    async def read_back() -> list[work.Job | None]:
        store = store_from_url(store_url)
        await store.open("scheduler")
        try:
            assert (await store.load()).jobs == []  # nothing is left unfinished
            return await store.get_many(sorted(admitted))  # type: ignore[arg-type]
        finally:
            await store.close()

    found = arun(read_back())
    missing = [key for key, job in zip(sorted(admitted), found, strict=True) if job is None]
    assert missing == []
    jobs = [job for job in found if job is not None]
    assert all(job.status in work.TERMINAL_STATUSES for job in jobs)
    twice = [job.id for job in jobs if sum(a.status == "succeeded" for a in job.attempts) > 1]
    assert twice == []
    by_key = {f"{job.tenant_id} {job.id}": job for job in jobs}
    lost_after_success = [
        key for key in succeeded_before_kill if by_key[key].status != work.Status.SUCCEEDED
    ]
    assert lost_after_success == []
    assert sum(job.status == work.Status.SUCCEEDED for job in jobs) >= JOBS * 0.99
    causes = {
        attempt.error.type
        for job in jobs
        for attempt in job.attempts
        if attempt.status == "failed" and attempt.error is not None
    }
    assert causes <= {"RuntimeError", "EngineLostError"}, causes
    assert "EngineLostError" in causes  # the kills did cut runs short
    for job in jobs:
        for attempt in job.attempts:
            if attempt.error is not None and attempt.error.type == "EngineLostError":
                assert "engine_lost" in attempt.error.message


def test_the_storm_child_runs_clean_without_kills(tmp_path: Path, arun: Run) -> None:
    """The child alone (no kill): what the storm measures against."""
    out = tmp_path / "out"
    out.mkdir()
    url = f"sqlite://{tmp_path / 'work.db'}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run(
        [sys.executable, str(CHILD), url, "600", str(out)],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert len(_lines(out / "admitted")) == 600
    assert len(set(_lines(out / "succeeded"))) == 600
    started = _lines(out / "started")
    assert len(started) == 600 + sum(1 for i in range(500) if i % 7 == 0) + sum(
        1 for i in range(100) if i % 7 == 0
    )

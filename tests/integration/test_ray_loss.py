"""Losing the whole Ray cluster, and getting it back (real Ray).

The scheduler runs in a process of its own (``_ray_loss_driver``), connected to a 2-CPU head
node of this test's own; the test stops the head (all of the cluster) while two jobs run and
a third waits, then starts a head again on the same port.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._ray import RAY_ENV, RayCluster, _die_with_parent, require_ray

pytestmark = pytest.mark.slow

_ROOT = Path(__file__).resolve().parents[2]
RETRIED = {"retry_policy": {"max_attempts": 3, "base_delay_ms": 200, "jitter": False}}


class Driver:
    """The scheduler's process: jobs go in on stdin, reports come out on stdout."""

    def __init__(self, address: str, log: Path) -> None:
        with log.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.integration._ray_loss_driver", address],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=_ROOT,
                env={**os.environ, **RAY_ENV},
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.log = log
        self.reports: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.reports.append(json.loads(line))

    def submit(self, *jobs: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(list(jobs)).encode() + b"\n")
        self.process.stdin.flush()

    def until(
        self, what: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60.0
    ) -> dict[str, Any]:
        """The first report (from now) for which ``predicate`` holds."""
        deadline = time.monotonic() + timeout
        seen = len(self.reports)
        while True:
            for report in self.reports[max(0, seen - 1) :]:
                with contextlib.suppress(KeyError, TypeError, IndexError):
                    if predicate(report):
                        return report
            seen = len(self.reports)
            if self.process.poll() is not None or time.monotonic() > deadline:
                last = self.reports[-1] if self.reports else None
                tail = self.log.read_text(errors="replace")[-4000:]
                pytest.fail(
                    f"{what}: not seen (driver exit code {self.process.poll()}); last report "
                    f"{json.dumps(last, indent=1)[-3000:]}\ndriver stderr:\n{tail}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            assert self.process.stdin is not None
            self.process.stdin.close()  # (the scheduler stops)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()
        self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def cluster() -> Iterator[RayCluster]:
    require_ray()
    root = Path(tempfile.mkdtemp(prefix="nsai-rayloss-"))  # (short: Ray's socket paths)
    cluster = RayCluster(root)
    try:
        cluster.start_head(connect=False)
        yield cluster
    finally:
        cluster.stop_head()
        shutil.rmtree(root, ignore_errors=True)


def _status(job: dict[str, Any]) -> str:
    return str(job.get("status", "pending"))  # (a default is left out of the JSON)


def _job(id: str, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": id,
        "kind": kind,
        "tenant_id": "acme",
        "payload": payload,
        "resources": {"cpu": 1},
        "constraints": RETRIED,
    }


def test_losing_the_whole_cluster_and_getting_it_back(cluster: RayCluster) -> None:
    driver = Driver(cluster.address, cluster.root / "driver.log")
    try:
        driver.submit(
            _job("long-1", "ray.sleeps_first", {"s": 600, "then_s": 0.5}),
            _job("long-2", "ray.sleeps_first", {"s": 600, "then_s": 0.5}),
        )
        driver.until(
            "two long jobs running",
            lambda r: all(_status(r["jobs"][i]) == "running" for i in ("long-1", "long-2")),
        )
        driver.submit(_job("queued", "ray.sleeps_first", {"s": 0.5}))
        before = driver.until(
            "a third job queued", lambda r: _status(r["jobs"]["queued"]) == "queued"
        )
        old_pools = before["pools"]
        assert len(old_pools) == 1

        cluster.kill_head()  # (SIGTERM would drain the node for 30 s first)
        lost = driver.until(
            "the running attempts lost and the queued job waiting for the backend",
            lambda r: (
                all(
                    "backend_lost" in r["jobs"][i]["attempts"][0]["error"]["message"]
                    for i in ("long-1", "long-2")
                )
                and r["jobs"]["queued"]["waiting_reason"] == "backend_unavailable"
            ),
        )
        for i in ("long-1", "long-2"):
            job = lost["jobs"][i]
            first = job["attempts"][0]
            assert first["error"]["type"] == "BackendLostError"
            assert "unavailable" in first["error"]["message"]
            assert _status(job) in ("queued", "pending")  # (its retry waits)
        assert _status(lost["jobs"]["queued"]) == "queued"
        assert lost["jobs"]["queued"].get("attempts", []) == []  # (it never started)

        cluster.start_head(connect=False, log="head-2.log")
        done = driver.until(
            "every job succeeded after the head came back",
            lambda r: all(_status(j) == "succeeded" for j in r["jobs"].values()),
            timeout=120,
        )
        for i in ("long-1", "long-2"):
            assert done["jobs"][i]["attempt"] == 2
            assert done["jobs"][i]["result"]["attempt"] == 2
        assert done["jobs"]["queued"]["attempt"] == 1
        assert done["pools"] != old_pools  # (the new head is a new node)
        driver.submit(_job("after", "ray.noop", {}))
        driver.until(
            "a new job after the return", lambda r: _status(r["jobs"]["after"]) == "succeeded"
        )
        driver.stop()
        assert driver.process.returncode == 0  # (the scheduler stopped cleanly)
    finally:
        driver.stop()

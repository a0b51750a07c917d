"""A real Ray cluster for the tests, on the loopback of the test network namespace.

``RayCluster`` starts a head node (``ray start --head --block``, 2 CPUs, a small object store,
the dashboard for Ray Jobs and the state API) in a temporary directory of its own, and can add
a second node (1 fake A100: ``--num-gpus=1 --resources '{"accelerator_type:A100": 1}'``; Ray
only schedules on it). Each node is a ``ray start --block`` process: terminating it stops that
node's processes, and nothing else on the machine (``ray stop`` would stop every Ray process
here). A missing Ray skips on a laptop and fails in CI.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

_RAY = Path(sys.executable).with_name("ray")
#: Ray 2.60 turns token authentication on for a cluster when ~/.ray/auth_token exists (a local
#: ``ray.init()`` writes one): the test clusters, on a private loopback, run without it,
#: whatever a home directory holds.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux ``PR_SET_PDEATHSIG``), so
    a ``ray start --block`` never outlives the test or bench that started it."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return _RAY.exists()


def require_ray() -> None:
    """Skip without Ray, unless in CI (there the test extras must have installed it)."""
    if not ray_available():
        if os.environ.get("CI"):
            pytest.fail("Ray is not installed (the test extras should install it)")
        pytest.skip("Ray is not installed: pip install 'nsai-work[ray]'")


class RayCluster:
    """A head node, and optionally a GPU node, started by ``ray start --block``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.dashboard_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        os.environ.update(RAY_ENV)  # (this process connects to the cluster too)
        self.env = {**os.environ, **RAY_ENV}
        self.temp_dir = root / "ray"
        self.head: subprocess.Popen[bytes] | None = None
        self.gpu_node: subprocess.Popen[bytes] | None = None

    def _start(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        with (self.root / log).open("wb") as out:  # (the child keeps its own copy)
            return subprocess.Popen(
                [str(_RAY), "start", "--block", "--disable-usage-stats", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def start_head(self, *, connect: bool = True, log: str = "head.log") -> None:
        """Start the head node (on ``self.port``, the same on each start) and wait for it: by
        connecting this process to it (``connect``), or else by reading ``ray start``'s log
        until the node says it started (a test whose scheduler runs in another process: one
        process can be connected to one cluster only)."""
        self.head = self._start(
            [
                "--head",
                "--node-ip-address=127.0.0.1",
                f"--port={self.port}",
                "--num-cpus=2",
                "--num-gpus=0",
                "--object-store-memory=100000000",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--temp-dir={self.temp_dir}",
            ],
            log,
        )
        if connect:
            self.wait_nodes(1)
        else:
            self._wait_started(self.head, log)

    def _wait_started(
        self, process: subprocess.Popen[bytes], log: str, timeout: float = 90.0
    ) -> None:
        """Wait until ``ray start --block`` says its node runs (without connecting to it)."""
        deadline = time.monotonic() + timeout
        path = self.root / log
        while "Ray runtime started" not in path.read_text(errors="replace"):
            if process.poll() is not None:
                tail = path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"ray head exited ({process.returncode}):\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Ray head did not start in {timeout} s")
            time.sleep(0.2)

    def kill_head(self) -> None:
        """Kill the head node and every process of it at once (SIGKILL to its session): the
        whole cluster crashes (a SIGTERM drains the node first, for up to 30 s)."""
        if self.head is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.head.pid, signal.SIGKILL)
            self.head.wait()
            self.head = None

    def stop_head(self) -> None:
        """Stop the head node alone (SIGTERM to its ``ray start --block``), leaving this
        process's own Ray connection, if any, as it is."""
        if self.head is not None:
            _terminate(self.head)
            self.head = None

    def start_gpu_node(self) -> None:
        self.gpu_node = self._start(
            [
                f"--address={self.address}",
                "--node-ip-address=127.0.0.1",
                "--num-cpus=1",
                "--num-gpus=1",
                "--resources=" + json.dumps({"accelerator_type:A100": 1}),
                "--object-store-memory=80000000",
            ],
            "gpu-node.log",
        )
        self.wait_nodes(2)

    def stop_gpu_node(self) -> None:
        if self.gpu_node is not None:
            _terminate(self.gpu_node)
            self.gpu_node = None

    def alive_nodes(self) -> list[dict[str, object]]:
        import ray

        return [n for n in ray.nodes() if n.get("Alive")]

    def wait_nodes(self, count: int, timeout: float = 90.0) -> None:
        """Wait until ``count`` nodes are alive (connecting this process to the cluster)."""
        import ray

        deadline = time.monotonic() + timeout
        while True:
            for process, name in ((self.head, "head"), (self.gpu_node, "gpu-node")):
                if process is not None and process.poll() is not None:
                    log = (self.root / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"ray {name} exited ({process.returncode}):\n{log}")
            try:
                if not ray.is_initialized():
                    ray.init(
                        address=self.address,
                        _node_ip_address="127.0.0.1",
                        namespace="nsai-work-tests",
                        log_to_driver=False,
                        logging_level="warning",
                    )
                if len(self.alive_nodes()) >= count:
                    return
            except Exception:
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} Ray nodes not alive after {timeout} s")
            time.sleep(0.5)

    def stop(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        self.stop_gpu_node()
        if self.head is not None:
            _terminate(self.head)
            self.head = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _terminate(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM to a ``ray start --block`` (it stops its node's processes), SIGKILL to its
    session if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

"""The CLI round trip against a running server, all as subprocesses: ``nsai-work keys
create``, ``nsai-work server`` on a SQLite store, then ``submit``, ``wait``, ``cancel`` and
``list --json`` through it, and a graceful stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.acceptance.test_cli import _nsai_work

HANDLERS = """
import asyncio
import nsai_work as work

@work.handler("sleepy")
async def sleepy(job):
    await asyncio.sleep(job.payload["s"])
    return {"slept": job.payload["s"]}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_nsai_work(), *args], capture_output=True, text=True, timeout=60, env=env
    )


def test_submit_watch_cancel_and_list_through_a_running_server(tmp_path: Path) -> None:
    db = tmp_path / "work.db"
    (tmp_path / "handlers_mod.py").write_text(HANDLERS)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "COLUMNS": "200"}
    made = _cli(
        "keys", "create", "--tenant", "acme", "--store", f"sqlite://{db}", "--json", env=env
    )
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)["token"]
    assert (tmp_path / "work.db.keys.json").exists()
    port = _free_port()
    boot = (
        "import handlers_mod, sys; from nsai_work.cli import main; "
        f"sys.exit(main(['server', '--store', 'sqlite://{db}', '--scheduler', "
        f"'--port', '{port}', '--log-level', 'warning']))"
    )
    server = subprocess.Popen(
        [sys.executable, "-c", boot], env=env, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        env = {**env, "NSAI_WORK_URL": url, "NSAI_WORK_API_KEY": token}
        quick = _cli(
            "submit",
            "--kind",
            "sleepy",
            "--tenant",
            "acme",
            "--payload",
            '{"s": 0.01}',
            "--json",
            env=env,
        )
        assert quick.returncode == 0, quick.stderr
        quick_id = json.loads(quick.stdout)["id"]
        slow = _cli(
            "submit",
            '{"kind": "sleepy", "tenant_id": "acme", "payload": {"s": 30}}',
            "--json",
            env=env,
        )
        slow_id = json.loads(slow.stdout)["id"]
        watched = _cli("wait", quick_id, "--timeout", "20", "--json", env=env)
        assert watched.returncode == 0, watched.stderr
        assert json.loads(watched.stdout)[0]["result"] == {"slept": 0.01}
        canceled = _cli("cancel", slow_id, "--reason", "not needed", "--json", env=env)
        assert canceled.returncode == 0, canceled.stderr
        ended = _cli("wait", slow_id, "--timeout", "20", "--json", env=env)
        assert json.loads(ended.stdout)[0]["status"] == "canceled"
        listed = _cli("list", "--json", env=env)
        jobs = json.loads(listed.stdout)
        assert [(j["id"], j["status"]) for j in jobs] == [
            (slow_id, "canceled"),
            (quick_id, "succeeded"),
        ]
        table = _cli("list", env=env)
        assert quick_id in table.stdout
        assert "succeeded" in table.stdout
        missing = _cli("get", "no-such-job", env=env)
        assert missing.returncode == 1
        assert "NotFoundError: no job 'no-such-job'" in missing.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
    # uvicorn shuts down gracefully (requests finish, the lifespan stops the scheduler), then
    # ends the process by the signal it got, as a process killed by it would
    assert server.returncode == -signal.SIGTERM, stderr
    assert "Traceback" not in stderr, stderr

"""The default scheduler stops at interpreter exit and on SIGTERM: waiting jobs are canceled
(reason ``shutdown``), running ones get ``exit_timeout_s`` to finish, then are canceled too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import nsai_work as work

    def show(event, measurements, metadata, config):
        print("canceled", metadata["job_id"][-4:], metadata["reason"], flush=True)

    work.telemetry.attach("exit-test", ("work", "job", "canceled"), show)

    @work.handler("forever")
    async def forever(job):
        await asyncio.Event().wait()

    work.start(exit_timeout_s=0.2, pools={"local": [work.Pool(name="local:async", slots=1)]})
    running = work.submit(work.Job(kind="forever", tenant_id="t"))
    waiting = work.submit(work.Job(kind="forever", tenant_id="t"))
    print("ready", running.id[-4:], waiting.id[-4:], flush=True)
    if sys.argv[1] == "sigterm":
        sys.stdin.readline()  # the parent sends SIGTERM while we wait here
    """
)


def _canceled(lines: list[str]) -> dict[str, str]:
    return {
        parts[1]: parts[2] for parts in (line.split() for line in lines) if parts[0] == "canceled"
    }


def test_interpreter_exit_stops_the_default_scheduler() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, "exit"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    _, running, waiting = lines[0].split()
    assert _canceled(lines) == {running: "shutdown", waiting: "shutdown"}


def test_sigterm_stops_the_default_scheduler_then_exits() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "sigterm"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    _, running, waiting = process.stdout.readline().split()
    os.kill(process.pid, signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert _canceled(out.splitlines()) == {running: "shutdown", waiting: "shutdown"}


CHAINED = textwrap.dedent(
    """
    import asyncio, signal, sys
    import nsai_work as work

    def mine(signum, frame):
        print("my handler ran", signum, flush=True)
        sys.exit(5)

    signal.signal(signal.SIGTERM, mine)  # the application's own, installed first

    def show(event, measurements, metadata, config):
        print("canceled", metadata["job_id"][-4:], metadata["reason"], flush=True)

    work.telemetry.attach("exit-test", ("work", "job", "canceled"), show)

    @work.handler("forever")
    async def forever(job):
        await asyncio.Event().wait()

    work.start(exit_timeout_s=0.2)
    running = work.submit(work.Job(kind="forever", tenant_id="t"))
    print("ready", running.id[-4:], flush=True)
    sys.stdin.readline()
    """
)


def test_sigterm_stops_the_default_scheduler_then_chains_to_the_handler_before_it() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", CHAINED],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    _, running = process.stdout.readline().split()
    os.kill(process.pid, signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    lines = out.splitlines()
    assert process.returncode == 5, err  # the application's handler decided the exit
    assert _canceled(lines) == {running: "shutdown"}
    assert f"my handler ran {int(signal.SIGTERM)}" in lines
    assert lines.index(f"my handler ran {int(signal.SIGTERM)}") > lines.index(
        f"canceled {running} shutdown"
    )

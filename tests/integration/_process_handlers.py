"""Handlers for the process backend's tests. Worker processes import them by
``module:qualname``, so they live at module level in an importable module.

Handlers that must tell the test something while they run (their pid, their children's pids)
connect to an abstract Unix socket whose name is in the payload (``"report_to"``, written with a
leading ``@`` for the NUL byte) and send one JSON line: the test awaits it instead of sleeping.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

import nsai_work as work


class CustomError(Exception):
    """An exception type of the user's own."""


def report(address: str, message: Any) -> None:
    """Send ``message`` as one JSON line to the test listening on ``address``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect("\0" + address[1:] if address.startswith("@") else address)
        sock.sendall(json.dumps(message).encode() + b"\n")


def hang_forever() -> None:
    """Burn CPU until killed (a busy loop: no sleep the kill could interrupt politely)."""
    n = 0
    while True:
        n += 1


def echo(job: work.Job) -> Any:
    return {"payload": job.payload, "pid": os.getpid()}


async def echo_async(job: work.Job) -> Any:
    return {"async": True, "payload": job.payload}


def with_context(job: work.Job, ctx: work.JobContext) -> Any:
    ctx.heartbeat()
    ctx.progress(0.5, "half way")
    return {"attempt": ctx.attempt, "is_context": isinstance(ctx, work.JobContext)}


def fail(job: work.Job) -> None:
    raise ValueError(f"bad value: {job.payload.get('value')!r}")


def fail_custom(job: work.Job) -> None:
    try:
        {}["missing"]
    except KeyError as exc:
        raise CustomError("custom failure") from exc


def fail_permanently(job: work.Job) -> None:
    raise work.NonRetryableError("do not retry this")


def fail_key(job: work.Job) -> None:
    raise KeyError("missing")


def returns_a_set(job: work.Job) -> Any:
    return {1, 2, 3}


def hog(job: work.Job) -> None:
    """Allocate and touch 8 MB at a time, forever."""
    chunks = []
    while True:
        chunks.append(bytearray(8 * 1024 * 1024))
        chunks[-1][::4096] = b"x" * len(chunks[-1][::4096])


def spin(job: work.Job) -> None:
    """Spin until killed."""
    hang_forever()


def busy(job: work.Job) -> None:
    """Report the pid, then spin until killed."""
    report(job.payload["report_to"], {"pid": os.getpid()})
    hang_forever()


def spawn_and_hang(job: work.Job) -> None:
    """Start a child process, report both pids, then spin until killed."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    report(job.payload["report_to"], {"pid": os.getpid(), "child": child.pid})
    hang_forever()


def segfault(job: work.Job) -> None:
    ctypes.string_at(0)


def exit_now(job: work.Job) -> None:
    os._exit(7)


def interval(job: work.Job) -> Any:
    """When this job ran in its process (monotonic clock, shared by processes on Linux)."""
    start = time.monotonic()
    deadline = start + job.payload.get("work_s", 0.05)
    while time.monotonic() < deadline:
        pass
    return {"start": start, "end": time.monotonic(), "pid": os.getpid()}


#: A command that starts a child, reports both pids, and waits (argv[1] is the report address).
SPAWN_AND_WAIT = """
import json, os, socket, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
    sock.connect("\\0" + sys.argv[1][1:])
    sock.sendall(json.dumps({"pid": os.getpid(), "child": child.pid}).encode() + b"\\n")
child.wait()
"""

#: A command that allocates and touches 8 MB at a time, forever.
HOG = """
chunks = []
while True:
    chunks.append(bytearray(8 * 1024 * 1024))
    chunks[-1][::4096] = b"x" * len(chunks[-1][::4096])
"""


def raise_system_exit(job: work.Job) -> None:
    raise SystemExit(3)


def raise_keyboard_interrupt(job: work.Job) -> None:
    raise KeyboardInterrupt

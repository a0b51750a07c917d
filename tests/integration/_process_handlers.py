"""Handlers for the process backend's tests. Worker processes import them by
``module:qualname``, so they live at module level in an importable module.

Handlers that must tell the test something while they run (their pid, their children's pids)
connect to an abstract Unix socket whose name is in the payload (``"report_to"``, written with a
leading ``@`` for the NUL byte) and send one JSON line: the test awaits it instead of sleeping.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import nsai_work as work
from nsai_work.backends import _worker_reset


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


# ---- what a job may leave in its worker ---------------------------------------------------------

#: The resource limits a worker sets back after each job, by name.
LIMITS = _worker_reset.LIMITS
_TIMERS = (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF)


def _vm_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _lower(name: str, soft: int, hard: int | None = None) -> None:
    """Lower a limit's soft value to ``soft`` (or keep it if already lower), and its hard one."""
    number = LIMITS[name]
    current_soft, current_hard = resource.getrlimit(number)
    if current_soft != resource.RLIM_INFINITY:
        soft = min(soft, current_soft)
    resource.setrlimit(number, (soft, current_hard if hard is None else hard))


def taint(job: work.Job) -> Any:
    """Change one thing about the worker process (``payload["change"]``) and leave it so."""
    change = job.payload["change"]
    if change == "environ":
        os.environ["NSAI_WORK_TAINT"] = "1"
        os.environ["HOME"] = "/nowhere"
        del os.environ["NSAI_WORK_TEST_KEEP"]
    elif change == "putenv":  # the C library's environment only, which children inherit
        os.putenv("NSAI_WORK_TAINT_C", "1")
        os.unsetenv("NSAI_WORK_TEST_KEEP")
    elif change == "directory":
        os.chdir("/")
    elif change == "umask":
        os.umask(0o077)
    elif change == "sys_path":
        sys.path.insert(0, "/nowhere")
    elif change == "limits":
        _lower("RLIMIT_NOFILE", 64)
        _lower("RLIMIT_FSIZE", 1 << 30)
        _lower("RLIMIT_CPU", 1 << 20)
        _lower("RLIMIT_NPROC", 4096)
        _lower("RLIMIT_AS", _vm_bytes() + (1 << 30))
        _lower("RLIMIT_DATA", 1 << 40)
        _lower("RLIMIT_STACK", 4 << 20)
        _lower("RLIMIT_MEMLOCK", 1 << 20)
    elif change == "hard_limit":  # raising it back takes CAP_SYS_RESOURCE
        _lower("RLIMIT_NOFILE", 256, 256)
    elif change == "timer":
        signal.setitimer(signal.ITIMER_REAL, 600)
    elif change == "nice":  # lowering it back takes CAP_SYS_NICE
        os.nice(5)
    elif change == "affinity":
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    else:
        raise ValueError(f"unknown change {change!r}")
    return {"pid": os.getpid()}


def state(job: work.Job) -> Any:
    """What a job finds in its worker process (what ``taint`` changes)."""
    mask = os.umask(0)
    os.umask(mask)
    inherited = subprocess.run(["env", "-0"], capture_output=True, check=True).stdout
    return {
        "pid": os.getpid(),
        "environ": dict(os.environ),
        "inherited environ": sorted(inherited.decode().split("\0")),
        "cwd": os.getcwd(),
        "umask": mask,
        "sys.path": sys.path,
        "limits": {name: resource.getrlimit(number) for name, number in LIMITS.items()},
        "timers": [signal.getitimer(timer) for timer in _TIMERS],
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "affinity": sorted(os.sched_getaffinity(0)),
    }


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_CAP_SYS_RESOURCE = 24


def lower_hard_limit_for_good(job: work.Job) -> Any:
    """Lower the hard limit on open files where the worker cannot raise it back: first drop
    CAP_SYS_RESOURCE from this process (a root worker has it; without it nothing changes)."""
    libc = ctypes.CDLL(None, use_errno=True)
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) == 0:
        data[0].effective &= ~(1 << _CAP_SYS_RESOURCE)
        data[0].permitted &= ~(1 << _CAP_SYS_RESOURCE)
        if libc.capset(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capset failed")
    _lower("RLIMIT_NOFILE", 256, 256)
    return {"pid": os.getpid()}


def lower_address_space(job: work.Job) -> Any:
    """Lower the soft address-space limit to 64 MB above what the worker takes now."""
    _lower("RLIMIT_AS", _vm_bytes() + (64 << 20))
    return {"pid": os.getpid()}


def allocate(job: work.Job) -> Any:
    """Allocate ``payload["mb"]`` MB in one piece and touch it."""
    block = bytearray(job.payload["mb"] << 20)
    block[::4096] = b"x" * len(block[::4096])
    return {"pid": os.getpid(), "mb": len(block) >> 20}


def fail_like_numpy(job: work.Job) -> None:
    """Raise the MemoryError a library raises when it refuses an allocation itself."""
    raise MemoryError("Unable to allocate 300. MiB for an array")


def leave_processes(job: work.Job) -> Any:
    """Start a child and a daemon (in a session of its own, its parent gone) and return while
    both still run."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    daemon = subprocess.run([sys.executable, "-c", DAEMONIZE], capture_output=True, check=True)
    return {"pid": os.getpid(), "child": child.pid, "daemon": int(daemon.stdout)}


def leave_memory(job: work.Job) -> Any:
    """Start a child that holds ``payload["mb"]`` MB of resident memory; return once it does."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(job.payload["mb"])], stdout=subprocess.PIPE
    )
    assert child.stdout is not None
    child.stdout.readline()
    return {"pid": os.getpid(), "child": child.pid}


def leave_a_thread(job: work.Job) -> Any:
    """Return while a thread it started still runs."""
    threading.Thread(target=time.sleep, args=(600,), name="left-behind", daemon=True).start()
    return {"pid": os.getpid()}


async def leave_a_task(job: work.Job) -> Any:
    """Return while a task it started on the event loop is still pending."""
    _tasks.add(asyncio.get_running_loop().create_task(asyncio.sleep(600)))
    return {"pid": os.getpid()}


_tasks: set[asyncio.Task[None]] = set()


async def count_tasks(job: work.Job) -> Any:
    """The tasks on the event loop this job runs on (itself included)."""
    return {"pid": os.getpid(), "tasks": len(asyncio.all_tasks())}


#: Start ``sleep 600`` in a new session, print its pid and exit (it is left an orphan).
DAEMONIZE = """
import subprocess, sys
daemon = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(600)"],
    start_new_session=True,
    stdin=subprocess.DEVNULL,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
print(daemon.pid)
"""

#: Hold argv[1] MB of resident memory, say so on stdout, then wait.
HOLD = """
import sys, time
block = bytearray(int(sys.argv[1]) << 20)
block[::4096] = b"x" * len(block[::4096])
print("holding", flush=True)
time.sleep(600)
"""

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


def sleepy(job: work.Job) -> str:
    """Sleep ``payload["seconds"]``, then return."""
    time.sleep(job.payload["seconds"])
    return "rested"


def upstream_total(job: work.Job, ctx: work.JobContext) -> Any:
    """The results of its dependencies, as it got them in the worker (``ctx.upstream``)."""
    return {"upstream": ctx.upstream, "pid": os.getpid()}

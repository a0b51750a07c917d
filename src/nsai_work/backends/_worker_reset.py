"""Every job in a process worker starts from the state the worker started in.

A handler runs in the worker's own process, so whatever it changes there would meet the next job
on that worker, perhaps another tenant's. ``WorkerState`` records that state before the first
job and undoes each job's traces in two steps:

- ``end_job()``, before the job's reply (a run ends only once what it left running is gone):
  every process the job left is killed and reaped (the worker is a child subreaper,
  ``PR_SET_CHILD_SUBREAPER``, so processes that daemonize or start a new session are re-parented
  to it rather than to init, and are found too); Python threads the job started must have ended
  (they get a moment); the interval timers (``alarm``, ``setitimer``) are cancelled.
- ``restore()``, after the reply and before the next request is read (it overlaps with the
  scheduler's own work on the reply): ``os.environ`` and the C library's environment
  (``os.putenv``, ``setenv`` from C code, which child processes inherit), the working directory,
  the umask, ``sys.path``, the resource limits that matter to later jobs (``LIMITS``), the nice
  value and the CPU affinity go back to the worker's own.

Each returns None, or why the worker cannot be put back (a process that cannot be killed, a
thread still running; a limit whose hard value was lowered or a nice value raised, without the
privilege to undo it): then the worker must be replaced. The job's outcome stands either way.

Not reset: module state (globals, caches, imported modules), signal handlers and the signal mask,
the limits that do not matter to later jobs, credentials and capabilities a root worker may drop.
When nothing changed, the two steps cost 16 system calls (4 before the reply) and about 20 us of
the worker's time; the slow paths run only on a change.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import sys
import threading
import time
from typing import Any, Final

from ._worker import stat_fields

__all__ = ["LIMITS", "WorkerState", "become_subreaper"]

#: The resource limits that, lowered by a job, would break later ones (address space, CPU time,
#: heap, file size, locked memory, open files, processes, stack), by name. The others (core
#: dumps, message queues, nice and real-time priority, queued signals, RSS, which Linux ignores)
#: are left as they are: checking one costs a system call per job.
LIMITS: Final = {
    name: getattr(resource, name)
    for name in (
        "RLIMIT_AS",
        "RLIMIT_CPU",
        "RLIMIT_DATA",
        "RLIMIT_FSIZE",
        "RLIMIT_MEMLOCK",
        "RLIMIT_NOFILE",
        "RLIMIT_NPROC",
        "RLIMIT_STACK",
    )
    if hasattr(resource, name)
}
_TIMERS: Final = tuple(
    getattr(signal, name)
    for name in ("ITIMER_REAL", "ITIMER_VIRTUAL", "ITIMER_PROF")
    if hasattr(signal, name)
)
#: How long the processes a job left get to die after SIGKILL before the worker gives up on them.
_PROCESS_GRACE_S: Final = 2.0
#: How long the threads a job left get to end on their own.
_THREAD_GRACE_S: Final = 0.1
_PR_SET_CHILD_SUBREAPER: Final = 36


def become_subreaper() -> None:
    """Make orphaned descendants children of this process (Linux), so ``end_job`` finds them."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


class WorkerState:
    """The state of this process before its first job; ``end_job()`` and ``restore()`` bring
    it back after each (see the module docstring)."""

    def __init__(self) -> None:
        self.environ = os.environ.copy()
        self._environ_data = dict(_environ_data())
        self._c_environ = _CEnvironment.find()
        self._directory = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
        self.umask = os.umask(0o022)
        os.umask(self.umask)
        self.sys_path = list(sys.path)
        self._limit_numbers = tuple(LIMITS.values())
        self._limit_values = [resource.getrlimit(number) for number in self._limit_numbers]
        self.limits = dict(zip(self._limit_numbers, self._limit_values, strict=True))
        self.nice = os.getpriority(os.PRIO_PROCESS, 0)
        self.affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        self._threads = frozenset(threading.enumerate())

    def address_space_limit(self, size: int) -> tuple[int, int]:
        """The ``RLIMIT_AS`` for a job that may take ``size`` bytes of address space: within the
        worker's own limits (never looser), whatever an earlier job did."""
        soft, hard = self.limits[resource.RLIMIT_AS]
        for cap in (soft, hard):
            if cap != resource.RLIM_INFINITY:
                size = min(size, cap)
        return size, hard

    def end_job(self) -> str | None:
        """End what the job left running (before its reply): None when done, else why that is
        not possible (then the worker must be replaced)."""
        for timer in _TIMERS:
            signal.setitimer(timer, 0)
        if _has_children():
            reason = _end_processes()
            if reason is not None:
                return reason
        if threading.active_count() > len(self._threads):
            return self._end_threads()
        return None

    def restore(self) -> str | None:
        """Set back what the job changed (before the next job): None when done, else why that
        is not possible (then the worker must be replaced). Each thing is looked at with one
        comparison or system call; the work is done only where something changed."""
        c_environ = self._c_environ
        if _environ_data() != self._environ_data or (c_environ and c_environ.changed()):
            os.environ.clear()
            os.environ.update(self.environ)
            if c_environ is not None and c_environ.changed() and not c_environ.restore():
                return "a job changed its environment (the C library's environ) for good"
        try:
            os.fchdir(self._directory)
        except OSError as exc:
            return f"its working directory cannot be set back ({exc})"
        os.umask(self.umask)
        if sys.path != self.sys_path:
            sys.path[:] = self.sys_path
        if list(map(resource.getrlimit, self._limit_numbers)) != self._limit_values:
            reason = self._restore_limits()
            if reason is not None:
                return reason
        if os.getpriority(os.PRIO_PROCESS, 0) != self.nice or (
            self.affinity is not None and os.sched_getaffinity(0) != self.affinity
        ):
            return self._restore_scheduling()
        return None

    def _end_threads(self) -> str | None:
        started = [thread for thread in threading.enumerate() if thread not in self._threads]
        deadline = time.monotonic() + _THREAD_GRACE_S
        for thread in started:  # (a thread started outside threading cannot be joined)
            with contextlib.suppress(RuntimeError, AssertionError):
                thread.join(max(0.0, deadline - time.monotonic()))
        running = [thread.name for thread in started if thread.is_alive()]
        if running:
            return f"the job left {len(running)} thread(s) running ({', '.join(running[:5])})"
        return None

    def _restore_limits(self) -> str | None:
        for name, number in LIMITS.items():
            value = self.limits[number]
            current = resource.getrlimit(number)
            if current == value:
                continue
            try:
                resource.setrlimit(number, value)
            except (ValueError, OSError) as exc:
                return (
                    f"a job changed its {name} to {_limit_text(current)}, which cannot be set "
                    f"back to {_limit_text(value)} ({exc})"
                )
        return None

    def _restore_scheduling(self) -> str | None:
        if os.getpriority(os.PRIO_PROCESS, 0) != self.nice:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, self.nice)
            except OSError as exc:
                return f"a job raised its nice value, which cannot be set back ({exc})"
        if self.affinity is not None and os.sched_getaffinity(0) != self.affinity:
            try:
                os.sched_setaffinity(0, self.affinity)
            except OSError as exc:
                return f"a job changed its CPU affinity, which cannot be set back ({exc})"
        return None


def _environ_data() -> Any:
    """What ``os.environ`` holds: CPython's store behind it (compared in well under a
    microsecond), or the mapping itself elsewhere."""
    return getattr(os.environ, "_data", os.environ)


def _limit_text(value: tuple[int, int]) -> str:
    """``(soft, hard)`` with ``unlimited`` spelled out."""
    text = ("unlimited" if v == resource.RLIM_INFINITY else str(v) for v in value)
    return f"({', '.join(text)})"


class _CEnvironment:
    """The C library's ``environ``: ``os.putenv``, ``os.unsetenv`` and C code change it without
    ``os.environ`` knowing, and child processes inherit it. A change is seen cheaply: every
    ``setenv``/``unsetenv`` moves the array or rewrites one of its pointers."""

    def __init__(self, pointer: ctypes.c_void_p) -> None:
        self._pointer = pointer
        self.entries = self._read()
        self._mark = self._snapshot()

    @classmethod
    def find(cls) -> _CEnvironment | None:
        """The C library's environment, or None where it cannot be reached."""
        try:
            return cls(ctypes.c_void_p.in_dll(ctypes.CDLL(None), "environ"))
        except (OSError, ValueError, AttributeError):  # pragma: no cover - no such symbol
            return None

    def _array(self) -> list[bytes]:
        address = self._pointer.value
        if not address:
            return []
        array = ctypes.cast(address, ctypes.POINTER(ctypes.c_char_p))
        entries: list[bytes] = []
        while (entry := array[len(entries)]) is not None:
            entries.append(entry)
        return entries

    def _read(self) -> dict[bytes, bytes]:
        entries: dict[bytes, bytes] = {}
        for entry in self._array():
            name, _, value = entry.partition(b"=")
            entries.setdefault(name, value)
        return entries

    def _snapshot(self) -> tuple[int | None, Any, bytes]:
        """The array's address, a view of its pointers and their value."""
        address = self._pointer.value
        if not address:
            return None, None, b""
        view = (ctypes.c_void_p * (len(self._array()) + 1)).from_address(address)
        return address, view, bytes(view)

    def changed(self) -> bool:
        """Whether the environment may differ from the recorded one."""
        address, view, pointers = self._mark
        if self._pointer.value != address:
            return True
        # Same array: it never shrinks, so reading its recorded length is safe.
        return view is not None and bytes(view) != pointers

    def restore(self) -> bool:
        """Set the recorded environment back; True if it now matches."""
        current = self._read()
        for name in current.keys() - self.entries.keys():
            os.unsetenv(name)
        for name, value in self.entries.items():
            if current.get(name) != value:
                os.putenv(name, value)
        self._mark = self._snapshot()
        return self._read() == self.entries


def _has_children() -> bool:
    """Whether this process has a child, running or not yet reaped (one system call)."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def _reap() -> None:
    """Reap every child that has exited."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _left_running() -> list[int]:
    """The live processes descended from this one or in its process group, but itself (one
    pass over /proc)."""
    me = os.getpid()
    group = os.getpgrp()
    children: dict[int, list[int]] = {}
    ours: set[int] = set()
    with contextlib.suppress(OSError), os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            fields = stat_fields(entry.name)
            if fields is None or fields[0] in (b"Z", b"X"):
                continue
            pid = int(entry.name)
            children.setdefault(int(fields[1]), []).append(pid)
            if int(fields[2]) == group:
                ours.add(pid)
    parents = [me]
    while parents:
        found = children.get(parents.pop(), [])
        ours.update(found)
        parents.extend(found)
    return sorted(ours)


def _end_processes() -> str | None:
    """Kill and reap every process the job left running (called when this process has
    children: a subreaper without children has no descendants at all); None once they are all
    gone, else why not."""
    deadline = time.monotonic() + _PROCESS_GRACE_S
    pause = 0.001
    while True:
        _reap()
        left = _left_running()
        if not left and not _has_children():
            return None
        if time.monotonic() >= deadline:
            return f"processes the job started could not be killed (pids {left[:10]})"
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(pause)
        pause = min(pause * 2, 0.05)

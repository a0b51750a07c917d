"""The child side of the process backend: the worker loop that runs one job at a time in its own
process.

A worker is started by ``ProcessBackend`` as ``python -c <bootstrap>`` in a new session (so it
leads its own process group), with two inherited pipe descriptors: requests come in on one,
replies go out on the other, in the wire format of ``_worker_wire``. The worker's stdin is
``/dev/null``; its stdout and stderr are the scheduler's, so what a handler prints shows up where
the scheduler's output goes. The Job is decoded here into a ``work.Job``; a handler's result is
checked here the same way the engine checks a local handler's.

Isolation (``_worker_reset``): what a job left running (processes, threads, timers) ends before
its reply; what it changed (environment, working directory, limits...) is set back after the
reply, before the next request is read. When the former fails, a ``Recycle`` message before the
reply asks the parent to replace the worker; when the latter fails, the worker answers the next
request with ``Refused`` instead of running it, and the parent runs that job on another worker.

Memory: a handler job with ``memory_mb`` runs under an address-space limit (``RLIMIT_AS``) of the
worker's size before the call plus ``memory_mb`` (within the worker's own limit); a
``MemoryError`` anywhere in what it raises is reported as the limit being exceeded. A command
runs in the worker's process group (so killing the group kills it and what it started), without
an address-space limit (the parent watches the group's resident memory).

The parent kills a worker with ``SIGKILL`` to its process group (cancel, timeout, memory watch);
a worker (and a command it runs) also dies with its parent thread (``PR_SET_PDEATHSIG``), so a
scheduler that crashes does not leave them running. Linux; elsewhere on POSIX the memory watch,
the crash reports and the parent-death signal are missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import faulthandler
import importlib
import os
import selectors
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any, Final

import msgspec
from msgspec import Raw

from .._context import JobContext
from .._errors import ValidationError
from .._handlers import RegisteredFunction
from .._ir import Job
from .._validate import check_json
from ._worker_wire import (
    LENGTH,
    CommandDone,
    Heartbeat,
    Hello,
    MemoryExceeded,
    Ok,
    ProgressReport,
    Recycle,
    Refused,
    Request,
    RunCommand,
    RunHandler,
    Started,
    describe,
    error_reply,
    format_exception,
    frame,
)

__all__ = ["BOOTSTRAP", "group_usage", "main", "rss_mb", "stat_fields"]

MB: Final = 1024 * 1024
_PAGE: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

#: What the parent runs with ``python -c``: apply the parent's sys.path before importing anything
#: of ours, so the worker imports nsai_work (and the handlers' modules) from where the parent does.
BOOTSTRAP: Final = (
    "import json, os, sys\n"
    "sys.path[:] = json.loads(os.environ.pop('NSAI_WORK_SYS_PATH'))\n"
    "from nsai_work.backends._worker import main\n"
    "main(sys.argv[1:])\n"
)


# ---- /proc ----------------------------------------------------------------------------------


def stat_fields(pid: int | str) -> list[bytes] | None:
    """Fields 3.. of /proc/<pid>/stat (after the command name, which may contain spaces):
    ``[state, ppid, pgrp, ...]``; None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2 :].split()


def rss_mb(pid: int) -> float:
    """Resident memory of one process, in MB (0 if it is gone)."""
    fields = stat_fields(pid)
    return int(fields[21]) * _PAGE / MB if fields else 0.0


def _vm_mb() -> float:
    """This process's address-space size, in MB."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[0]) * _PAGE / MB


def group_usage(groups: set[int]) -> dict[int, float]:
    """Resident memory in MB summed over the processes of each process group in ``groups``
    (one pass over /proc). Shared pages count once per process."""
    usage = dict.fromkeys(groups, 0.0)
    try:
        entries = os.scandir("/proc")
    except OSError:  # pragma: no cover - no procfs
        return usage
    with entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            fields = stat_fields(entry.name)
            if fields is None:
                continue
            group = int(fields[2])
            if group in usage:
                usage[group] += int(fields[21]) * _PAGE / MB
    return usage


# ---- the worker -----------------------------------------------------------------------------


def _find_prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError, TypeError):  # pragma: no cover - not Linux
        return None


_PRCTL: Final = _find_prctl()
_PR_SET_PDEATHSIG: Final = 1
_SIGKILL: Final = int(getattr(signal, "SIGKILL", 9))


def _set_parent_death_signal() -> None:
    """Die with the parent thread (Linux ``PR_SET_PDEATHSIG``); nothing elsewhere. Also runs in
    a command's forked child before exec, so it only calls the pre-bound C function."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)


class _Channel:
    """Framed JSON over the two pipes; writes are serialized (a handler's threads may report
    progress)."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.lock = threading.Lock()
        self.encoder = msgspec.json.Encoder()
        self.decoder: msgspec.json.Decoder[RunHandler | RunCommand] = msgspec.json.Decoder(Request)

    def send(self, message: Any) -> None:
        data = frame(self.encoder.encode(message))
        with self.lock:
            view = memoryview(data)
            while view:
                written = os.write(self.write_fd, view)
                view = view[written:]

    def _read_exactly(self, size: int) -> bytes | None:
        chunks = bytearray()
        while len(chunks) < size:
            chunk = os.read(self.read_fd, size - len(chunks))
            if not chunk:
                return None
            chunks += chunk
        return bytes(chunks)

    def receive(self) -> RunHandler | RunCommand | None:
        """The next request, or None when the parent closed the pipe."""
        header = self._read_exactly(LENGTH)
        if header is None:
            return None
        body = self._read_exactly(int.from_bytes(header, "big"))
        if body is None:
            return None
        return self.decoder.decode(body)


class _WorkerContext(JobContext):
    """The JobContext a handler gets in a worker: progress and heartbeats go to the scheduler.
    ``cancelled`` stays False: a canceled run's process is killed, it is not asked to stop."""

    __slots__ = ("_channel",)

    def __init__(self, job: Job, channel: _Channel) -> None:
        super().__init__(job)
        self._channel = channel

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress; the scheduler's ``get(job_id)`` shows it while the job runs."""
        super().progress(fraction, message)
        self._channel.send(ProgressReport(fraction=float(fraction), message=message))

    def heartbeat(self) -> None:
        """Say the run is alive."""
        super().heartbeat()
        self._channel.send(Heartbeat())


def _memoryerror_reply(exc: BaseException) -> MemoryError | None:
    """The ``MemoryError`` in ``exc`` or its causes, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, MemoryError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class Worker:
    """The loop of one worker process."""

    def __init__(self, channel: _Channel) -> None:
        from ._worker_reset import WorkerState  # POSIX only, like resource: the worker's side

        self.channel = channel
        self.functions: dict[str, RegisteredFunction] = {}
        self.encoder = msgspec.json.Encoder()
        self.state = WorkerState()

    def serve(self) -> None:
        self.channel.send(Hello(pid=os.getpid()))
        unusable: str | None = None  # why the worker cannot run another job
        while True:
            request = self.channel.receive()
            if request is None:
                return
            if unusable is not None:
                self.channel.send(Refused(reason=unusable))
                continue
            if type(request) is RunHandler:
                reply = self.run_handler(request)
            else:
                assert isinstance(request, RunCommand)
                reply = self.run_command(request)
            # What the job left running ends before its reply (the run ends with it), what it
            # changed is set back after the reply: the next job finds the worker as it started.
            state = self.state
            ended = _guarded(state.end_job)
            if ended is not None:
                self.channel.send(Recycle(reason=ended))
            self.channel.send(reply)
            unusable = ended or _guarded(state.restore)

    # ---- handlers -----------------------------------------------------------------------------

    def resolve(self, ref: str, kind: str) -> RegisteredFunction:
        function = self.functions.get(ref)
        if function is None:
            module_name, _, qualname = ref.partition(":")
            target: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                target = getattr(target, part)
            function = self.functions[ref] = RegisteredFunction(kind, target, max_args=2)
        return function

    def run_handler(self, request: RunHandler) -> Any:
        import resource  # POSIX only: imported where it is used, so importing this module works

        if request.sys_path is not None:
            sys.path[:] = request.sys_path
            self.state.sys_path = list(request.sys_path)
            importlib.invalidate_caches()
        job = request.job
        try:
            function = self.resolve(request.ref, job.kind)
        except BaseException as exc:
            error = error_reply(exc, retryable=False)
            error.message = (
                f"the worker process could not load the handler {request.ref} of kind "
                f"{job.kind!r}: {error.qualname}: {error.message} (workers import handlers by "
                f"module:qualname with the scheduler's sys.path; is the module importable from "
                f"a fresh interpreter?)"
            )
            return error
        ctx = _WorkerContext(job, self.channel)
        if request.upstream is not None:
            ctx._upstream = request.upstream
        args = (job, ctx) if function.takes_context else (job,)
        limit = request.memory_mb or None
        limited = limit is not None and request.limit_address_space
        base_vm = ceiling_mb = 0.0
        if limit is not None:
            if limited:
                base_vm = _vm_mb()
                ceiling = self.state.address_space_limit(int((base_vm + limit) * MB))
                resource.setrlimit(resource.RLIMIT_AS, ceiling)
                ceiling_mb = ceiling[0] / MB
            self.channel.send(Started(rss_mb=rss_mb(os.getpid())))
        outcome: Any
        try:
            result = function.fn(*args)
            if function.is_async:  # on a loop of its own: the tasks it leaves there end with it
                result = asyncio.run(result)
            outcome = ("ok", result)
        except BaseException as exc:
            if limited:  # lift the limit first: what follows allocates
                self._lift_address_space_limit()
            memory_error = _memoryerror_reply(exc) if limited else None
            if memory_error is not None:
                # The frames of the traceback still hold what the job allocated: measure now.
                vm = _vm_mb()
                outcome = (
                    "memory",
                    MemoryExceeded(
                        used_mb=max(0.0, vm - base_vm),
                        limit_mb=limit or 0,
                        traceback=format_exception(exc),
                        left_mb=max(0.0, ceiling_mb - vm),
                        message=describe(memory_error),
                    ),
                )
                del memory_error
            else:
                outcome = ("error", error_reply(exc))
            del exc
        finally:
            if limited:
                self._lift_address_space_limit()
        del args, ctx
        if outcome[0] != "ok":
            return outcome[1]
        return self.encode_result(outcome[1])

    def _lift_address_space_limit(self) -> None:
        """Back to the worker's own ``RLIMIT_AS`` (if the job lowered its hard limit, that fails
        here, and ``restore()`` after the job finds the worker cannot be put back)."""
        import resource

        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, self.state.limits[resource.RLIMIT_AS])

    def encode_result(self, result: Any) -> Any:
        try:
            check_json(result, "$.result", what="a handler's result")
            return Ok(result=Raw(self.encoder.encode(result)))
        except ValidationError as exc:
            return error_reply(exc, retryable=False)
        except Exception as exc:  # pragma: no cover - check_json let through what cannot encode
            return error_reply(exc, retryable=False)

    # ---- commands -----------------------------------------------------------------------------

    def run_command(self, request: RunCommand) -> Any:
        env = None
        if request.env:
            env = {**os.environ, **request.env}
        if request.memory_mb:
            self.channel.send(Started(rss_mb=rss_mb(os.getpid())))
        try:
            process = subprocess.Popen(
                request.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=request.cwd,
                close_fds=True,
                preexec_fn=_set_parent_death_signal,
            )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            error = error_reply(exc, retryable=False)
            error.message = (
                f"the command could not be started: {error.message} (argv[0]={request.argv[0]!r}"
                f"{f', cwd={request.cwd!r}' if request.cwd else ''}; is the program installed "
                f"and on PATH, and does the directory exist?)"
            )
            return error
        tails = _collect(process, request.tail_bytes)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out, err = tails
        code = process.returncode
        return CommandDone(
            exit_code=code if code >= 0 else None,
            signal=-code if code < 0 else None,
            stdout_tail=out.tail.decode("utf-8", "replace"),
            stderr_tail=err.tail.decode("utf-8", "replace"),
            stdout_bytes=out.total,
            stderr_bytes=err.total,
            max_rss_mb=round(usage.ru_maxrss / 1024, 1),
        )


class _Tail:
    __slots__ = ("keep", "tail", "total")

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self.tail += chunk
        if len(self.tail) > self.keep:
            del self.tail[: len(self.tail) - self.keep]


def _collect(process: subprocess.Popen[bytes], keep: int) -> tuple[_Tail, _Tail]:
    """Read the command's stdout and stderr, keeping the last ``keep`` bytes of each, until both
    pipes are closed, or the command has exited and what it wrote is drained (processes it left
    behind that keep the pipes open do not hold the job)."""
    assert process.stdout is not None
    assert process.stderr is not None
    tails = (_Tail(keep), _Tail(keep))
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ, tails[0])
    selector.register(process.stderr, selectors.EVENT_READ, tails[1])
    exit_fd: int | None = None
    with contextlib.suppress(OSError, AttributeError):
        exit_fd = os.pidfd_open(process.pid)
        selector.register(exit_fd, selectors.EVENT_READ, None)
    open_pipes, exited = 2, False
    try:
        while open_pipes:
            events = selector.select(0 if exited else None)
            if not events and exited:
                break
            for key, _ in events:
                if key.data is None:
                    exited = True
                    selector.unregister(key.fileobj)
                    continue
                chunk = os.read(key.fd, 65536)
                if chunk:
                    key.data.add(chunk)
                else:
                    selector.unregister(key.fileobj)
                    open_pipes -= 1
    finally:
        selector.close()
        if exit_fd is not None:
            os.close(exit_fd)
        process.stdout.close()
        process.stderr.close()
    return tails


def _guarded(step: Callable[[], str | None]) -> str | None:
    """A step of putting the worker back: its reason not to go on, also when it breaks."""
    try:
        return step()
    except Exception as exc:  # pragma: no cover - a step that breaks must not go unnoticed
        return f"putting the worker back in its starting state failed: {exc!r}"


def main(argv: list[str]) -> None:
    """Entry point: ``main([request_fd, reply_fd, parent_pid, crash_fd])``."""
    request_fd, reply_fd, parent_pid = int(argv[0]), int(argv[1]), int(argv[2])
    crash_fd = int(argv[3]) if len(argv) > 3 else -1
    from ._worker_reset import become_subreaper

    _set_parent_death_signal()
    become_subreaper()
    if os.getppid() != parent_pid:  # the parent died before we could ask to die with it
        os._exit(1)
    if crash_fd >= 0:
        faulthandler.enable(file=crash_fd, all_threads=True)
    Worker(_Channel(request_fd, reply_fd)).serve()

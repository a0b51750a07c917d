"""A worker process of the process backend, seen from the scheduler: its pipes (read with
``loop.add_reader``), its pidfd (readable when it exits), its current run, whether it asked to be
replaced (``recycle_reason``), and how it is killed (``SIGKILL`` to its process group) and
reaped. The child side is ``_worker``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec

from .._errors import ValidationError
from ._worker import BOOTSTRAP
from ._worker_wire import Heartbeat, Hello, ProgressReport, Recycle, Started

if TYPE_CHECKING:
    from .._context import JobContext

__all__ = [
    "EXIT_GRACE_S",
    "Exited",
    "MemoryKilled",
    "Owner",
    "Run",
    "WorkerProcess",
    "sys_path_for_workers",
    "until_exited",
]

_log = logging.getLogger("nsai_work.backends.process")

#: How long to wait for a killed or closing worker to exit before giving up on it.
EXIT_GRACE_S: Final = 5.0


class Owner(Protocol):
    """What a worker tells its pool."""

    def _worker_ready(self, worker: WorkerProcess) -> None: ...

    def _worker_exited(self, worker: WorkerProcess, returncode: int) -> None: ...

    def _worker_started(self, worker: WorkerProcess, run: Run) -> None: ...


class Exited:
    """The worker died before replying."""

    __slots__ = ("crash_report", "kill_reason", "returncode")

    def __init__(self, returncode: int, kill_reason: str | None, crash_report: str) -> None:
        self.returncode = returncode
        self.kill_reason = kill_reason
        self.crash_report = crash_report


class MemoryKilled:
    """The memory watch killed the job's processes."""

    __slots__ = ("limit_mb", "used_mb")

    def __init__(self, used_mb: float, limit_mb: int) -> None:
        self.used_mb = used_mb
        self.limit_mb = limit_mb


class Run:
    """One job on one worker: where its replies go."""

    __slots__ = ("baseline_mb", "ctx", "future", "limit_mb")

    def __init__(self, ctx: JobContext, future: asyncio.Future[Any], limit_mb: int | None) -> None:
        self.ctx = ctx
        self.future = future
        self.limit_mb = limit_mb
        self.baseline_mb = 0.0


class WorkerProcess:
    """A worker process: its pipes, its pidfd, its current run."""

    def __init__(
        self, owner: Owner, loop: asyncio.AbstractEventLoop, decoder: msgspec.json.Decoder[Any]
    ) -> None:
        self.owner = owner
        self.decoder = decoder
        self.loop = loop
        self.run: Run | None = None
        self.ready = False
        self.dead = False
        self.kill_reason: str | None = None
        #: Why the worker could not put itself back in its starting state after a job (it is
        #: replaced once that job's reply is handled).
        self.recycle_reason: str | None = None
        self.synced_path = list(sys.path)
        self.exited: asyncio.Future[int] = loop.create_future()
        self._buffer = bytearray()
        self._pending = bytearray()
        self._crash_fd = -1
        with contextlib.suppress(OSError, AttributeError):
            self._crash_fd = os.memfd_create("nsai-work-worker-crash")
        request_read, self._request_fd = os.pipe()
        self._reply_fd, reply_write = os.pipe()
        inherited: tuple[int, ...] = (request_read, reply_write)
        if self._crash_fd >= 0:
            inherited += (self._crash_fd,)
        env = {**os.environ, "NSAI_WORK_SYS_PATH": json.dumps(sys_path_for_workers())}
        argv = [sys.executable, "-c", BOOTSTRAP, str(request_read), str(reply_write)]
        argv += [str(os.getpid()), str(self._crash_fd)]
        try:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                pass_fds=inherited,
                start_new_session=True,
                env=env,
            )
        except BaseException:
            for fd in (*inherited, self._request_fd, self._reply_fd):
                os.close(fd)
            raise
        os.close(request_read)
        os.close(reply_write)
        self.pid = self.process.pid
        os.set_blocking(self._request_fd, False)
        os.set_blocking(self._reply_fd, False)
        loop.add_reader(self._reply_fd, self._on_readable)
        self._pidfd = -1
        try:
            self._pidfd = os.pidfd_open(self.pid)
            loop.add_reader(self._pidfd, self._on_exit)
        except (OSError, AttributeError):  # pragma: no cover - no pidfd: poll after the EOF
            self._pidfd = -1

    # ---- sending ------------------------------------------------------------------------------

    def begin(self, run: Run, data: bytes) -> None:
        self.run = run
        self.send(data)

    def send(self, data: bytes) -> None:
        if self.dead or self._request_fd < 0:
            return
        if self._pending:
            self._pending += data
            return
        try:
            written = os.write(self._request_fd, data)
        except BlockingIOError:
            written = 0
        except OSError:  # the worker is gone: its exit fails the run
            return
        if written < len(data):
            self._pending += data[written:]
            self.loop.add_writer(self._request_fd, self._flush)

    def _flush(self) -> None:
        try:
            written = os.write(self._request_fd, self._pending)
        except BlockingIOError:
            return
        except OSError:
            written = len(self._pending)
        del self._pending[:written]
        if not self._pending:
            self.loop.remove_writer(self._request_fd)

    def close_requests(self) -> None:
        """No more jobs: the worker reads end-of-file and exits."""
        if self._request_fd >= 0:
            self.loop.remove_writer(self._request_fd)
            os.close(self._request_fd)
            self._request_fd = -1

    # ---- receiving ----------------------------------------------------------------------------

    def _on_readable(self) -> None:
        self._read(drain=False)

    def _read(self, *, drain: bool) -> None:
        while self._reply_fd >= 0:
            try:
                data = os.read(self._reply_fd, 1 << 16)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.loop.remove_reader(self._reply_fd)
                os.close(self._reply_fd)
                self._reply_fd = -1
                if self._pidfd < 0:  # pragma: no cover - no pidfd: poll for the exit
                    self.loop.call_soon(self._poll_exit)
                return
            self._buffer += data
            self._parse()
            if not drain:
                return

    def _parse(self) -> None:
        buffer = self._buffer
        decode = self.decoder.decode
        start = 0
        while len(buffer) - start >= 4:
            size = int.from_bytes(buffer[start : start + 4], "big")
            end = start + 4 + size
            if len(buffer) < end:
                break
            try:
                message = decode(bytes(buffer[start + 4 : end]))
            except msgspec.DecodeError:
                _log.exception("process worker %d sent an unreadable message; killing it", self.pid)
                del buffer[:]
                self.kill("protocol")
                return
            self._on_message(message)
            start = end
        if start:
            del buffer[:start]

    def _on_message(self, message: Any) -> None:
        kind = type(message)
        run = self.run
        if kind is Hello:
            self.ready = True
            self.owner._worker_ready(self)
        elif kind is Recycle:
            self.recycle_reason = message.reason
        elif run is None:
            return
        elif kind is ProgressReport:
            with contextlib.suppress(ValidationError):
                run.ctx.progress(message.fraction, message.message)
        elif kind is Heartbeat:
            run.ctx.heartbeat()
        elif kind is Started:
            run.baseline_mb = message.rss_mb
            self.owner._worker_started(self, run)
        elif not run.future.done():
            run.future.set_result(message)

    # ---- ending -------------------------------------------------------------------------------

    def kill(self, reason: str) -> None:
        """SIGKILL the worker's process group (the worker and whatever it started)."""
        if self.dead:
            return
        if self.kill_reason is None:
            self.kill_reason = reason
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def _on_exit(self) -> None:
        """The pidfd is readable: the worker has exited (not yet reaped, so its pid, which is
        also its group's id, cannot be reused): kill what is left of its group, then reap."""
        self.loop.remove_reader(self._pidfd)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        returncode = self.process.poll()
        if returncode is None:  # pragma: no cover - readable pidfd means it has exited
            returncode = self.process.wait()
        os.close(self._pidfd)
        self._pidfd = -1
        self._died(returncode)

    def _poll_exit(self) -> None:  # pragma: no cover - only without pidfd
        returncode = self.process.poll()
        if returncode is None:
            self.loop.call_later(0.005, self._poll_exit)
        else:
            self._died(returncode)

    def _died(self, returncode: int) -> None:
        self._read(drain=True)  # replies written before the exit
        if self._reply_fd >= 0:
            self.loop.remove_reader(self._reply_fd)
            os.close(self._reply_fd)
            self._reply_fd = -1
        self.close_requests()
        report = ""
        if self._crash_fd >= 0:
            if returncode < 0:
                with contextlib.suppress(OSError):
                    report = os.pread(self._crash_fd, 1 << 16, 0).decode("utf-8", "replace")
            os.close(self._crash_fd)
            self._crash_fd = -1
        self.dead = True
        run = self.run
        if run is not None and not run.future.done():
            run.future.set_result(Exited(returncode, self.kill_reason, report))
        self.exited.set_result(returncode)
        self.owner._worker_exited(self, returncode)


def sys_path_for_workers() -> list[str]:
    """The scheduler's sys.path, with '' (the current directory) spelled out."""
    cwd = os.getcwd()
    return [
        cwd if entry == "" else os.fspath(entry)
        for entry in sys.path
        if isinstance(entry, str | os.PathLike)
    ]


async def until_exited(worker: WorkerProcess) -> None:
    """Wait for a killed worker to be gone; a cancellation meanwhile is re-raised after."""
    cancelled = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + EXIT_GRACE_S
    while not worker.exited.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            _log.error(
                "process worker %d did not exit %.0f s after SIGKILL", worker.pid, EXIT_GRACE_S
            )
            break
        try:
            await asyncio.wait([worker.exited], timeout=remaining)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError

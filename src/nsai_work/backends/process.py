"""The process backend: jobs run in a pool of worker processes that can be killed.

``ProcessBackend`` keeps ``workers`` pre-started Python processes and runs one job at a time in
each. A handler is known by ``module:qualname`` (the worker imports it), so it must be a
module-level function of an importable module; ``kind="command"`` runs an executable. Each
worker leads its own process group: cancel and timeout kill the group (the worker, a command and
everything they started) with ``SIGKILL``, and the pool starts a replacement. A worker that dies
(a segfault, ``os._exit``) fails only its own job. Every job starts from the worker's starting
state: after each job the worker kills what the job left running and restores its environment,
working directory and limits (``_worker_reset``). A worker that cannot (a thread still running, a
limit it may not raise back) is replaced; the job's outcome stands, and a job sent to a worker
that found it cannot be put back runs on another worker. ``resources.memory_mb`` is enforced: an
address-space limit around a handler's call, and a watch on the resident memory of the worker's
process group; going over fails the job with a ``MemoryLimitError``.

Why ``subprocess`` and a pipe protocol rather than ``multiprocessing``: each worker needs its
own session (to kill its group), its own inherited descriptors and nothing else, and must never
import the user's ``__main__`` again (``spawn`` and ``forkserver`` re-run an unguarded script;
``fork`` from the engine's threaded process is unsafe). Messages are length-prefixed JSON
(msgspec) over two pipes read with ``loop.add_reader``; the worker's exit is seen through a
pidfd. The child side is ``nsai_work.backends._worker``; the messages are in ``_worker_wire``.

Routing: ``supports(job)`` is True for ``kind="command"`` and for kinds whose registered handler
is importable by ``module:qualname`` (``kinds=`` narrows both). The local backend also runs
registered handlers and comes first in the usual order, so a handler job goes to the process
backend when the job names it (``constraints.backend="process"``), when the process backend is
listed before ``"local"`` in ``backends``, or when it is the ``default_backend``. A job that
names this backend with a handler that cannot cross the process boundary is rejected at submit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

import msgspec

from .._errors import BackendError, ConfigurationError, NonRetryableError, ValidationError
from .._handlers import HandlerRegistry, default_handlers, describe_callable
from .._ir import Pool
from ._machine import machine_cpu, machine_memory_mb
from ._process_boundary import (
    COMMAND_KIND,
    CommandFailedError,
    MemoryLimitError,
    RemoteError,
    RemoteTraceback,
    WorkerCrashedError,
    check_command,
    command_result,
    exit_text,
    handler_reference,
    lost_run_error,
    remote_exception,
)
from ._process_worker import (
    EXIT_GRACE_S,
    MemoryKilled,
    Run,
    WorkerProcess,
    sys_path_for_workers,
    until_exited,
)
from ._worker import group_usage
from ._worker_wire import (
    CommandDone,
    Err,
    Ok,
    Refused,
    Reply,
    RunCommand,
    RunHandler,
    frame,
)

if TYPE_CHECKING:
    from .._context import JobContext
    from .._handlers import RegisteredFunction
    from .._ir import Job

__all__ = [
    "COMMAND_KIND",
    "CommandFailedError",
    "MemoryLimitError",
    "ProcessBackend",
    "RemoteError",
    "RemoteTraceback",
    "WorkerCrashedError",
]

_log = logging.getLogger("nsai_work.backends.process")

#: Consecutive workers that may die before saying hello before waiting jobs are failed.
_MAX_START_FAILURES: Final = 3
#: How long ``stop`` lets idle workers exit on their own before killing them.
_STOP_GRACE_S: Final = 1.0


class ProcessBackend:
    """Run jobs in a pool of killable worker processes (see the module docstring).

    - ``workers``: processes in the pool (default: the usable cores); the pool has that many
      slots.
    - ``cpu`` / ``memory_mb``: the pool's capacity (default: the cores and the RAM), from which
      jobs' ``resources.cpu`` and ``resources.memory_mb`` are reserved. ``cpu`` is a
      reservation, not a cap on what a process uses.
    - ``name``: the backend's and its pool's name.
    - ``kinds``: if given, only these kinds (include ``"command"`` to allow command jobs).
    - ``handlers``: the registry to look handlers up in (default: the process-wide one).
    - ``tail_bytes``: how much of the end of a command's stdout and stderr is kept.
    - ``memory_poll_s``: how often the resident memory of memory-limited jobs is sampled
      (None: no sampling, only the address-space limit of handler jobs).
    - ``limit_address_space``: put handler jobs with ``memory_mb`` under ``RLIMIT_AS`` (turn off
      for code that reserves much more address space than it uses, e.g. CUDA or JAX).
    - ``prestart``: start the workers with the scheduler (False: each starts when a job first
      needs it, so an unused backend costs no process).
    """

    auto_select = True

    def __init__(
        self,
        *,
        workers: int | None = None,
        cpu: float | None = None,
        memory_mb: int | None = None,
        name: str = "process",
        kinds: Iterable[str] | None = None,
        handlers: HandlerRegistry | None = None,
        tail_bytes: int = 4096,
        memory_poll_s: float | None = 0.05,
        limit_address_space: bool = True,
        prestart: bool = True,
    ) -> None:
        if workers is None:
            workers = max(1, int(machine_cpu()))
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ConfigurationError(f"workers must be an int >= 1, got {workers!r}")
        if cpu is not None and (not isinstance(cpu, int | float) or cpu <= 0):
            raise ConfigurationError(f"cpu must be a number > 0 or None (the cores), got {cpu!r}")
        if memory_mb is not None and (not isinstance(memory_mb, int) or memory_mb <= 0):
            raise ConfigurationError(
                f"memory_mb must be an int > 0 or None (the RAM), got {memory_mb!r}"
            )
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"name must be a non-empty string, got {name!r}")
        if not isinstance(tail_bytes, int) or tail_bytes < 0:
            raise ConfigurationError(f"tail_bytes must be an int >= 0, got {tail_bytes!r}")
        if memory_poll_s is not None and (
            not isinstance(memory_poll_s, int | float) or memory_poll_s <= 0
        ):
            raise ConfigurationError(
                f"memory_poll_s must be seconds > 0 or None, got {memory_poll_s!r}"
            )
        self.name = name
        self.workers = workers
        self.cpu = float(machine_cpu() if cpu is None else cpu)
        self.memory_mb = machine_memory_mb() if memory_mb is None else memory_mb
        self.kinds = None if kinds is None else frozenset(kinds)
        if self.kinds is not None and not all(isinstance(k, str) and k for k in self.kinds):
            raise ConfigurationError(
                f"kinds must be non-empty strings, got {sorted(map(str, self.kinds))}"
            )
        self.handlers = default_handlers() if handlers is None else handlers
        self.tail_bytes = tail_bytes
        self.memory_poll_s = memory_poll_s
        self.limit_address_space = bool(limit_address_space)
        self.prestart = bool(prestart)
        self._references: dict[str, tuple[Callable[..., Any], str | None, str | None]] = {}
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(Reply)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._pool: set[WorkerProcess] = set()
        self._idle: deque[WorkerProcess] = deque()
        self._waiters: deque[asyncio.Future[WorkerProcess]] = deque()
        self._pool_changed: list[asyncio.Future[None]] = []
        self._watched: dict[WorkerProcess, Run] = {}
        self._sampler: asyncio.Task[None] | None = None
        self._start_failures = 0
        self._last_start_failure = ""

    def __repr__(self) -> str:
        return f"ProcessBackend(name={self.name!r}, workers={self.workers})"

    # ---- what it runs -------------------------------------------------------------------------

    def _reference(self, kind: str, function: RegisteredFunction) -> tuple[str | None, str | None]:
        cached = self._references.get(kind)
        if cached is not None and cached[0] is function.fn:
            return cached[1], cached[2]
        reference, reason = handler_reference(function.fn)
        self._references[kind] = (function.fn, reference, reason)
        return reference, reason

    def supports(self, job: Job) -> bool:
        """True for command jobs and for kinds with an importable handler (within ``kinds``).

        A kind whose handler cannot cross the process boundary is supported only when the job
        names this backend, so that ``validate`` rejects it with the reason; otherwise the job
        is left to backends that run it in-process.
        """
        kind = job.kind
        if self.kinds is not None and kind not in self.kinds:
            return False
        if kind == COMMAND_KIND:
            return True
        function = self.handlers.get(kind)
        if function is None:
            return False
        reference, _ = self._reference(kind, function)
        return reference is not None or job.constraints.backend == self.name

    def explain(self, job: Job) -> str:
        """Why this backend does not run ``job``."""
        kind = job.kind
        if self.kinds is not None and kind not in self.kinds:
            return f"{self.name} runs only kinds {sorted(self.kinds)}, not {kind!r}"
        function = self.handlers.get(kind)
        if function is None:
            return (
                f"{self.name} runs kind 'command' and registered handlers; kind {kind!r} has no "
                f"handler (register a module-level function with @work.handler({kind!r}))"
            )
        _, reason = self._reference(kind, function)
        return f"{self.name} cannot import the handler of kind {kind!r}: it {reason}"

    def validate(self, job: Job) -> None:
        """Reject at submit what cannot cross the process boundary: a command without a valid
        argv, env or cwd, or a handler that a worker cannot import."""
        if job.kind == COMMAND_KIND:
            check_command(job)
            return
        function = self.handlers.get(job.kind)
        if function is None:
            return
        _, reason = self._reference(job.kind, function)
        if reason is not None:
            raise ValidationError(
                f"kind {job.kind!r} cannot run on the {self.name!r} backend: its handler "
                f"{describe_callable(function.fn)} {reason}",
                path="$.kind",
            )

    def pools(self) -> list[Pool]:
        """One pool, named after the backend: a slot per worker, the cores and the RAM."""
        return [
            Pool(
                name=self.name,
                slots=self.workers,
                cpu=self.cpu,
                memory_mb=self.memory_mb,
                labels={"runs": "processes"},
            )
        ]

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the workers (they get ready in the background; ``wait_ready`` waits), or with
        ``prestart=False`` only get ready to start them on demand."""
        loop = asyncio.get_running_loop()
        if self._running:
            if loop is not self._loop:
                raise BackendError(
                    f"this ProcessBackend ({self.name!r}) already runs for a scheduler on another "
                    f"event loop; give each scheduler its own ProcessBackend"
                )
            return
        self._loop = loop
        self._running = True
        self._start_failures = 0
        if self.prestart:
            for _ in range(self.workers):
                self._spawn()

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until all ``workers`` processes are up (started if needed); ``TimeoutError``
        after ``timeout`` seconds, ``BackendError`` if workers keep failing to start."""
        await self.start()
        async with asyncio.timeout(timeout):
            while sum(1 for worker in self._pool if worker.ready) < self.workers:
                if self._start_failures >= _MAX_START_FAILURES:
                    raise BackendError(self._start_failure_message())
                for _ in range(self.workers - len(self._pool)):
                    self._spawn()
                assert self._loop is not None
                changed = self._loop.create_future()
                self._pool_changed.append(changed)
                await changed

    async def stop(self) -> None:
        """Stop every worker: idle ones exit on end-of-file, busy ones are killed."""
        if not self._running:
            return
        self._running = False
        if self._sampler is not None:
            self._sampler.cancel()
            self._sampler = None
        self._watched.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(BackendError(f"the {self.name!r} backend was stopped"))
        workers = list(self._pool)
        for worker in workers:
            if worker.run is None:
                worker.close_requests()
            else:
                worker.kill("shutdown")
        pending = [worker.exited for worker in workers if not worker.exited.done()]
        if pending:  # an idle worker exits at once, unless its jobs left threads running
            await asyncio.wait(pending, timeout=_STOP_GRACE_S)
        for worker in workers:
            if not worker.exited.done():
                worker.kill("shutdown")
        pending = [worker.exited for worker in workers if not worker.exited.done()]
        if pending:
            await asyncio.wait(pending, timeout=EXIT_GRACE_S)
        self._idle.clear()

    def worker_pids(self) -> list[int]:
        """The pids of the live worker processes (each also its process group's id)."""
        return sorted(worker.pid for worker in self._pool if not worker.dead)

    def _spawn(self) -> None:
        assert self._loop is not None
        try:
            self._pool.add(WorkerProcess(self, self._loop, self._decoder))
        except OSError as exc:
            raise BackendError(
                f"the {self.name!r} backend could not start a worker process "
                f"(`{sys.executable} -c ...`): {exc}; check the interpreter and the limits on "
                f"processes and open files"
            ) from exc

    def _worker_ready(self, worker: WorkerProcess) -> None:
        """A worker said hello: it takes a waiting run or joins the idle ones."""
        self._start_failures = 0
        self._notify_pool_changed()
        self._release(worker)

    def _worker_exited(self, worker: WorkerProcess, returncode: int) -> None:
        """A worker is gone: forget it, count a failed start, start a replacement."""
        self._pool.discard(worker)
        with contextlib.suppress(ValueError):
            self._idle.remove(worker)
        self._watched.pop(worker, None)
        if not worker.ready and worker.kill_reason is None and self._running:
            self._start_failures += 1
            self._last_start_failure = (
                f"a worker process (pid {worker.pid}) {exit_text(returncode)} before it was "
                f"ready (its stderr, shown with the scheduler's, says why)"
            )
            _log.warning("nsai-work %s: %s", self.name, self._last_start_failure)
            if self._start_failures >= _MAX_START_FAILURES:
                error = BackendError(self._start_failure_message())
                while self._waiters:
                    waiter = self._waiters.popleft()
                    if not waiter.done():
                        waiter.set_exception(error)
                self._notify_pool_changed()
                return
        if self._running and (self._waiters or worker.ready):
            self._spawn()  # replace it
        self._notify_pool_changed()

    def _start_failure_message(self) -> str:
        return (
            f"the {self.name!r} backend could not start worker processes: "
            f"{self._last_start_failure}; the worker runs `{sys.executable} -c ...` importing "
            f"nsai_work with the scheduler's sys.path"
        )

    def _notify_pool_changed(self) -> None:
        changed, self._pool_changed = self._pool_changed, []
        for future in changed:
            if not future.done():
                future.set_result(None)

    async def _acquire(self) -> WorkerProcess:
        idle = self._idle
        while idle:
            worker = idle.pop()
            if not worker.dead:
                return worker
        if len(self._pool) < self.workers:
            self._spawn()
        assert self._loop is not None
        waiter: asyncio.Future[WorkerProcess] = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release(waiter.result())
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def _release(self, worker: WorkerProcess) -> None:
        """The worker is free: give it to the first waiting run, or keep it idle."""
        worker.run = None
        if worker.dead or worker.kill_reason is not None:
            return
        if not self._running:
            worker.close_requests()
            return
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(worker)
                return
        self._idle.append(worker)

    # ---- memory watch -------------------------------------------------------------------------

    def _worker_started(self, worker: WorkerProcess, run: Run) -> None:
        """A memory-limited job is about to run: watch its process group."""
        if not run.limit_mb or self.memory_poll_s is None or run.future.done():
            return
        self._watched[worker] = run
        if self._sampler is None and self._loop is not None:
            self._sampler = self._loop.create_task(self._sample_memory())

    async def _sample_memory(self) -> None:
        """While memory-limited jobs run: every ``memory_poll_s``, sum the resident memory of
        each one's process group (one pass over /proc) and kill those over their limit."""
        assert self.memory_poll_s is not None
        watched = self._watched
        try:
            while watched:
                await asyncio.sleep(self.memory_poll_s)
                if not watched:
                    break
                usage = group_usage({worker.pid for worker in watched})
                for worker, run in list(watched.items()):
                    used = usage.get(worker.pid, 0.0) - run.baseline_mb
                    if run.limit_mb and used > run.limit_mb and not run.future.done():
                        del watched[worker]
                        run.future.set_result(MemoryKilled(used, run.limit_mb))
                        worker.kill("memory")
        finally:
            self._sampler = None

    # ---- running ------------------------------------------------------------------------------

    def cancel(self, job_id: str) -> None:
        """Nothing to do by id: the engine cancels the run's ``execute`` call, and that
        cancellation kills the worker's process group (and waits for it to be gone) unless the
        reply has come already. An id alone could name the runs of two tenants (jobs are keyed
        by (tenant_id, id)), so this backend never kills by id."""

    async def execute(self, job: Job, ctx: JobContext) -> Any:
        """Run one attempt in a worker; return its JSON result or raise what it raised."""
        request = self._request(job)
        if type(request) is RunHandler and job.constraints.depends_on:
            request.upstream = ctx.upstream  # (read in this process: the worker has no store)
        if not self._running:
            await self.start()
        while True:
            worker = await self._acquire()
            if not self._running:  # stopped while this run waited for a worker: it never started
                self._release(worker)
                raise BackendError(f"the {self.name!r} backend was stopped")
            if type(request) is RunHandler and worker.synced_path != sys.path:
                request.sys_path = sys_path_for_workers()
                worker.synced_path = list(sys.path)
            assert self._loop is not None
            run = Run(ctx, self._loop.create_future(), job.resources.memory_mb or None)
            worker.begin(run, frame(self._encoder.encode(request)))
            ctx.set_handle(str(worker.pid))
            try:
                reply = await run.future
            except asyncio.CancelledError:
                if _worker_fine(run) and worker.recycle_reason is None:
                    self._release(worker)  # the reply came in the step the run was canceled
                else:
                    worker.kill("canceled")
                    await until_exited(worker)
                raise
            finally:
                self._watched.pop(worker, None)
            if type(reply) is not Refused:
                return await self._outcome(worker, job, request, reply)
            # An earlier job left this worker unusable and it did not run this one: another will.
            worker.recycle_reason = reply.reason
            await self._recycle(worker, f"before job {job.id}, which runs on another worker")

    async def _recycle(self, worker: WorkerProcess, when: str) -> None:
        """Replace a worker that cannot be put back in its starting state: kill it, and wait
        until it is gone (the pool starts another)."""
        _log.warning(
            "nsai-work %s: replacing worker process %d %s: %s",
            self.name,
            worker.pid,
            when,
            worker.recycle_reason,
        )
        worker.kill("recycled")
        await until_exited(worker)

    def _request(self, job: Job) -> RunHandler | RunCommand:
        memory_mb = job.resources.memory_mb or None
        if job.kind == COMMAND_KIND:
            payload = job.payload
            return RunCommand(
                argv=payload["argv"],
                env=payload.get("env"),
                cwd=payload.get("cwd"),
                memory_mb=memory_mb,
                tail_bytes=self.tail_bytes,
            )
        function = self.handlers.get(job.kind)
        if function is None:
            raise NonRetryableError(f"the handler for kind {job.kind!r} was unregistered")
        reference, reason = self._reference(job.kind, function)
        if reference is None:
            raise NonRetryableError(
                f"the handler of kind {job.kind!r} ({describe_callable(function.fn)}) {reason}"
            )
        return RunHandler(
            job=job,
            ref=reference,
            memory_mb=memory_mb,
            limit_address_space=self.limit_address_space,
        )

    async def _outcome(
        self, worker: WorkerProcess, job: Job, request: RunHandler | RunCommand, reply: Any
    ) -> Any:
        kind = type(reply)
        if kind is Ok or kind is Err or kind is CommandDone:  # the worker is fine
            if worker.recycle_reason is None:
                self._release(worker)
            else:
                await self._recycle(worker, f"after job {job.id}")
            if kind is Ok:
                return msgspec.json.decode(reply.result)
            if kind is Err:
                raise remote_exception(reply)
            assert isinstance(request, RunCommand)
            return command_result(request, reply)
        # The worker is gone or must go: the run ends when its processes do.
        worker.kill("retired")
        await until_exited(worker)
        raise lost_run_error(worker.pid, job.id, request, reply)


def _worker_fine(run: Run) -> bool:
    """Whether the run has its reply and the worker is fine (not killed, not over its memory)."""
    future = run.future
    return (
        future.done() and not future.cancelled() and type(future.result()) in (Ok, Err, CommandDone)
    )

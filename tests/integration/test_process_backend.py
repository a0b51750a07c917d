"""The process backend with real worker processes: results and exceptions come back, memory
limits, every job starts from the worker's starting state, timeouts, cancel and crashes kill what
they must and nothing else, command jobs, cpu reservations, what is rejected at submit, and
routing.

Handlers live in ``_process_handlers`` (workers import them by ``module:qualname``). A handler
that must say something while it runs (its pid, its child's pid) reports to an abstract Unix
socket the test listens on; a process is "gone" when its pidfd is readable. Nothing sleeps to
wait for state and nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import nsai_work as work
from nsai_work.backends import (
    CommandFailedError,
    MemoryLimitError,
    ProcessBackend,
    RemoteError,
    WorkerCrashedError,
)
from nsai_work.backends._process_boundary import remote_exception
from nsai_work.backends._worker_wire import Err, Ok
from nsai_work.telemetry import Telemetry
from nsai_work.telemetry.events import JOB_COMPLETED, JOB_STARTED
from nsai_work.testing import capture_events

from . import _process_handlers as h

TENANT = "proc"
ONCE = work.RetryPolicy(max_attempts=1)
WAIT_S = 20.0

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the process backend's kill tests need Linux"
)


# ---- helpers ------------------------------------------------------------------------------------


def job(
    kind: str,
    *,
    backend: str | None = "process",
    retry: work.RetryPolicy = ONCE,
    **fields: Any,
) -> work.Job:
    return work.Job(
        kind=kind,
        tenant_id=TENANT,
        constraints=work.Constraints(backend=backend, retry_policy=retry),
        **fields,
    )


def command(argv: list[str], **fields: Any) -> work.Job:
    payload = {"argv": argv, **fields.pop("payload", {})}
    return job("command", payload=payload, **fields)


@pytest.fixture
def kinds(handlers: Callable[..., str]) -> dict[str, str]:
    """Every handler of ``_process_handlers`` registered under a fresh kind, by name."""
    names = [
        "echo",
        "echo_async",
        "with_context",
        "fail",
        "fail_custom",
        "fail_permanently",
        "returns_a_set",
        "hog",
        "busy",
        "spin",
        "spawn_and_hang",
        "segfault",
        "exit_now",
        "interval",
        "taint",
        "state",
        "lower_address_space",
        "lower_hard_limit_for_good",
        "allocate",
        "leave_processes",
        "leave_memory",
        "leave_a_thread",
        "leave_a_task",
        "count_tasks",
        "sleepy",
    ]
    return {name: handlers(getattr(h, name)) for name in names}


@contextlib.asynccontextmanager
async def scheduler(backend: ProcessBackend, **options: Any) -> AsyncIterator[work.Scheduler]:
    """A scheduler with the local backend and ``backend``, its workers up."""
    async with work.Scheduler(backends=["local", backend], **options) as s:
        await backend.wait_ready(WAIT_S)
        yield s


async def run(s: work.Scheduler, one: work.Job) -> work.Job:
    """Submit ``one`` and wait for its end."""
    return await s.wait((await s.submit(one)).id, WAIT_S)


class Reports:
    """An abstract Unix socket that handlers report to (one JSON line per connection)."""

    def __init__(self) -> None:
        self.address = f"@nsai-work-test-{uuid.uuid4().hex}"
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    async def __aenter__(self) -> Reports:
        self.server = await asyncio.start_unix_server(self._client, path="\0" + self.address[1:])
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        self.queue.put_nowait(json.loads(line))
        writer.close()

    async def next(self) -> Any:
        return await asyncio.wait_for(self.queue.get(), WAIT_S)


class Watch:
    """pidfds opened while the processes run, to see them end (event-driven, no polling)."""

    def __init__(self, *pids: int) -> None:
        self.pids = pids
        self.fds: list[int] = []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                self.fds.append(os.pidfd_open(pid))

    def wait_all_gone(self) -> bool:
        """Block until every process has ended (False if one is still there after WAIT_S)."""
        try:
            for fd in self.fds:
                readable, _, _ = select.select([fd], [], [], WAIT_S)
                if not readable:
                    return False
            return True
        finally:
            for fd in self.fds:
                os.close(fd)
            self.fds = []

    async def all_gone(self) -> bool:
        return await asyncio.to_thread(self.wait_all_gone)


def exists(pid: int) -> bool:
    """True if ``pid`` is a live process (not gone, not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(b")") + 2 :][:1] not in (b"Z", b"X")


def kill_left_sleeper(pid: int) -> None:
    """Kill ``pid`` if it is still one of the ``time.sleep(600)`` processes a test handler left
    (a check that fails leaves them running); through a pidfd, so a reused pid is never hit."""
    with contextlib.suppress(OSError):
        fd = os.pidfd_open(pid)
        try:
            if b"time.sleep(600)" in Path(f"/proc/{pid}/cmdline").read_bytes():
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        finally:
            os.close(fd)


# ---- results and exceptions ---------------------------------------------------------------------


def test_handlers_run_in_worker_processes_and_return_json(
    kinds: dict[str, str], arun: Callable[..., Any]
) -> None:
    backend = ProcessBackend(workers=2)

    async def main() -> tuple[list[work.Job], list[int]]:
        async with scheduler(backend) as s:
            jobs = [
                job(kinds["echo"], payload={"x": [1, "two"]}),
                job(kinds["echo_async"], payload={"y": None}),
                job(kinds["with_context"]),
            ]
            accepted = await s.submit_many(jobs)
            return await s.wait_many([j.id for j in accepted], WAIT_S), backend.worker_pids()

    (echo, echo_async, with_context), pids = arun(main())
    assert [j.status for j in (echo, echo_async, with_context)] == ["succeeded"] * 3
    assert echo.backend == echo.pool == "process"
    assert echo.result["payload"] == {"x": [1, "two"]}
    assert echo.result["pid"] != os.getpid()
    assert echo.result["pid"] in pids
    assert echo_async.result == {"async": True, "payload": {"y": None}}
    assert with_context.result == {"attempt": 1, "is_context": True}


def test_progress_and_heartbeats_reach_the_scheduler(
    kinds: dict[str, str], arun: Callable[..., Any]
) -> None:
    backend = ProcessBackend(workers=1)

    async def main() -> work.JobContext:
        await backend.start()
        try:
            running = job(kinds["with_context"])
            ctx = work.JobContext(running)
            assert await backend.execute(running, ctx) == {"attempt": 0, "is_context": True}
            return ctx
        finally:
            await backend.stop()

    ctx = arun(main())
    assert ctx.last_progress == work.Progress(fraction=0.5, message="half way")
    assert ctx.last_heartbeat is not None


def test_an_exception_comes_back_with_its_type_message_and_traceback(
    kinds: dict[str, str], arun: Callable[..., Any]
) -> None:
    twice = work.RetryPolicy(max_attempts=2, base_delay_ms=0, jitter=False)

    async def main() -> list[work.Job]:
        async with scheduler(ProcessBackend(workers=2)) as s:
            accepted = await s.submit_many(
                [
                    job(kinds["fail"], payload={"value": 3}, retry=twice),
                    job(kinds["fail_custom"]),
                ]
            )
            return await s.wait_many([j.id for j in accepted], WAIT_S)

    builtin, custom = arun(main())
    assert builtin.status == "failed"
    assert len(builtin.attempts) == 2  # retried per the policy
    assert builtin.error is not None
    assert (builtin.error.type, builtin.error.message) == ("ValueError", "bad value: 3")
    assert builtin.error.traceback is not None
    assert "_process_handlers.py" in builtin.error.traceback
    assert ", in fail\n" in builtin.error.traceback  # the worker's frames
    assert custom.error is not None
    assert custom.error.type == "tests.integration._process_handlers.CustomError"
    assert custom.error.message == "custom failure"
    assert custom.error.traceback is not None
    assert "KeyError: 'missing'" in custom.error.traceback  # the chained cause came along


def test_non_retryable_errors_and_bad_results_fail_at_once(
    kinds: dict[str, str], arun: Callable[..., Any]
) -> None:
    thrice = work.RetryPolicy(max_attempts=3, base_delay_ms=0)

    async def main() -> list[work.Job]:
        async with scheduler(ProcessBackend(workers=2)) as s:
            accepted = await s.submit_many(
                [
                    job(kinds["fail_permanently"], retry=thrice),
                    job(kinds["returns_a_set"], retry=thrice),
                ]
            )
            return await s.wait_many([j.id for j in accepted], WAIT_S)

    permanent, a_set = arun(main())
    assert (permanent.status, len(permanent.attempts)) == ("failed", 1)
    assert permanent.error is not None
    assert permanent.error.type == "nsai_work.NonRetryableError"
    assert (a_set.status, len(a_set.attempts)) == ("failed", 1)
    assert a_set.error is not None
    assert "JSON-encodable" in a_set.error.message
    assert "$.result" in a_set.error.message


def test_remote_exceptions_keep_builtin_types() -> None:
    key_error = remote_exception(
        Err(module="builtins", qualname="KeyError", message="'k'", traceback="tb")
    )
    assert isinstance(key_error, KeyError)
    assert isinstance(key_error, RemoteError)
    assert (str(key_error), key_error.type_name, key_error.remote_traceback) == (
        "'k'",
        "KeyError",
        "tb",
    )
    os_error = remote_exception(
        Err(module="builtins", qualname="FileNotFoundError", message="no", traceback="")
    )
    assert isinstance(os_error, FileNotFoundError)
    permanent = remote_exception(
        Err(module="app.tasks", qualname="Bad.Input", message="m", traceback="", retryable=False)
    )
    assert isinstance(permanent, work.NonRetryableError)
    assert (type(permanent).__module__, type(permanent).__qualname__) == ("app.tasks", "Bad.Input")


# ---- memory -------------------------------------------------------------------------------------


def test_a_memory_hog_is_stopped_and_the_pool_keeps_working(
    kinds: dict[str, str], arun: Callable[..., Any]
) -> None:
    backend = ProcessBackend(workers=1)
    limited = work.Resources(memory_mb=64)

    async def main() -> tuple[work.Job, work.Job, work.Job, work.Job, list[int], list[int]]:
        async with scheduler(backend) as s:
            before = backend.worker_pids()
            handler_hog = await s.submit(
                job(kinds["hog"], resources=limited, retry=work.RetryPolicy(max_attempts=3))
            )
            handler_hog = await s.wait(handler_hog.id, WAIT_S)
            after = await s.wait((await s.submit(job(kinds["echo"]))).id, WAIT_S)
            command_hog = await s.submit(
                command([sys.executable, "-c", h.HOG], resources=work.Resources(memory_mb=96))
            )
            command_hog = await s.wait(command_hog.id, WAIT_S)
            again = await s.wait((await s.submit(command(["true"]))).id, WAIT_S)
            return handler_hog, after, command_hog, again, before, backend.worker_pids()

    handler_hog, after, command_hog, again, before, now = arun(main())
    # A handler: its allocation past the address-space limit is refused (MemoryError).
    assert (handler_hog.status, len(handler_hog.attempts)) == ("failed", 1)  # not retried
    assert handler_hog.error is not None
    assert handler_hog.error.type == "nsai_work.backends.MemoryLimitError"
    assert handler_hog.error.message.startswith("memory limit exceeded: an allocation of more ")
    assert " MB of the job's 64 MB in use" in handler_hog.error.message
    assert after.status == "succeeded"
    assert after.result["pid"] not in before  # the worker was replaced
    # A command: the resident-memory watch kills its process group.
    assert command_hog.status == "failed"
    assert command_hog.error is not None
    assert command_hog.error.type == "nsai_work.backends.MemoryLimitError"
    assert "memory limit exceeded: used " in command_hog.error.message
    assert " MB of 96 MB" in command_hog.error.message
    used = float(command_hog.error.message.split("used ")[1].split(" MB")[0])
    assert used > 96
    assert again.status == "succeeded"
    assert len(now) == 1


@pytest.mark.parametrize("how", ["one allocation", "a library's own MemoryError"])
def test_an_allocation_past_the_limit_says_what_it_asked_for_and_what_was_in_use(
    how: str, kinds: dict[str, str], handlers: Callable[..., str], arun: Callable[..., Any]
) -> None:
    if how == "one allocation":
        kind, payload = kinds["allocate"], {"mb": 300}
    else:
        kind, payload = handlers(h.fail_like_numpy), {}

    async def main() -> work.Job:
        async with scheduler(ProcessBackend(workers=1)) as s:
            return await run(s, job(kind, payload=payload, resources=work.Resources(memory_mb=200)))

    done = arun(main())
    assert done.status == "failed"
    assert done.error is not None
    assert done.error.type == "nsai_work.backends.MemoryLimitError"
    message = done.error.message
    found = re.match(
        r"memory limit exceeded: an allocation of more than ([\d.]+) MB was refused \((.*)\) "
        r"with ([\d.]+) MB of the job's 200 MB in use",
        message,
    )
    assert found is not None, message
    asked, refused, used = float(found[1]), found[2], float(found[3])
    assert asked + used <= 200
    assert asked > 150  # the job had taken next to nothing: the allocation asked for the most
    if how == "one allocation":
        assert refused == "MemoryError"
    else:
        assert refused == "MemoryError: Unable to allocate 300. MiB for an array"


# ---- every job starts from the worker's starting state ------------------------------------------

#: What ``taint`` changes that a worker can always undo; the others take privileges the worker may
#: not have (lowering a nice value, raising a hard limit): then it is replaced instead.
ALWAYS_UNDONE = [
    "environ",
    "putenv",
    "directory",
    "umask",
    "sys_path",
    "limits",
    "timer",
    "affinity",
]


@pytest.mark.parametrize("change", [*ALWAYS_UNDONE, "hard_limit", "nice"])
def test_the_next_job_finds_the_worker_as_it_started(
    change: str, kinds: dict[str, str], monkeypatch: pytest.MonkeyPatch, arun: Callable[..., Any]
) -> None:
    if change == "affinity" and len(os.sched_getaffinity(0)) < 2:
        pytest.skip("narrowing the CPU affinity needs two usable cores")
    monkeypatch.setenv("NSAI_WORK_TEST_KEEP", "kept")  # the workers inherit it

    async def main() -> tuple[work.Job, work.Job, work.Job]:
        async with scheduler(ProcessBackend(workers=1)) as s:
            before = await run(s, job(kinds["state"]))
            tainted = await run(s, job(kinds["taint"], payload={"change": change}))
            return before, tainted, await run(s, job(kinds["state"]))

    before, tainted, after = arun(main())
    assert [j.status for j in (before, tainted, after)] == ["succeeded"] * 3, after.error
    assert tainted.result["pid"] == before.result["pid"]  # the change was made in that worker
    found, expected = dict(after.result), dict(before.result)
    if change in ALWAYS_UNDONE:
        assert found["pid"] == expected["pid"]  # undone, not replaced
    del found["pid"], expected["pid"]
    assert found == expected


def test_processes_a_job_leaves_running_end_with_it(
    kinds: dict[str, str], arun: Callable[..., Any]
) -> None:
    left: list[int] = []

    async def main() -> tuple[work.Job, work.Job, work.Job, list[int]]:
        async with scheduler(ProcessBackend(workers=1)) as s:
            handler = await run(s, job(kinds["leave_processes"]))
            if handler.status == "succeeded":
                left.extend([handler.result["child"], handler.result["daemon"]])
            daemonizing = await run(s, command([sys.executable, "-c", h.DAEMONIZE]))
            if daemonizing.status == "succeeded":
                left.append(int(daemonizing.result["stdout_tail"]))
            running = [pid for pid in left if exists(pid)]
            return handler, daemonizing, await run(s, job(kinds["echo"])), running

    try:
        handler, daemonizing, after, running = arun(main())
    finally:
        for pid in left:
            kill_left_sleeper(pid)
    assert [j.status for j in (handler, daemonizing, after)] == ["succeeded"] * 3
    assert len(left) == 3
    assert running == []  # the child, and the daemons in sessions of their own
    assert after.result["pid"] == handler.result["pid"]  # the same worker, cleaned up


def test_async_jobs_do_not_share_an_event_loop(
    kinds: dict[str, str], arun: Callable[..., Any]
) -> None:
    async def main() -> tuple[work.Job, work.Job]:
        async with scheduler(ProcessBackend(workers=1)) as s:
            leaving = await run(s, job(kinds["leave_a_task"]))
            return leaving, await run(s, job(kinds["count_tasks"]))

    leaving, counting = arun(main())
    assert leaving.status == "succeeded"
    assert counting.result == {"pid": leaving.result["pid"], "tasks": 1}


def test_the_memory_watch_counts_only_the_jobs_own_processes(
    kinds: dict[str, str], arun: Callable[..., Any]
) -> None:
    async def main() -> tuple[work.Job, work.Job]:
        async with scheduler(ProcessBackend(workers=1)) as s:
            leaving = await run(s, job(kinds["leave_memory"], payload={"mb": 300}))
            limited = job(
                kinds["interval"],
                payload={"work_s": 0.5},  # the watch samples every 50 ms meanwhile
                resources=work.Resources(memory_mb=200),
            )
            return leaving, await run(s, limited)

    leaving, limited = arun(main())
    assert leaving.status == "succeeded"
    assert limited.status == "succeeded", limited.error
    assert limited.result["pid"] == leaving.result["pid"]


def test_a_limit_a_job_lowered_does_not_hold_the_next_one(
    kinds: dict[str, str], arun: Callable[..., Any]
) -> None:
    async def main() -> tuple[work.Job, work.Job]:
        async with scheduler(ProcessBackend(workers=1)) as s:
            lowering = await run(s, job(kinds["lower_address_space"]))
            big = job(
                kinds["allocate"], payload={"mb": 100}, resources=work.Resources(memory_mb=500)
            )
            return lowering, await run(s, big)

    lowering, big = arun(main())
    assert lowering.status == "succeeded"
    assert big.status == "succeeded", big.error
    assert big.result == {"pid": lowering.result["pid"], "mb": 100}


def test_a_worker_a_job_leaves_a_thread_in_is_replaced_and_the_job_stands(
    kinds: dict[str, str], arun: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    backend = ProcessBackend(workers=1)

    async def main() -> tuple[work.Job, list[int], work.Job]:
        async with scheduler(backend) as s:
            threaded = await run(s, job(kinds["leave_a_thread"]))
            return threaded, backend.worker_pids(), await run(s, job(kinds["echo"]))

    with caplog.at_level(logging.WARNING, logger="nsai_work.backends.process"):
        threaded, pids, after = arun(main())
    assert threaded.status == "succeeded"
    old = threaded.result["pid"]
    assert old not in pids  # replaced before the job ended
    assert not exists(old)
    assert after.status == "succeeded"
    assert after.result["pid"] != old
    assert f"replacing worker process {old} after job {threaded.id}: the job left 1 thread(s) " in (
        caplog.text
    )
    assert "(left-behind)" in caplog.text


def test_a_job_that_leaves_its_worker_unusable_keeps_its_outcome_and_the_next_goes_elsewhere(
    kinds: dict[str, str], arun: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    backend = ProcessBackend(workers=1)

    async def main() -> tuple[work.Job, work.Job]:
        async with scheduler(backend) as s:
            lowering = await run(s, job(kinds["lower_hard_limit_for_good"]))
            return lowering, await run(s, job(kinds["echo"]))

    with caplog.at_level(logging.WARNING, logger="nsai_work.backends.process"):
        lowering, after = arun(main())
    assert lowering.status == "succeeded"
    old = lowering.result["pid"]
    assert after.status == "succeeded"  # refused by the old worker, run by its replacement
    assert after.result["pid"] != old
    assert not exists(old)
    assert (
        f"replacing worker process {old} before job {after.id}, which runs on another worker: "
        f"a job changed its RLIMIT_NOFILE to (256, 256), which cannot be set back to ("
    ) in caplog.text


# ---- timeout, cancel, crashes -------------------------------------------------------------------


def test_a_busy_loop_is_killed_at_its_timeout(
    kinds: dict[str, str], arun: Callable[..., Any]
) -> None:
    backend = ProcessBackend(workers=2)

    async def main() -> tuple[work.Job, int, bool, list[int], work.Job]:
        async with scheduler(backend) as s, Reports() as reports:
            busy = await s.submit(
                job(
                    kinds["busy"],
                    payload={"report_to": reports.address},
                    resources=work.Resources(timeout_ms=1500),
                )
            )
            pid = (await reports.next())["pid"]
            watch = Watch(pid)
            ended = await s.wait(busy.id, WAIT_S)
            await s.wait_idle(WAIT_S)
            gone = await watch.all_gone()
            next_job = await s.wait((await s.submit(job(kinds["echo"]))).id, WAIT_S)
            return ended, pid, gone, backend.worker_pids(), next_job

    ended, pid, gone, pids, next_job = arun(main())
    assert ended.status == "timeout"
    assert gone
    assert not exists(pid)
    assert pid not in pids
    assert next_job.status == "succeeded"


def test_cancel_kills_a_running_job_and_its_children(
    kinds: dict[str, str], arun: Callable[..., Any]
) -> None:
    async def main() -> tuple[work.Job, dict[str, int], bool]:
        async with scheduler(ProcessBackend(workers=2)) as s, Reports() as reports:
            running = await s.submit(
                job(kinds["spawn_and_hang"], payload={"report_to": reports.address})
            )
            pids = await reports.next()
            watch = Watch(pids["pid"], pids["child"])
            canceled = await s.cancel(running.id, "user asked")
            await s.wait_idle(WAIT_S)
            return canceled, pids, await watch.all_gone()

    canceled, pids, gone = arun(main())
    assert (canceled.status, canceled.cancel_reason) == ("canceled", "user asked")
    assert gone
    assert not exists(pids["pid"])
    assert not exists(pids["child"])


@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_a_command_is_killed_with_its_whole_process_group(
    how: str, kinds: dict[str, str], arun: Callable[..., Any]
) -> None:
    async def main() -> tuple[work.Job, dict[str, int], bool]:
        async with scheduler(ProcessBackend(workers=2)) as s, Reports() as reports:
            resources = work.Resources(timeout_ms=1500) if how == "timeout" else work.Resources()
            running = await s.submit(
                command(
                    [sys.executable, "-c", h.SPAWN_AND_WAIT, reports.address], resources=resources
                )
            )
            pids = await reports.next()
            watch = Watch(pids["pid"], pids["child"])
            if how == "cancel":
                await s.cancel(running.id)
            ended = await s.wait(running.id, WAIT_S)
            await s.wait_idle(WAIT_S)
            return ended, pids, await watch.all_gone()

    ended, pids, gone = arun(main())
    assert ended.status == ("canceled" if how == "cancel" else "timeout")
    assert gone
    assert not exists(pids["pid"])
    assert not exists(pids["child"])


def test_a_crashing_worker_fails_only_its_own_job(
    kinds: dict[str, str], arun: Callable[..., Any]
) -> None:
    async def main() -> list[work.Job]:
        async with scheduler(ProcessBackend(workers=3)) as s:
            jobs = [job(kinds["segfault"]), job(kinds["exit_now"])]
            jobs += [job(kinds["interval"], payload={"work_s": 0.01}) for _ in range(6)]
            accepted = await s.submit_many(jobs)
            return await s.wait_many([j.id for j in accepted], WAIT_S)

    segfault, exit_now, *others = arun(main())
    assert segfault.status == "failed"
    assert segfault.error is not None
    assert segfault.error.type == "nsai_work.backends.WorkerCrashedError"
    assert "was killed by signal SIGSEGV (Segmentation fault)" in segfault.error.message
    assert segfault.error.traceback is not None
    assert "Fatal Python error: Segmentation fault" in segfault.error.traceback
    assert ", in segfault" in segfault.error.traceback or "in segfault" in segfault.error.traceback
    assert exit_now.error is not None
    assert "exited with code 7" in exit_now.error.message
    assert [j.status for j in others] == ["succeeded"] * 6


# ---- cancel, timeout and stop racing the dispatch -----------------------------------------------
# At the backend level: the engine's cancel and timeout call ``backend.cancel(job_id)`` and
# cancel the task awaiting ``execute``; a worker must come back to the pool exactly once and no
# run may hang, whenever that happens.


@contextlib.asynccontextmanager
async def running(backend: ProcessBackend) -> AsyncIterator[ProcessBackend]:
    """``backend`` started, its workers up; stopped after."""
    await backend.wait_ready(WAIT_S)
    try:
        yield backend
    finally:
        await backend.stop()


async def execute(backend: ProcessBackend, one: work.Job) -> Any:
    return await backend.execute(one, work.JobContext(one))


async def assert_pool_intact(backend: ProcessBackend, echo: str) -> None:
    """Every worker is free exactly once: twice as many runs as workers at once each get their
    own reply (a worker handed out twice would mix replies up, a lost one would hang), and then
    every live worker is idle, once."""
    jobs = [job(echo, payload={"i": i}) for i in range(2 * backend.workers)]
    async with asyncio.timeout(WAIT_S):
        replies = await asyncio.gather(*(execute(backend, one) for one in jobs))
        await backend.wait_ready(WAIT_S)
    assert [reply["payload"] for reply in replies] == [{"i": i} for i in range(len(jobs))]
    idle = list(backend._idle)
    assert len(idle) == len(set(idle)) == backend.workers
    assert set(idle) == backend._pool


async def until_done(task: asyncio.Task[Any]) -> BaseException | None:
    """Wait for ``task`` to end; what it raised (None if it returned)."""
    async with asyncio.timeout(WAIT_S):
        await asyncio.wait([task])
    return asyncio.CancelledError() if task.cancelled() else task.exception()


@pytest.mark.parametrize("when", ["waiting", "handed_a_worker"])
def test_a_run_canceled_before_it_starts_takes_no_worker(
    when: str, kinds: dict[str, str], arun: Callable[..., Any]
) -> None:
    backend = ProcessBackend(workers=1)

    async def main() -> BaseException | None:
        async with running(backend), Reports() as reports:
            busy = job(kinds["busy"], payload={"report_to": reports.address})
            holding = asyncio.create_task(execute(backend, busy))
            await reports.next()  # the only worker is busy
            waiting = asyncio.create_task(execute(backend, job(kinds["echo"])))
            await asyncio.sleep(0)  # one loop step: the run waits for a worker
            assert len(backend._waiters) == 1
            if when == "handed_a_worker":  # cancel it in the very step it gets the worker
                release = backend._release

                def release_then_cancel(worker: Any) -> None:
                    release(worker)
                    waiting.cancel()
                    backend._release = release  # type: ignore[method-assign]

                backend._release = release_then_cancel  # type: ignore[method-assign]
                holding.cancel()  # its worker is killed; the replacement goes to the waiting run
            else:
                waiting.cancel()
                holding.cancel()
            outcome = await until_done(waiting)
            await until_done(holding)
            await assert_pool_intact(backend, kinds["echo"])
            return outcome

    assert isinstance(arun(main()), asyncio.CancelledError)


def test_a_run_canceled_while_its_request_is_written_ends(
    kinds: dict[str, str], arun: Callable[..., Any]
) -> None:
    backend = ProcessBackend(workers=1)

    async def main() -> tuple[BaseException | None, bool]:
        async with running(backend):
            (worker,) = backend._pool
            big = job(kinds["echo"], payload={"blob": "x" * (4 << 20)})  # more than a pipe holds
            task = asyncio.create_task(execute(backend, big))
            await asyncio.sleep(0)  # one loop step: the run took the worker and began to write
            writing = bool(worker._pending)
            task.cancel()
            outcome = await until_done(task)
            await assert_pool_intact(backend, kinds["echo"])
            return outcome, writing

    outcome, writing = arun(main())
    assert writing
    assert isinstance(outcome, asyncio.CancelledError)


def test_a_run_canceled_as_its_reply_arrives_keeps_its_worker(
    kinds: dict[str, str], arun: Callable[..., Any]
) -> None:
    backend = ProcessBackend(workers=1)

    async def main() -> tuple[BaseException | None, int, list[int]]:
        async with running(backend):
            (worker,) = backend._pool
            one = job(kinds["echo"])
            task = asyncio.create_task(execute(backend, one))
            on_message = worker._on_message

            def cancel_on_reply(message: Any) -> None:
                on_message(message)
                if type(message) is Ok:  # in the step that reads the reply, as the engine does
                    backend.cancel(one.id)  # (what the engine calls, then it cancels the task)
                    task.cancel()

            worker._on_message = cancel_on_reply  # type: ignore[method-assign]
            outcome = await until_done(task)
            pids = backend.worker_pids()
            await assert_pool_intact(backend, kinds["echo"])
            return outcome, worker.pid, pids

    outcome, pid, pids = arun(main())
    assert isinstance(outcome, asyncio.CancelledError)
    assert pids == [pid]  # the worker had finished its run: it is kept, not killed


def test_a_run_past_its_timeout_is_killed_and_its_worker_replaced(
    kinds: dict[str, str], arun: Callable[..., Any]
) -> None:
    backend = ProcessBackend(workers=1)

    async def main() -> tuple[int, list[int]]:
        async with running(backend), Reports() as reports:
            busy = job(kinds["busy"], payload={"report_to": reports.address})
            task = asyncio.create_task(execute(backend, busy))
            pid = (await reports.next())["pid"]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0):  # what the engine's timer does to the run
                    await task
            assert task.cancelled()
            pids = backend.worker_pids()
            await assert_pool_intact(backend, kinds["echo"])
            return pid, pids

    pid, pids = arun(main())
    assert not exists(pid)
    assert pid not in pids


def test_stop_ends_running_and_waiting_runs_and_a_restart_has_every_worker(
    kinds: dict[str, str], arun: Callable[..., Any]
) -> None:
    backend = ProcessBackend(workers=1)

    async def main() -> tuple[list[BaseException | None], list[int], list[int]]:
        async with running(backend), Reports() as reports:
            busy = job(kinds["busy"], payload={"report_to": reports.address})
            holding = asyncio.create_task(execute(backend, busy))
            await reports.next()
            waiting = asyncio.create_task(execute(backend, job(kinds["echo"])))
            await asyncio.sleep(0)  # one loop step: the run waits for a worker
            pids = backend.worker_pids()
            await backend.stop()
            outcomes = [await until_done(holding), await until_done(waiting)]
            after = backend.worker_pids()
            await backend.start()
            await assert_pool_intact(backend, kinds["echo"])
            return outcomes, pids, after

    (killed, waited), pids, after = arun(main())
    assert isinstance(killed, WorkerCrashedError)
    assert "killed by the backend (shutdown)" in str(killed)
    assert isinstance(waited, work.BackendError)
    assert "was stopped" in str(waited)
    assert after == []
    assert not any(exists(pid) for pid in pids)


def test_a_run_handed_a_worker_as_the_backend_stops_says_it_was_stopped(
    kinds: dict[str, str], arun: Callable[..., Any]
) -> None:
    backend = ProcessBackend(workers=1)

    async def main() -> BaseException | None:
        async with running(backend), Reports() as reports:
            busy = job(kinds["busy"], payload={"report_to": reports.address})
            holding = asyncio.create_task(execute(backend, busy))
            await reports.next()
            waiting = asyncio.create_task(execute(backend, job(kinds["echo"])))
            await asyncio.sleep(0)  # one loop step: the run waits for a worker
            release = backend._release
            stopping: list[asyncio.Task[None]] = []

            def stop_then_release(worker: Any) -> None:  # stop runs before the run resumes
                stopping.append(asyncio.create_task(backend.stop()))
                backend._release = release  # type: ignore[method-assign]
                release(worker)

            backend._release = stop_then_release  # type: ignore[method-assign]
            holding.cancel()  # its worker is killed; the replacement goes to the waiting run
            await until_done(holding)
            outcome = await until_done(waiting)
            await until_done(stopping[0])
            return outcome

    outcome = arun(main())
    assert isinstance(outcome, work.BackendError)
    assert not isinstance(outcome, WorkerCrashedError)  # it never ran: nothing crashed
    assert "was stopped" in str(outcome)


def test_a_worker_killed_while_idle_is_replaced(
    kinds: dict[str, str], arun: Callable[..., Any]
) -> None:
    backend = ProcessBackend(workers=1)

    async def main() -> tuple[int, list[int], work.Job]:
        async with scheduler(backend) as s:
            (pid,) = backend.worker_pids()
            watch = Watch(pid)
            os.kill(pid, signal.SIGKILL)
            assert await watch.all_gone()
            done = await s.wait((await s.submit(job(kinds["echo"]))).id, WAIT_S)
            return pid, backend.worker_pids(), done

    pid, pids, done = arun(main())
    assert done.status == "succeeded"
    assert pid not in pids
    assert done.result["pid"] in pids


def test_workers_can_start_on_demand(kinds: dict[str, str], arun: Callable[..., Any]) -> None:
    backend = ProcessBackend(workers=2, prestart=False)

    async def main() -> tuple[list[int], work.Job, list[int]]:
        async with work.Scheduler(backends=["local", backend]) as s:
            before = backend.worker_pids()
            done = await s.wait((await s.submit(job(kinds["echo"]))).id, WAIT_S)
            return before, done, backend.worker_pids()

    before, done, after = arun(main())
    assert before == []
    assert done.status == "succeeded"
    assert done.result["pid"] in after


def test_workers_that_cannot_start_fail_the_jobs_with_the_reason(
    kinds: dict[str, str], monkeypatch: pytest.MonkeyPatch, arun: Callable[..., Any]
) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")  # a "python" that exits at once
    backend = ProcessBackend(workers=1)

    async def main() -> tuple[str, work.Job]:
        async with work.Scheduler(backends=["local", backend]) as s:
            with pytest.raises(work.BackendError) as info:
                await backend.wait_ready(WAIT_S)
            done = await s.wait((await s.submit(job(kinds["echo"]))).id, WAIT_S)
            return str(info.value), done

    message, done = arun(main())
    assert "could not start worker processes" in message
    assert "exited with code 1 before it was ready" in message
    assert done.status == "failed"
    assert done.error is not None
    assert done.error.type == "nsai_work.BackendError"
    assert "/bin/false" in done.error.message


def test_stop_ends_every_worker(kinds: dict[str, str], arun: Callable[..., Any]) -> None:
    backend = ProcessBackend(workers=2)

    async def main() -> tuple[list[int], Watch]:
        async with scheduler(backend) as s:
            await s.wait((await s.submit(job(kinds["echo"]))).id, WAIT_S)
            pids = backend.worker_pids()
            return pids, Watch(*pids)

    pids, watch = arun(main())
    assert len(pids) == 2
    assert backend.worker_pids() == []
    assert not any(exists(pid) for pid in pids)
    assert arun(watch.all_gone())


SCHEDULER_SCRIPT = """
import asyncio

import nsai_work as work


async def main():
    backend = work.backends.ProcessBackend(workers=2)
    async with work.Scheduler(backends=[backend]):
        await backend.wait_ready(20)
        print(*backend.worker_pids(), flush=True)
        await asyncio.Event().wait()


asyncio.run(main())
"""


def test_workers_die_with_a_scheduler_that_is_killed() -> None:
    scheduler_process = subprocess.Popen(
        [sys.executable, "-c", SCHEDULER_SCRIPT], stdout=subprocess.PIPE, text=True
    )
    pids: list[int] = []
    try:
        assert scheduler_process.stdout is not None
        pids = [int(pid) for pid in scheduler_process.stdout.readline().split()]
        assert len(pids) == 2
        watch = Watch(*pids)
        scheduler_process.kill()
        scheduler_process.wait()
        assert watch.wait_all_gone()
    finally:
        scheduler_process.kill()
        scheduler_process.wait()
        if scheduler_process.stdout is not None:
            scheduler_process.stdout.close()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


# ---- command jobs -------------------------------------------------------------------------------


def test_a_command_records_its_exit_code_and_output(
    tmp_path: Path, arun: Callable[..., Any]
) -> None:
    script = "echo $GREETING; pwd; echo warning >&2; head -c 10000 /dev/zero | tr '\\0' a; echo END"
    where = {"env": {"GREETING": "hello"}, "cwd": str(tmp_path)}

    async def main() -> work.Job:
        async with scheduler(ProcessBackend(workers=1)) as s:
            submitted = await s.submit(command(["sh", "-c", script], payload=where))
            return await s.wait(submitted.id, WAIT_S)

    done = arun(main())
    assert done.status == "succeeded"
    result = done.result
    assert result["exit_code"] == 0
    assert result["stderr_tail"] == "warning\n"
    assert result["stdout_bytes"] == len(f"hello\n{tmp_path}\n") + 10_000 + len("END\n")
    assert len(result["stdout_tail"]) == 4096  # the tail only
    assert result["stdout_tail"].endswith("aaaEND\n")
    assert result["max_rss_mb"] > 0

    async def head() -> work.Job:
        async with scheduler(ProcessBackend(workers=1, tail_bytes=1 << 16)) as s:
            submitted = await s.submit(command(["sh", "-c", script], payload=where))
            return await s.wait(submitted.id, WAIT_S)

    assert arun(head()).result["stdout_tail"].startswith(f"hello\n{tmp_path}\n")


FAILING = "echo step 1; echo 'CUDA error' >&2; exit 3"


def test_a_failing_command_fails_the_attempt_with_its_output(arun: Callable[..., Any]) -> None:
    twice = work.RetryPolicy(max_attempts=2, base_delay_ms=0)

    async def main() -> list[work.Job]:
        async with scheduler(ProcessBackend(workers=2)) as s:
            accepted = await s.submit_many(
                [
                    command(
                        ["sh", "-c", "echo step 1; echo 'CUDA error' >&2; exit 3"], retry=twice
                    ),
                    command(["sh", "-c", "kill -SEGV $$"]),
                    command(["no-such-program-here"], retry=twice),
                ]
            )
            return await s.wait_many([j.id for j in accepted], WAIT_S)

    exit_3, killed, missing = arun(main())
    assert (exit_3.status, len(exit_3.attempts)) == ("failed", 2)  # retried per the policy
    assert exit_3.error is not None
    assert exit_3.error.type == "nsai_work.backends.CommandFailedError"
    message = exit_3.error.message
    assert "exited with code 3" in message
    assert "--- stderr (last 11 of 11 bytes) ---\nCUDA error" in message
    assert "--- stdout (last 7 of 7 bytes) ---\nstep 1" in message
    assert killed.error is not None
    assert "was killed by signal SIGSEGV" in killed.error.message
    assert (missing.status, len(missing.attempts)) == ("failed", 1)  # not retried
    assert missing.error is not None
    assert "could not be started" in missing.error.message
    assert "no-such-program-here" in missing.error.message


def test_command_failures_are_typed_in_the_scheduler() -> None:
    assert issubclass(CommandFailedError, work.BackendError)
    assert issubclass(WorkerCrashedError, work.BackendError)
    assert issubclass(MemoryLimitError, work.NonRetryableError)


# ---- capacity -----------------------------------------------------------------------------------


def _max_running(events: list[Any], ids: set[str]) -> int:
    """The most jobs of ``ids`` running at once, counted from started and completed events."""
    running = peak = 0
    for event in events:
        if event.metadata.get("job_id") not in ids:
            continue
        running += 1 if event.event == JOB_STARTED else -1
        peak = max(peak, running)
    return peak


def test_cpu_is_reserved_from_the_pool(kinds: dict[str, str], arun: Callable[..., Any]) -> None:
    bus = Telemetry()

    def batch(cpu: float, count: int) -> list[work.Job]:
        return [
            job(kinds["interval"], payload={"work_s": 0.05}, resources=work.Resources(cpu=cpu))
            for _ in range(count)
        ]

    async def main() -> tuple[list[work.Job], list[work.Job]]:
        async with scheduler(ProcessBackend(workers=4, cpu=2), telemetry=bus) as s:
            wide = await s.submit_many(batch(2, 2))
            wide = await s.wait_many([j.id for j in wide], WAIT_S)
            narrow = await s.submit_many(batch(1, 4))
            return wide, await s.wait_many([j.id for j in narrow], WAIT_S)

    with capture_events([JOB_STARTED, JOB_COMPLETED], bus=bus) as events:
        wide, narrow = arun(main())
    assert all(j.status == "succeeded" for j in wide + narrow)
    assert _max_running(events, {j.id for j in wide}) == 1
    assert _max_running(events, {j.id for j in narrow}) == 2
    # the processes agree: the two cpu=2 jobs did not overlap
    first, second = sorted((j.result["start"], j.result["end"]) for j in wide)
    assert first[1] <= second[0]


# ---- what is rejected at submit -----------------------------------------------------------------


def closure_handler() -> Callable[[work.Job], Any]:
    def inner(job: work.Job) -> Any:
        return None

    return inner


def in_main(job: work.Job) -> None:
    return None


in_main.__module__ = "__main__"


@pytest.mark.parametrize(
    ("payload", "path", "words"),
    [
        ({}, "$.payload.argv", "non-empty list of strings"),
        ({"argv": "python train.py"}, "$.payload.argv", "non-empty list"),
        ({"argv": []}, "$.payload.argv", "non-empty list"),
        ({"argv": ["python", 3]}, "$.payload.argv[1]", "string"),
        ({"argv": [""]}, "$.payload.argv[0]", "program"),
        ({"argv": ["x"], "env": ["A=1"]}, "$.payload.env", "maps variable names"),
        ({"argv": ["x"], "env": {"EPOCHS": 3}}, "$.payload.env.EPOCHS", "'EPOCHS': '3'"),
        ({"argv": ["x"], "env": {"A=B": "1"}}, "$.payload.env", "without '='"),
        ({"argv": ["x"], "cwd": 7}, "$.payload.cwd", "directory"),
        ({"argv": ["x"], "args": ["y"]}, "$.payload.args", "unknown key"),
    ],
)
def test_a_bad_command_is_rejected_at_submit(
    payload: dict[str, Any], path: str, words: str, arun: Callable[..., Any]
) -> None:
    async def main() -> None:
        async with work.Scheduler(backends=["local", ProcessBackend(workers=1)]) as s:
            with pytest.raises(work.ValidationError) as info:
                await s.submit(job("command", payload=payload))
            assert info.value.path == path
            assert words in str(info.value)

    arun(main())


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (lambda job: None, "is a lambda"),
        (closure_handler(), "inside a function"),
        (in_main, "defined in __main__"),
    ],
    ids=["lambda", "closure", "main"],
)
def test_a_handler_that_cannot_cross_is_rejected_when_named(
    fn: Callable[..., Any], words: str, handlers: Callable[..., str], arun: Callable[..., Any]
) -> None:
    kind = handlers(fn)

    async def main() -> work.Job:
        async with work.Scheduler(backends=["local", ProcessBackend(workers=1)]) as s:
            with pytest.raises(work.ValidationError) as info:
                await s.submit(job(kind))
            assert info.value.path == "$.kind"
            assert words in str(info.value)
            assert "cannot run on the 'process' backend" in str(info.value)
            # Not named: the local backend runs it in-process.
            local = await s.submit(job(kind, backend=None))
            return await s.wait(local.id, WAIT_S)

    assert arun(main()).backend == "local"


def test_routing_by_order_default_and_kinds(
    kinds: dict[str, str], arun: Callable[..., Any]
) -> None:
    async def main() -> dict[str, str | None]:
        routed: dict[str, str | None] = {}
        async with work.Scheduler(backends=["local", ProcessBackend(workers=1)]) as s:
            routed["local first"] = (await s.submit(job(kinds["echo"], backend=None))).backend
            routed["command"] = (await s.submit(command(["true"], backend=None))).backend
            with pytest.raises(work.UnschedulableError, match="has no handler"):
                await s.submit(job("no-such-kind"))
        async with work.Scheduler(backends=[ProcessBackend(workers=1), "local"]) as s:
            routed["process first"] = (await s.submit(job(kinds["echo"], backend=None))).backend
        async with work.Scheduler(
            backends=["local", ProcessBackend(workers=1)], default_backend="process"
        ) as s:
            routed["default"] = (await s.submit(job(kinds["echo"], backend=None))).backend
        only_commands = ProcessBackend(workers=1, kinds=["command"])
        async with work.Scheduler(backends=[only_commands, "local"]) as s:
            routed["kinds"] = (await s.submit(job(kinds["echo"], backend=None))).backend
            with pytest.raises(work.UnschedulableError, match="runs only kinds"):
                await s.submit(job(kinds["echo"]))
        return routed

    assert arun(main()) == {
        "local first": "local",
        "command": "process",
        "process first": "process",
        "default": "process",
        "kinds": "local",
    }


def test_handlers_from_paths_added_after_the_workers_started(
    tmp_path: Path, handlers: Callable[..., str], arun: Callable[..., Any]
) -> None:
    name = f"late_module_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("def area(job):\n    return job.payload['w'] * 2\n")
    backend = ProcessBackend(workers=1)

    async def main() -> work.Job:
        async with scheduler(backend) as s:
            sys.path.insert(0, str(tmp_path))
            try:
                module = __import__(name)
                kind = handlers(module.area)
                return await s.wait((await s.submit(job(kind, payload={"w": 21}))).id, WAIT_S)
            finally:
                sys.path.remove(str(tmp_path))
                sys.modules.pop(name, None)

    assert arun(main()).result == 42


def test_bad_options_are_refused() -> None:
    for options, words in [
        ({"workers": 0}, "workers"),
        ({"cpu": -1}, "cpu"),
        ({"memory_mb": 0}, "memory_mb"),
        ({"name": ""}, "name"),
        ({"tail_bytes": -1}, "tail_bytes"),
        ({"memory_poll_s": 0}, "memory_poll_s"),
    ]:
        with pytest.raises(work.ConfigurationError, match=words):
            ProcessBackend(**options)
    backend = ProcessBackend(workers=3, cpu=2, memory_mb=1024)
    assert backend.pools() == [
        work.Pool(name="process", slots=3, cpu=2.0, memory_mb=1024, labels={"runs": "processes"})
    ]


def test_canceling_one_tenants_job_never_kills_another_tenants_run_of_the_same_id(
    kinds: dict[str, str],
) -> None:
    """Jobs are keyed by (tenant_id, id): two tenants may run jobs with one id at once, and a
    cancel of one (the backend's cancel gets only the id) must not touch the other."""
    shared = work.new_job_id()
    bus = Telemetry()
    started: set[str] = set()
    both = threading.Event()

    def on_start(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        started.add(metadata["tenant_id"])
        if len(started) == 2:
            both.set()

    bus.attach("starts", JOB_STARTED, on_start)
    with work.SyncScheduler(backends=["local", ProcessBackend(workers=2)], telemetry=bus) as s:
        for tenant in ("acme", "globex"):
            s.submit(
                work.Job(
                    kind=kinds["sleepy"],
                    tenant_id=tenant,
                    id=shared,
                    payload={"seconds": 1.0},
                    constraints=work.Constraints(backend="process"),
                )
            )
        assert both.wait(30)
        canceled = s.cancel(shared, tenant_id="acme")
        done = s.wait(shared, tenant_id="globex", timeout=30)
    assert canceled.status == "canceled"
    assert done.status == "succeeded", done.error
    assert done.result == "rested"

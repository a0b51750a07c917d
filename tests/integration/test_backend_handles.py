"""Backend handles: a backend says where a run lives (``ctx.set_handle``), the attempt records
it, a durable store keeps it, and a scheduler restarted after a crash asks the backend to stop
the run its predecessor left going (``cancel_orphan``), once per orphan."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

import nsai_work as work

Run = Callable[[Coroutine[Any, Any, Any]], Any]
_RETRY = work.RetryPolicy(max_attempts=2, base_delay_ms=1, max_delay_ms=1)


class RemoteBackend:
    """A backend whose runs live elsewhere, named ``call-<job id>-<attempt>``. A job with
    ``payload["hang"]`` on attempt 1 never ends (its engine dies first)."""

    name = "remote"

    def __init__(self, *, sync: bool = False, orphans: str = "async") -> None:
        self.sync = sync
        self.started = asyncio.Event() if not sync else None
        self.thread_started = threading.Event()
        self.orphans: list[tuple[str, int, str]] = []
        if orphans == "async":
            self.cancel_orphan = self._cancel_orphan_async
        elif orphans == "sync":
            self.cancel_orphan = self._cancel_orphan_sync
        elif orphans == "raises":
            self.cancel_orphan = self._cancel_orphan_raises
        if sync:
            self.execute = self._execute_sync  # type: ignore[method-assign]

    def supports(self, job: work.Job) -> bool:
        return job.kind == "remote.call"

    def pools(self) -> list[work.Pool]:
        return [work.Pool(name="remote", slots=4)]

    async def execute(self, job: work.Job, ctx: work.JobContext) -> Any:
        ctx.set_handle(f"call-{job.id}-{job.attempt}")
        assert ctx.handle == f"call-{job.id}-{job.attempt}"
        if job.payload.get("hang") and job.attempt == 1:
            assert self.started is not None
            self.started.set()
            await asyncio.Event().wait()
        return {"attempt": job.attempt}

    def _execute_sync(self, job: work.Job, ctx: work.JobContext) -> Any:
        ctx.set_handle(f"thread-{job.id}")
        self.thread_started.set()
        return "done"

    def cancel(self, job_id: str) -> None:
        pass

    async def _cancel_orphan_async(self, job: work.Job, handle: str) -> None:
        self.orphans.append((job.id, job.attempt, handle))

    def _cancel_orphan_sync(self, job: work.Job, handle: str) -> None:
        self.orphans.append((job.id, job.attempt, handle))

    async def _cancel_orphan_raises(self, job: work.Job, handle: str) -> None:
        self.orphans.append((job.id, job.attempt, handle))
        raise RuntimeError("the cluster said no")


def _job(**payload: Any) -> work.Job:
    return work.Job(
        kind="remote.call",
        tenant_id="acme",
        payload=payload,
        constraints=work.Constraints(backend="remote", retry_policy=_RETRY),
    )


def test_an_attempt_records_the_handle_its_backend_set(arun: Run) -> None:
    backend = RemoteBackend()

    async def main() -> work.Job:
        async with work.Scheduler(backends=[backend]) as s:
            job = await s.submit(_job())
            return await s.wait(job.id, timeout=10)

    done = arun(main())
    assert done.status is work.Status.SUCCEEDED
    assert [a.handle for a in done.attempts] == [f"call-{done.id}-1"]


def test_a_sync_backend_sets_its_handle_from_its_thread(arun: Run) -> None:
    backend = RemoteBackend(sync=True)

    async def main() -> list[work.Job]:
        async with work.Scheduler(backends=[backend]) as s:
            jobs = await s.submit_many([_job() for _ in range(20)])
            return await s.wait_many([j.id for j in jobs], timeout=10)

    for done in arun(main()):
        assert done.status is work.Status.SUCCEEDED
        assert done.attempts[-1].handle == f"thread-{done.id}"  # (set before the run's end)


def test_a_running_jobs_handle_shows_while_it_runs(arun: Run) -> None:
    backend = RemoteBackend()

    async def main() -> tuple[work.Job, work.Job]:
        async with work.Scheduler(backends=[backend]) as s:
            job = await s.submit(_job(hang=True))
            assert backend.started is not None
            await asyncio.wait_for(backend.started.wait(), 10)
            running = await s.get(job.id)
            ended = await s.cancel(job.id)
            await s.wait(job.id, timeout=10)
            return running, await s.get(ended.id)

    running, ended = arun(main())
    assert running.status is work.Status.RUNNING
    assert running.attempts[-1].handle == f"call-{running.id}-1"
    assert ended.status is work.Status.CANCELED
    assert ended.attempts[-1].handle == f"call-{running.id}-1"  # kept when the attempt ends


@pytest.mark.parametrize(
    ("handle", "rule"),
    [
        (42, "non-empty string"),
        ("", "non-empty string"),
        ("x" * 513, "at most 512"),
        ("pid-\ud800", "lone surrogate"),
    ],
)
def test_a_bad_handle_fails_that_attempt_with_the_rule(arun: Run, handle: Any, rule: str) -> None:
    class BadHandle(RemoteBackend):
        async def execute(self, job: work.Job, ctx: work.JobContext) -> Any:
            if job.payload.get("bad"):
                ctx.set_handle(handle)
            return "fine"

    async def main() -> list[work.Job]:
        async with work.Scheduler(backends=[BadHandle()]) as s:
            jobs = await s.submit_many([_job(bad=True), _job()])
            return await s.wait_many([j.id for j in jobs], timeout=10)

    bad, good = arun(main())
    assert bad.status is work.Status.FAILED
    assert bad.error is not None
    assert bad.error.type == "nsai_work.ValidationError"
    assert rule in bad.error.message
    assert "$.handle" in bad.error.message
    assert bad.attempts[-1].handle is None
    assert good.status is work.Status.SUCCEEDED
    assert good.result == "fine"


def test_the_process_backend_records_the_worker_pid(arun: Run, handlers: Any) -> None:
    async def main() -> tuple[work.Job, list[int]]:
        backend = work.backends.ProcessBackend(workers=1)
        async with work.Scheduler(backends=[backend]) as s:
            job = await s.submit(
                work.Job(kind="command", tenant_id="acme", payload={"argv": ["true"]})
            )
            done = await s.wait(job.id, timeout=30)
            return done, backend.worker_pids()

    done, pids = arun(main())
    assert done.status is work.Status.SUCCEEDED, done.error
    assert done.attempts[-1].handle is not None
    assert int(done.attempts[-1].handle) in pids


async def _leave_a_run_going(url: str) -> work.Job:
    """A scheduler on ``url`` starts a job that hangs, then stops without ending it: its run is
    left going in the store, as after a crash."""
    backend = RemoteBackend()
    async with work.Scheduler(backends=[backend], store=url) as s:
        job = await s.submit(_job(hang=True))
        assert backend.started is not None
        await asyncio.wait_for(backend.started.wait(), 10)
        await s.stop(timeout=0)
        return job


@pytest.mark.parametrize("orphans", ["async", "sync", "raises"])
def test_a_restart_cancels_the_run_a_dead_scheduler_left_going(
    arun: Run, tmp_path: Path, orphans: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite://{tmp_path / 'work.db'}"

    job = arun(_leave_a_run_going(url))
    backend = RemoteBackend(orphans=orphans)

    async def second() -> work.Job:
        async with work.Scheduler(backends=[backend], store=url) as s:
            return await s.wait(job.id, timeout=10)

    with caplog.at_level(logging.ERROR, logger="nsai_work"):
        done = arun(second())
    assert backend.orphans == [(job.id, 1, f"call-{job.id}-1")]  # once, with the stored job
    assert done.status is work.Status.SUCCEEDED
    assert done.result == {"attempt": 2}
    first_attempt, second_attempt = done.attempts
    assert first_attempt.handle == f"call-{job.id}-1"
    assert first_attempt.error is not None
    assert first_attempt.error.type == "EngineLostError"
    assert second_attempt.handle == f"call-{job.id}-2"
    failed_to_cancel = [r for r in caplog.records if "orphan" in r.getMessage()]
    assert len(failed_to_cancel) == (1 if orphans == "raises" else 0)


def test_a_backend_that_cannot_cancel_orphans_gets_a_warning(
    arun: Run, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite://{tmp_path / 'work.db'}"

    job = arun(_leave_a_run_going(url))

    async def second() -> work.Job:
        async with work.Scheduler(backends=[RemoteBackend(orphans="none")], store=url) as s:
            return await s.wait(job.id, timeout=10)

    with caplog.at_level(logging.WARNING, logger="nsai_work"):
        done = arun(second())
    assert done.status is work.Status.SUCCEEDED
    warned = [r.getMessage() for r in caplog.records if "cannot cancel" in r.getMessage()]
    assert len(warned) == 1
    assert job.id in warned[0]
    assert f"call-{job.id}-1" in warned[0]

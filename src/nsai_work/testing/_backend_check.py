"""``check_backend(factory, ...)``: prove a backend against the Backend Protocol by running real
jobs through a real scheduler. Every built-in backend passes it; so should yours."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, NoReturn

import msgspec
from msgspec.structs import replace

from .._ir import Job, Pool, RetryPolicy, Status, new_job_id
from ..telemetry import Telemetry
from ..telemetry.events import JOB_STARTED

__all__ = ["check_backend"]


def _fail(message: str) -> NoReturn:
    raise AssertionError(f"check_backend: {message}")


def _on(job: Job, backend: str, **resources: Any) -> Job:
    """A fresh copy of the job (new id), pinned to ``backend``, run once, with extra resources."""
    constraints = replace(
        job.constraints, backend=backend, retry_policy=RetryPolicy(max_attempts=1)
    )
    return replace(
        job,
        id=new_job_id(),
        constraints=constraints,
        resources=replace(job.resources, **resources) if resources else job.resources,
    )


def check_backend(
    factory: Callable[[], Any],
    *,
    job: Job,
    failing_job: Job | None = None,
    hanging_job: Job | None = None,
    timeout_s: float = 30.0,
) -> None:
    """Raise ``AssertionError`` saying what breaks the contract.

    ``factory()`` makes a fresh backend. ``job`` must succeed on it; ``failing_job`` (optional)
    must fail; ``hanging_job`` (optional) must run until canceled, and is used to prove that
    cancel and timeouts end a run and give its capacity back.
    """
    backend = factory()
    name = getattr(backend, "name", None)
    if not isinstance(name, str) or not name:
        _fail(f"name must be a non-empty string, got {name!r}")
    for member in ("supports", "execute", "cancel"):
        if not callable(getattr(backend, member, None)):
            _fail(f"{name}: {member} must be callable")
    pools = getattr(backend, "pools", None)
    if pools is not None:
        offered = list(pools())
        if not offered or not all(isinstance(p, Pool) for p in offered):
            _fail(f"{name}: pools() must return a non-empty list of work.Pool, got {offered!r}")
        if len({p.name for p in offered}) != len(offered):
            _fail(f"{name}: pool names must be unique, got {[p.name for p in offered]}")
    for sample in (job, failing_job, hanging_job):
        if sample is None:
            continue
        answer = backend.supports(sample)
        if answer is not True:
            _fail(f"{name}: supports(job of kind {sample.kind!r}) must be True, got {answer!r}")
    assert isinstance(name, str)
    asyncio.run(_run_checks(factory, name, job, failing_job, hanging_job, timeout_s))


async def _run_checks(
    factory: Callable[[], Any],
    name: str,
    job: Job,
    failing_job: Job | None,
    hanging_job: Job | None,
    timeout_s: float,
) -> None:
    from ..engine import Scheduler

    bus = Telemetry()
    started: dict[str, asyncio.Event] = {}

    def on_started(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        flag = started.get(metadata["job_id"])
        if flag is not None:
            flag.set()

    bus.attach("check-backend-started", JOB_STARTED, on_started)
    async with Scheduler(backends=[factory()], telemetry=bus) as scheduler:
        done = await scheduler.wait((await scheduler.submit(_on(job, name))).id, timeout=timeout_s)
        if done.status is not Status.SUCCEEDED:
            _fail(f"{name}: the job should succeed, it ended {done.status}: {done.error}")
        try:
            msgspec.json.encode(done.result)
        except TypeError as exc:  # pragma: no cover - the engine already refuses these
            _fail(f"{name}: the result is not JSON-encodable: {exc}")
        if failing_job is not None:
            failed = await scheduler.wait(
                (await scheduler.submit(_on(failing_job, name))).id, timeout=timeout_s
            )
            if failed.status is not Status.FAILED or failed.error is None:
                _fail(
                    f"{name}: the failing job should end failed with an error, got {failed.status}"
                )
            if not failed.error.type or failed.error.message is None:
                _fail(f"{name}: a failure must carry the exception's type and message")
        if hanging_job is not None:
            await _check_cancel(scheduler, name, hanging_job, started, timeout_s)
            timed = await scheduler.submit(_on(hanging_job, name, timeout_ms=100))
            ended = await scheduler.wait(timed.id, timeout=timeout_s)
            if ended.status is not Status.TIMEOUT:
                _fail(f"{name}: a job past its timeout_ms should end timeout, got {ended.status}")
            await scheduler.wait_idle(timeout=timeout_s)
        stats = await scheduler.stats()
        busy = {p: s.used.slots for p, s in stats.pools.items() if s.used.slots}
        if busy:
            _fail(f"{name}: capacity still reserved after every run ended: {busy}")
    bus.detach("check-backend-started")


async def _check_cancel(
    scheduler: Any, name: str, hanging_job: Job, started: dict[str, asyncio.Event], timeout_s: float
) -> None:
    job = _on(hanging_job, name)
    flag = started[job.id] = asyncio.Event()
    await scheduler.submit(job)
    await asyncio.wait_for(flag.wait(), timeout_s)
    canceled = await scheduler.cancel(job.id, "check_backend")
    if canceled.status is not Status.CANCELED:
        _fail(f"{name}: cancel of a running job should end it canceled, got {canceled.status}")
    await scheduler.wait_idle(timeout=timeout_s)

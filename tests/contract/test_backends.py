"""``work.testing.check_backend`` over every built-in backend and two custom ones, and its
verdict on broken backends."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

import nsai_work as work
from nsai_work.backends import AltarBackend, LocalBackend, MockBackend
from nsai_work.testing import check_backend

Register = Callable[..., str]
TENANT = "contract"
TIMEOUT_S = 10.0


def job(kind: str, **fields: Any) -> work.Job:
    return work.Job(kind=kind, tenant_id=TENANT, **fields)


def wait_until_cancelled(ctx: work.JobContext) -> None:
    """What a well-behaved sync handler does: return soon after its run is canceled (a thread
    cannot be interrupted, so it checks ``ctx.cancelled``)."""
    stop = threading.Event()
    while not ctx.cancelled and not stop.wait(0.005):
        pass


# ---- the local backend --------------------------------------------------------------------------


def test_local_backend_with_async_handlers(handlers: Register) -> None:
    async def ok(job: work.Job) -> dict[str, Any]:
        return {"echo": job.payload}

    async def fails(job: work.Job) -> None:
        raise RuntimeError("async failure")

    async def hangs(job: work.Job) -> None:
        await asyncio.Event().wait()

    check_backend(
        LocalBackend,
        job=job(handlers(ok), payload={"x": 1}),
        failing_job=job(handlers(fails)),
        hanging_job=job(handlers(hangs)),
        timeout_s=TIMEOUT_S,
    )


def test_local_backend_with_sync_handlers(handlers: Register) -> None:
    def ok(job: work.Job) -> list[int]:
        return [1, 2, 3]

    def fails(job: work.Job) -> None:
        raise ValueError("sync failure")

    def hangs(job: work.Job, ctx: work.JobContext) -> None:
        wait_until_cancelled(ctx)

    check_backend(
        LocalBackend,
        job=job(handlers(ok)),
        failing_job=job(handlers(fails)),
        hanging_job=job(handlers(hangs)),
        timeout_s=TIMEOUT_S,
    )


def test_local_backend_with_its_own_registry() -> None:
    registry = work.HandlerRegistry()
    registry.register("private-kind", lambda job: "private")
    check_backend(
        lambda: LocalBackend(handlers=registry, threads=2, async_slots=2),
        job=job("private-kind"),
        timeout_s=TIMEOUT_S,
    )
    assert not LocalBackend().supports(job("private-kind"))


# ---- the altar backend --------------------------------------------------------------------------


def test_altar_backend(tools: Register) -> None:
    def fails(args: dict[str, Any]) -> None:
        raise RuntimeError(f"tool failed on {args}")

    async def hangs(args: dict[str, Any]) -> None:
        await asyncio.Event().wait()

    add = tools(
        lambda args: {"sum": args["a"] + args["b"]},
        parameters={
            "type": "OBJECT",
            "properties": {"a": {"type": "NUMBER"}, "b": {"type": "NUMBER"}},
            "required": ["a", "b"],
        },
    )
    check_backend(
        AltarBackend,
        job=job("tool_call", payload={"tool_name": add, "args": {"a": 1, "b": 2}}),
        failing_job=job("tool_call", payload={"function_name": tools(fails)}),
        hanging_job=job("tool_call", payload={"tool_id": tools(hangs), "arguments": {}}),
        timeout_s=TIMEOUT_S,
    )


def test_altar_backend_runs_the_builtin_echo() -> None:
    check_backend(
        AltarBackend,
        job=job("tool_call", payload={"tool": "echo", "args": {"hello": "world"}}),
        timeout_s=TIMEOUT_S,
    )


# ---- the mock backend ---------------------------------------------------------------------------


class PerKindMock(MockBackend):
    """An isolated mock, configured per case: each job's kind picks the behaviour."""

    BEHAVIORS: ClassVar[dict[str, object]] = {
        "mock-ok": ("ok", {"answer": 42}),
        "mock-fail": ("fail", "Simulated failure"),
        "mock-hang": "hang",
    }
    made: ClassVar[list[PerKindMock]] = []

    def __init__(self) -> None:
        super().__init__(isolated=True)
        PerKindMock.made.append(self)

    async def execute(self, job: work.Job, ctx: work.JobContext) -> Any:
        self.configure(behavior=self.BEHAVIORS[job.kind])
        return await super().execute(job, ctx)


def test_mock_backend_configured_per_case() -> None:
    PerKindMock.made.clear()
    check_backend(
        PerKindMock,
        job=job("mock-ok"),
        failing_job=job("mock-fail"),
        hanging_job=job("mock-hang"),
        timeout_s=TIMEOUT_S,
    )
    ran = PerKindMock.made[-1].history()  # the instance the scheduler ran
    assert [e.job.kind for e in ran] == ["mock-ok", "mock-fail", "mock-hang", "mock-hang"]
    assert work.backends.Mock.history() == []  # the shared state was not touched


@pytest.mark.parametrize("behavior", ["ok", ("ok", [1, "two"])])
def test_isolated_mock_that_succeeds(behavior: object) -> None:
    def factory() -> MockBackend:
        backend = MockBackend(isolated=True, name="iso", slots=2)
        backend.configure(behavior=behavior, delay_ms=1)
        return backend

    check_backend(factory, job=job("anything"), timeout_s=TIMEOUT_S)


def test_isolated_mocks_prove_failure_and_hanging_separately() -> None:
    def make(behavior: object) -> Callable[[], MockBackend]:
        def factory() -> MockBackend:
            backend = MockBackend(isolated=True)
            backend.configure(behavior=behavior)
            return backend

        return factory

    # a mock told to fail cannot pass as a working backend ...
    with pytest.raises(AssertionError, match="should succeed"):
        check_backend(make(("fail", "down")), job=job("x"), timeout_s=TIMEOUT_S)
    # ... and one told to hang neither
    with pytest.raises(AssertionError):
        check_backend(make("hang"), job=job("x", resources=work.Resources(timeout_ms=50)))


# ---- custom backends ----------------------------------------------------------------------------


class SyncBackend:
    """A third-party backend with a sync ``execute`` (it runs in a thread) and a cancel that
    really stops the run."""

    name = "sync-custom"

    def __init__(self) -> None:
        self.stops: dict[str, threading.Event] = {}
        self.threads: set[str] = set()

    def supports(self, job: work.Job) -> bool:
        return job.kind.startswith("custom")

    def pools(self) -> list[work.Pool]:
        return [work.Pool(name="sync-custom", slots=2, cpu=2.0)]

    def execute(self, job: work.Job, ctx: work.JobContext) -> Any:
        self.threads.add(threading.current_thread().name)
        if job.kind == "custom-fail":
            raise OSError("device unplugged")
        if job.kind == "custom-hang":
            stop = self.stops.setdefault(job.id, threading.Event())
            stop.wait(TIMEOUT_S)
            return None
        return {"ran": job.id, "attempt": ctx.attempt}

    def cancel(self, job_id: str) -> None:
        self.stops.setdefault(job_id, threading.Event()).set()


class AsyncBackend:
    """A third-party backend with an async ``execute``, no ``pools()`` (the default one pool)."""

    name = "async-custom"

    def supports(self, job: work.Job) -> bool:
        return True

    async def execute(self, job: work.Job, ctx: work.JobContext) -> Any:
        if job.kind == "custom-fail":
            raise RuntimeError("remote said no")
        if job.kind == "custom-hang":
            await asyncio.Event().wait()
        await asyncio.sleep(0)
        return "async result"

    async def cancel(self, job_id: str) -> None:
        await asyncio.sleep(0)


def test_custom_backend_with_a_sync_execute() -> None:
    made: list[SyncBackend] = []

    def factory() -> SyncBackend:
        made.append(SyncBackend())
        return made[-1]

    check_backend(
        factory,
        job=job("custom-ok"),
        failing_job=job("custom-fail"),
        hanging_job=job("custom-hang"),
        timeout_s=TIMEOUT_S,
    )
    threads = made[-1].threads
    assert threads
    assert threading.main_thread().name not in threads  # execute ran in worker threads


def test_custom_backend_with_an_async_execute() -> None:
    check_backend(
        AsyncBackend,
        job=job("custom-ok"),
        failing_job=job("custom-fail"),
        hanging_job=job("custom-hang"),
        timeout_s=TIMEOUT_S,
    )


def test_a_custom_backend_runs_in_a_scheduler(arun: Callable[..., Any]) -> None:
    async def main() -> work.Job:
        async with work.Scheduler(backends=["local", SyncBackend()]) as s:
            submitted = await s.submit(job("custom-ok"))
            return await s.wait(submitted.id, timeout=5)

    done = arun(main())
    assert (done.status, done.backend, done.pool) == ("succeeded", "sync-custom", "sync-custom")
    assert done.result == {"ran": done.id, "attempt": 1}


# ---- broken backends ----------------------------------------------------------------------------


class Broken(AsyncBackend):
    name = "broken"


class ReturnsASet(Broken):
    async def execute(self, job: work.Job, ctx: work.JobContext) -> Any:
        return {1, 2, 3}


class EmptyName(AsyncBackend):
    name = ""


class NoName:
    def supports(self, job: work.Job) -> bool:
        return True

    def execute(self, job: work.Job, ctx: work.JobContext) -> Any:
        return None

    def cancel(self, job_id: str) -> None:
        return None


class NoCancel:
    name = "no-cancel"

    def supports(self, job: work.Job) -> bool:
        return True

    def execute(self, job: work.Job, ctx: work.JobContext) -> Any:
        return None


class SupportsNothing(Broken):
    def supports(self, job: work.Job) -> bool:
        return False


class SupportsTruthy(Broken):
    def supports(self, job: work.Job) -> bool:
        return 1  # type: ignore[return-value]


class NoPools(Broken):
    def pools(self) -> list[work.Pool]:
        return []


class DictPools(Broken):
    def pools(self) -> list[Any]:
        return [{"name": "p", "slots": 1}]


class TwinPools(Broken):
    def pools(self) -> list[work.Pool]:
        return [work.Pool(name="p"), work.Pool(name="p")]


class NeverFails(Broken):
    async def execute(self, job: work.Job, ctx: work.JobContext) -> Any:
        return "fine"


class AlwaysFails(Broken):
    async def execute(self, job: work.Job, ctx: work.JobContext) -> Any:
        raise RuntimeError("nothing works")


class NeverHangs(Broken):
    async def execute(self, job: work.Job, ctx: work.JobContext) -> Any:
        return "done at once"


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        (ReturnsASet, "should succeed"),
        (EmptyName, "name must be a non-empty string"),
        (NoName, "name must be a non-empty string"),
        (NoCancel, "cancel must be callable"),
        (SupportsNothing, "supports"),
        (SupportsTruthy, "must be True"),
        (NoPools, "pools()"),
        (DictPools, "pools()"),
        (TwinPools, "unique"),
        (NeverFails, "failing job should end failed"),
        (AlwaysFails, "should succeed"),
        (NeverHangs, ""),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else None,
)
def test_check_backend_rejects_a_broken_backend(backend: type, message: str) -> None:
    with pytest.raises(AssertionError, match="check_backend") as info:
        check_backend(
            backend,
            job=job("custom-ok"),
            failing_job=job("custom-fail"),
            hanging_job=job("custom-hang"),
            timeout_s=TIMEOUT_S,
        )
    assert message in str(info.value)


def test_a_non_json_result_is_reported_as_the_reason(arun: Callable[..., Any]) -> None:
    with pytest.raises(AssertionError) as info:
        check_backend(ReturnsASet, job=job("custom-ok"), timeout_s=TIMEOUT_S)
    assert "$.result" in str(info.value)

"""One implementation of the verbs for every face: the blocking faces, the module functions and
the clients are made from the async verbs, so they take the same arguments and say the same
thing."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pytest

import nsai_work as work
from nsai_work.engine import _default
from nsai_work.engine._blocking import start_eagerly
from nsai_work.engine._verbs import Verbs

JOB_VERBS = sorted(
    name
    for name, value in vars(Verbs).items()
    if not name.startswith("_") and inspect.isfunction(value)
)
SCHEDULER_VERBS = ["set_concurrency_limit", "set_tenant", "stats", "wait_idle"]


def _params(fn: Any) -> list[tuple[str, Any, Any]]:
    """(name, kind, default) of each parameter but self."""
    parameters = list(inspect.signature(fn).parameters.values())
    if parameters and parameters[0].name == "self":
        parameters = parameters[1:]
    return [(p.name, p.kind, p.default) for p in parameters]


def test_the_verbs_on_jobs_are_the_ones_we_document() -> None:
    assert JOB_VERBS == [
        "as_completed",
        "cancel",
        "cancel_workflow",
        "cron",
        "get",
        "get_workflow",
        "list",
        "pause_schedule",
        "remove_schedule",
        "resume_schedule",
        "retry",
        "schedules",
        "submit",
        "submit_many",
        "submit_workflow",
        "wait",
        "wait_many",
        "wait_workflow",
    ]


@pytest.mark.parametrize("name", JOB_VERBS)
def test_every_face_has_each_verb_on_jobs_with_its_arguments_and_doc(name: str) -> None:
    verb = getattr(Verbs, name)
    faces = [
        work.Scheduler,
        work.TenantScope,
        work.SyncScheduler,
        work.SyncTenantScope,
        work.Client,
        work.SyncClient,
        getattr(_default, name),
    ]
    for face in faces:
        fn = face if inspect.isfunction(face) else getattr(face, name)
        assert _params(fn) == _params(verb), (face, name)
        assert fn.__doc__ == verb.__doc__, (face, name)


@pytest.mark.parametrize("name", SCHEDULER_VERBS)
def test_the_blocking_faces_take_the_schedulers_own_verbs_from_it(name: str) -> None:
    verb = getattr(work.Scheduler, name)
    for fn in (getattr(work.SyncScheduler, name), getattr(work, name, None)):
        if fn is None:  # wait_idle is not a module function
            continue
        assert _params(fn) == _params(verb)
        assert fn.__doc__ == verb.__doc__


@pytest.mark.parametrize("face", [work.Client, work.SyncClient])
def test_a_client_has_the_verbs_on_jobs_and_none_that_need_the_schedulers_memory(
    face: type,
) -> None:
    for name in JOB_VERBS:
        assert callable(getattr(face, name)), (face, name)
    for name in [*SCHEDULER_VERBS, "as_tenant", "start", "stop"]:
        assert not hasattr(face, name), (face, name)


def test_connect_takes_the_clients_options() -> None:
    assert _params(work.connect) == _params(work.SyncClient.__init__)
    assert _params(work.SyncClient.__init__) == _params(work.Client.__init__)


def test_a_scoped_handle_refuses_another_tenants_id_naming_the_field(
    handlers: Callable[..., str],
) -> None:
    kind = handlers(lambda job: None)

    async def main() -> None:
        async with work.Scheduler() as s:
            job = await s.submit(work.Job(kind=kind, tenant_id="acme"))
            scope = s.as_tenant("acme")
            assert (await scope.get(job.id, tenant_id="acme")).id == job.id
            with pytest.raises(work.ValidationError, match="tenant 'acme'") as caught:
                await scope.get(job.id, tenant_id="globex")
            assert caught.value.path == "$.tenant_id"
            with pytest.raises(work.NotFoundError):
                await s.as_tenant("globex").get(job.id)

    asyncio.run(main())


def test_the_blocking_and_async_faces_answer_alike(handlers: Callable[..., str]) -> None:
    kind = handlers(lambda job: job.payload["x"])
    with work.SyncScheduler() as s:
        job = s.submit(work.Job(kind=kind, tenant_id="acme", payload={"x": 1}))
        assert s.wait(job.id).status == work.Status.SUCCEEDED
        scope = s.as_tenant("acme")
        assert [j.id for j in scope.list()] == [job.id]
        assert [j.id for j in s.list("acme", status="succeeded")] == [job.id]
        assert scope.stats().succeeded == 1
        with pytest.raises(work.ValidationError, match="this handle submits for tenant 'acme'"):
            scope.submit(work.Job(kind=kind, tenant_id="globex"))
        again = scope.retry(job.id)
        assert again.retry_of == job.id
        assert [j.id for j in scope.as_completed([again.id])] == [again.id]


# ---- start_eagerly: the first step at once, the rest as a task ---------------------------------


async def _settled(answer: Future[Any]) -> None:
    """Wait for ``answer`` without leaving an unretrieved exception to be logged."""
    wrapped = asyncio.wrap_future(answer)
    await asyncio.wait([wrapped])
    if not wrapped.cancelled():
        wrapped.exception()


def _eagerly(coroutine: Any) -> tuple[Future[Any], list[str]]:
    answer: Future[Any] = Future()
    trail: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        start_eagerly(coroutine, loop, answer)
        trail.append("started" + (" (done)" if answer.done() else ""))
        await _settled(answer)

    asyncio.run(main())
    return answer, trail


def test_a_coroutine_that_never_waits_is_answered_within_the_call() -> None:
    async def quick() -> int:
        return 7

    answer, trail = _eagerly(quick())
    assert trail == ["started (done)"]
    assert answer.result() == 7


def test_a_coroutine_that_waits_goes_on_as_a_task_with_what_it_awaited() -> None:
    async def slow() -> int:
        await asyncio.sleep(0)
        value = await asyncio.sleep(0.001, result=5)
        return value + 1

    answer, trail = _eagerly(slow())
    assert trail == ["started"]
    assert answer.result() == 6


@pytest.mark.parametrize("error", [ValueError("bad"), KeyboardInterrupt()])
def test_an_error_raised_in_the_first_step_reaches_the_caller(error: BaseException) -> None:
    async def at_once() -> None:
        raise error

    answer, _ = _eagerly(at_once())
    with pytest.raises(type(error)):
        answer.result()


def test_an_error_raised_after_a_wait_reaches_the_caller() -> None:
    async def later() -> None:
        await asyncio.sleep(0)
        raise LookupError("later")

    answer, _ = _eagerly(later())
    with pytest.raises(LookupError, match="later"):
        answer.result()


def test_an_error_thrown_into_a_waiting_coroutine_reaches_its_handler() -> None:
    async def catches() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "cleaned up"
        return "slept"

    answer: Future[Any] = Future()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        start_eagerly(catches(), loop, answer)
        await asyncio.sleep(0)
        (task,) = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        task.cancel()
        await _settled(answer)

    asyncio.run(main())
    assert answer.result() == "cleaned up"

"""The Modal backend through a real scheduler, on ``FakeModal`` (and, with
``NSAI_WORK_MODAL_LIVE=1``, the same tests on a real Modal account: the ``live`` variants).

Tests that drive the fake itself (its spawn records, a lost connection, a forgotten call) are
fake-only: a real account cannot be made to lose its connection on demand."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import nsai_work as work
from nsai_work.backends import ModalBackend
from nsai_work.testing import FakeModal
from tests._modal import APP, CLIENTS, ENVIRONMENT, client
from tests.integration._modal_functions import FUNCTIONS

ONCE = work.Constraints(retry_policy=work.RetryPolicy(max_attempts=1))
TWICE = work.Constraints(
    retry_policy=work.RetryPolicy(max_attempts=2, base_delay_ms=1, jitter=False)
)


@pytest.fixture(params=CLIENTS)
def modal(request: pytest.FixtureRequest) -> Any:
    """FakeModal, or the real ``modal`` module in live runs."""
    return client(request.param)


@pytest.fixture
def fake() -> FakeModal:
    """FakeModal serving the test app's functions."""
    return FakeModal({APP: FUNCTIONS})


def _backend(modal: Any, **options: Any) -> ModalBackend:
    return ModalBackend(APP, environment=ENVIRONMENT, modal=modal, **options)


def _job(function: str, payload: dict[str, Any] | None = None, **fields: Any) -> work.Job:
    fields.setdefault("constraints", ONCE)
    return work.Job(
        kind="modal", tenant_id="acme", payload={"function": function, **(payload or {})}, **fields
    )


async def _until_handle(s: work.Scheduler, job_id: str) -> str:
    """Wait until the job's running attempt has its call id."""
    async with asyncio.timeout(120):
        while True:
            attempts = (await s.get(job_id)).attempts
            if attempts and attempts[-1].handle:
                return attempts[-1].handle
            await asyncio.sleep(0.01)


def _run(main: Any) -> Any:
    return asyncio.run(main())


# ---- results, remote errors, retries ------------------------------------------------------------


def test_a_call_returns_its_result_and_records_its_call_id(modal: Any) -> None:
    async def main() -> None:
        async with work.Scheduler(backends=[_backend(modal)]) as s:
            job = await s.submit(_job("add", {"a": 2, "b": 3}))
            done = await s.wait(job.id, timeout=120)
            assert done.status is work.Status.SUCCEEDED, done.error
            assert done.result == 5
            assert done.backend == "modal"
            assert done.pool == "modal"
            handle = done.attempts[-1].handle
            assert handle is not None
            assert handle.startswith("call:fc-")

    _run(main)


def test_the_call_gets_the_payload_without_function_and_modal_retries_off(
    fake: FakeModal,
) -> None:
    async def main() -> None:
        backend = _backend(fake, functions={"embed": "echo"})
        async with work.Scheduler(backends=[backend]) as s:
            by_payload = await s.submit(_job("echo", {"text": "hi"}))
            by_kind = await s.submit(
                work.Job(kind="embed", tenant_id="acme", payload={"text": "yo"})
            )
            done = await s.wait_many([by_payload.id, by_kind.id], timeout=30)
        assert [d.result for d in done] == [{"echo": {"text": "hi"}}, {"echo": {"text": "yo"}}]
        assert [(sp.app, sp.name, sp.args) for sp in fake.spawns] == [
            (APP, "echo", ({"text": "hi"},)),
            (APP, "echo", ({"text": "yo"},)),
        ]
        assert all(sp.options == {"retries": 0} for sp in fake.spawns)
        assert done[0].attempts[-1].handle == f"call:{fake.spawns[0].call_id}"

    _run(main)


def test_a_remote_exception_comes_back_with_type_message_and_remote_traceback(
    modal: Any,
) -> None:
    async def main() -> None:
        async with work.Scheduler(backends=[_backend(modal)]) as s:
            builtin = await s.submit(_job("fail", {"why": "no rows"}))
            own = await s.submit(_job("diverge", {"loss": 1e12}))
            done = await s.wait_many([builtin.id, own.id], timeout=120)
        error = done[0].error
        assert done[0].status is work.Status.FAILED
        assert error is not None
        assert error.type == "ValueError"
        assert error.message == "bad input: no rows"
        assert error.traceback is not None
        assert "in fail" in error.traceback
        assert "raise ValueError(f\"bad input: {payload.get('why', 'none given')}\")" in (
            error.traceback
        )
        error = done[1].error
        assert error is not None
        assert error.type == "tests.integration._modal_functions.TrainingDivergedError"
        assert error.message == "loss went to 1e+12"
        assert error.traceback is not None
        assert "in diverge" in error.traceback

    _run(main)


def test_a_failed_call_is_retried_by_the_jobs_policy_not_by_modal(fake: FakeModal) -> None:
    async def main() -> None:
        async with work.Scheduler(backends=[_backend(fake)]) as s:
            job = await s.submit(_job("fail", constraints=TWICE))
            done = await s.wait(job.id, timeout=30)
        assert done.status is work.Status.FAILED
        assert [a.status for a in done.attempts] == [work.Status.FAILED, work.Status.FAILED]
        assert len(fake.spawns) == 2
        assert [sp.options["retries"] for sp in fake.spawns] == [0, 0]
        assert len({a.handle for a in done.attempts}) == 2

    _run(main)


# ---- timeouts and cancels ----------------------------------------------------------------------


def test_a_timeout_cancels_the_call_and_the_job_ends_timeout(modal: Any) -> None:
    async def main() -> None:
        async with work.Scheduler(backends=[_backend(modal)]) as s:
            job = await s.submit(_job("hang", resources=work.Resources(timeout_ms=300)))
            done = await s.wait(job.id, timeout=120)
        assert done.status is work.Status.TIMEOUT
        if isinstance(modal, FakeModal):
            (spawn,) = modal.spawns
            assert spawn.options["timeout"] == 6  # Modal's own: the job's 0.3 s + 5 s, whole
            assert modal.cancels == [spawn.call_id]
            assert spawn.canceled
            assert spawn.ended is not None

    _run(main)


def test_a_cancel_cancels_the_call(modal: Any) -> None:
    async def main() -> None:
        async with work.Scheduler(backends=[_backend(modal)]) as s:
            job = await s.submit(_job("hang"))
            await _until_handle(s, job.id)
            await s.cancel(job.id)
            done = await s.wait(job.id, timeout=120)
        assert done.status is work.Status.CANCELED
        if isinstance(modal, FakeModal):
            assert modal.cancels == [modal.spawns[0].call_id]
            assert modal.spawns[0].canceled

    _run(main)


def test_the_fake_times_out_with_modals_own_exception_types(fake: FakeModal) -> None:
    import modal.exception

    async def main() -> None:
        call = await fake.Function.from_name(APP, "hang").spawn.aio({})
        with pytest.raises(modal.exception.TimeoutError):
            await call.get.aio(timeout=0.05)
        slow = fake.Function.from_name(APP, "sleep").with_options(timeout=1)
        late = await slow.spawn.aio({"s": 3})
        with pytest.raises(modal.exception.FunctionTimeoutError):
            await late.get.aio(timeout=10)
        with pytest.raises(modal.exception.NotFoundError):
            await fake.FunctionCall.from_id("fc-unknown").get.aio(timeout=1)
        await call.cancel.aio()

    _run(main)


# ---- a lost connection --------------------------------------------------------------------------


def test_a_lost_connection_reattaches_the_running_call_by_its_id(
    fake: FakeModal, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with work.Scheduler(backends=[_backend(fake)]) as s:
            job = await s.submit(_job("sleep", {"s": 0.6}))
            await fake.wait_spawned()
            await asyncio.sleep(0.05)
            fake.disconnect()
            await asyncio.sleep(0.3)
            assert (await s.get(job.id)).status is work.Status.RUNNING
            fake.reconnect()
            done = await s.wait(job.id, timeout=30)
        assert done.status is work.Status.SUCCEEDED, done.error
        assert done.result == 0.6
        assert len(fake.spawns) == 1  # the same call, awaited again: not spawned again
        assert len(done.attempts) == 1
        assert "connection lost" in caplog.text

    with caplog.at_level(logging.WARNING, logger="nsai_work.backends.modal"):
        _run(main)


def test_a_call_modal_no_longer_knows_ends_backend_lost_and_is_retried(fake: FakeModal) -> None:
    async def main() -> None:
        async with work.Scheduler(backends=[_backend(fake)]) as s:
            job = await s.submit(_job("sleep", {"s": 0.5}, constraints=TWICE))
            await fake.wait_spawned()
            fake.disconnect()
            fake.forget(fake.spawns[0].call_id)
            await asyncio.sleep(0.1)
            fake.reconnect()
            done = await s.wait(job.id, timeout=30)
        first = done.attempts[0]
        assert first.status is work.Status.FAILED
        assert first.error is not None
        assert first.error.type == "nsai_work.backends.BackendLostError"
        assert first.error.message.startswith(
            f"backend_lost: Modal no longer knows call {fake.spawns[0].call_id}"
        )
        assert done.status is work.Status.SUCCEEDED
        assert len(fake.spawns) == 2

    _run(main)


def test_an_expired_output_after_a_lost_connection_ends_the_run_backend_lost(
    fake: FakeModal,
) -> None:
    async def main() -> None:
        async with work.Scheduler(backends=[_backend(fake)]) as s:
            job = await s.submit(_job("sleep", {"s": 0.2}))
            spawn = await fake.wait_spawned()
            fake.disconnect()
            await asyncio.sleep(0.4)  # (the call ends meanwhile; its output expires)
            fake.expire(spawn.call_id)
            fake.reconnect()
            done = await s.wait(job.id, timeout=30)
        assert done.status is work.Status.FAILED
        assert done.error is not None
        assert done.error.type == "nsai_work.backends.BackendLostError"
        assert done.error.message.startswith(
            f"backend_lost: the output of Modal call {spawn.call_id}"
        )

    _run(main)


def test_a_connection_that_stays_lost_ends_the_run_backend_lost(fake: FakeModal) -> None:
    async def main() -> None:
        async with work.Scheduler(backends=[_backend(fake, reattach_s=0.3)]) as s:
            job = await s.submit(_job("hang"))
            await fake.wait_spawned()
            fake.disconnect()
            done = await s.wait(job.id, timeout=30)
            fake.reconnect()
        assert done.status is work.Status.FAILED
        assert done.error is not None
        assert done.error.type == "nsai_work.backends.BackendLostError"
        assert "could not be reached for 0.3 s" in done.error.message

    _run(main)


# ---- unknown functions ------------------------------------------------------------------------


def test_an_unknown_function_is_refused_at_submit_once_the_app_was_checked(modal: Any) -> None:
    async def main() -> None:
        backend = _backend(modal, functions={"train": "no_such_function"})
        async with work.Scheduler(backends=[backend]) as s:
            with pytest.raises(work.ValidationError) as refused:
                await s.submit(work.Job(kind="train", tenant_id="acme"))
            assert "has no deployed function 'no_such_function'" in str(refused.value)
            assert refused.value.path == "$.payload.function"
            # One never looked up fails its first attempt, clearly, and is refused after.
            job = await s.submit(_job("not_deployed", constraints=TWICE))
            done = await s.wait(job.id, timeout=120)
            assert done.status is work.Status.FAILED
            assert len(done.attempts) == 1  # not retried: it cannot succeed
            assert done.error is not None
            assert f"Modal app {APP!r}" in done.error.message
            assert "has no deployed function 'not_deployed'" in done.error.message
            with pytest.raises(work.ValidationError):
                await s.submit(_job("not_deployed"))

    _run(main)

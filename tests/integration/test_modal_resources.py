"""The Modal backend's resources on ``FakeModal``: GPU strings and options, GPU types Modal does
not offer, per-type GPU limits and concurrency (changed while running), the price table, the
actual cost, ``max_cost_usd`` and tenant budgets, credentials kept out of errors and logs, and
``cancel_orphan``."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import msgspec
import pytest

import nsai_work as work
from nsai_work.backends import ModalBackend
from nsai_work.backends._modal_prices import MODAL_GPU_TYPES, PER_SECOND
from nsai_work.backends.modal import MODAL_PRICES, PRICES_READ
from nsai_work.testing import FakeModal
from tests._modal import APP
from tests.integration._modal_functions import FUNCTIONS

ONCE = work.Constraints(retry_policy=work.RetryPolicy(max_attempts=1))
SECRET = "as-Sekret-0123456789abcdef"


@pytest.fixture
def fake() -> FakeModal:
    return FakeModal({APP: FUNCTIONS})


def _job(function: str, payload: dict[str, Any] | None = None, **fields: Any) -> work.Job:
    fields.setdefault("constraints", ONCE)
    return work.Job(
        kind="modal", tenant_id="acme", payload={"function": function, **(payload or {})}, **fields
    )


def _backend(fake: FakeModal, **options: Any) -> ModalBackend:
    return ModalBackend(APP, modal=fake, **options)


# ---- GPUs, CPU, memory, timeout as with_options ---------------------------------------------


@pytest.mark.parametrize(
    ("resources", "options"),
    [
        (
            work.Resources(gpu="A100", gpu_count=2, cpu=4, memory_mb=8192, timeout_ms=60_000),
            {"retries": 0, "gpu": "A100:2", "cpu": 4.0, "memory": 8192, "timeout": 65},
        ),
        (work.Resources(gpu="H100"), {"retries": 0, "gpu": "H100"}),
        (work.Resources(gpu="A100-80GB", gpu_count=4), {"retries": 0, "gpu": "A100-80GB:4"}),
        (work.Resources(cpu=0.1, timeout_ms=1), {"retries": 0, "cpu": 0.125, "timeout": 6}),
    ],
    ids=["a100x2", "h100", "a100-80gb-x4", "small"],
)
def test_resources_become_modal_options(
    fake: FakeModal, resources: work.Resources, options: dict[str, Any]
) -> None:
    async def main() -> None:
        async with work.Scheduler(backends=[_backend(fake)]) as s:
            job = await s.submit(_job("echo", resources=resources))
            await s.wait(job.id, timeout=30)
        assert fake.spawns[0].options == options

    asyncio.run(main())


@pytest.mark.parametrize(
    ("resources", "path", "words"),
    [
        (work.Resources(gpu="V100"), "$.resources.gpu", ["'V100'", "'H100'", "'A100-80GB'"]),
        (work.Resources(gpu="h100"), "$.resources.gpu", ["'h100'", "(write 'H100')"]),
        (work.Resources(gpu_count=2), "$.resources.gpu", ["names their type", "gpu_count=2"]),
        (work.Resources(gpu="A10", gpu_count=5), "$.resources.gpu_count", ["at most 4 A10"]),
        (work.Resources(gpu="H100", gpu_count=9), "$.resources.gpu_count", ["at most 8 H100"]),
    ],
    ids=["unknown", "spelling", "no-type", "a10x5", "h100x9"],
)
def test_a_gpu_modal_cannot_serve_is_refused_at_submit(
    fake: FakeModal, resources: work.Resources, path: str, words: list[str]
) -> None:
    async def main() -> None:
        async with work.Scheduler(backends=[_backend(fake)]) as s:
            with pytest.raises(work.ValidationError) as refused:
                await s.submit(_job("echo", resources=resources))
        assert refused.value.path == path
        for word in words:
            assert word in str(refused.value)
        assert not fake.spawns

    asyncio.run(main())


def test_gpu_limits_and_concurrency_bound_what_is_sent_and_can_change(fake: FakeModal) -> None:
    async def main() -> None:
        backend = _backend(fake, max_concurrency=1, gpu_limits={"H100": 1, "A100": 2})
        async with work.Scheduler(backends=[backend]) as s:
            with pytest.raises(work.UnschedulableError, match="L4"):  # offered by Modal, not here
                await s.submit(_job("echo", resources=work.Resources(gpu="L4")))
            with pytest.raises(work.UnschedulableError):
                await s.submit(_job("echo", resources=work.Resources(gpu="A100", gpu_count=3)))
            first = await s.submit(_job("hang", resources=work.Resources(gpu="H100")))
            plain = await s.submit(_job("hang"))
            second = await s.submit(_job("hang", resources=work.Resources(gpu="H100")))
            await fake.wait_spawned(1)
            await asyncio.sleep(0.1)
            assert len(fake.spawns) == 1  # one slot
            assert (await s.get(plain.id)).waiting_reason == "no_capacity"
            backend.set_limits(max_concurrency=3)  # told through the pool-change channel
            await fake.wait_spawned(2)
            await asyncio.sleep(0.1)
            assert len(fake.spawns) == 2  # the plain job; the second waits for the one H100
            assert fake.spawns[1].options.get("gpu") is None
            assert (await s.get(second.id)).status is work.Status.QUEUED
            assert (await s.stats()).pools["modal"].capacity.slots == 3
            for job in (first, plain, second):
                await s.cancel(job.id)
            await s.wait_many([first.id, plain.id, second.id], timeout=30)

    asyncio.run(main())


# ---- prices and cost ----------------------------------------------------------------------------


def test_the_price_table_is_modals_per_second_prices_per_hour() -> None:
    assert PRICES_READ == "2026-12-07"
    assert MODAL_PRICES.gpu_hour["H100"] == pytest.approx(0.001097 * 3600)
    assert MODAL_PRICES.gpu_hour["A100-80GB"] == pytest.approx(0.000694 * 3600)
    assert MODAL_PRICES.cpu_hour == pytest.approx(0.0000131 * 3600)
    assert MODAL_PRICES.memory_gb_hour == pytest.approx(0.00000222 * 3600)
    assert set(MODAL_PRICES.gpu_hour) == set(MODAL_GPU_TYPES) - {"RTX-PRO-6000"}
    assert MODAL_PRICES.default_gpu_hour == pytest.approx(max(PER_SECOND.values()) * 3600)
    assert _backend(FakeModal()).pools()[0].prices == MODAL_PRICES
    own = work.Prices(cpu_hour=1.0, gpu_hour={"H100": 2.0})
    assert _backend(FakeModal(), prices=own).pools()[0].prices == own


def test_the_actual_cost_is_the_measured_run_time_at_modals_prices(fake: FakeModal) -> None:
    resources = work.Resources(gpu="A100", gpu_count=2, cpu=4, memory_mb=8192, timeout_ms=60_000)
    rate = 4 * MODAL_PRICES.cpu_hour + 8 * MODAL_PRICES.memory_gb_hour
    rate += 2 * MODAL_PRICES.gpu_hour["A100"]

    async def main() -> work.Job:
        async with work.Scheduler(backends=[_backend(fake)]) as s:
            job = await s.submit(_job("sleep", {"s": 0.3}, resources=resources))
            assert job.estimated_cost_usd == pytest.approx(rate * 60 / 3600)
            return await s.wait(job.id, timeout=30)

    done = asyncio.run(main())
    attempt = done.attempts[-1]
    assert attempt.finished_at is not None
    ran_s = (attempt.finished_at - attempt.started_at).total_seconds()
    assert ran_s >= 0.3
    assert attempt.cost_usd == pytest.approx(rate * ran_s / 3600, rel=1e-3)
    assert done.cost_usd == attempt.cost_usd


def test_max_cost_usd_and_a_tenant_budget_stop_modal_jobs(fake: FakeModal) -> None:
    hour_h100 = work.Resources(gpu="H100", timeout_ms=3_600_000)
    tenant = work.Tenant("acme", quota=work.Quota(budget_usd=5.0))

    async def main() -> None:
        async with work.Scheduler(backends=[_backend(fake)], tenants=[tenant]) as s:
            capped = msgspec.structs.replace(hour_h100, gpu_count=8, max_cost_usd=10.0)
            with pytest.raises(work.UnschedulableError, match="max_cost_usd"):
                await s.submit(_job("hang", resources=capped))
            first = await s.submit(_job("hang", resources=hour_h100))
            assert first.estimated_cost_usd == pytest.approx(0.001097 * 3600, rel=1e-3)
            with pytest.raises(work.QuotaExceededError, match=r"budget_usd=5\.0") as refused:
                await s.submit(_job("hang", resources=hour_h100))
            assert "would exceed it" in str(refused.value)
            await fake.wait_spawned(1)
            await s.cancel(first.id)
            await s.wait(first.id, timeout=30)
        assert len(fake.spawns) == 1

    asyncio.run(main())


# ---- credentials ------------------------------------------------------------------------------


async def leak(payload: dict[str, Any]) -> None:
    """A function whose error quotes the token (as a careless one might)."""
    raise RuntimeError(f"auth with {os.environ['MODAL_TOKEN_SECRET']} failed")


def test_no_error_log_or_stored_job_shows_a_modal_token(
    fake: FakeModal, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-Id-0123456789")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", SECRET)
    fake.deploy(APP, "leak", leak)
    import modal.exception

    async def main() -> list[work.Job]:
        async with work.Scheduler(backends=[_backend(fake)]) as s:
            remote = await s.submit(_job("leak"))
            done = [await s.wait(remote.id, timeout=30)]

            def refuse() -> None:
                raise modal.exception.AuthError(f"token {SECRET} was rejected")

            monkeypatch.setattr(fake, "_check_connection", refuse)
            spawn = await s.submit(_job("echo"))
            done.append(await s.wait(spawn.id, timeout=30))
            return done

    with caplog.at_level(logging.DEBUG):
        done = asyncio.run(main())
    for job in done:
        assert job.status is work.Status.FAILED
        assert job.error is not None
        assert "***" in job.error.message
        stored = msgspec.json.encode(job).decode()
        assert SECRET not in stored
        assert "ak-Id-0123456789" not in stored
    assert done[1].error is not None
    assert done[1].error.message.startswith("Modal could not start nsai-work-test.echo")
    assert SECRET not in caplog.text


# ---- orphans --------------------------------------------------------------------------------


def test_cancel_orphan_cancels_the_call_a_dead_scheduler_left(fake: FakeModal) -> None:
    async def main() -> None:
        call = await fake.Function.from_name(APP, "hang").spawn.aio({})
        backend = _backend(fake)
        await backend.cancel_orphan(_job("hang"), f"call:{call.object_id}")
        assert fake.cancels == [call.object_id]
        assert fake.call(call.object_id).canceled
        await backend.cancel_orphan(_job("hang"), "task:not-modal")  # (logged, ignored)
        assert fake.cancels == [call.object_id]

    asyncio.run(main())


def test_a_restarted_scheduler_cancels_the_call_its_dead_predecessor_left(
    fake: FakeModal, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite://{tmp_path / 'work.db'}"
    calls = []

    async def first_hangs(payload: dict[str, Any]) -> str:
        calls.append(payload)
        if len(calls) == 1:
            await asyncio.sleep(3600)
        return "second attempt"

    fake.deploy(APP, "first_hangs", first_hangs)
    again = work.Constraints(retry_policy=work.RetryPolicy(max_attempts=2, base_delay_ms=1))

    async def main() -> work.Job:
        async with work.Scheduler(backends=[_backend(fake)], store=url) as s:
            job = await s.submit(_job("first_hangs", constraints=again))
            spawn = await fake.wait_spawned()
            await _until_handle(s, job.id)
            fake.disconnect()  # (so this scheduler's end cannot cancel the call: a crash)
            await s.stop(timeout=0)
        fake.reconnect()
        assert not spawn.canceled
        async with work.Scheduler(backends=[_backend(fake)], store=url) as s:
            done = await s.wait(job.id, timeout=30)
        assert fake.cancels == [spawn.call_id]  # cancel_orphan, by the stored handle
        assert spawn.canceled
        return done

    with caplog.at_level(logging.WARNING, logger="nsai_work"):
        done = asyncio.run(main())
    assert done.status is work.Status.SUCCEEDED
    assert done.result == "second attempt"
    first, second = done.attempts
    assert first.handle == f"call:{fake.spawns[0].call_id}"
    assert first.error is not None
    assert first.error.type == "EngineLostError"
    assert second.handle == f"call:{fake.spawns[1].call_id}"


async def _until_handle(s: work.Scheduler, job_id: str) -> None:
    """Wait until the job's running attempt has its call id."""
    async with asyncio.timeout(30):
        while True:
            attempts = (await s.get(job_id)).attempts
            if attempts and attempts[-1].handle:
                return
            await asyncio.sleep(0.01)

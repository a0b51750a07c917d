"""``max_payload_bytes``: a job whose payload (or metadata) encodes to more JSON than the limit
is refused at submit with the field, the limit and the size; the rest of a batch is untouched
when it is refused alone, and a client applies its own limit before it commits."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

import nsai_work as work

Run = Callable[[Coroutine[Any, Any, Any]], Any]
Register = Callable[..., str]


def test_a_payload_over_the_limit_is_refused_naming_the_field(
    arun: Run, handlers: Register
) -> None:
    kind = handlers(lambda job: len(job.payload["text"]))

    async def main() -> None:
        async with work.Scheduler(max_payload_bytes=200) as s:
            fits = await s.submit(work.Job(kind=kind, tenant_id="acme", payload={"text": "é" * 80}))
            assert (await s.wait(fits.id, timeout=10)).result == 80
            with pytest.raises(work.ValidationError) as caught:
                await s.submit(work.Job(kind=kind, tenant_id="acme", payload={"text": "x" * 300}))
            assert caught.value.path == "$.payload"
            assert "at most 200 bytes" in str(caught.value)
            assert "(max_payload_bytes), got 311 bytes" in str(caught.value)
            with pytest.raises(work.ValidationError) as caught:
                await s.submit_many(
                    [
                        work.Job(kind=kind, tenant_id="acme", payload={"text": "ok"}),
                        work.Job(kind=kind, tenant_id="acme", metadata={"note": "m" * 500}),
                    ]
                )
            assert (caught.value.path, caught.value.index) == ("$.metadata", 1)
            assert (await s.list(tenant_id="acme")).jobs == [await s.get(fits.id)]  # all or none

    arun(main())


def test_the_default_limit_is_one_mebibyte(arun: Run, handlers: Register) -> None:
    kind = handlers(lambda job: None)

    async def main() -> None:
        async with work.Scheduler() as s:
            await s.submit(work.Job(kind=kind, tenant_id="acme", payload={"b": "x" * 1_000_000}))
            with pytest.raises(work.ValidationError, match="at most 1048576 bytes"):
                await s.submit(
                    work.Job(kind=kind, tenant_id="acme", payload={"b": "x" * 1_048_576})
                )

    arun(main())


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10", None])
def test_a_bad_limit_is_a_configuration_error(bad: Any) -> None:
    with pytest.raises(work.ConfigurationError, match="max_payload_bytes must be an int >= 0"):
        work.Scheduler(max_payload_bytes=bad)
    with pytest.raises(work.ConfigurationError, match="max_payload_bytes must be an int >= 0"):
        work.Client(store="sqlite:///x.db", max_payload_bytes=bad)


def test_a_client_and_the_scheduler_each_apply_their_limit(
    arun: Run, handlers: Register, tmp_path: Path
) -> None:
    url = f"sqlite://{tmp_path / 'work.db'}"
    kind = handlers(lambda job: "ran")

    async def main() -> tuple[work.Job, work.Job]:
        async with work.Scheduler(store=url, max_payload_bytes=100):
            async with work.Client(store=url, max_payload_bytes=50) as client:
                with pytest.raises(work.ValidationError, match="at most 50 bytes") as caught:
                    await client.submit(
                        work.Job(kind=kind, tenant_id="acme", payload={"t": "x" * 60})
                    )
                assert caught.value.path == "$.payload"
            async with work.Client(store=url, max_payload_bytes=1000) as client:
                small = await client.submit(work.Job(kind=kind, tenant_id="acme"))
                large = await client.submit(  # within the client's limit, not the scheduler's
                    work.Job(kind=kind, tenant_id="acme", payload={"t": "x" * 200})
                )
                return (
                    await client.wait(small.id, timeout=10),
                    await client.wait(large.id, timeout=10),
                )

    small, large = arun(main())
    assert (small.status, small.result) == (work.Status.SUCCEEDED, "ran")
    assert large.status is not work.Status.SUCCEEDED
    assert "at most 100 bytes" in (large.error.message if large.error else "")

"""The Ray backend against a real 2-CPU Ray cluster (started by the ``ray_cluster`` fixture in
this network namespace): callables as Ray tasks, retries, timeouts and cancels that really end
the task in Ray, command jobs through Ray Jobs, and the backend contract."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import pytest

import nsai_work as work
from nsai_work.backends import RayBackend
from nsai_work.testing import check_backend
from tests._ray import RayCluster
from tests.integration._ray_handlers import ray_registry

pytestmark = pytest.mark.slow

ONCE = work.Constraints(retry_policy=work.RetryPolicy(max_attempts=1))


def _job(kind: str, *, constraints: work.Constraints = ONCE, **fields: Any) -> work.Job:
    return work.Job(kind=kind, tenant_id="acme", constraints=constraints, **fields)


def _scheduler(cluster: RayCluster, **options: Any) -> work.Scheduler:
    backend = RayBackend(cluster.address, handlers=ray_registry(), poll_s=0.5, **options)
    return work.Scheduler(backends=[backend, "local"])


def _task_state(cluster: RayCluster, handle: str) -> Any:
    from ray.util.state import get_task

    assert handle.startswith("task:")
    # (the cluster named: with none, Ray looks for one and fails if another runs on the machine)
    return get_task(handle.removeprefix("task:"), address=cluster.dashboard_url, timeout=10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_callables_run_as_ray_tasks(ray_cluster: RayCluster) -> None:
    async def main() -> None:
        async with _scheduler(ray_cluster) as s:
            jobs = await s.submit_many(
                [
                    _job("ray.noop"),
                    _job("ray.add", payload={"a": 2, "b": 3}),
                    _job("ray.async_add", payload={"a": 4, "b": 5}),
                ]
            )
            done = await s.wait_many([j.id for j in jobs], timeout=60)
            assert [j.status for j in done] == ["succeeded"] * 3, [j.error for j in done]
            assert [j.result for j in done] == [None, 5, 9]
            assert {j.backend for j in done} == {"ray"}
            (pool,) = {j.pool for j in done}
            assert pool is not None
            assert pool.startswith("ray:127.0.0.1:")
            assert all(j.attempts[-1].handle.startswith("task:") for j in done)
            stats = await s.stats()
            capacity = stats.pools[pool].capacity
            assert (capacity.slots, capacity.cpu) == (2, 2.0)
            assert capacity.labels["ray.io/node-ip"] == "127.0.0.1"

    asyncio.run(main())


def test_a_failing_task_is_retried_per_policy_with_its_remote_error(
    ray_cluster: RayCluster,
) -> None:
    retry = work.Constraints(
        retry_policy=work.RetryPolicy(max_attempts=3, base_delay_ms=10, jitter=False)
    )

    async def main() -> None:
        async with _scheduler(ray_cluster) as s:
            flaky = await s.submit(_job("ray.flaky", constraints=retry, payload={"succeed_on": 3}))
            fails = await s.submit(_job("ray.fails", constraints=retry, payload={"why": "x"}))
            never = await s.submit(_job("ray.never", constraints=retry))
            flaky, fails, never = await s.wait_many([flaky.id, fails.id, never.id], timeout=60)
            assert flaky.status == "succeeded"
            assert flaky.result["attempt"] == 3
            assert [a.error.type for a in flaky.attempts[:2]] == [  # type: ignore[union-attr]
                "tests.integration._ray_handlers.FlakyError"
            ] * 2
            assert fails.status == "failed"
            assert len(fails.attempts) == 3
            assert fails.error is not None
            assert fails.error.type == "ValueError"
            assert fails.error.message == "bad input: x"
            assert fails.error.traceback is not None
            assert "in fails" in fails.error.traceback
            assert never.status == "failed"
            assert len(never.attempts) == 1  # NonRetryableError: not retried

    asyncio.run(main())


def test_a_timeout_cancels_the_task_in_ray(ray_cluster: RayCluster) -> None:
    async def main() -> None:
        async with _scheduler(ray_cluster) as s:
            job = await s.submit(
                _job("ray.sleeps", payload={"s": 120}, resources=work.Resources(timeout_ms=3000))
            )
            done = await s.wait(job.id, timeout=60)
            assert done.status == "timeout"
            handle = done.attempts[-1].handle
            assert handle is not None
            await s.wait_idle(timeout=30)
            return handle

    handle = asyncio.run(main())
    # Ray's state API (about a second behind): the task failed, and its worker is gone
    deadline = time.monotonic() + 30
    while True:
        task = _task_state(ray_cluster, handle)
        if task is not None and task.state == "FAILED" and task.worker_pid:
            break
        assert time.monotonic() < deadline, f"task still {task and task.state}"
        time.sleep(0.5)
    assert not _alive(task.worker_pid), "the worker that ran the timed-out task still lives"


def test_a_cancel_ends_the_task_and_frees_the_slot(ray_cluster: RayCluster) -> None:
    async def main() -> None:
        async with _scheduler(ray_cluster) as s:
            first = await s.submit(_job("ray.sleeps", payload={"s": 120}))
            second = await s.submit(_job("ray.sleeps", payload={"s": 120}))
            deadline = time.monotonic() + 30
            while (await s.get(second.id)).attempts == () or (await s.get(second.id)).attempts[
                -1
            ].handle is None:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            await s.cancel(first.id)
            await s.cancel(second.id)
            canceled = await s.wait(first.id, timeout=30)
            assert canceled.status == "canceled"
            await s.wait_idle(timeout=30)
            # the slots are free again: two more tasks run at once
            jobs = await s.submit_many([_job("ray.noop"), _job("ray.noop")])
            done = await s.wait_many([j.id for j in jobs], timeout=30)
            assert [j.status for j in done] == ["succeeded", "succeeded"]
            return canceled.attempts[-1].handle

    handle = asyncio.run(main())
    deadline = time.monotonic() + 30
    while (task := _task_state(ray_cluster, handle)) is None or task.state != "FAILED":
        assert time.monotonic() < deadline, f"task still {task and task.state}"
        time.sleep(0.5)


def test_a_command_job_runs_on_ray_jobs_with_its_logs(ray_cluster: RayCluster) -> None:
    script = "import os; print('epochs', os.environ['EPOCHS']); print('done')"
    bad = "import sys; print('loading'); sys.exit(3)"

    async def main() -> None:
        async with _scheduler(ray_cluster) as s:
            ok = await s.submit(
                _job(
                    "command",
                    payload={"argv": [sys.executable, "-c", script], "env": {"EPOCHS": "3"}},
                )
            )
            failed = await s.submit(
                _job("command", payload={"entrypoint": f'{sys.executable} -c "{bad}"'})
            )
            ok, failed = await s.wait_many([ok.id, failed.id], timeout=120)
            assert ok.status == "succeeded", ok.error
            assert ok.backend == "ray"
            assert "epochs 3" in ok.result["logs_tail"]
            assert ok.result["submission_id"] == f"nsai-{ok.id}-1"
            assert ok.attempts[-1].handle == f"job:nsai-{ok.id}-1"
            assert failed.status == "failed"
            assert failed.error is not None
            assert failed.error.type == "nsai_work.backends.CommandFailedError"
            assert "loading" in failed.error.message
            # Ray's dashboard shows whose work it is
            from ray.job_submission import JobSubmissionClient

            client = JobSubmissionClient(ray_cluster.dashboard_url)
            info = client.get_job_info(f"nsai-{ok.id}-1")
            assert info.metadata["nsai.tenant_id"] == "acme"
            assert info.metadata["nsai.job_id"] == ok.id

    asyncio.run(main())


def test_bad_command_payloads_are_refused_naming_the_field(ray_cluster: RayCluster) -> None:
    async def main() -> None:
        async with _scheduler(ray_cluster) as s:
            with pytest.raises(work.ValidationError, match=r"\$\.payload\.entrypoint"):
                await s.submit(_job("command", payload={}))
            with pytest.raises(work.ValidationError, match=r"\$\.payload\.argv"):
                await s.submit(_job("command", payload={"argv": []}))
            with pytest.raises(work.ValidationError, match=r"\$\.payload\.cwd"):
                await s.submit(_job("command", payload={"entrypoint": "true", "cwd": "/"}))

    asyncio.run(main())


def test_a_result_over_the_size_limit_fails_the_job(ray_cluster: RayCluster) -> None:
    async def main() -> None:
        async with _scheduler(ray_cluster, max_result_bytes=1000) as s:
            job = await s.submit(
                _job("ray.big", payload={"n": 5000}, constraints=work.Constraints())
            )
            done = await s.wait(job.id, timeout=60)
            assert done.status == "failed"
            assert len(done.attempts) == 1  # the same result would fail again
            assert done.error is not None
            assert "max_result_bytes" in done.error.message

    asyncio.run(main())


def test_the_ray_backend_passes_check_backend(ray_cluster: RayCluster) -> None:
    check_backend(
        lambda: RayBackend(ray_cluster.address, handlers=ray_registry()),
        job=_job("ray.add", payload={"a": 1, "b": 1}),
        failing_job=_job("ray.fails"),
        hanging_job=_job("ray.sleeps", payload={"s": 120}),
        timeout_s=60,
    )

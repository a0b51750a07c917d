"""``TaskEnds``, the thread that waits for Ray tasks' ends, against the real 2-CPU cluster of the
``ray_cluster`` fixture: values and Ray's errors reach the loop, a task started while the thread
waits on a long one is still seen, a run that stops waiting is forgotten, and ``close`` stops
the thread."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any

import pytest

from nsai_work.backends._ray_waits import TaskEnds
from tests._ray import RayCluster

pytestmark = pytest.mark.slow


def _square(x: int) -> int:
    return x * x


def _boom(message: str) -> None:
    raise ValueError(message)


def _sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def _remotes() -> tuple[Any, Any, Any, Any]:
    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # (workers cannot import tests)
    once = ray.remote(max_retries=0, num_cpus=0.1)
    return ray, once(_square), once(_boom), once(_sleep)


def test_values_and_errors_reach_the_loop_each_with_its_own_task(
    ray_cluster: RayCluster,
) -> None:
    ray, square, boom, _ = _remotes()

    async def main() -> None:
        ends = TaskEnds(asyncio.get_running_loop(), ray)
        try:
            futures = [ends.watch(square.remote(i)) for i in range(200)]
            failed = ends.watch(boom.remote("bad row 7"))
            values = await asyncio.wait_for(asyncio.gather(*futures), 60)
            assert values == [i * i for i in range(200)]
            with pytest.raises(ray.exceptions.RayTaskError) as info:
                await asyncio.wait_for(failed, 60)
            assert "bad row 7" in str(info.value)
            assert isinstance(info.value.cause, ValueError)
            # (the same task watched twice: both hear of it)
            ref = square.remote(12)
            both = asyncio.gather(ends.watch(ref), ends.watch(ref))
            assert await asyncio.wait_for(both, 60) == [144, 144]
        finally:
            ends.close()

    asyncio.run(main())


def test_a_task_started_during_a_long_wait_is_seen_before_the_long_one_ends(
    ray_cluster: RayCluster,
) -> None:
    ray, square, _, sleep = _remotes()

    async def main() -> None:
        ends = TaskEnds(asyncio.get_running_loop(), ray)
        try:
            long = ends.watch(sleep.remote(30))
            await asyncio.sleep(0.5)  # the thread is waiting on the long task alone
            assert await asyncio.wait_for(ends.watch(square.remote(9)), 20) == 81
            assert not long.done()
            long.cancel()
        finally:
            ends.close()

    asyncio.run(main())


def test_a_canceled_run_is_forgotten_and_others_still_arrive(ray_cluster: RayCluster) -> None:
    ray, square, _, sleep = _remotes()

    async def main() -> None:
        ends = TaskEnds(asyncio.get_running_loop(), ray)
        try:
            ref = sleep.remote(30)
            waiting = ends.watch(ref)
            waiting.cancel()  # the run stopped waiting (its job was canceled)
            ray.cancel(ref, force=True)
            with pytest.raises(ray.exceptions.RayError):  # Ray ends it: the end is seen
                await asyncio.wait_for(ends.watch(ref), 20)
            assert await asyncio.wait_for(ends.watch(square.remote(5)), 20) == 25
        finally:
            ends.close()

    asyncio.run(main())


def test_a_task_ray_cannot_wait_for_fails_alone(ray_cluster: RayCluster) -> None:
    ray, square, _, sleep = _remotes()

    async def main() -> None:
        ends = TaskEnds(asyncio.get_running_loop(), ray)
        try:
            running = ends.watch(sleep.remote(2))
            bad = ends.watch("not an ObjectRef")  # (as a ref of a connection since closed)
            with pytest.raises(TypeError):
                await asyncio.wait_for(bad, 20)
            assert await asyncio.wait_for(running, 20) == "slept"
            assert await asyncio.wait_for(ends.watch(square.remote(3)), 20) == 9
        finally:
            ends.close()

    asyncio.run(main())


def test_close_stops_the_thread_even_while_tasks_run(ray_cluster: RayCluster) -> None:
    ray, _, _, sleep = _remotes()

    async def main() -> None:
        before = set(threading.enumerate())
        ends = TaskEnds(asyncio.get_running_loop(), ray)
        (thread,) = set(threading.enumerate()) - before
        assert thread.name == "nsai-work-ray-ends"
        assert thread.daemon
        ref = sleep.remote(30)
        pending = ends.watch(ref)
        await asyncio.sleep(0.2)
        ends.close()
        assert not thread.is_alive()
        assert not pending.done()  # (its run is the backend's to stop)
        ray.cancel(ref, force=True)

    asyncio.run(main())

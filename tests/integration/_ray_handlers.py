"""Handlers the Ray tests run as Ray tasks (sent to the workers by value: see
``ray_registry``)."""

from __future__ import annotations

import os
import time
from typing import Any

import nsai_work as work
from nsai_work._handlers import HandlerRegistry


def noop(job: work.Job) -> None:
    return None


def add(job: work.Job) -> int:
    return int(job.payload["a"]) + int(job.payload["b"])


class FlakyError(RuntimeError):
    """Raised by ``flaky`` on its first attempts."""


def flaky(job: work.Job, ctx: work.JobContext) -> dict[str, Any]:
    if ctx.attempt < int(job.payload.get("succeed_on", 2)):
        raise FlakyError(f"attempt {ctx.attempt} fails")
    return {"attempt": ctx.attempt, "pid": os.getpid()}


def fails(job: work.Job) -> None:
    raise ValueError("bad input: " + str(job.payload.get("why", "")))


def never(job: work.Job) -> None:
    raise work.NonRetryableError("do not retry me")


def sleeps(job: work.Job) -> dict[str, Any]:
    time.sleep(float(job.payload.get("s", 60)))
    return {"pid": os.getpid(), "node": _node_id()}


def sleeps_first(job: work.Job, ctx: work.JobContext) -> dict[str, Any]:
    """Sleeps ``s`` seconds on its first attempt, ``then_s`` on later ones."""
    time.sleep(float(job.payload["s"] if ctx.attempt == 1 else job.payload.get("then_s", 0)))
    return {"attempt": ctx.attempt, "node": _node_id()}


async def async_add(job: work.Job) -> int:
    return int(job.payload["a"]) + int(job.payload["b"])


def where(job: work.Job) -> dict[str, Any]:
    return {"node": _node_id(), "gpus": _gpu_ids()}


def big(job: work.Job) -> str:
    return "x" * int(job.payload["n"])


def _node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


def _gpu_ids() -> list[Any]:
    import ray

    return list(ray.get_gpu_ids())


def upstream(job: work.Job, ctx: work.JobContext) -> dict[str, Any]:
    """The results of its dependencies, as it got them in the Ray task (``ctx.upstream``)."""
    return {"upstream": ctx.upstream, "pid": os.getpid()}


def ray_registry() -> HandlerRegistry:
    """A registry with these handlers, this module sent to Ray's workers by value (they cannot
    import the tests package)."""
    import sys

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    registry = HandlerRegistry()
    for kind, fn in {
        "ray.noop": noop,
        "ray.add": add,
        "ray.flaky": flaky,
        "ray.fails": fails,
        "ray.never": never,
        "ray.sleeps": sleeps,
        "ray.sleeps_first": sleeps_first,
        "ray.async_add": async_add,
        "ray.where": where,
        "ray.big": big,
        "ray.upstream": upstream,
    }.items():
        registry.register(kind, fn)
    return registry

"""What the soak test's jobs do, chosen by ``payload["act"]``. Module-level functions of an
importable module, so the process backend's workers can import them too."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import nsai_work as work

#: How long a handler that swallows its cancellation goes on before it returns (well under the
#: 1 s the soak allows, and under stop's grace).
SWALLOW_S = 0.3


def _act(job: work.Job, ctx: work.JobContext | None) -> Any:
    act = job.payload.get("act", "ok")
    if act == "ok":
        return {"n": job.payload.get("n", 0)}
    if act == "fail":
        raise RuntimeError("soak: a failure")
    if act == "fatal":
        raise work.NonRetryableError("soak: a permanent failure")
    if act == "exit":
        raise SystemExit(3)
    if act == "interrupt":
        raise KeyboardInterrupt
    if act == "slow":  # a sync handler that checks for cancellation
        deadline = time.monotonic() + job.payload.get("seconds", 0.2)
        while time.monotonic() < deadline:
            if ctx is not None and ctx.cancelled:
                return "stopped early"
            time.sleep(0.01)
        return "slow done"
    raise ValueError(f"soak: unknown act {act!r}")


def sync_handler(job: work.Job, ctx: work.JobContext) -> Any:
    return _act(job, ctx)


async def async_handler(job: work.Job) -> Any:
    act = job.payload.get("act", "ok")
    if act == "sleep":
        await asyncio.sleep(job.payload.get("seconds", 0.05))
        return "slept"
    if act == "swallow":  # ignores its cancellation, then returns within SWALLOW_S
        try:
            await asyncio.sleep(job.payload.get("seconds", 5.0))
        except asyncio.CancelledError:
            await asyncio.sleep(SWALLOW_S)
        return "swallowed"
    return _act(job, None)


def process_handler(job: work.Job) -> Any:
    act = job.payload.get("act", "ok")
    if act == "sleep":
        time.sleep(job.payload.get("seconds", 0.05))
        return "slept"
    return _act(job, None)


def tool(args: dict[str, Any]) -> Any:
    act = args.get("act", "ok")
    if act == "sleep":
        time.sleep(args.get("seconds", 0.02))
        return "slept"
    return _act(work.Job(kind="tool", tenant_id="soak", payload=args), None)

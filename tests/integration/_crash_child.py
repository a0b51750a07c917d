"""The child of the crash storm (test_crash_storm.py): a scheduler on a durable store that
submits its share of jobs (in chunks, with fixed ids, so a restart resubmits only what was not
committed) and runs them until every one is finished; the parent kills it with SIGKILL at random
moments and starts it again.

It writes, unbuffered, to files in OUTDIR: ``admitted`` (ids whose submit returned: committed),
``succeeded`` (ids whose success the scheduler announced: committed), ``started`` (id and
attempt of each run's start), and ``done`` once everything finished.

    python tests/integration/_crash_child.py URL JOBS OUTDIR
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
from pathlib import Path
from typing import Any

import nsai_work as work
from nsai_work.telemetry import Telemetry
from nsai_work.telemetry.events import JOB_COMPLETED

KIND = "crash.step"
CHUNK = 500
RETRY = work.RetryPolicy(max_attempts=8, base_delay_ms=20, max_delay_ms=200)


class _Log:
    """Lines appended with one ``os.write`` each: a SIGKILL loses none that was written."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, *lines: str) -> None:
        if lines:
            os.write(self.fd, "".join(f"{line}\n" for line in lines).encode())


def job_id(chunk: int, index: int) -> str:
    return f"c{chunk:03d}-{index:05d}"


def jobs_of(chunk: int, total: int) -> list[work.Job]:
    count = min(CHUNK, total - chunk * CHUNK)
    return [
        work.Job(
            kind=KIND,
            tenant_id=("acme", "globex", "initech")[i % 3],
            id=job_id(chunk, i),
            # (one in 50 runs 300 ms: a kill then finds runs whose start is committed, whatever
            # the commit lag of a loaded machine)
            payload={"fail_first": i % 7 == 0, "sleep_ms": 300 if i % 50 == 0 else i % 5},
            constraints=work.Constraints(retry_policy=RETRY),
        )
        for i in range(count)
    ]


async def main(url: str, total: int, out: Path) -> None:
    started = _Log(out / "started")
    succeeded = _Log(out / "succeeded")
    admitted = _Log(out / "admitted")

    async def step(job: work.Job) -> int:
        started.write(f"{job.tenant_id} {job.id} {job.attempt}")
        if job.payload["fail_first"] and job.attempt == 1:
            raise RuntimeError("the first attempt of this one fails")
        await asyncio.sleep(job.payload["sleep_ms"] / 1000)
        return job.attempt

    work.register_handler(KIND, step, replace=True)
    bus = Telemetry()

    def on_completed(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        if metadata.get("status") == "succeeded":
            succeeded.write(f"{metadata['tenant_id']} {metadata['job_id']}")

    bus.attach("crash.completed", JOB_COMPLETED, on_completed)
    async with work.Scheduler(store=url, telemetry=bus) as s:
        keys: list[tuple[str, str]] = []
        for chunk in range((total + CHUNK - 1) // CHUNK):
            batch = jobs_of(chunk, total)
            with contextlib.suppress(work.ConflictError):  # committed before a kill: stored
                await s.submit_many(batch)
            admitted.write(*(f"{job.tenant_id} {job.id}" for job in batch))
            keys += [(job.tenant_id, job.id) for job in batch]
            await asyncio.sleep(random.random() * 0.05)
        for tenant in ("acme", "globex", "initech"):
            ids = [job_id for owner, job_id in keys if owner == tenant]
            await s.as_tenant(tenant).wait_many(ids, timeout=600)
    (out / "done").write_text("done\n")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])))

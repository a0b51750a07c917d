"""The processes of the client acceptance test: ``python -m tests.acceptance._client_procs ROLE
...`` from the repository root.

- ``scheduler URL SUMMARY``: a scheduler on the store at URL, with an async handler of kind
  ``acceptance.count`` that counts each run by (tenant, job id) and returns the payload's ``i``.
  Prints ``ready`` once started; stops when its stdin closes, then writes to SUMMARY (JSON):
  ``runs`` (every execution), ``distinct`` (jobs run), ``max`` (most runs of one job).
- ``client URL TENANT COUNT OUT``: a client that submits COUNT jobs for TENANT (the first 50
  one by one, the rest in batches of 50), then waits for all of them with ``wait_many``, and
  writes to OUT (JSON): the statuses of its jobs, whether each result is its ``i``, and how
  long the submits and the wait took.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import nsai_work as work

KIND = "acceptance.count"
SINGLE = 50  # jobs a client submits one by one before it submits in batches
BATCH = 50


async def scheduler(url: str) -> dict[str, int]:
    runs: Counter[tuple[str, str]] = Counter()

    async def count(job: work.Job) -> int:
        runs[job.tenant_id, job.id] += 1
        return int(job.payload["i"])

    work.register_handler(KIND, count)
    async with work.Scheduler(store=url):
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    return {"runs": sum(runs.values()), "distinct": len(runs), "max": max(runs.values(), default=0)}


async def client(url: str, tenant: str, count: int) -> dict[str, Any]:
    jobs = [work.Job(kind=KIND, tenant_id=tenant, payload={"i": i}) for i in range(count)]
    async with work.Client(store=url) as c:
        started = time.perf_counter()
        for job in jobs[:SINGLE]:
            await c.submit(job)
        for at in range(SINGLE, count, BATCH):
            await c.submit_many(jobs[at : at + BATCH])
        submitted = time.perf_counter()
        done = await c.wait_many([job.id for job in jobs], timeout=240)
        finished = time.perf_counter()
    return {
        "statuses": dict(Counter(job.status.value for job in done)),
        "results_ok": all(job.result == job.payload["i"] for job in done),
        "submit_s": submitted - started,
        "wait_s": finished - submitted,
    }


def main() -> None:
    role, url, *rest = sys.argv[1:]
    if role == "scheduler":
        Path(rest[0]).write_text(json.dumps(asyncio.run(scheduler(url))))
    elif role == "client":
        Path(rest[2]).write_text(json.dumps(asyncio.run(client(url, rest[0], int(rest[1])))))
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main()

"""A process that uses a SQLite store, for the tests that need a second process: run as
``python -m tests.integration._sqlite_child COMMAND URL [ARG]`` from the repository root.

- ``open URL ROLE``: open and close; prints {"ok": true} or {"error": ..., "message": ...}.
- ``hold URL``: open as the scheduler, print the lease, hold it until stdin closes.
- ``batches URL SIZE``: as the scheduler, commit batches forever (until killed); batch i
  inserts SIZE jobs {"batch": i}, finishes the jobs of batch i-1 and sets the state to i;
  prints i after each commit.
- ``fill URL``: as the scheduler, write 20 kB jobs until the store refuses; prints the error.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from msgspec.structs import replace

from nsai_work import Job, Status, StoreError, WorkError
from nsai_work._ir import utc_now
from nsai_work.stores import WriteBatch
from nsai_work.stores.sqlite import SqliteStore

CRASH_TENANT = "crash"


def say(value: Any) -> None:
    print(json.dumps(value), flush=True)


async def open_once(url: str, role: str) -> None:
    store = SqliteStore(url)
    try:
        await store.open(role)  # type: ignore[arg-type]
    except WorkError as exc:
        say({"error": type(exc).__name__, "message": str(exc)})
        return
    await store.close()
    say({"ok": True})


async def hold(url: str) -> None:
    store = SqliteStore(url)
    await store.open("scheduler")
    lease = await store.lease()
    assert lease is not None
    say({"pid": lease.pid, "host": lease.host, "fence": lease.fence})
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await store.close()


async def batches(url: str, size: int) -> None:
    store = SqliteStore(url)
    await store.open("scheduler")
    recovered = await store.load()
    number = int(recovered.state or b"0")
    previous = [job for job in recovered.jobs if job.tenant_id == CRASH_TENANT]
    while True:
        number += 1
        jobs = [
            Job(kind="crash", tenant_id=CRASH_TENANT, payload={"batch": number, "n": n})
            for n in range(size)
        ]
        done = [replace(job, status=Status.SUCCEEDED, finished_at=utc_now()) for job in previous]
        await store.write(WriteBatch(inserts=jobs, updates=done, state=str(number).encode()))
        print(number, flush=True)
        previous = jobs


async def fill(url: str) -> None:
    store = SqliteStore(url)
    await store.open("scheduler")
    written = 0
    try:
        while True:
            jobs = [
                Job(kind="fill", tenant_id="fill", payload={"blob": "x" * 20_000})
                for _ in range(10)
            ]
            await store.write(WriteBatch(inserts=jobs))
            written += len(jobs)
    except StoreError as exc:
        recovered = await store.load()  # the store still reads after a refused write
        say({"written": written, "message": str(exc), "loaded": len(recovered.jobs)})
    finally:
        await store.close()


def main() -> None:
    command, url, *rest = sys.argv[1:]
    if command == "open":
        asyncio.run(open_once(url, rest[0]))
    elif command == "hold":
        asyncio.run(hold(url))
    elif command == "batches":
        asyncio.run(batches(url, int(rest[0])))
    elif command == "fill":
        asyncio.run(fill(url))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()

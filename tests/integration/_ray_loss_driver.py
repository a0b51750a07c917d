"""A scheduler on a Ray cluster, in a process of its own (``test_ray_loss``: the test stops and
restarts the whole cluster, and one process can be connected to one Ray cluster only).

``python -m tests.integration._ray_loss_driver <address>``: reads jobs to submit from stdin
(one JSON list of jobs per line; stdin closed stops the scheduler) and writes, every 0.2 s,
one JSON line to stdout: ``{"t": monotonic seconds, "jobs": {id: job}, "pools": [names]}``.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any

import msgspec

import nsai_work as work
from nsai_work.backends import RayBackend
from tests.integration._ray_handlers import ray_registry

_encoder = msgspec.json.Encoder()
_jobs = msgspec.json.Decoder(list[work.Job])


def _read_stdin(loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[bytes]) -> None:
    for line in sys.stdin.buffer:
        loop.call_soon_threadsafe(lines.put_nowait, line)
    loop.call_soon_threadsafe(lines.put_nowait, b"")


async def main(address: str) -> None:
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[bytes] = asyncio.Queue()
    threading.Thread(target=_read_stdin, args=(loop, lines), daemon=True).start()
    backend = RayBackend(address, handlers=ray_registry(), poll_s=0.5, reconnect_max_s=2)
    ids: list[str] = []
    async with work.Scheduler(backends=[backend]) as s:
        while True:
            while not lines.empty():
                line = lines.get_nowait()
                if not line:
                    return
                for job in _jobs.decode(line):
                    ids.append((await s.submit(job)).id)
            jobs = {i: await s.get(i) for i in ids}
            stats = await s.stats()
            report: dict[str, Any] = {
                "t": time.monotonic(),
                "jobs": jobs,
                "pools": list(stats.pools),
            }
            sys.stdout.buffer.write(_encoder.encode(report) + b"\n")
            sys.stdout.flush()
            await asyncio.sleep(0.2)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

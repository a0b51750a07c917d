"""Ray task ends, carried to the event loop in batches by one waiting thread.

Ray can call a Python callback when a task ends (``ObjectRef._on_completed``, which is also
what ``await ref`` uses), but it calls it on its core worker's I/O thread, which must then take
the GIL: while the loop is busy (dispatching, submitting) that thread waits for the GIL, and
with it every reply, lease and push of the driver's Ray traffic. Measured on a 2-CPU cluster
with a stream of short tasks, that thread spent about a quarter of the run waiting for the GIL.

Here one thread of ours waits instead, in ``ray.wait`` (which waits without the GIL), for all
the tasks in flight at once; what ended is read with one ``ray.get`` and handed to the loop in
one call (``fetch_local=False``: a wait that also starts fetching each result costs Ray twice
as much; the ``ray.get`` fetches what ended, and a result is small: ``max_result_bytes``).
A wait asks Ray about every task in flight, so it is made for a batch: it returns when
all have ended or after ``timeout``, which is ``FLOOR_S`` (2 ms) while tasks keep ending and
grows while none does, up to about 36 µs per task in flight (at most ``CEILING_S``, 100 ms), so that
waiting on thousands of long tasks costs a few percent of a core. The price is latency: a
task's end reaches the loop up to ``FLOOR_S`` after Ray has it (more when thousands of long
tasks run and nothing has ended for a while), and a task started while the thread waits is
added at the next wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from typing import Any, Final

__all__ = ["TaskEnds"]

_log = logging.getLogger("nsai_work.backends.ray")
#: The wait while tasks keep ending.
FLOOR_S: Final = 0.002
#: The longest wait, whatever the number of tasks in flight.
CEILING_S: Final = 0.1
#: Per task in flight: how long a wait may last when nothing ends (a wait costs Ray about
#: 1.5 µs per task; 36 µs per task keeps an idle waiter under ~5% of a core).
_PER_TASK_S: Final = 36e-6
#: How long the thread pauses after Ray itself failed a wait (the cluster went away).
_ERROR_PAUSE_S: Final = 0.5


class TaskEnds:
    """Futures of the loop that end as Ray tasks do (with the task's value, or the exception
    ``ray.get`` raised for it). ``close`` stops the thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ray: Any) -> None:
        self._loop = loop
        self._ray = ray
        self._new: deque[tuple[Any, asyncio.Future[Any]]] = deque()
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="nsai-work-ray-ends", daemon=True)
        self._thread.start()

    def watch(self, ref: Any) -> asyncio.Future[Any]:
        """A future (of the loop, to be awaited there) that ends as the task of ``ref`` does."""
        future: asyncio.Future[Any] = self._loop.create_future()
        with self._changed:
            self._new.append((ref, future))
            self._changed.notify()
        return future

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop the thread (it leaves its current wait within ``CEILING_S``); futures not ended
        yet stay so (their runs are being stopped with the backend)."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    # ---- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        pending: dict[Any, list[asyncio.Future[Any]]] = {}
        timeout = FLOOR_S
        while True:
            with self._changed:
                while not self._new and not pending and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
                adopted = bool(self._new)
                while self._new:
                    ref, future = self._new.popleft()
                    pending.setdefault(ref, []).append(future)
            if adopted:
                timeout = FLOOR_S
            if not self._ray.is_initialized():  # (shut down: a wait would start a new
                self._pause()  # local Ray of its own, as Ray's calls do when not connected)
                continue
            refs = list(pending)
            try:
                ready, _ = self._ray.wait(
                    refs, num_returns=len(refs), timeout=timeout, fetch_local=False
                )
            except Exception:  # (Ray could not answer: the cluster went away, or a ref is
                _log.debug("ray.wait failed", exc_info=True)  # from a closed connection)
                self._pause()
                self._sort_out(pending)
                continue
            if ready:
                timeout = FLOOR_S
                self._deliver([(pending.pop(ref), value) for ref, value in self._values(ready)])
            else:  # nothing ended: wait longer next time, and forget runs nobody waits for
                limit = min(CEILING_S, _PER_TASK_S * len(pending))
                timeout = max(FLOOR_S, min(limit, timeout * 2))
                for ref in [r for r, futures in pending.items() if all(f.done() for f in futures)]:
                    del pending[ref]

    def _pause(self) -> None:
        with self._changed:
            if not self._closed:
                self._changed.wait(_ERROR_PAUSE_S)

    def _sort_out(self, pending: dict[Any, list[asyncio.Future[Any]]]) -> None:
        """After a failed wait: forget the tasks nobody waits for, and end with Ray's error
        each one Ray cannot wait for on its own (a task of a connection since closed), so that
        one bad task does not hold up the others."""
        failed: list[tuple[list[asyncio.Future[Any]], Any]] = []
        for ref, futures in list(pending.items()):
            if all(future.done() for future in futures):
                del pending[ref]
                continue
            try:
                self._ray.wait([ref], timeout=0, fetch_local=False)
            except Exception as exc:
                failed.append((pending.pop(ref), exc))
        if failed:
            self._deliver(failed)

    def _values(self, ready: list[Any]) -> list[tuple[Any, Any]]:
        """Each ended task's value, or the exception Ray raised for it (in one ``ray.get``
        unless one of them raises)."""
        try:
            return list(zip(ready, self._ray.get(ready), strict=True))
        except Exception:
            out = []
            for ref in ready:
                try:
                    out.append((ref, self._ray.get(ref)))
                except Exception as exc:
                    out.append((ref, exc))
            return out

    def _deliver(self, batch: list[tuple[list[asyncio.Future[Any]], Any]]) -> None:
        with contextlib.suppress(RuntimeError):  # (the loop closed: nobody waits any more)
            self._loop.call_soon_threadsafe(_settle, batch)


def _settle(batch: list[tuple[list[asyncio.Future[Any]], Any]]) -> None:
    """On the loop: end each future with its task's value or exception."""
    for futures, value in batch:
        for future in futures:
            if future.done():
                continue  # (the run was cancelled meanwhile)
            if isinstance(value, BaseException):  # (a result never is one: JSON, or an Err)
                future.set_exception(value)
            else:
                future.set_result(value)

"""Who waits for a job to be terminal (``wait``, ``wait_many``, ``as_completed``), by job id.

The watchers: a ``wait_many`` in progress is a ``WaitGroup`` (its results fill in as its jobs
finish, one wake-up for the whole set), an ``as_completed`` a ``Collector`` (finished jobs go to
its queue). ``catch_up`` hands a watcher the jobs that finished before it was registered, on an
engine whose reads lag.

The table maps a job id to one watcher, or to a list when several wait for it: most jobs have
one waiter at most, and a finished job wakes only the calls waiting for it. Watchers check the
tenant themselves, since two tenants may use the same id.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .._ir import TERMINAL_STATUSES

if TYPE_CHECKING:
    from .._ir import Job
    from ..stores import JobKey
    from ._verbs import Engine

__all__ = [
    "Collector",
    "WaitGroup",
    "Watcher",
    "WatcherTable",
    "catch_up",
    "notify",
    "unwatch",
    "watch",
]


class WaitGroup:
    """A ``wait_many`` in progress: its results (the jobs it waits for, replaced as they
    finish), where each of those goes (by job id), how many are left, its future. It watches
    each of them (``Scheduler._watch``), so a finished job wakes only the calls waiting for it.
    """

    __slots__ = ("future", "left", "results", "slots")

    def __init__(self, results: list[Job], future: asyncio.Future[None]) -> None:
        self.results = results
        self.future = future
        self.slots: dict[str, int] = {}  # job id -> index in results, while it is not finished
        self.left = 0

    def tenant_of(self, job_id: str) -> str | None:
        """The tenant of the watched job with this id (None: not watched, or finished)."""
        index = self.slots.get(job_id)
        return None if index is None else self.results[index].tenant_id

    def done(self, job: Job) -> bool:
        """A job with a watched id is terminal: take it if it is the one (the same tenant)."""
        index = self.slots.get(job.id)
        if index is None or self.results[index].tenant_id != job.tenant_id:
            return False  # another tenant's job with the same id
        del self.slots[job.id]
        self.results[index] = job
        self.left -= 1
        if not self.left and not self.future.done():
            self.future.set_result(None)
        return True

    def fail(self, error: BaseException) -> None:
        """The engine can no longer tell when the jobs finish: the wait raises ``error``."""
        if not self.future.done():
            self.future.set_exception(error)


class Collector:
    """An ``as_completed`` in progress: watched jobs go to its queue as they finish."""

    __slots__ = ("queue", "tenants")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Job | BaseException] = asyncio.Queue()
        self.tenants: dict[str, str] = {}  # watched job id -> its tenant

    def tenant_of(self, job_id: str) -> str | None:
        """The tenant of the watched job with this id (None: not watched, or finished)."""
        return self.tenants.get(job_id)

    def done(self, job: Job) -> bool:
        """A job with a watched id is terminal: take it if it is the one (the same tenant)."""
        if self.tenants.get(job.id) != job.tenant_id:
            return False
        del self.tenants[job.id]
        self.queue.put_nowait(job)
        return True

    def fail(self, error: BaseException) -> None:
        """The engine can no longer tell when the jobs finish: the iteration raises ``error``."""
        self.queue.put_nowait(error)


#: What waits for jobs to finish: ``done(job)`` takes a terminal job with a watched id, and
#: says whether it was the watched one; ``tenant_of(job_id)`` is a watched id's tenant;
#: ``fail(error)`` ends the wait with an error.
Watcher = WaitGroup | Collector


async def catch_up(engine: Engine, watcher: Watcher, keys: list[JobKey]) -> None:
    """Hand ``watcher`` the watched jobs that finished while the lookup awaited its read: their
    end was told before the watcher was registered. (One more read; a job that finished and is
    not committed yet is told to the watcher, now registered, at its commit.)"""
    for job in await engine._read(keys):
        if job is not None and job.status in TERMINAL_STATUSES and watcher.done(job):
            engine._unwatch(job.id, watcher)


WatcherTable = dict[str, "Watcher | list[Watcher]"]


def watch(table: WatcherTable, job_id: str, watcher: Watcher) -> None:
    """Have ``watcher.done(job)`` called when a job with this id is terminal."""
    found = table.get(job_id)
    if found is None:
        table[job_id] = watcher
    elif type(found) is list:
        found.append(watcher)
    else:
        table[job_id] = [found, watcher]  # type: ignore[list-item]


def unwatch(table: WatcherTable, job_id: str, watcher: Watcher) -> None:
    """Stop calling ``watcher`` for this id."""
    found = table.get(job_id)
    if found is watcher:
        del table[job_id]
    elif type(found) is list and watcher in found:
        found.remove(watcher)
        if len(found) == 1:
            table[job_id] = found[0]


def notify(table: WatcherTable, job: Job) -> None:
    """A job is terminal: wake whoever watches its id; keep those it was not for."""
    found = table.get(job.id)
    if found is None:
        return
    if type(found) is not list:
        if found.done(job):  # type: ignore[union-attr]
            del table[job.id]
        return
    left = [each for each in found if not each.done(job)]
    if not left:
        del table[job.id]
    else:
        table[job.id] = left[0] if len(left) == 1 else left

"""Who waits for a job to be terminal (``wait``, ``wait_many``, ``as_completed``), by job id.

The table maps a job id to one watcher, or to a list when several wait for it: most jobs have
one waiter at most, and a finished job wakes only the calls waiting for it. Watchers check the
tenant themselves, since two tenants may use the same id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._ir import Job
    from ._verbs import Watcher

__all__ = ["WatcherTable", "notify", "unwatch", "watch"]

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

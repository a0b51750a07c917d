"""The engine's side of dependencies: how dependencies the core does not hold ended, and the
results a job's handler gets from them (``ctx.upstream``).

The core tracks the dependencies that are live in it; a dependency that has ended is not, so
the engine reads it from its store and tells the core how it ended (``Submit.finished``,
``Restore.finished``). Reads await the store; the core is fed right after the last one, with
no await in between, so what the core holds and what the reads say cannot drift apart: a
dependency that ended while a read was under way is read again (after the writer's next
commit, for a durable store whose copy lags behind).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from .._ir import DEFAULT_CONSTRAINTS, TERMINAL_STATUSES, Job, Status
from ..core import Finished
from ..stores import JobKey, MemoryStore

if TYPE_CHECKING:
    from ._admission import Admission
    from ._scheduler import Scheduler

__all__ = ["dependency_keys", "finished_of", "settled", "upstream_now", "upstream_of"]

#: How many times a dependency that has left the core but not yet reached the store is read
#: again (one commit of the writer each time) before the submit is refused as unknown.
_REREADS: Final = 5


def dependency_keys(jobs: Sequence[Job]) -> list[JobKey]:
    """The dependencies of a batch that are not in it, once each."""
    waiting = [job for job in jobs if job.constraints is not DEFAULT_CONSTRAINTS]
    if not waiting or not any(job.constraints.depends_on for job in waiting):
        return []
    in_batch = {(job.tenant_id, job.id) for job in jobs}
    keys: dict[JobKey, None] = {}
    for job in waiting:
        for dep in job.constraints.depends_on:
            key = (job.tenant_id, dep)
            if key not in in_batch:
                keys[key] = None
    return list(keys)


async def settled(
    engine: Admission, keys: list[JobKey], found: Sequence[Job | None]
) -> tuple[Finished, ...]:
    """How the dependencies ``keys`` (read as ``found``) that the core does not hold ended.
    A key the store does not have is left out: the core refuses it as unknown."""
    known = dict(zip(keys, found, strict=True))
    for _ in range(_REREADS):
        live = engine._core.get
        finished: list[Finished] = []
        unsettled: list[JobKey] = []
        for key in keys:
            if live(*key) is not None:
                continue
            job = known[key]
            if job is None:
                continue
            if job.status in TERMINAL_STATUSES:
                finished.append((key[0], key[1], job.status))
            else:  # it ended after it was read, or the store's copy lags behind
                unsettled.append(key)
        if not unsettled:
            return tuple(finished)
        await engine._writes.commit()
        for key, job in zip(unsettled, await engine._store.get_many(unsettled), strict=True):
            known[key] = job
    return tuple(finished)  # (still unsettled: a client's job not admitted yet, unknown here)


async def finished_of(engine: Scheduler, jobs: Sequence[Job]) -> tuple[Finished, ...]:
    """For a Restore: how the dependencies of the pending jobs that are not among ``jobs``
    ended (those the store no longer has were pruned after they ended, and are left out)."""
    live = {(job.tenant_id, job.id) for job in jobs}
    keys: dict[JobKey, None] = {}
    for job in jobs:
        if job.status is Status.PENDING:
            for dep in job.constraints.depends_on:
                key = (job.tenant_id, dep)
                if key not in live:
                    keys[key] = None
    if not keys:
        return ()
    wanted = list(keys)
    found = await engine._store.get_many(wanted)
    return tuple(
        (key[0], key[1], job.status)
        for key, job in zip(wanted, found, strict=True)
        if job is not None and job.status in TERMINAL_STATUSES
    )


async def upstream_of(engine: Scheduler, job: Job) -> dict[str, Any]:
    """The results of a job's dependencies, by job id and, for steps of one workflow, by step
    name too; a dependency that did not succeed (allowed to fail) maps to None, as does one
    pruned since."""
    deps = job.constraints.depends_on
    return _upstream(job, await engine._read([(job.tenant_id, dep) for dep in deps]))


def upstream_now(engine: Scheduler, job: Job) -> dict[str, Any]:
    """``upstream_of`` from the memory store, whose reads do not wait (its dependencies have
    ended, so the store holds them as they are)."""
    store = engine._store
    assert isinstance(store, MemoryStore)
    get = store.table.get
    return _upstream(job, [get(job.tenant_id, dep) for dep in job.constraints.depends_on])


def _upstream(job: Job, found: Sequence[Job | None]) -> dict[str, Any]:
    deps = job.constraints.depends_on
    upstream: dict[str, Any] = {}
    for dep, stored in zip(deps, found, strict=True):
        result = stored.result if stored is not None and stored.status is Status.SUCCEEDED else None
        upstream[dep] = result
        step = None if stored is None else stored.metadata.get("workflow_step")
        if (
            isinstance(step, str)
            and stored is not None
            and stored.metadata.get("workflow_id") == job.metadata.get("workflow_id")
        ):
            upstream[step] = result
    return upstream

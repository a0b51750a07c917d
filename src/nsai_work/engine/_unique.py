"""Unique keys in the engine: claim them in the store before the core admits a batch, and
answer a duplicate with the job that holds its key.

The store decides (``Store.claim_unique``: a constraint in its table), so two submits racing
one key, in this process or in another, make one job. The claim is the last await before the
core admits the batch, so on the memory store (whose calls never yield) claim and admission are
one step of the loop.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from msgspec.structs import replace

from .._errors import ConflictError
from .._ir import DEFAULT_CONSTRAINTS, Job

if TYPE_CHECKING:
    from ..stores import Store

__all__ = ["answer_duplicates", "claim", "has_unique", "holders_of", "kept"]

T = TypeVar("T")


def has_unique(jobs: Sequence[Job]) -> bool:
    """Whether any job has a unique key (one identity check for jobs without constraints)."""
    return any(
        job.constraints is not DEFAULT_CONSTRAINTS and job.constraints.unique_key is not None
        for job in jobs
    )


async def claim(store: Store, jobs: Sequence[Job], wall: float) -> dict[int, str]:
    """Claim the unique keys of ``jobs`` at ``wall`` (seconds since the epoch): index of each
    duplicate -> the id of the job that holds its key."""
    indexes = [n for n, job in enumerate(jobs) if job.constraints.unique_key is not None]
    now = _dt.datetime.fromtimestamp(wall, _dt.UTC)
    holders = await store.claim_unique([jobs[n] for n in indexes], now)
    return {n: holder for n, holder in zip(indexes, holders, strict=True) if holder is not None}


def kept(items: Sequence[T], duplicates: dict[int, str]) -> list[T]:
    """``items`` without the duplicates' positions."""
    return [item for n, item in enumerate(items) if n not in duplicates]


async def holders_of(
    live: Callable[[str, str], Job | None],
    store: Store,
    jobs: Sequence[Job],
    duplicates: dict[int, str],
) -> dict[tuple[str, str], Job]:
    """The holders' snapshots: as the core has them when they are live, else as stored."""
    found: dict[tuple[str, str], Job] = {}
    missing: list[tuple[str, str]] = []
    for n, holder_id in duplicates.items():
        key = (jobs[n].tenant_id, holder_id)
        job = live(*key)
        if job is not None:
            found[key] = job
        elif key not in found:
            missing.append(key)
    if missing:
        for key, job in zip(missing, await store.get_many(missing), strict=True):
            if job is not None:
                found[key] = job
    return found


def answer_duplicates(
    jobs: Sequence[Job],
    admitted: Sequence[Job],
    duplicates: dict[int, str],
    holders: dict[tuple[str, str], Job],
) -> list[Job]:
    """What a submit returns, in the caller's order: each admitted job, and for each duplicate
    its holder's snapshot marked ``duplicate=True``."""
    out: list[Job] = []
    rest = iter(admitted)
    for n, job in enumerate(jobs):
        holder_id = duplicates.get(n)
        if holder_id is None:
            out.append(next(rest))
            continue
        holder = holders.get((job.tenant_id, holder_id))
        if holder is None:  # it ended and was pruned, or its own submit failed, meanwhile
            raise ConflictError(
                f"unique key {job.constraints.unique_key!r} of tenant {job.tenant_id!r} is "
                f"held by job {holder_id!r}, which is no longer stored; submit again"
            )
        out.append(replace(holder, duplicate=True))
    return out

"""Pools that change while jobs wait and run: a backend's pools added, resized or removed
(``PoolsChanged``), and a backend that goes away and comes back (``BackendAvailability``).

- **Runs on a pool that goes** (removed, or its backend unavailable) follow the connection-loss
  rule: their attempt fails at once with ``BackendLostError`` (retried per the job's policy) and
  they are told to stop; what they hold comes back when their run really ends, as for any run.
- **When pools come or go, waiting jobs of the backend are placed again**: a job keeps the
  pools of its group that are left and may also use the pools added (within its needs, labels
  and cost cap); a change of capacity alone moves no job. A queued job whose pools change gets a
  new record in the queue of its new pool group, in its order; the old record is dropped lazily
  from its FIFO, like a canceled one.
- **A job no pool can hold any more is stranded**: it waits in the queue of the empty pool
  group ``()``, which never dispatches, with the reason ``pool_removed:<pool>`` (``no_pool``
  when no pool of it was removed), for the ``grace_s`` of the change that stranded it; then it
  is canceled (``unschedulable: ...``). A pool that comes (back) in time takes it again.
- **An unavailable backend**'s pools are offline: they start nothing, and its queued jobs wait
  with the reason ``backend_unavailable`` until it is back.

Everything here is decided from the event and the state: no clock, no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from msgspec.structs import replace

from .._ir import JobError, Status
from ._admission import Choice
from ._capacity import change_pools
from ._endings import attempt_failed, cancel, stop_current_run
from ._messages import ArmTimer, BackendAvailability, Cancel, PoolsChanged
from ._parking import queued_job_left
from ._tenants import Capacity

if TYPE_CHECKING:
    from ._capacity import PoolState
    from ._core import SchedulingCore
    from ._messages import Decision
    from ._queues import Entry

__all__ = ["STRANDED_KEY", "Stranded", "availability_changed", "pools_changed", "strand_expired"]

_PENDING, _QUEUED, _RUNNING = Status.PENDING, Status.QUEUED, Status.RUNNING
#: The timer that ends a grace period: (STRANDED_KEY, backend, sequence number, 0).
STRANDED_KEY: Final = "stranded"
#: The pool group of stranded jobs: no pool, so it never dispatches.
_NOWHERE: Final[tuple[str, ...]] = ()
_NO_PLACEMENT: Final[tuple[tuple[float, PoolState], ...]] = ()


class Stranded:
    """A waiting job no pool of its backend can hold: since when, why, and until when it may
    wait (None: for ever)."""

    __slots__ = ("reason", "since", "until")

    def __init__(self, since: float, reason: str, until: float | None) -> None:
        self.since = since
        self.reason = reason
        self.until = until


def pools_changed(core: SchedulingCore, event: PoolsChanged, out: list[Decision]) -> None:
    """Apply a backend's new pools (see the module docstring)."""
    backend = event.backend
    added = tuple(spec.name for spec in event.pools if spec.name not in core._pools)
    removed = change_pools(core._pools, core._gone, backend, event.pools, event.removed)
    if backend in core._unavailable:
        for pool in core._pools.values():
            if pool.backend == backend:
                pool.set_offline(True)
    core._router.forget()
    for queue in core._queues.groups():
        queue.capacity = Capacity(queue.pools)
    if added or removed:  # (first: the next attempt of a lost run waits in its new group)
        _place_again(core, backend, added, event.grace_s, out)
    if removed:
        names = {pool.name for pool in removed}
        _lose_runs(core, names, f"its pool was removed ({', '.join(sorted(names))})", out)


def availability_changed(
    core: SchedulingCore, event: BackendAvailability, out: list[Decision]
) -> None:
    """A backend went away (its pools go offline, its runs are lost) or came back."""
    backend = event.backend
    pools = [pool for pool in core._pools.values() if pool.backend == backend]
    if event.available:
        core._unavailable.discard(backend)
        for pool in pools:
            pool.set_offline(False)
        return
    if backend in core._unavailable:
        return
    core._unavailable.add(backend)
    for pool in pools:
        pool.set_offline(True)
    detail = f"backend {backend!r} became unavailable"
    if event.reason:
        detail += f": {event.reason}"
    _lose_runs(core, {pool.name for pool in pools}, detail, out)


def strand_expired(core: SchedulingCore, backend: str, out: list[Decision]) -> None:
    """A grace period ended: the stranded jobs of ``backend`` whose wait is over are canceled."""
    now = core._now
    for key, stranded in list(core._stranded.items()):
        entry = core._jobs.get(*key)
        if entry is None:  # (it ended meanwhile)
            del core._stranded[key]
            continue
        if entry.backend != backend or entry.group or entry.status is _RUNNING:
            continue
        if stranded.until is not None and stranded.until <= now + 1e-9:
            core._stranded.pop(key, None)
            reason = (
                f"unschedulable: no pool of backend {backend!r} could hold this job within "
                f"{stranded.until - stranded.since:g} s of {stranded.reason}"
            )
            cancel(core, Cancel(key[0], key[1], reason), out)


def _lose_runs(core: SchedulingCore, pools: set[str], detail: str, out: list[Decision]) -> None:
    """The runs on these pools are lost (connection-loss rule): each current attempt fails
    with ``BackendLostError`` and is told to stop."""
    for (_, _, attempt), run in list(core._runs.items()):
        entry = run.entry
        if run.reservation.pool.name not in pools or run.stopping:
            continue
        if entry.status is not _RUNNING or entry.job.attempt != attempt:
            continue
        error = JobError(
            type="BackendLostError",
            message=f"backend_lost: the run of attempt {attempt} was lost: {detail}",
            attempt=attempt,
        )
        stop_current_run(core, entry, "backend_lost", out)
        attempt_failed(core, entry, error, True, Status.FAILED, out)


def _place_again(
    core: SchedulingCore,
    backend: str,
    added: tuple[str, ...],
    grace_s: float | None,
    out: list[Decision],
) -> None:
    """Place the backend's live jobs again, in their order: over the pools of their group that
    are left, and those ``added`` (a running job's group is where its next attempt waits)."""
    pools = core._pools
    waiting = [entry for entry in core._jobs.entries() if entry.backend == backend]
    waiting.sort(key=lambda entry: entry.seq)  # (queued ones keep their order)
    now = core._now
    newly_stranded = False
    for entry in waiting:
        key = (entry.tenant, entry.job.id)
        names = tuple(name for name in entry.group if name in pools)
        names += tuple(name for name in added if name not in names)
        if names == entry.group:
            continue
        choice = core._router.choose(entry.needs, ((backend, names),), entry.job)
        if isinstance(choice, Choice):
            core._stranded.pop(key, None)
            group, placement = choice.group, choice.placement
        else:
            group, placement = _NOWHERE, _NO_PLACEMENT
            if key not in core._stranded:
                gone = [name for name in entry.group if name in core._gone]
                reason = f"pool_removed:{gone[0]}" if gone else "no_pool"
                until = None if grace_s is None else now + grace_s
                core._stranded[key] = Stranded(now, reason, until)
                newly_stranded = newly_stranded or until is not None
        if group == entry.group:
            continue
        _move(core, entry, group, placement)
    if newly_stranded and grace_s is not None:
        core._strand_timers += 1
        out.append(ArmTimer(now + grace_s, (STRANDED_KEY, backend, str(core._strand_timers), 0)))


def _move(
    core: SchedulingCore,
    entry: Entry,
    group: tuple[str, ...],
    placement: tuple[tuple[float, PoolState], ...],
) -> None:
    """Give a live job a new pool group: a pending or running one only changes its record; a
    queued one leaves its queue (its old record is dropped lazily, like a canceled one's) and a
    new record joins the queue of the new group."""
    if entry.status is _QUEUED:
        moved = replace(entry, group=group, placement=placement, held=None)
        queue = core._queues.queue_of(entry)
        core._holds.release(entry, queue)
        core._queues.discard(entry)
        entry.status = Status.CANCELED  # (not a transition: this record is simply dropped)
        queued_job_left(queue, entry, core._limits)
        core._jobs.swap(entry, moved)
        core._queues.push(moved, core._group_pools)
    else:
        entry.group = group
        entry.placement = placement

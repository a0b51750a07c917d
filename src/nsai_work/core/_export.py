"""Export: the core's state that its live jobs do not carry, as one ``CoreState``.

``export_state`` reads the tenant registry, the limits, the ready queues, the runs and the
holds; it changes nothing. It costs O(tenants + pool groups + running jobs + parked FIFOs +
the starvation guard's window), never O(queued jobs): the engine may call it once per commit.
Runs told to stop whose job has moved on (a cancel or a timeout whose execution has not ended
yet) are not exported: they belong to the engine that started them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final

from .._ir import Status
from ._counters import SLOT, SLOT_NAMES, SUBMITTED
from ._pauses import pause_records
from ._state import (
    CORE_STATE_VERSION,
    CellRecord,
    CoreState,
    CountersRecord,
    GroupRecord,
    HoldRecord,
    LimitRecord,
    ParkedFifo,
    RunRecord,
    TenantQueueRecord,
    TenantRecord,
    to_wall,
)

if TYPE_CHECKING:
    from ._core import SchedulingCore
    from ._counters import CellKey, TenantCounters
    from ._limits import Limits
    from ._queues import Entry, GroupQueue, SubKey, TenantQueue
    from ._tenants import TenantState

__all__ = ["export_state"]

_QUEUED, _RUNNING = Status.QUEUED, Status.RUNNING
_LIVE_SLOTS: Final = (SLOT[Status.PENDING], SLOT[Status.QUEUED], SLOT[Status.RUNNING])


def export_state(core: SchedulingCore, now: float, wall: float) -> CoreState:
    """The ``CoreState`` of a core at monotonic ``now`` and wall-clock ``wall`` (the same
    moment): see ``_state``."""
    tenants, limits, queues, guard = core._tenants, core._limits, core._queues, core._guard
    states = tenants.states
    on = _parked_on(states.values(), limits)
    return CoreState(
        version=CORE_STATE_VERSION,
        wall=wall,
        tenant_specs=tuple(tenants.runtime_specs()),
        group_limits=dict(limits.changed),
        tenants=tuple(
            TenantRecord(
                id=tenant_id,
                tokens=state.tokens,
                last_refill=to_wall(state.last_refill, now, wall),
                spend_total=state.spend_total,
                spend_period=state.spend_period,
                period_start=to_wall(state.period_start, now, wall),
                committed=state.committed,
                namespaces=tuple(n for n in state.namespaces if n not in state.spec.namespaces),
            )
            for tenant_id, state in states.items()
        ),
        idle=tuple((t, to_wall(since, now, wall)) for t, since in tenants.idle_since()),
        counters=tuple(_counters(t, counters) for t, counters in tenants.counters.items()),
        retired=tuple(_cell(key, cell) for key, cell in tenants.retired.items()),
        rejected_unleveled=tenants.rejected_unleveled,
        limits=tuple(
            LimitRecord(
                kind=kind,
                name=name,
                max_running=limit.max_running,
                rate=limit.rate,
                burst=limit.burst,
                tokens=limit.tokens,
                last=to_wall(limit.last, now, wall),
                timer_at=to_wall(limit.timer_at, now, wall) if limit.timer_armed else None,
            )
            for (kind, name), limit in limits.states.items()
        ),
        groups=tuple(_group(group, on) for group in queues.groups()),
        runs=tuple(
            RunRecord(
                tenant=run.tenant.spec.id,
                job_id=run.entry.job.id,
                attempt=run.entry.job.attempt,
                charged=run.charged,
                share=run.share,
                weight=run.weight,
                gpu_type=run.reservation.gpu_type,
            )
            for run in core._runs.values()
            if not run.stopping and run.entry.status is _RUNNING
        ),
        guard="" if guard is None else "".join(map(str, guard.recent)),
        paused=pause_records(core._pauses),
        hold_seq=core._holds.seq,
        sweep_at=None if tenants.sweep_at is None else to_wall(tenants.sweep_at, now, wall),
    )


def _cell(key: CellKey, cell: list[int]) -> CellRecord:
    """A counter cell without its live jobs (they are counted again when restored)."""
    counts = list(cell)
    live = sum(counts[slot] for slot in _LIVE_SLOTS)
    for slot in _LIVE_SLOTS:
        counts[slot] = 0
    counts[SUBMITTED] -= live
    return CellRecord(
        level=key[0],
        backend=key[1],
        counts={name: n for name, n in zip(SLOT_NAMES, counts, strict=True) if n},
    )


def _counters(tenant_id: str, counters: TenantCounters) -> CountersRecord:
    return CountersRecord(
        tenant=tenant_id,
        cells=tuple(_cell(key, cell) for key, cell in counters.cells.items()),
        rejections=dict(counters.rejections),
        rejected_unleveled=counters.rejected_unleveled,
    )


#: Where each parked FIFO waits: (id of its tenant queue, its key) -> ("namespace", name) or
#: the key of the limit it waits on.
_ParkedOn = Mapping[tuple[int, "SubKey"], tuple[str, str]]


def _parked_on(states: Iterable[TenantState], limits: Limits) -> _ParkedOn:
    found: dict[tuple[int, SubKey], tuple[str, str]] = {}
    for state in states:
        for name, namespace in state.namespaces.items():
            for queue, sub in namespace.parked:
                found[(id(queue), sub)] = ("namespace", name)
    for key, limit in limits.states.items():
        for queue, sub in limit.parked:
            found[(id(queue), sub)] = key
    return found


def _group(group: GroupQueue, on: _ParkedOn) -> GroupRecord:
    held = group.held
    hold = None
    if held is not None and held.held is not None:
        pool = held.held
        seq = next((h.seq for h in pool.holds if h.job is held), 0)
        hold = HoldRecord(tenant=held.tenant, job_id=held.job.id, pool=pool.name, seq=seq)
    return GroupRecord(
        level=group.rank,
        pools=group.group,
        clock=group.clock,
        expected_run_s=group.expected_run_s,
        runs_seen=group.runs_seen,
        idle_vtimes=dict(group.idle_vtimes),
        tenants=tuple(_tenant_queue(queue, on) for queue in group.tenants.values()),
        parked=dict(group.parked),
        held=hold,
    )


def _tenant_queue(queue: TenantQueue, on: _ParkedOn) -> TenantQueueRecord:
    key = queue.key
    head = _keyed_head(queue)
    return TenantQueueRecord(
        tenant=queue.tenant,
        vtime=None if queue.vtime == float("-inf") else queue.vtime,
        key_vtime=None if key is None else key[0],
        key_job=None if head is None else head.job.id,
        parked=tuple(
            ParkedFifo(namespace=sub[0], limits=sub[1], reason=reason, on=on[(id(queue), sub)])
            for sub, reason in queue.parked.items()
            if (id(queue), sub) in on
        ),
    )


def _keyed_head(queue: TenantQueue) -> Entry | None:
    """The queued job a tenant's key was made for: the front of one of its FIFOs (a key never
    names a job that left the queue: see ``GroupQueue.rekey_if_keyed_at``)."""
    if queue.key is None:
        return None
    seq = queue.key[1]
    for fifo in queue.fifos.values():
        for entry in fifo:
            if entry.status is _QUEUED:
                if entry.seq == seq:
                    return entry
                break  # (only fronts: the entries behind are younger)
    return None

"""``CoreState``: what the core needs to continue that is not in its live jobs.

DESIGN.md principle 6 (state is data): a durable store keeps the non-terminal jobs and one
``CoreState``; a ``Restore`` event rebuilds a core from them (after a restart, or in a standby
that takes over). The jobs carry their own timers as wall-clock UTC (``next_attempt_at``, the
current attempt's ``started_at`` and ``timeout_ms``). ``CoreState`` carries the rest: tenants and
concurrency limits set at run time, token buckets, budget spend, fair-share standing, parking,
capacity held for queue heads, the starvation guard's memory and the cumulative counters.

It is plain data: frozen msgspec Structs of strings, numbers, tuples and dicts (and the IR's
``Tenant``), encodable with ``msgspec.json`` and ``msgspec.msgpack``. Monotonic instants are
stored on the wall clock: exported as ``wall + (instant - now)``, imported as
``now + (stored - wall)`` with the importing core's clocks, so they survive a restart. ``version``
says which layout a state has; a core refuses any other (``check_state``). Ordered data is kept
in tuples, never in dict order (a Postgres ``jsonb`` column does not keep it).
"""

from __future__ import annotations

import math
from typing import Annotated, Final

import msgspec
from msgspec import Meta, Struct

from .._errors import ValidationError
from .._ir import Tenant
from ._counters import SLOT_NAMES

__all__ = [
    "CORE_STATE_VERSION",
    "CellRecord",
    "CoreState",
    "CountersRecord",
    "GroupRecord",
    "HoldRecord",
    "LimitRecord",
    "ParkedFifo",
    "RunRecord",
    "TenantQueueRecord",
    "TenantRecord",
    "check_state",
    "to_monotonic",
    "to_wall",
]

#: The layout of ``CoreState`` this core writes and reads.
CORE_STATE_VERSION: Final = 1

_Count = Annotated[int, Meta(ge=0)]
_Level = Annotated[int, Meta(ge=0, le=3)]
#: A limit a job is subject to: ("group", concurrency group) or ("tool", tool name).
_LimitKey = tuple[str, str]


class CellRecord(Struct, frozen=True, kw_only=True):
    """One counter cell of a tenant, (level, backend), by slot name (``pending``...
    ``canceled``, ``submitted``, ``rejected``). Live jobs are left out: the restored jobs count
    themselves again."""

    level: _Level
    backend: str | None = None
    counts: dict[str, _Count] = {}


class CountersRecord(Struct, frozen=True, kw_only=True):
    """A tenant's counters: its cells, rejections by reason, and rejections without a level.
    Tenant "" holds the rejections of jobs without a valid tenant id."""

    tenant: str
    cells: tuple[CellRecord, ...] = ()
    rejections: dict[str, _Count] = {}
    rejected_unleveled: _Count = 0


class TenantRecord(Struct, frozen=True, kw_only=True):
    """A tenant the core keeps state for: its submit-rate bucket, its spend, and the estimated
    maximum cost of its admitted jobs (``committed``). ``namespaces`` are the namespaces with
    state beyond those its spec names (their limits were removed at run time)."""

    id: str
    tokens: float
    last_refill: float  # wall clock
    spend_total: float
    spend_period: float
    period_start: float  # wall clock
    committed: float
    namespaces: tuple[str, ...] = ()


class LimitRecord(Struct, frozen=True, kw_only=True):
    """A concurrency group's or a backend limit's state (``kind`` "group" or "tool"): its
    token bucket, and when its refill timer is due (wall clock; None when not armed)."""

    kind: str
    name: str
    max_running: _Count | None = None
    rate: float | None = None
    burst: _Count = 1
    tokens: float = 0.0
    last: float = 0.0  # wall clock
    timer_at: float | None = None


class ParkedFifo(Struct, frozen=True, kw_only=True):
    """A tenant's FIFO (namespace, limits) held back by ``reason``, waiting on ``on``:
    ("namespace", name) or a limit's key."""

    namespace: str
    limits: tuple[_LimitKey, ...] = ()
    reason: str
    on: _LimitKey


class TenantQueueRecord(Struct, frozen=True, kw_only=True):
    """A tenant's place in a group queue: its virtual time (None: never served there), its key
    (the virtual time it is keyed at and the id of the head the key was made for; None: no
    key), and its parked FIFOs."""

    tenant: str
    vtime: float | None = None
    key_vtime: float | None = None
    key_job: str | None = None
    parked: tuple[ParkedFifo, ...] = ()


class HoldRecord(Struct, frozen=True, kw_only=True):
    """Capacity held on ``pool`` for a queued head (``seq`` orders holds of one level)."""

    tenant: str
    job_id: str
    pool: str
    seq: int


class GroupRecord(Struct, frozen=True, kw_only=True):
    """A group queue (one priority level and the pools its jobs may use): its fair-share
    clock and expected run time, the standing of its tenants, who is parked, what is held."""

    level: _Level
    pools: tuple[str, ...]
    clock: float = 0.0
    expected_run_s: float = 1.0
    runs_seen: _Count = 0
    idle_vtimes: dict[str, float] = {}
    tenants: tuple[TenantQueueRecord, ...] = ()
    parked: dict[str, str] = {}  # tenant -> the reason it is parked
    held: HoldRecord | None = None


class RunRecord(Struct, frozen=True, kw_only=True):
    """What a running job's dispatch charged its tenant in fair share (corrected with the real
    run time when it ends): the charge, its dominant share and its tenant's weight then; and
    the GPU type it took (a job asking for GPUs of any type)."""

    tenant: str
    job_id: str
    attempt: Annotated[int, Meta(ge=1)]
    charged: float
    share: float
    weight: float
    gpu_type: str | None = None


class CoreState(Struct, frozen=True, kw_only=True):
    """Everything a ``SchedulingCore`` needs to continue that is not in its live jobs (see the
    module docstring); made by ``SchedulingCore.export_state(now, wall)``, given back in a
    ``Restore`` event.

    - ``tenant_specs`` and ``group_limits``: tenants and concurrency limits set at run time
      (``TenantChanged``, ``ConcurrencyLimitChanged``); they win over the configuration.
    - ``tenants``: the state of every tenant the core keeps (buckets, spend, budget period);
      ``idle``: the tenants without live jobs, oldest first, with when they went idle.
    - ``counters``, ``retired``, ``rejected_unleveled``: the cumulative counts behind stats.
    - ``limits``: concurrency groups and backend limits (token buckets, refill timers).
    - ``groups``: the group queues in the order they were made (the dispatch order of a
      level's pool groups): fair-share standing, parking, holds.
    - ``runs``: the fair-share charge of each running job's dispatch.
    - ``guard``: the levels of the starvation guard's last dispatches, oldest first, one digit
      each; ``hold_seq``, ``sweep_at``: the next hold's order, when the idle sweep is due.
    - ``paused``: what operators paused, as (``"tenant"``, id, ``""``), (``"namespace"``,
      tenant id, namespace) or (``"pool"``, name, ``""``).
    """

    version: int
    wall: float  # when it was exported (wall clock)
    tenant_specs: tuple[Tenant, ...] = ()
    group_limits: dict[str, Annotated[int, Meta(ge=1)]] = {}
    tenants: tuple[TenantRecord, ...] = ()
    idle: tuple[tuple[str, float], ...] = ()
    counters: tuple[CountersRecord, ...] = ()
    retired: tuple[CellRecord, ...] = ()
    rejected_unleveled: _Count = 0
    limits: tuple[LimitRecord, ...] = ()
    groups: tuple[GroupRecord, ...] = ()
    runs: tuple[RunRecord, ...] = ()
    guard: str = ""
    paused: tuple[tuple[str, str, str], ...] = ()
    hold_seq: _Count = 0
    sweep_at: float | None = None


def to_wall(instant: float, now: float, wall: float) -> float:
    """A monotonic ``instant`` on the wall clock (``now`` and ``wall`` are the same moment)."""
    return wall + (instant - now)


def to_monotonic(stored: float, now: float, wall: float) -> float:
    """A wall-clock instant on the monotonic clock of ``now`` (the inverse of ``to_wall``)."""
    return now + (stored - wall)


def check_state(state: object) -> CoreState:
    """``state`` as a valid ``CoreState`` of this version, or ``ValidationError`` naming the
    field: the wrong version, a field of the wrong type or out of range, a number that is not
    finite."""
    if not isinstance(state, CoreState):
        raise ValidationError(
            f"expected a CoreState (from SchedulingCore.export_state), got "
            f"{type(state).__name__}; decode a stored one with "
            f"msgspec.json.decode(data, type=CoreState)"
        )
    if type(state.version) is not int or state.version != CORE_STATE_VERSION:
        raise ValidationError(
            f"core state version {state.version!r} is not supported: this nsai-work reads "
            f"version {CORE_STATE_VERSION} (a state written by another release cannot be "
            f"restored; restore without it to start from fresh buckets and standing)",
            path="$.version",
        )
    # Built in Python, a Struct is not validated: a round trip checks every field's type and
    # range, as decoding a stored state does.
    plain = msgspec.to_builtins(state)
    try:
        checked = msgspec.convert(plain, CoreState)
    except msgspec.ValidationError as error:
        message, _, path = str(error).rpartition(" - at `")
        raise ValidationError(f"invalid core state: {message}", path=path.rstrip("`")) from None
    _check_finite(plain, "$")
    cells = [(f"$.retired[{i}]", cell) for i, cell in enumerate(checked.retired)]
    for i, counters in enumerate(checked.counters):
        cells += [(f"$.counters[{i}].cells[{j}]", cell) for j, cell in enumerate(counters.cells)]
    for path, cell in cells:
        unknown = sorted(set(cell.counts) - set(SLOT_NAMES))
        if unknown:
            raise ValidationError(
                f"invalid core state: unknown counter {unknown[0]!r}; counters are "
                f"{', '.join(SLOT_NAMES)}",
                path=f"{path}.counts",
            )
    return checked


def _check_finite(value: object, path: str) -> None:
    """Raise ``ValidationError`` at the first number that is not finite (inf, nan)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"invalid core state: {value} is not a finite number", path=path)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_finite(item, f"{path}[{index}]")

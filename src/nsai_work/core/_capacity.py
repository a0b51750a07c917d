"""Capacity: what a job needs, what a pool offers, and reservations between them.

Amounts are integers (cpu and custom amounts in thousandths), so reserving and releasing never
drifts and "reserved never exceeds capacity" (I2) is an exact comparison.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from msgspec import Struct

from .._errors import ConfigurationError
from .._ir import DEFAULT_RESOURCES, Pool, Resources

__all__ = [
    "NO_NEEDS",
    "Hold",
    "Needs",
    "PoolState",
    "Reservation",
    "Usage",
    "add_pools",
    "change_pools",
    "needs_of",
]

_MILLI: Final = 1000


def _milli(amount: float) -> int:
    return round(amount * _MILLI)


class Needs:
    """One run's demand: a slot plus cpu, memory, GPUs and custom amounts."""

    __slots__ = ("cpu", "custom", "gpu_count", "gpu_type", "memory_mb")

    def __init__(
        self,
        cpu: int = 0,
        memory_mb: int = 0,
        gpu_type: str | None = None,
        gpu_count: int = 0,
        custom: tuple[tuple[str, int], ...] = (),
    ) -> None:
        self.cpu = cpu
        self.memory_mb = memory_mb
        self.gpu_type = gpu_type
        self.gpu_count = gpu_count
        self.custom = custom

    def __repr__(self) -> str:
        return (
            f"Needs(cpu={self.cpu / _MILLI}, memory_mb={self.memory_mb}, "
            f"gpu={self.gpu_type}x{self.gpu_count}, custom={self.custom})"
        )

    def describe(self) -> dict[str, object]:
        """The non-zero demands, in user units, for error messages."""
        out: dict[str, object] = {"slots": 1}
        if self.cpu:
            out["cpu"] = self.cpu / _MILLI
        if self.memory_mb:
            out["memory_mb"] = self.memory_mb
        if self.gpu_count:
            out["gpus"] = f"{self.gpu_count} x {self.gpu_type or 'any type'}"
        for name, amount in self.custom:
            out[f"custom.{name}"] = amount / _MILLI
        return out


#: What a job with default Resources needs: one slot and nothing else (shared, never mutated).
NO_NEEDS: Final = Needs()


def needs_of(resources: Resources) -> Needs:
    """Translate a job's Resources into integer demands."""
    if resources is DEFAULT_RESOURCES:
        return NO_NEEDS
    gpus = resources.gpus_needed
    if resources.cpu is None and resources.memory_mb is None and not gpus and not resources.custom:
        return NO_NEEDS
    return Needs(
        cpu=_milli(resources.cpu or 0.0),
        memory_mb=resources.memory_mb or 0,
        gpu_type=resources.gpu,
        gpu_count=gpus,
        custom=tuple(sorted((k, _milli(v)) for k, v in resources.custom.items() if v)),
    )


class Hold:
    """Capacity kept for a queue head that does not fit yet (backfill without starvation):
    jobs of its level or lower may only use what is left beyond it. Holds of one level are
    ordered by ``seq``: a held job leaves alone only the holds older than its own, so two holds
    on one pool never wait for each other."""

    __slots__ = ("gpu_type", "job", "needs", "rank", "seq")

    def __init__(
        self, job: object, rank: int, needs: Needs, gpu_type: str | None, seq: int = 0
    ) -> None:
        self.job = job  # the job's record in the core (compared by identity)
        self.rank = rank
        self.needs = needs
        self.gpu_type = gpu_type
        self.seq = seq


class Usage:
    """Resources held by runs (or holds): slots, cpu (thousandths), memory, GPUs by type."""

    __slots__ = ("cpu", "gpus", "memory", "slots")

    def __init__(self) -> None:
        self.slots = 0
        self.cpu = 0
        self.memory = 0
        self.gpus: dict[str, int] = {}

    def add(self, reservation: Reservation | Hold) -> None:
        """Count one run's reservation (or one hold)."""
        needs = reservation.needs
        self.slots += 1
        if needs is NO_NEEDS:
            return
        self.cpu += needs.cpu
        self.memory += needs.memory_mb
        if reservation.gpu_type is not None:
            self.gpus[reservation.gpu_type] = (
                self.gpus.get(reservation.gpu_type, 0) + needs.gpu_count
            )

    def remove(self, reservation: Reservation | Hold) -> None:
        """Forget one run's reservation."""
        needs = reservation.needs
        self.slots -= 1
        if needs is NO_NEEDS:
            return
        self.cpu -= needs.cpu
        self.memory -= needs.memory_mb
        if reservation.gpu_type is not None:
            self.gpus[reservation.gpu_type] -= needs.gpu_count

    def as_dict(self) -> dict[str, object]:
        """In user units, for stats."""
        return {
            "running": self.slots,
            "cpu": self.cpu / _MILLI,
            "memory_mb": self.memory,
            "gpus": {k: v for k, v in self.gpus.items() if v},
        }


class Reservation(Struct, frozen=True, gc=False):
    """What one run holds on one pool, released exactly once when the run ends."""

    pool: PoolState
    needs: Needs
    gpu_type: str | None


class PoolState:
    """A pool's capacity (from its ``Pool`` spec) and what is reserved on it now."""

    __slots__ = (
        "backend",
        "cap_cpu",
        "cap_custom",
        "cap_gpus",
        "cap_memory",
        "cap_slots",
        "holds",
        "name",
        "offline",
        "overcommitted",
        "paused",
        "spec",
        "stopping",
        "used_cpu",
        "used_custom",
        "used_gpus",
        "used_memory",
        "used_slots",
    )

    def __init__(self, backend: str, spec: Pool) -> None:
        self.backend = backend
        self.name = spec.name
        self.used_slots = 0
        self.stopping = 0  # slots held by runs told to stop that have not ended yet
        self.used_cpu = 0
        self.used_memory = 0
        self.used_gpus: dict[str, int] = {}
        self.used_custom: dict[str, int] = {}
        self.overcommitted = False
        self.paused = False  # an operator paused it: nothing new starts on it
        self.offline = False  # removed, or its backend is unavailable: nothing new starts here
        self.holds: list[Hold] = []
        self.set_spec(spec)

    def set_spec(self, spec: Pool) -> None:
        """Change the capacity; what is reserved stays (it may exceed a shrunk pool for a while,
        and then nothing new is placed here until enough is released)."""
        self.spec = spec
        self.cap_slots = spec.slots
        self.cap_cpu: int | None = None if spec.cpu is None else _milli(spec.cpu)
        self.cap_memory: int | None = spec.memory_mb
        self.cap_gpus = dict(spec.gpus)
        self.cap_custom = {k: _milli(v) for k, v in spec.custom.items()}
        # A pool shrunk below what it holds takes no new run, whatever the run asks, until
        # enough is released (I2: what is reserved never grows past capacity); nor does an
        # offline one.
        self.overcommitted = self.offline or not self.within_capacity()

    def set_offline(self, offline: bool) -> None:
        """Take the pool offline (removed, or its backend unavailable: it starts nothing new;
        what runs there keeps its reservation until its run ends) or back online."""
        self.offline = offline
        self.overcommitted = offline or not self.within_capacity()

    # -- fitting ---------------------------------------------------------------------------

    def _gpu_type_for(self, needs: Needs, *, free: bool) -> str | bool | None:
        """The GPU type a run would take (None when it takes none), or False if none fits."""
        if not needs.gpu_count:
            return None
        candidates: tuple[str, ...] = (
            (needs.gpu_type,) if needs.gpu_type is not None else tuple(self.cap_gpus)
        )
        for gpu_type in candidates:
            have = self.cap_gpus.get(gpu_type, 0)
            if free:
                have -= self.used_gpus.get(gpu_type, 0)
            if have >= needs.gpu_count:
                return gpu_type
        return False

    def _fits(self, needs: Needs, *, free: bool, held: Usage | None = None) -> str | bool | None:
        """The GPU type a run would take (None: it takes none), or False if it does not fit:
        in the empty pool (``free=False``), or in what is free now less what is ``held``."""
        if not free:
            return self._fits_in(needs, 0, 0, 0, None)
        if held is None:
            return self._fits_in(
                needs, self.used_slots, self.used_cpu, self.used_memory, self.used_gpus
            )
        gpus = dict(self.used_gpus)
        for gpu_type, count in held.gpus.items():
            gpus[gpu_type] = gpus.get(gpu_type, 0) + count
        return self._fits_in(
            needs,
            self.used_slots + held.slots,
            self.used_cpu + held.cpu,
            self.used_memory + held.memory,
            gpus,
        )

    def _fits_in(
        self, needs: Needs, slots: int, cpu: int, memory: int, gpus: dict[str, int] | None
    ) -> str | bool | None:
        if slots >= self.cap_slots:
            return False
        if needs is NO_NEEDS:
            return None
        if self.cap_cpu is not None and needs.cpu > self.cap_cpu - cpu:
            return False
        if self.cap_memory is not None and needs.memory_mb > self.cap_memory - memory:
            return False
        free = gpus is not None
        for name, amount in needs.custom:
            have = self.cap_custom.get(name, 0) - (self.used_custom.get(name, 0) if free else 0)
            if amount > have:
                return False
        if not needs.gpu_count:
            return None
        candidates: tuple[str, ...] = (
            (needs.gpu_type,) if needs.gpu_type is not None else tuple(self.cap_gpus)
        )
        for gpu_type in candidates:
            have = self.cap_gpus.get(gpu_type, 0) - (gpus.get(gpu_type, 0) if gpus else 0)
            if have >= needs.gpu_count:
                return gpu_type
        return False

    def could_ever_hold(self, needs: Needs) -> bool:
        """Whether the empty pool would hold one run with these needs."""
        return self._fits(needs, free=False) is not False

    def has_free_slot(self) -> bool:
        """Whether at least one more run could start here, resources permitting."""
        return self.used_slots < self.cap_slots and not self.overcommitted

    def _held_against(self, rank: int, job: object) -> Usage | None:
        """What is held here that a job of ``rank`` must leave alone: the holds of higher
        levels, and those of its level other than its own (only the older ones, if it holds
        capacity here itself)."""
        own = next((h.seq for h in self.holds if h.job is job), None)
        held: Usage | None = None
        for hold in self.holds:
            if hold.job is job or hold.rank > rank:
                continue
            if own is not None and hold.rank == rank and hold.seq > own:
                continue
            if held is None:
                held = Usage()
            held.add(hold)
        return held

    def fits_now(self, needs: Needs, rank: int = 0, job: object = None) -> bool:
        """Whether ``try_reserve`` would succeed now."""
        if self.overcommitted or self.paused:
            return False
        held = self._held_against(rank, job) if self.holds else None
        return self._fits(needs, free=True, held=held) is not False

    def try_reserve(self, needs: Needs, rank: int = 0, job: object = None) -> Reservation | None:
        """Reserve one run's needs if they fit what is free now (less what is held for other
        jobs of its level or higher; ``job`` is the record of the job asking)."""
        if self.overcommitted or self.paused:
            return None
        held = self._held_against(rank, job) if self.holds else None
        if needs is NO_NEEDS and held is None:
            if self.used_slots >= self.cap_slots:
                return None
            self.used_slots += 1
            return Reservation(self, needs, None)
        gpu_type = self._fits(needs, free=True, held=held)
        if gpu_type is False:
            return None
        self.used_slots += 1
        self.used_cpu += needs.cpu
        self.used_memory += needs.memory_mb
        if isinstance(gpu_type, str):
            self.used_gpus[gpu_type] = self.used_gpus.get(gpu_type, 0) + needs.gpu_count
        for name, amount in needs.custom:
            self.used_custom[name] = self.used_custom.get(name, 0) + amount
        return Reservation(self, needs, gpu_type if isinstance(gpu_type, str) else None)

    def take(self, needs: Needs, gpu_type: str | None) -> Reservation:
        """Count a run that is already going (a restored one) on ``gpu_type`` (None: a type
        that fits, if it asks for GPUs), whether or not it fits: it may leave the pool over
        capacity, and then nothing new is placed here until enough is released."""
        if gpu_type is None and needs.gpu_count:
            found = self._gpu_type_for(needs, free=True) or self._gpu_type_for(needs, free=False)
            gpu_type = found if isinstance(found, str) else needs.gpu_type
        self.used_slots += 1
        self.used_cpu += needs.cpu
        self.used_memory += needs.memory_mb
        if gpu_type is not None:
            self.used_gpus[gpu_type] = self.used_gpus.get(gpu_type, 0) + needs.gpu_count
        for name, amount in needs.custom:
            self.used_custom[name] = self.used_custom.get(name, 0) + amount
        self.overcommitted = self.offline or not self.within_capacity()
        return Reservation(self, needs, gpu_type)

    def hold_for(self, job: object, rank: int, needs: Needs, seq: int) -> Hold:
        """Start holding capacity for a job (see ``Hold``)."""
        gpu_type = self._gpu_type_for(needs, free=False)
        hold = Hold(job, rank, needs, gpu_type if isinstance(gpu_type, str) else None, seq)
        self.holds.append(hold)
        return hold

    def unhold(self, job: object) -> None:
        """Stop holding capacity for a job."""
        self.holds = [h for h in self.holds if h.job is not job]

    # -- prices ----------------------------------------------------------------------------

    def hourly_rate(self, needs: Needs, gpu_type: str | None = None) -> float:
        """USD per hour one run with these needs costs here (for a GPU request of any type
        without ``gpu_type``: the most expensive type this pool offers, as an upper bound)."""
        prices = self.spec.prices
        rate = (
            prices.slot_hour
            + needs.cpu / _MILLI * prices.cpu_hour
            + needs.memory_mb / 1024.0 * prices.memory_gb_hour
        )
        if needs.gpu_count:
            kind = gpu_type or needs.gpu_type
            if kind is not None:
                per_gpu = prices.gpu_hour.get(kind, prices.default_gpu_hour)
            else:
                per_gpu = max(
                    (prices.gpu_hour.get(t, prices.default_gpu_hour) for t in self.cap_gpus),
                    default=prices.default_gpu_hour,
                )
            rate += needs.gpu_count * per_gpu
        return rate

    def release(self, reservation: Reservation) -> None:
        """Give back what ``try_reserve`` took."""
        needs = reservation.needs
        self.used_slots -= 1
        if needs is not NO_NEEDS:
            self._release_resources(reservation)
        if self.overcommitted:
            self.overcommitted = self.offline or not self.within_capacity()

    def _release_resources(self, reservation: Reservation) -> None:
        needs = reservation.needs
        self.used_cpu -= needs.cpu
        self.used_memory -= needs.memory_mb
        if reservation.gpu_type is not None:
            self.used_gpus[reservation.gpu_type] -= needs.gpu_count
        for name, amount in needs.custom:
            self.used_custom[name] -= amount

    # -- accounting ------------------------------------------------------------------------

    def within_capacity(self) -> bool:
        """I2: nothing reserved beyond capacity, in every dimension."""
        if self.used_slots > self.cap_slots:
            return False
        if self.cap_cpu is not None and self.used_cpu > self.cap_cpu:
            return False
        if self.cap_memory is not None and self.used_memory > self.cap_memory:
            return False
        if any(used > self.cap_gpus.get(t, 0) for t, used in self.used_gpus.items()):
            return False
        return all(used <= self.cap_custom.get(n, 0) for n, used in self.used_custom.items())

    def usage(self) -> dict[str, object]:
        """What is reserved now, in user units."""
        return {
            "slots": self.used_slots,
            "cpu": self.used_cpu / _MILLI,
            "memory_mb": self.used_memory,
            "gpus": {k: v for k, v in self.used_gpus.items() if v},
            "custom": {k: v / _MILLI for k, v in self.used_custom.items() if v},
        }

    def shortfall(self, needs: Needs) -> tuple[str, object, object] | None:
        """The first dimension in which the empty pool is too small: (field, asked, offered)."""
        if self.cap_slots < 1:
            return ("slots", 1, self.cap_slots)
        if self.cap_cpu is not None and needs.cpu > self.cap_cpu:
            return ("cpu", needs.cpu / _MILLI, self.cap_cpu / _MILLI)
        if self.cap_memory is not None and needs.memory_mb > self.cap_memory:
            return ("memory_mb", needs.memory_mb, self.cap_memory)
        if needs.gpu_count and self._gpu_type_for(needs, free=False) is False:
            offered = ", ".join(f"{n} x {t}" for t, n in self.cap_gpus.items()) or "no GPUs"
            asked = f"{needs.gpu_count} x {needs.gpu_type or 'any type'}"
            return ("gpu_count" if needs.gpu_type is None else "gpu", asked, offered)
        for name, amount in needs.custom:
            if amount > self.cap_custom.get(name, 0):
                return (f"custom.{name}", amount / _MILLI, self.cap_custom.get(name, 0) / _MILLI)
        return None


def add_pools(pools: dict[str, PoolState], backend: str, specs: Iterable[Pool]) -> None:
    """Add a backend's pools to ``pools`` (by name: a pool name is unique across backends)."""
    for spec in specs:
        if spec.name in pools:
            raise ConfigurationError(
                f"pool name {spec.name!r} is used twice ({pools[spec.name].backend!r} "
                f"and {backend!r}); pool names must be unique across backends"
            )
        pools[spec.name] = PoolState(backend, spec)


def change_pools(
    pools: dict[str, PoolState],
    gone: dict[str, PoolState],
    backend: str,
    specs: Sequence[Pool],
    removed: Sequence[str] = (),
) -> list[PoolState]:
    """A backend's pools now offer this capacity: those in ``pools`` take their new spec, the
    others are added (a pool removed earlier under that name comes back as the same pool), and
    those named in ``removed`` are taken out of ``pools`` into ``gone``, offline (what runs
    there keeps its reservation until its run ends). Pools neither listed nor removed stay as
    they are. Returns the pools removed."""
    for name in [*[spec.name for spec in specs], *removed]:
        owner = pools.get(name) or gone.get(name)
        if owner is not None and owner.backend != backend:
            raise ConfigurationError(
                f"pool {name!r} belongs to backend {owner.backend!r}, not {backend!r}"
            )
    if set(removed) & {spec.name for spec in specs}:
        raise ConfigurationError(f"a pool cannot be both changed and removed: {sorted(removed)}")
    taken_out: list[PoolState] = []
    for name in removed:
        pool = pools.pop(name, None)
        if pool is not None:
            pool.set_offline(True)
            gone[name] = pool
            taken_out.append(pool)
    for spec in specs:
        pool = pools.get(spec.name)
        if pool is None and spec.name in gone:  # back again: the same pool, online
            pool = pools[spec.name] = gone.pop(spec.name)
            pool.offline = False
        if pool is not None:
            pool.set_spec(spec)
    add_pools(pools, backend, [spec for spec in specs if spec.name not in pools])
    return taken_out

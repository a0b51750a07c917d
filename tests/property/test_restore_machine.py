"""State is data (DESIGN.md principle 6): a core rebuilt by ``Restore`` from the live jobs and
the ``CoreState`` of another decides exactly as that one would have.

Both state machines (``CoreMachine``: capacity, priority, retries, timeouts, pool changes;
``TenancyMachine``: quotas, namespace limits, concurrency groups, fair share, parking, holds,
idle tenants) run here with one more rule, ``restart``. At a random point it:

1. brings the engine to a point a store could restore from: runs told to stop report their end
   (those executions belong to the old engine: ``CoreState`` does not carry them) and timers
   already due fire;
2. exports the live jobs (``live_jobs_in_order``) and the state (``export_state``) of the core
   in charge, and passes both through ``msgspec.json`` as a store would;
3. gives the running core an event that only runs a dispatch pass (``PoolsChanged`` with no
   pools), and builds a fresh core with the same configuration, the pools as they are now and a
   copy of the random source (``random.Random.getstate``/``setstate``), and feeds it
   ``Restore(jobs, routes, (), state, lost_reason=None)`` at the same instant.

What is compared:

- The Restore's decisions are the timers the jobs and the state need again, then exactly the
  decisions of the running core's dispatch pass (at rest there is nothing to dispatch, so no
  Dispatch). The timers are exactly the live ones (a backoff of each pending job, the timeout of
  each running job that has one, the idle sweep when armed), each at the instant the running
  core armed it: exactly for timeouts and the sweep, within 1 us for backoffs (a job stores
  ``next_attempt_at`` to the microsecond).
- After that, every event goes to both cores: their decisions are equal, field by field
  (Records with their Job snapshots and times, Dispatches, timers, stops), up to the end of the
  run (the machines' final drain included), and so are their counts of live, waiting and running
  jobs. Right after a restore, the two cores' stats (counts, usage, spend, waiting reasons; float
  shares to 9 digits) and exported states are equal too. The next restart restores from the
  restored core, so restores chain.

The clocks: the engine here feeds every event at its own instant, a multiple of 1/64 s (timers
fire at or after their time, as an engine's do), and the wall clock runs 1.7e9 s ahead of the
monotonic one. 1/64 s is a whole number of microseconds with an exact binary fraction, so the
jobs' timestamps (microseconds) and the state's wall-clock instants convert back to the very
same monotonic floats, and events never share an instant: queued jobs are put back in the
order they entered the queue (``queued_at``, then submission order), which is the running
core's order exactly when no two of them entered it at the same instant from different events.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from hypothesis import HealthCheck, settings
from hypothesis.stateful import precondition, rule

from nsai_work._ir import Job, Status
from nsai_work.core import (
    ArmTimer,
    CoreState,
    Decision,
    Event,
    PoolsChanged,
    Restore,
    Route,
    SchedulingCore,
    Submit,
)

from ._machines import normalized, phases, step
from .test_core_machine import CoreMachine
from .test_tenancy_machine import CheckedCore, TenancyMachine

C = TypeVar("C", bound=SchedulingCore)
#: The wall clock runs this far ahead of the monotonic one (a whole number of seconds).
WALL_OFFSET = 1_700_000_000.0
#: Events happen at multiples of this (see the module docstring).
TICK = 1 / 64
#: How far a restored backoff timer may be from the original (next_attempt_at is in us).
BACKOFF_TOLERANCE_S = 1e-6


def walled(cls: type[C]) -> type[C]:
    """``cls`` fed the wall clock ``now + WALL_OFFSET`` when the caller gives none."""

    class Walled(cls):  # type: ignore[valid-type,misc]
        def handle(self, event: Event, now: float, wall: float | None = None) -> list[Decision]:
            return super().handle(event, now, now + WALL_OFFSET if wall is None else wall)

    Walled.__name__ = f"Walled{cls.__name__}"
    return Walled


def comparable(value: Any) -> Any:
    """Plain data with floats to 9 significant digits (sums of weights differ in the last bit
    when added in another order)."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [comparable(v) for v in value]
    return value


def plain_state(state: CoreState) -> Any:
    """An exported state with the parts whose order is only the order of creation sorted."""
    data = msgspec.json.decode(msgspec.json.encode(state))
    data["tenants"].sort(key=lambda t: t["id"])
    data["runs"].sort(key=lambda r: (r["tenant"], r["job_id"]))
    for counters in data["counters"]:
        counters["cells"].sort(key=lambda c: (c["level"], c["backend"] or ""))
    data["counters"] = sorted(
        (c for c in data["counters"] if c["cells"] or c["rejections"] or c["rejected_unleveled"]),
        key=lambda c: c["tenant"],
    )
    data["retired"].sort(key=lambda c: (c["level"], c["backend"] or ""))
    return data


class RestoreMixin:
    """The ``restart`` rule and the lock-step comparison (see the module docstring). Mixed in
    front of a machine, whose ``feed``, ``new_core`` and ``advance_to`` it wraps."""

    core: SchedulingCore | None
    now: float
    seed: int
    timers: list[tuple[float, int, Any]]
    shadow: SchedulingCore | None = None
    shadow_rng: random.Random | None = None
    last_fed = -math.inf
    restarts = 0

    def new_core(self, rand: Callable[[], float] | None = None) -> Any:
        if rand is None:
            self.rng = random.Random(self.seed)
            rand = self.rng.random
        return super().new_core(rand)  # type: ignore[misc]

    def feed(self, event: Event, *args: Any) -> list[Decision]:
        self.now = self.last_fed = self.next_instant()
        if isinstance(event, Submit):
            routes = self.__dict__.setdefault("routes_of", {})
            for job, route in zip(event.jobs, event.routes, strict=True):
                routes[(job.tenant_id, job.id)] = route
        decisions: list[Decision] = super().feed(event, *args)  # type: ignore[misc]
        shadow = self.shadow
        if shadow is not None:
            assert self.core is not None
            again = shadow.handle(event, self.now)
            assert normalized(again) == normalized(decisions), (
                f"the restored core decided otherwise on {event} at {self.now}:\n"
                f"  restored: {again}\n  original: {decisions}"
            )
            counts = (shadow.live_jobs, shadow.waiting, shadow.active_runs)
            assert counts == (self.core.live_jobs, self.core.waiting, self.core.active_runs)
        return decisions

    def next_instant(self) -> float:
        """When the next event happens: every event at its own instant, a multiple of TICK."""
        return math.ceil(max(self.now, self.last_fed + TICK) / TICK) * TICK

    def end_stopped_runs(self) -> bool:
        """The engine reports the end of every run told to stop; True if there was one."""
        raise NotImplementedError

    @precondition(lambda self: self.core is not None and self.core.live_jobs >= 2)
    @rule()
    @step
    def restart(self) -> None:
        """Restore a fresh core from the one in charge, and compare from here on."""
        assert self.core is not None
        # (the restore happens at the next instant: timers due by then have fired)
        while self.end_stopped_runs() or (self.timers and self.timers[0][0] <= self.next_instant()):
            self.advance_to(self.next_instant())  # type: ignore[attr-defined]
        source = self.shadow if self.shadow is not None else self.core
        source_rng = self.shadow_rng if self.shadow is not None else self.rng
        assert source_rng is not None
        routes_of: dict[tuple[str, str], Route] = self.__dict__.setdefault("routes_of", {})
        if not self.routed_as_now(source, routes_of):
            return  # (see routed_as_now)
        # what a store keeps: the live jobs and the state, as JSON
        stored = msgspec.json.encode(source.export_state(self.now, self.now + WALL_OFFSET))
        state = msgspec.json.decode(stored, type=CoreState)
        jobs = tuple(
            msgspec.json.decode(msgspec.json.encode(job), type=Job)
            for job in source.live_jobs_in_order()
        )
        assert [j.id for j in jobs] == [j.id for j in source.live_jobs_in_order()]
        expected_timers = self.live_timers(source)
        pending = {key: at for at, _, key in sorted(self.timers)}
        by_backend: dict[str, list[Any]] = {}
        for pool in source.pool_states().values():
            by_backend.setdefault(pool.backend, []).append(pool.spec)
        # the core in charge runs one dispatch pass; the new one restores at the same instant
        nudge = self.feed(PoolsChanged(next(iter(by_backend)), ()))
        rng = random.Random()
        rng.setstate(source_rng.getstate())
        fresh = self.new_core(rng.random)
        for backend, specs in by_backend.items():
            assert fresh.handle(PoolsChanged(backend, tuple(specs)), self.now) == []
        routes = tuple(routes_of[(job.tenant_id, job.id)] for job in jobs)
        restored = fresh.handle(Restore(jobs, routes, (), state, None), self.now)

        # the Restore's decisions: the live timers, then what the running core's pass decided
        rearmed, rest = (
            restored[: len(restored) - len(nudge)],
            restored[len(restored) - len(nudge) :],
        )
        assert normalized(rest) == normalized(nudge), (
            f"the restored core's first pass differs: {rest} vs {nudge} (all: {restored})"
        )
        assert all(isinstance(d, ArmTimer) for d in rearmed), f"not only timers: {rearmed}"
        timers = {d.key: d.at for d in rearmed if isinstance(d, ArmTimer)}
        assert len(timers) == len(rearmed), f"a timer armed twice: {rearmed}"
        assert set(timers) == expected_timers, (
            f"re-armed {sorted(timers)}, the live timers are {sorted(expected_timers)}"
        )
        for key, at in timers.items():
            original = pending[key]
            if key[0] == "ready":
                assert abs(at - original) <= BACKOFF_TOLERANCE_S, (key, at, original)
            else:
                assert at == original, (key, at, original)

        # the same stats and the same state, and from here on the same decisions
        assert comparable(msgspec.to_builtins(fresh.stats())) == comparable(
            msgspec.to_builtins(source.stats())
        )
        wall = self.now + WALL_OFFSET
        assert plain_state(fresh.export_state(self.now, wall)) == plain_state(
            source.export_state(self.now, wall)
        )
        self.shadow, self.shadow_rng = fresh, rng
        self.restarts += 1

    @staticmethod
    def routed_as_now(core: SchedulingCore, routes_of: dict[tuple[str, str], Route]) -> bool:
        """Whether every live job's pool group is the one its route gives with the pools as
        they are now. A core routes a job once, at admission; a restored core routes it again
        with the pools it has. So after a pool changed (``CoreMachine.change_pool``) under a
        live job that it now would route elsewhere (a pool too small for it now, or big enough
        now), the two cores differ by design, and the machine does not restart there."""
        for entry in core.live_entries():
            route = routes_of[(entry.tenant, entry.job.id)]
            mine = tuple((backend, pools) for backend, pools in route if backend == entry.backend)
            choice = core._router.choose(entry.needs, mine, entry.job)
            if getattr(choice, "group", None) != entry.group:
                return False
        return True

    def live_timers(self, core: SchedulingCore) -> set[tuple[str, str, str, int]]:
        """The timers a core still needs: a backoff per pending job, a timeout per running job
        that has one, the idle sweep when armed."""
        keys: set[tuple[str, str, str, int]] = set()
        for entry in core.live_entries():
            job = entry.job
            if entry.status is Status.PENDING:
                keys.add(("ready", entry.tenant, job.id, job.attempt))
            elif entry.status is Status.RUNNING and job.resources.timeout_ms is not None:
                keys.add(("timeout", entry.tenant, job.id, job.attempt))
        if core._tenants.sweep_at is not None:
            keys.add(("sweep", "", "", 0))
        return keys


class RestoringCoreMachine(RestoreMixin, CoreMachine):
    core_class = walled(SchedulingCore)

    def end_stopped_runs(self) -> bool:
        stopped = [key for key in sorted(self.runs) if self.runs[key].stopped]
        for job_id, attempt in stopped:
            self.end(job_id, attempt, "stopped")
        return bool(stopped)


class RestoringTenancyMachine(RestoreMixin, TenancyMachine):
    core_class = walled(CheckedCore)

    def end_stopped_runs(self) -> bool:
        stopped = [key for key in sorted(self.runs) if self.runs[key].stopped]
        for key in stopped:
            self.end(key, "stopped")
        return bool(stopped)


def _settings(steps: int) -> Any:
    return settings(
        max_examples=int(os.environ.get("RESTORE_MACHINE_EXAMPLES", "100")),
        stateful_step_count=steps,
        report_multiple_bugs=False,
        phases=phases("RESTORE_MACHINE_SHRINK", "CORE_MACHINE_SHRINK"),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


RestoringCoreMachine.TestCase.settings = _settings(50)
RestoringTenancyMachine.TestCase.settings = _settings(80)
TestRestoringCoreMachine = RestoringCoreMachine.TestCase
TestRestoringTenancyMachine = RestoringTenancyMachine.TestCase

"""Cron schedules in the scheduler: declared in code (``work.cron``), fired by one task.

Each schedule keeps its state in the store (``stores/_schedules.py``): up to when its fires are
settled, its last fire, and whether it is paused. A pass of the task, for each schedule not
paused, asks the rules (``_cron_rules.plan``) which fires are due and which run, submits a job
for each of those, as the schedule's tenant, and then moves ``settled_through`` forward by
compare-and-set. So:

- no fire is lost: a fire is settled only after its job is committed (a crash in between
  leaves it unsettled, and the next start submits it);
- no fire is doubled: a fire's job has an id made of the schedule's name and the fire's time
  (``cron:<name>:<UTC time>``), the same in every process and every start, and the store holds
  one job per (tenant_id, id): a job already stored is not submitted again, and of two
  processes racing one fire, one commits the job and the other's submit is refused. The
  compare-and-set then lets one of them move the schedule on; the other re-reads it.

The task sleeps until the earliest next fire (at most 30 s at a time, so a wall clock that is
set forward is noticed), and wakes at once when a schedule is declared or resumed. With a clock
moved by hand (``work.testing.FakeClock``) it wakes whenever the clock moves instead.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import datetime as _dt
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

from msgspec.structs import replace

from .._errors import ConflictError, NotFoundError, StoreError, ValidationError, WorkError
from .._schedule import Schedule
from ..stores import ScheduleState
from ..telemetry.events import (
    SCHEDULE_FIRED,
    SCHEDULE_MISSED,
    SCHEDULE_PAUSED,
    SCHEDULE_REMOVED,
    SCHEDULE_RESUMED,
)
from ._cron_rules import CronSpec, Plan, fire_job, fire_job_id, next_fire, plan

if TYPE_CHECKING:
    from ._scheduler import Scheduler

__all__ = ["CronTable", "Schedules"]

_log = logging.getLogger("nsai_work.engine")
#: The longest the task sleeps with a real clock (a wall clock set forward is noticed).
_NAP_S: Final = 30.0
_UTC: Final = _dt.UTC


class CronTable:
    """The schedules a scheduler fires, and the task that fires them."""

    def __init__(self, engine: Scheduler) -> None:
        self._engine = engine
        self._specs: dict[tuple[str, str], CronSpec] = {}
        self._states: dict[tuple[str, str], ScheduleState] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._passes = 0
        self._passed = asyncio.Event()
        self._unsubscribe: Callable[[], None] | None = None
        on_change = getattr(engine.config.clock, "on_change", None)
        self._manual = on_change is not None
        if on_change is not None:
            loop = engine._loop

            def moved() -> None:
                if not loop.is_closed():
                    loop.call_soon_threadsafe(self._wake.set)

            self._unsubscribe = on_change(moved)

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the task (on the engine's loop)."""
        self._task = self._engine._loop.create_task(self._run(), name="nsai-cron")

    def halt(self) -> None:
        """Stop firing, at once (the schedules' states stay in the store); ``stop`` then
        waits for the task to end."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Stop firing and wait for the task to end."""
        self.halt()
        task, self._task = self._task, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def wait_pass(self) -> None:
        """Wait until a whole pass starts and ends after this call (tests: every fire due
        now is settled then)."""
        target = self._passes + 2  # the pass under way may have read the clock already
        while self._passes < target:
            self._wake.set()
            self._passed.clear()
            await self._passed.wait()

    # ---- the verbs' side --------------------------------------------------------------------

    def _now(self) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(self._engine._wall_time(), _UTC)

    async def declare(self, spec: CronSpec) -> Schedule:
        """Add a schedule (``ConflictError`` if its tenant has one with this name here)."""
        key = (spec.tenant_id, spec.name)
        if key in self._specs:
            raise ConflictError(
                f"tenant {spec.tenant_id!r} already has a schedule named {spec.name!r} in this "
                f"scheduler; remove_schedule({spec.name!r}) first, or choose another name"
            )
        self._engine._router.route(spec.template)  # a kind no backend runs is refused now
        self._specs[key] = spec  # (first: a second declaration racing this one is refused)
        try:
            fresh = ScheduleState(
                tenant_id=spec.tenant_id, name=spec.name, settled_through=self._now()
            )
            self._states[key] = await self._engine._store.add_schedule(fresh)
        except BaseException:
            del self._specs[key]
            raise
        self._wake.set()
        return self._view(key)

    def list(self, tenant_id: str | None) -> builtins.list[Schedule]:
        """The schedules (of one tenant, or all), by tenant then name."""
        return [self._view(key) for key in sorted(self._states) if tenant_id in (None, key[0])]

    def key_of(self, name: object, tenant_id: str | None) -> tuple[str, str]:
        """The schedule a caller names (``NotFoundError`` when there is none; with full
        rights and no tenant_id, a name two tenants use is a ``ValidationError``)."""
        if not isinstance(name, str) or not name:
            raise ValidationError(
                f"a schedule name is a non-empty string, got {name!r}", path="$.name"
            )
        if tenant_id is not None:
            if (tenant_id, name) in self._states:
                return (tenant_id, name)
            raise NotFoundError(f"no schedule named {name!r} for tenant {tenant_id!r}")
        found = [key for key in self._states if key[1] == name]
        if not found:
            raise NotFoundError(f"no schedule named {name!r}")
        if len(found) > 1:
            raise ValidationError(
                f"tenants {sorted(k[0] for k in found)} each have a schedule named {name!r}; "
                f"pass tenant_id",
                path="$.tenant_id",
            )
        return found[0]

    async def set_paused(self, key: tuple[str, str], paused: bool) -> Schedule:
        """Pause or resume a schedule (a resume skips the fires of the pause)."""
        state = await self._engine._store.pause_schedule(key[0], key[1], paused, self._now())
        if state is None or key not in self._states:
            self._forget(key)
            raise NotFoundError(f"no schedule named {key[1]!r} for tenant {key[0]!r}")
        self._states[key] = state
        self._emit(SCHEDULE_PAUSED if paused else SCHEDULE_RESUMED, key, {})
        self._wake.set()
        return self._view(key)

    async def remove(self, key: tuple[str, str]) -> Schedule:
        """Remove a schedule: it fires no more, and its state leaves the store."""
        view = self._view(key)
        self._forget(key)
        await self._engine._store.remove_schedule(*key)
        self._emit(SCHEDULE_REMOVED, key, {}, spec=view)
        return view

    def _forget(self, key: tuple[str, str]) -> None:
        self._specs.pop(key, None)
        self._states.pop(key, None)

    def _view(self, key: tuple[str, str]) -> Schedule:
        spec, state = self._specs[key], self._states[key]
        return Schedule(
            name=spec.name,
            tenant_id=spec.tenant_id,
            cron=spec.cron,
            tz=spec.tz,
            missed=spec.missed,
            grace_s=spec.grace_s,
            paused=state.paused,
            last_fire=state.last_fire,
            next_fire=None if state.paused else next_fire(spec, state.settled_through),
            template=spec.template,
        )

    # ---- firing ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                nap = await self._pass()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is down: the next pass tries again
                _log.warning("nsai-work: a pass over cron schedules failed (%s); retrying", exc)
                nap = 1.0
            self._passes += 1
            self._passed.set()
            timeout = None if self._manual else min(nap, _NAP_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _pass(self) -> float:
        """Settle every schedule's due fires; seconds until the next fire."""
        nap = _NAP_S
        for key in builtins.list(self._states):
            if key not in self._states:
                continue  # removed while an earlier one fired (or still being declared)
            upcoming = await self._settle(key)
            if upcoming is not None:
                nap = min(nap, (upcoming - self._now()).total_seconds())
        return max(nap, 0.0)

    async def _settle(self, key: tuple[str, str]) -> _dt.datetime | None:
        """Fire what is due for one schedule; its next fire (None while paused)."""
        spec, state = self._specs[key], self._states[key]
        if state.paused:
            return None
        now = self._now()
        todo = plan(spec, state.settled_through, now)
        if todo.settled_through == state.settled_through:
            return todo.next_fire
        for fire in todo.fires:
            await self._fire(spec, fire, now)
        if key not in self._states:
            return None  # removed meanwhile
        store = self._engine._store
        last_fire = todo.fires[-1] if todo.fires else None
        if await store.advance_schedule(
            key[0], key[1], state.settled_through, todo.settled_through, last_fire
        ):
            self._states[key] = replace(
                state,
                settled_through=todo.settled_through,
                last_fire=state.last_fire if last_fire is None else last_fire,
            )
            if todo.missed:
                self._missed(key, todo)
            return todo.next_fire
        # settled by another process, or paused or removed there: go on from what it holds
        for kept in await store.schedules(key[0]):
            if kept.name == key[1]:
                self._states[key] = kept
                return None if kept.paused else next_fire(spec, kept.settled_through)
        self._forget(key)
        self._emit(SCHEDULE_REMOVED, key, {}, spec=spec)
        return None

    async def _fire(self, spec: CronSpec, fire: _dt.datetime, now: _dt.datetime) -> None:
        """Submit the job of one fire, unless the store has it (an earlier start, or another
        process, submitted it)."""
        engine = self._engine
        job_id = fire_job_id(spec.name, fire)
        late_ms = max(0.0, (now - fire).total_seconds() * 1000)
        measurements = {"late_ms": late_ms}
        key = (spec.tenant_id, spec.name)
        meta = {"fire_time": fire.isoformat(), "job_id": job_id}
        (stored,) = await engine._store.get_many([(spec.tenant_id, job_id)])
        if stored is not None or engine._core.get(spec.tenant_id, job_id) is not None:
            self._emit(SCHEDULE_FIRED, key, measurements, {**meta, "decision": "already_submitted"})
            return
        try:
            (job,) = await engine._admit([fire_job(spec, fire, now)], batch=False)
        except ConflictError as exc:  # its id: another process submitted it meanwhile
            self._emit(SCHEDULE_FIRED, key, measurements, {**meta, "decision": "already_submitted"})
            _log.debug("nsai-work: schedule %r fire %s: %s", spec.name, fire, exc)
            return
        except StoreError:
            raise  # the store cannot take it now: the fire stays unsettled, the next pass retries
        except WorkError as exc:  # refused (a quota, a full queue...): this fire is lost
            _log.warning(
                "nsai-work: schedule %r (tenant %r) fire at %s was refused: %s",
                spec.name,
                spec.tenant_id,
                fire.isoformat(),
                exc,
            )
            extra = {**meta, "decision": "rejected", "error": str(exc)}
            self._emit(SCHEDULE_FIRED, key, measurements, extra)
            return
        decision = "duplicate" if job.duplicate else "submitted"
        extra = {**meta, "decision": decision, "job_id": job.id}
        self._emit(SCHEDULE_FIRED, key, measurements, extra)

    def _missed(self, key: tuple[str, str], todo: Plan) -> None:
        spec = self._specs.get(key)
        assert todo.last_missed is not None
        self._emit(
            SCHEDULE_MISSED,
            key,
            {"missed_count": float(todo.missed)},
            {
                "policy": spec.missed if spec is not None else None,
                "last_missed": todo.last_missed.isoformat(),
            },
        )

    def _emit(
        self,
        event: tuple[str, ...],
        key: tuple[str, str],
        measurements: dict[str, float],
        extra: Mapping[str, object] | None = None,
        *,
        spec: CronSpec | Schedule | None = None,
    ) -> None:
        bus = self._engine._bus
        handlers = bus._by_event.get(event)
        if handlers is None:
            return
        spec = spec or self._specs.get(key)
        meta: dict[str, object] = {
            "schedule": key[1],
            "tenant_id": key[0],
            "cron": None if spec is None else spec.cron,
            "tz": None if spec is None else spec.tz,
        }
        if extra:
            meta.update(extra)
        bus._deliver(handlers, event, measurements, meta)


class Schedules:
    """The scheduler's side of the verbs on schedules (``Verbs.cron`` ...): its ``CronTable``,
    made at start."""

    _cron: CronTable | None

    def _require_running(self) -> None:
        raise NotImplementedError

    async def _cron_declare(self, spec: CronSpec) -> Schedule:
        """Add a checked schedule."""
        return await self._cron_table().declare(spec)

    async def _cron_list(self, tenant_id: str | None) -> builtins.list[Schedule]:
        """The schedules (of one tenant, or all)."""
        return self._cron_table().list(tenant_id)

    async def _cron_pause(self, name: object, tenant_id: str | None, paused: bool) -> Schedule:
        """Pause or resume the schedule a caller names."""
        table = self._cron_table()
        return await table.set_paused(table.key_of(name, tenant_id), paused)

    async def _cron_remove(self, name: object, tenant_id: str | None) -> Schedule:
        """Remove the schedule a caller names."""
        table = self._cron_table()
        return await table.remove(table.key_of(name, tenant_id))

    def _cron_table(self) -> CronTable:
        self._require_running()
        assert self._cron is not None
        return self._cron

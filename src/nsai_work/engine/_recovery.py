"""Recovery at start from a durable store, and the state the engine commits for it.

What a restarted scheduler needs is data (DESIGN.md, principle 6): the non-terminal jobs, with
their attempts and the wall-clock due times of their timers, and one ``EngineState`` blob with
the core's exported state (tenants, limits and budgets set at run time, token buckets,
fair-share standing, spend in the current budget period) and the random source's state. The
writer commits the blob with every batch (``state_blob``); at start ``recover`` loads both and
feeds the core one ``Restore`` event. Runs of the dead engine are lost: their attempts end with
``engine_lost`` and their retry policies decide.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import TYPE_CHECKING, Any, Final

import msgspec
from msgspec import Struct

from .._errors import StoreError, WorkError
from .._ir import Attempt, Job, Status
from ..core import CoreState, Limit, Restore, Route
from ._deps import finished_of
from ._runner import quietly

if TYPE_CHECKING:
    from ._scheduler import Scheduler

__all__ = ["ENGINE_LOST", "EngineState", "recover", "state_blob"]

_log = logging.getLogger("nsai_work.engine")

#: The reason a run of a scheduler that died (or stopped with it still going) ends with.
ENGINE_LOST: Final = "engine_lost"


class EngineState(Struct, kw_only=True):
    """What the engine commits beside the jobs: the core's state and the random source's."""

    version: int = 1
    core: CoreState | None = None
    rng: list[Any] | None = None


_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(EngineState)


def state_blob(engine: Scheduler) -> bytes:
    """The engine's state now, encoded for the store."""
    core = engine._core.export_state(engine._monotonic(), engine._wall_time())
    return _ENCODER.encode(EngineState(core=core, rng=_plain(engine._random.getstate())))


def _cancel_orphan(engine: Scheduler, job: Job, attempt: Attempt) -> None:
    """A run of the dead engine said where it lives: ask its backend to stop it, so the retry
    does not pay for the same work twice (best effort; in the background)."""
    info = engine._router.backends.get(attempt.backend)
    hook = None if info is None else getattr(info.backend, "cancel_orphan", None)
    if hook is None:
        _log.warning(
            "nsai-work: job %s (tenant %r) attempt %d ran on backend %r (handle %r) in a "
            "scheduler that died; that backend cannot cancel it, so it may still be going",
            job.id,
            job.tenant_id,
            attempt.number,
            attempt.backend,
            attempt.handle,
        )
        return
    if inspect.iscoroutinefunction(hook):
        call = hook(job, attempt.handle)
    else:
        call = asyncio.get_running_loop().run_in_executor(
            engine._executor, hook, job, attempt.handle
        )
    what = (
        f"{attempt.backend!r} failed to cancel the orphaned run {attempt.handle!r} of job {job.id}"
    )
    engine._background.spawn(quietly(call, what))


def _plain(value: Any) -> Any:
    """A random source's state (nested tuples) as JSON lists."""
    return [_plain(item) for item in value] if isinstance(value, tuple) else value


def _tuples(value: Any) -> Any:
    """A random source's state back from JSON lists."""
    return tuple(_tuples(item) for item in value) if isinstance(value, list) else value


async def recover(engine: Scheduler) -> int:
    """Load what the store holds and rebuild the core from it; returns how many jobs came
    back. A job no configured backend runs any more is canceled by the core (reason
    ``unschedulable: ...``): it cannot wait for a backend that will never come."""
    recovered = await engine._store.load()
    for row in recovered.quarantined:
        _log.error(
            "nsai-work: a stored job could not be read back and was set aside (quarantined): "
            "tenant %r, job %r: %s",
            row.tenant_id,
            row.job_id,
            row.reason,
        )
    state: EngineState | None = None
    if recovered.state is not None:
        try:
            state = _DECODER.decode(recovered.state)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StoreError(
                f"the scheduler state in {engine._store.url} cannot be read ({exc}); it was "
                f"written by an incompatible version"
            ) from None
    if state is not None and state.rng is not None:
        engine._random.setstate(_tuples(state.rng))
    jobs: list[Job] = []
    routes: list[Route] = []
    limits: list[tuple[Limit, ...]] = []
    unroutable = 0
    for job in recovered.jobs:
        try:
            route, shared = engine._router.route(job)
        except WorkError:  # no configured backend runs it any more: the core ends it
            route, shared = (), ()
            unroutable += 1
        jobs.append(job)
        routes.append(route)
        limits.append(shared)
    restore = Restore(
        tuple(jobs),
        tuple(routes),
        tuple(limits),
        None if state is None else state.core,
        ENGINE_LOST,
        await finished_of(engine, jobs),
    )
    now = engine._monotonic()
    engine._apply(engine._core.handle(restore, now, engine._wall_time()), now)
    for job in jobs:
        if job.status is Status.RUNNING and job.attempts and job.attempts[-1].handle:
            _cancel_orphan(engine, job, job.attempts[-1])
    if jobs:
        _log.warning(
            "nsai-work: recovered %d jobs from %s (%d that no configured backend runs any more "
            "are canceled)",
            len(jobs),
            engine._store.url,
            unroutable,
        )
    return len(jobs)

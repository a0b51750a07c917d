"""``BackendEvents``: how a backend tells the engine that its pools or its availability changed.

A backend that has a ``bind(events)`` method gets one ``BackendEvents`` when the scheduler
starts, before its ``start()``. Its two methods may be called from any thread (a backend's poll
thread, Ray's callbacks); each call is carried to the engine's loop and fed to the core as one
event:

- ``pools_changed(pools, grace_s=...)``: the backend's pools are now exactly ``pools`` (its own,
  as ``pools()`` would return them). The engine merges the config's pools for that backend as
  at start (a declared pool of the same name overrides, other declared pools stay), takes out
  the pools no longer listed, and feeds the core ``PoolsChanged``: runs on a removed pool
  follow the connection-loss rule, waiting jobs are placed again, and a job no pool left can
  hold waits ``grace_s`` seconds (None: for ever) with the reason ``pool_removed:<pool>``, then
  is canceled.
- ``availability_changed(available, reason="")``: the backend lost its cluster or service
  (``available=False``: its runs follow the connection-loss rule, its queued jobs wait with the
  reason ``backend_unavailable``) or has it again.

A backend that narrows its jobs' pools with ``pools_for(job)`` cannot change its pools this way:
its jobs' routes were chosen among the pools it had (``ConfigurationError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .._errors import ConfigurationError, ValidationError
from .._ir import Pool
from .._validate import validate_struct
from ..core import BackendAvailability, PoolsChanged

if TYPE_CHECKING:
    from ._routing import BackendInfo
    from ._scheduler import Scheduler

__all__ = ["BackendEvents"]

_log = logging.getLogger("nsai_work.engine")
#: The engine's states in which it hears backends (from the start, while backends start).
_LISTENING = frozenset({"new", "running"})


class BackendEvents:
    """What one backend may tell the engine (see the module docstring)."""

    __slots__ = ("_engine", "_info", "_loop")

    def __init__(self, engine: Scheduler, info: BackendInfo) -> None:
        self._engine = engine
        self._info = info
        self._loop = engine._loop

    @property
    def backend(self) -> str:
        """The name of the backend these events are about."""
        return self._info.name

    def pools_changed(self, pools: Iterable[Pool], *, grace_s: float | None = 300.0) -> None:
        """The backend's pools are now exactly ``pools``; a waiting job none of them (nor a
        declared pool) can hold waits up to ``grace_s`` seconds for one (None: for ever).

        Raises ``ValidationError`` for a bad pool (naming it), ``ConfigurationError`` for a
        backend with ``pools_for``."""
        if self._info.pools_for is not None:
            raise ConfigurationError(
                f"backend {self.backend!r} has pools_for(job), so its pools cannot change while "
                f"the scheduler runs (its jobs' routes name the pools it had); drop pools_for to "
                f"offer every job all its pools"
            )
        if grace_s is not None and (
            not isinstance(grace_s, int | float)
            or isinstance(grace_s, bool)
            or not math.isfinite(grace_s)
            or grace_s < 0
        ):
            raise ValidationError(
                f"grace_s is a finite number of seconds >= 0 or None, got {grace_s!r}",
                path="$.grace_s",
            )
        checked = [validate_struct(p, Pool, f"$.pools[{i}]") for i, p in enumerate(pools)]
        if len({p.name for p in checked}) != len(checked):
            raise ValidationError(
                f"pool names must be unique, got {[p.name for p in checked]}", path="$.pools"
            )
        self._to_loop(lambda: self._apply_pools(checked, grace_s))

    def availability_changed(self, available: bool, reason: str = "") -> None:
        """The backend's cluster or service is reachable (``available``) or not (``reason``
        says how; it ends up in the error of the runs that were lost)."""
        event = BackendAvailability(self.backend, bool(available), str(reason))
        self._to_loop(lambda: self._feed(event))

    # ---- on the loop ----------------------------------------------------------------------

    def _to_loop(self, call: object) -> None:
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            call()  # type: ignore[operator]
        else:
            with contextlib.suppress(RuntimeError):  # (a loop closed meanwhile: nobody to tell)
                self._loop.call_soon_threadsafe(call)  # type: ignore[arg-type]

    def _feed(self, event: PoolsChanged | BackendAvailability) -> None:
        if self._engine._state in _LISTENING:
            self._engine._feed(event)

    def _apply_pools(self, offered: list[Pool], grace_s: float | None) -> None:
        engine, info = self._engine, self._info
        if engine._state not in _LISTENING:
            return
        declared = engine.config.pools.get(info.name, ())
        by_name = {p.name: p for p in offered}
        for spec in declared:
            by_name[spec.name] = spec
        removed = tuple(name for name in info.pools if name not in by_name)
        try:
            self._feed(PoolsChanged(info.name, tuple(by_name.values()), removed, grace_s))
        except ConfigurationError:  # (a name another backend's pool has: nothing changed)
            _log.exception("nsai-work: backend %r offered pools the engine refused", info.name)
            return
        info.pools = tuple(by_name)
        info.routes.clear()

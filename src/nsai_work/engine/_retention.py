"""Retention of finished jobs in a durable store: ``finished_ttl_s`` and ``finished_max`` hold
there too. (The memory store prunes itself as jobs finish.)

A task prunes the store every quarter of the TTL (between 0.05 and 60 seconds) and once at
start; a prune that fails is logged and tried again at the next round.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
from collections.abc import Callable

from ..stores import Store

__all__ = ["Retention"]

_log = logging.getLogger("nsai_work.engine")


class Retention:
    """Prunes ``store`` of jobs finished more than ``ttl_s`` ago, and beyond ``keep_max``."""

    def __init__(
        self, store: Store, *, ttl_s: float, keep_max: int, wall: Callable[[], float]
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.keep_max = keep_max
        self.wall = wall
        self.interval_s = min(max(ttl_s / 4, 0.05), 60.0)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start pruning (on the running loop)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="nsai-retention")

    async def stop(self) -> None:
        """Stop pruning."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def prune(self) -> int:
        """One round: how many jobs went."""
        before = _dt.datetime.fromtimestamp(self.wall() - self.ttl_s, _dt.UTC)
        return await self.store.prune(before, self.keep_max)

    async def _run(self) -> None:
        while True:
            try:
                await self.prune()
            except Exception as exc:  # the store is down: the next round tries again
                _log.warning("nsai-work: pruning finished jobs failed (%s); retrying", exc)
            await asyncio.sleep(self.interval_s)

"""The last minutes of throughput and submit-to-start latency, per tenant, for the dashboard's
charts (so a page opened now shows what happened before it was opened).

A handler on the scheduler's telemetry bus counts, in buckets of ``bucket_s`` seconds kept for
``window_s``, each tenant's attempts started (and their ``queue_time_ms``: submit, or the end
of a backoff, to start) and jobs ended (succeeded, failed, timeout, canceled). It is attached
the first time a dashboard asks (a server nobody looks at pays nothing per event) and detached
when the server stops; each event costs a few dict operations on the engine's loop.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Mapping
from typing import Any

from ..telemetry import Telemetry
from ..telemetry.events import JOB_CANCELED, JOB_COMPLETED, JOB_STARTED

__all__ = ["History"]

# per tenant and bucket: ended, failed (failed or timeout), started, sum and max of the delay
_ENDED, _FAILED, _STARTED, _DELAY_SUM, _DELAY_MAX = range(5)


class History:
    """Per-tenant counts of the last ``window_s`` seconds, in ``bucket_s`` buckets."""

    def __init__(self, *, window_s: float = 300.0, bucket_s: float = 5.0) -> None:
        self.window_s = window_s
        self.bucket_s = bucket_s
        self._buckets: collections.deque[tuple[float, dict[str, list[float]]]] = collections.deque()
        self._bus: Telemetry | None = None
        self._thread = 0
        self._handler_id = f"nsai-work-dashboard-history-{id(self):x}"

    @property
    def bound(self) -> bool:
        """Whether it counts events now."""
        return self._bus is not None

    def bind(self, bus: Telemetry) -> None:
        """Count the events the scheduler on this thread's loop emits on ``bus``."""
        if self._bus is not None:
            return
        self._bus = bus
        self._thread = threading.get_ident()
        bus.attach_many(self._handler_id, (JOB_STARTED, JOB_COMPLETED, JOB_CANCELED), self._on)

    def close(self) -> None:
        """Stop counting (the server stops)."""
        if self._bus is not None:
            self._bus.detach(self._handler_id)
            self._bus = None

    def _cell(self, tenant_id: str, now: float) -> list[float]:
        start = now - now % self.bucket_s
        buckets = self._buckets
        if not buckets or buckets[-1][0] != start:
            buckets.append((start, {}))
            horizon = start - self.window_s
            while buckets[0][0] < horizon:
                buckets.popleft()
        cells = buckets[-1][1]
        cell = cells.get(tenant_id)
        if cell is None:
            cell = cells[tenant_id] = [0.0, 0.0, 0.0, 0.0, 0.0]
        return cell

    def _on(
        self,
        event: tuple[str, ...],
        measurements: Mapping[str, float],
        metadata: Mapping[str, Any],
        config: Any,
    ) -> None:
        if threading.get_ident() != self._thread:  # another scheduler's, on a shared bus
            return
        tenant_id = metadata.get("tenant_id")
        if not isinstance(tenant_id, str):
            return
        cell = self._cell(tenant_id, time.time())
        if event == JOB_STARTED:
            cell[_STARTED] += 1
            delay = measurements.get("queue_time_ms")
            if delay is not None:
                cell[_DELAY_SUM] += delay
                if delay > cell[_DELAY_MAX]:
                    cell[_DELAY_MAX] = delay
        else:
            cell[_ENDED] += 1
            if metadata.get("status") in ("failed", "timeout"):
                cell[_FAILED] += 1

    def series(self, tenant_id: str | None) -> list[dict[str, float]]:
        """The buckets of the window, oldest first, summed over every tenant (None) or one."""
        horizon = time.time() - self.window_s
        out = []
        for start, cells in list(self._buckets):
            if start < horizon:
                continue
            chosen = cells.values() if tenant_id is None else [cells.get(tenant_id)]
            total = [0.0, 0.0, 0.0, 0.0, 0.0]
            for cell in chosen:
                if cell is None:
                    continue
                for i in range(4):
                    total[i] += cell[i]
                total[_DELAY_MAX] = max(total[_DELAY_MAX], cell[_DELAY_MAX])
            out.append(
                {
                    "t": start,
                    "ended": total[_ENDED],
                    "failed": total[_FAILED],
                    "started": total[_STARTED],
                    "delay_sum_ms": total[_DELAY_SUM],
                    "delay_max_ms": total[_DELAY_MAX],
                }
            )
        return out

"""What the demo measures, from telemetry events and ``stats()`` samples.

- Submit-to-start latency of first attempts, by priority: from just before the submit call to
  the job's ``job.started`` event, both read on the monotonic clock (``time.monotonic``).
- Fair share on the shared L4 pool: each contest tenant's GPU-seconds held by its evaluation
  steps, integrated between events, counted while all contest tenants have steps queued.
- Retries per tenant, the training runs running now (the demo cancels one), and, from samples
  of ``stats()``, the job-seconds spent waiting for each reason and the throughput.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import nsai_work as work

from ._workload import CONTEST_KIND, CONTEST_TENANTS, TENANTS, WEIGHTS

__all__ = ["PRIORITIES", "Recorder", "Sampler", "percentile"]

PRIORITIES: Final = ("realtime", "interactive", "batch", "offline")
EVENTS: Final = (
    work.telemetry.events.JOB_QUEUED,
    work.telemetry.events.JOB_STARTED,
    work.telemetry.events.JOB_RETRY,
    work.telemetry.events.JOB_COMPLETED,
    work.telemetry.events.JOB_CANCELED,
)
_QUEUED, _STARTED, _RETRY, _COMPLETED, _CANCELED = EVENTS


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0 to 1) of ``values``, interpolated between the nearest ranks."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class Recorder:
    """A telemetry handler that keeps the demo's own measurements (see the module docstring).

    Its handler runs on the engine's thread; the demo reads it from the main thread, under
    ``lock``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.submitted_at: dict[str, float] = {}
        self.latency_ms: dict[str, list[float]] = {p: [] for p in PRIORITIES}
        self.retries: dict[str, int] = dict.fromkeys(TENANTS, 0)
        self.training: dict[str, str] = {}  # running train steps: job id -> tenant
        # fair share on the shared pool
        self._contest: dict[str, bool] = {}  # job id -> running (False: queued)
        self.queued: dict[str, int] = dict.fromkeys(CONTEST_TENANTS, 0)
        self.running: dict[str, int] = dict.fromkeys(CONTEST_TENANTS, 0)
        self.served: dict[str, float] = dict.fromkeys(CONTEST_TENANTS, 0.0)
        self.served_backlogged: dict[str, float] = dict.fromkeys(CONTEST_TENANTS, 0.0)
        self.backlogged_s = 0.0
        self._last = clock()

    # ---- the submit side --------------------------------------------------------------------

    def submitting(self, jobs: Iterable[work.Job]) -> None:
        """Note the time just before these jobs are submitted."""
        now = self.clock()
        with self.lock:
            for job in jobs:
                self.submitted_at[job.id] = now

    def not_submitted(self, jobs: Iterable[work.Job]) -> None:
        """Forget jobs whose submit was refused."""
        with self.lock:
            for job in jobs:
                self.submitted_at.pop(job.id, None)

    # ---- the telemetry handler ----------------------------------------------------------------

    def on_event(
        self,
        event: tuple[str, ...],
        measurements: Mapping[str, float],
        metadata: Mapping[str, Any],
        config: Any,
    ) -> None:
        """Called by the telemetry bus on the engine's thread."""
        now = self.clock()
        job_id = metadata["job_id"]
        kind = metadata["kind"]
        with self.lock:
            if event == _STARTED:
                since = self.submitted_at.pop(job_id, None)
                if since is not None and metadata["attempt"] == 1:
                    self.latency_ms[metadata["priority"]].append((now - since) * 1000.0)
                if kind == "train_step":
                    self.training[job_id] = metadata["tenant_id"]
            elif event == _RETRY:
                tenant = metadata["tenant_id"]
                self.retries[tenant] = self.retries.get(tenant, 0) + 1
                self.training.pop(job_id, None)
            elif event in (_COMPLETED, _CANCELED):
                self.training.pop(job_id, None)
            if kind == CONTEST_KIND:
                self._contest_event(event, job_id, metadata["tenant_id"], now)

    def _contest_event(self, event: tuple[str, ...], job_id: str, tenant: str, now: float) -> None:
        if tenant not in self.queued:
            return
        self._advance(now)
        state = self._contest.get(job_id)  # None: not queued nor running; False: queued
        if event == _QUEUED:
            if state is None:
                self._contest[job_id] = False
                self.queued[tenant] += 1
        elif event == _STARTED:
            if state is False:
                self.queued[tenant] -= 1
            if state is not True:
                self._contest[job_id] = True
                self.running[tenant] += 1
        elif state is not None:  # retry, completed, canceled: it leaves the queue or the pool
            del self._contest[job_id]
            if state:
                self.running[tenant] -= 1
            else:
                self.queued[tenant] -= 1

    def _advance(self, now: float) -> None:
        """Integrate the GPUs each contest tenant holds up to ``now`` (call under ``lock``)."""
        elapsed = now - self._last
        if elapsed <= 0:
            return
        self._last = now
        backlogged = all(count > 0 for count in self.queued.values())
        if backlogged:
            self.backlogged_s += elapsed
        for tenant, running in self.running.items():
            self.served[tenant] += running * elapsed
            if backlogged:
                self.served_backlogged[tenant] += running * elapsed

    # ---- reading -------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, float]:
        """GPU-seconds served to each contest tenant so far (for shares over a recent window)."""
        with self.lock:
            self._advance(self.clock())
            return dict(self.served)

    def queued_now(self) -> dict[str, int]:
        """Each contest tenant's evaluation steps queued now."""
        with self.lock:
            return dict(self.queued)

    def fair_share(self) -> dict[str, Any]:
        """Each contest tenant's share of the GPU-seconds served while all were backlogged,
        against its weight's share, in percent."""
        with self.lock:
            self._advance(self.clock())
            served = dict(self.served_backlogged)
            backlogged_s = self.backlogged_s
        return shares(served, backlogged_s)

    def latencies(self) -> dict[str, list[float]]:
        """A copy of the latencies (ms) by priority."""
        with self.lock:
            return {p: list(values) for p, values in self.latency_ms.items()}


def shares(served: Mapping[str, float], backlogged_s: float) -> dict[str, Any]:
    """Shares of ``served`` (by contest tenant) against the weights' shares."""
    total = sum(served.values())
    weights = sum(WEIGHTS[t] for t in CONTEST_TENANTS)
    tenants = {}
    for tenant in CONTEST_TENANTS:
        weight_share = 100.0 * WEIGHTS[tenant] / weights
        share = 100.0 * served[tenant] / total if total else 0.0
        tenants[tenant] = {
            "weight": WEIGHTS[tenant],
            "weight_share_pct": round(weight_share, 2),
            "share_pct": round(share, 2),
            "gpu_seconds": round(served[tenant], 2),
            "error_pp": round(share - weight_share, 2),
        }
    return {
        "backlogged_s": round(backlogged_s, 2),
        "tenants": tenants,
        "max_error_pp": round(max(abs(t["error_pp"]) for t in tenants.values()), 2)
        if total
        else None,
    }


class Sampler:
    """Samples of ``stats()``: job-seconds spent waiting for each reason and the most jobs
    waiting for it at once, finished jobs over time (throughput), shares over a recent window."""

    def __init__(self, window_s: float = 3.0) -> None:
        self.window_s = window_s
        self.reason_job_s: dict[str, float] = {}
        self.reason_peak: dict[str, int] = {}
        self.finished: deque[tuple[float, int]] = deque()  # (time, finished so far)
        self.peak_throughput = 0.0
        self._served: deque[tuple[float, dict[str, float]]] = deque()
        self._last: float | None = None

    def sample(self, stats: work.Stats, now: float, served: dict[str, float]) -> None:
        """Take one sample at ``now`` (monotonic seconds)."""
        if self._last is not None:
            elapsed = now - self._last
            for reason, count in stats.waiting_reasons.items():
                self.reason_job_s[reason] = self.reason_job_s.get(reason, 0.0) + count * elapsed
        for reason, count in stats.waiting_reasons.items():
            if count > self.reason_peak.get(reason, 0):
                self.reason_peak[reason] = count
        self._last = now
        self.finished.append((now, stats.totals.finished))
        while len(self.finished) > 2 and self.finished[1][0] <= now - 5.0:
            self.finished.popleft()
        first_t, first_n = self.finished[0]
        if now - first_t >= 4.0:
            self.peak_throughput = max(
                self.peak_throughput, (stats.totals.finished - first_n) / (now - first_t)
            )
        self._served.append((now, served))
        while len(self._served) > 2 and self._served[1][0] <= now - self.window_s:
            self._served.popleft()

    def recent_shares(self) -> dict[str, float]:
        """Each contest tenant's share (percent) of the GPU-seconds of the last few seconds."""
        if len(self._served) < 2:
            return dict.fromkeys(CONTEST_TENANTS, 0.0)
        (_, old), (_, new) = self._served[0], self._served[-1]
        delta = {t: new[t] - old[t] for t in CONTEST_TENANTS}
        total = sum(delta.values())
        return {t: (100.0 * d / total if total else 0.0) for t, d in delta.items()}

    def top_reasons(self, n: int = 6) -> list[tuple[str, float, int]]:
        """The reasons jobs waited for most, as (reason, job-seconds, peak), most first."""
        ranked = sorted(self.reason_job_s.items(), key=lambda item: (-item[1], item[0]))
        return [(reason, job_s, self.reason_peak.get(reason, 0)) for reason, job_s in ranked[:n]]

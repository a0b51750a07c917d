"""Prometheus metrics of a scheduler (needs ``prometheus_client``: the ``[server]`` extra).

Two sources, one scrape:

- counts and gauges come from a ``stats()`` snapshot taken at scrape time (``render(stats)``),
  so a scrape's counters add up to ``stats()``: queue depth by priority and tenant, running
  jobs by backend and pool, completions by status, rejections by reason, cost, pool capacity
  and use, waiting reasons;
- two histograms are handlers on the telemetry bus (``attach(bus)``): submit-to-start of first
  attempts, and run time of each attempt by outcome, labelled by priority only.

Label cardinality stays bounded: priorities, statuses, backends and pools are few by nature;
tenants are an allow-list (``tenants=[...]``) or the ``top_tenants`` busiest at each scrape
(waiting plus running, then submitted), and every other tenant is summed into
``tenant="_other"``, so the sum over tenants of any series is the scheduler's total. Kinds and
job ids never become labels.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .._stats import Counts, Stats, TenantStats
from ._bus import Telemetry
from .events import JOB_COMPLETED, JOB_RETRY, JOB_STARTED

__all__ = ["CONTENT_TYPE", "OTHER_TENANT", "PrometheusMetrics"]

#: The media type of a scrape (Prometheus text format 0.0.4).
CONTENT_TYPE: Final = "text/plain; version=0.0.4"
#: The ``tenant`` label of every tenant outside the allow-list or the top N.
OTHER_TENANT: Final = "_other"
#: Seconds: from 1 ms to 10 min (submit-to-start and run times of AI work span that).
BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    600.0,
)
_TERMINAL: Final = ("succeeded", "failed", "timeout", "canceled")
_PRIORITIES: Final = ("realtime", "interactive", "batch", "offline")


class _Snapshot(Collector):
    """Yields the metric families of the snapshot being rendered."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


class PrometheusMetrics:
    """The metrics of one scheduler in Prometheus' text format.

    ``tenants``: the tenant ids that get a label of their own (an allow-list); when None, the
    ``top_tenants`` busiest get one at each scrape. Everything else is ``tenant="_other"``.
    ``attach(bus)`` starts the histograms; ``render(stats)`` is one scrape."""

    def __init__(
        self,
        *,
        tenants: Iterable[str] | None = None,
        top_tenants: int = 20,
        buckets: tuple[float, ...] = BUCKETS,
    ) -> None:
        if top_tenants < 0:
            raise ValueError(f"top_tenants is >= 0, got {top_tenants}")
        self.tenants = None if tenants is None else frozenset(tenants)
        self.top_tenants = top_tenants
        self.registry = CollectorRegistry(auto_describe=False)
        self._start = Histogram(
            "nsai_work_job_start_delay_seconds",
            "Submit to start of first attempts (seconds), by priority",
            ["priority"],
            buckets=buckets,
            registry=self.registry,
        )
        self._run = Histogram(
            "nsai_work_attempt_run_seconds",
            "Run time of attempts (seconds), by priority and outcome "
            "(succeeded, failed, timeout, retried)",
            ["priority", "outcome"],
            buckets=buckets,
            registry=self.registry,
        )
        self._snapshot = _Snapshot()
        self.registry.register(self._snapshot)
        self._lock = threading.Lock()
        self._bus: Telemetry | None = None
        self._thread: int | None = None
        self._handler_id = f"nsai-work-prometheus-{id(self):x}"

    # ---- the histograms: handlers on the bus -----------------------------------------------------

    def attach(self, bus: Telemetry, *, thread: int | None = None) -> None:
        """Feed the histograms from ``bus`` (the scheduler's). ``thread``: count only the
        events emitted on this thread (``threading.get_ident()`` of the scheduler's loop), when
        the bus is shared with other schedulers (the process-wide one)."""
        self._thread = thread
        bus.attach_many(self._handler_id, [JOB_STARTED, JOB_COMPLETED, JOB_RETRY], self._on_event)
        self._bus = bus

    def detach(self) -> None:
        """Stop feeding the histograms."""
        if self._bus is not None:
            self._bus.detach(self._handler_id)
            self._bus = None

    def _on_event(
        self,
        event: tuple[str, ...],
        measurements: Mapping[str, float],
        metadata: Mapping[str, Any],
        config: Any,
    ) -> None:
        priority = metadata.get("priority")
        if priority not in _PRIORITIES:
            return
        if self._thread is not None and threading.get_ident() != self._thread:
            return
        if event == JOB_STARTED:
            if metadata.get("attempt") == 1:
                self._start.labels(priority).observe(measurements["queue_time_ms"] / 1000.0)
            return
        outcome = "retried" if event == JOB_RETRY else metadata.get("status")
        if outcome in ("succeeded", "failed", "timeout", "retried"):
            self._run.labels(priority, outcome).observe(measurements["run_time_ms"] / 1000.0)

    # ---- a scrape -------------------------------------------------------------------------------

    def labelled(self, stats: Stats) -> list[str]:
        """The tenants that get a label of their own in a scrape of ``stats``."""
        if self.tenants is not None:
            return sorted(t for t in stats.by_tenant if t in self.tenants)

        def busy(item: tuple[str, TenantStats]) -> tuple[int, int, str]:
            tenant_id, tenant = item
            return (-(tenant.waiting + tenant.running), -tenant.submitted, tenant_id)

        ranked = sorted(stats.by_tenant.items(), key=busy)[: self.top_tenants]
        return sorted(tenant_id for tenant_id, _ in ranked)

    def render(self, stats: Stats) -> bytes:
        """One scrape: the histograms, and the families of ``stats``."""
        families = self.families(stats)
        with self._lock:
            self._snapshot.families = families
            try:
                return generate_latest(self.registry)
            finally:
                self._snapshot.families = []

    def families(self, stats: Stats) -> list[Metric]:
        """The metric families of a ``stats()`` snapshot."""
        named = self.labelled(stats)
        rows: list[tuple[str, Counts]] = [(t, stats.by_tenant[t]) for t in named]
        rest = _rest(stats, named)
        if rest is not None:
            rows.append((OTHER_TENANT, rest))
        out: list[Metric] = []

        waiting = GaugeMetricFamily(
            "nsai_work_jobs_waiting",
            "Jobs waiting now, by priority, tenant and state (pending: backoff; queued: "
            "ready, waiting for capacity or a limit)",
            labels=["priority", "tenant", "state"],
        )
        for tenant_id, _ in rows:
            for priority, counts in _by_priority(stats, tenant_id, named).items():
                waiting.add_metric([priority, tenant_id, "queued"], counts.queued)
                waiting.add_metric([priority, tenant_id, "pending"], counts.pending)
        out.append(waiting)

        completed = CounterMetricFamily(
            "nsai_work_jobs_completed",
            "Jobs that ended, by tenant and status (since the scheduler started)",
            labels=["tenant", "status"],
        )
        submitted = CounterMetricFamily(
            "nsai_work_jobs_submitted", "Jobs admitted, by tenant", labels=["tenant"]
        )
        running_by_tenant = GaugeMetricFamily(
            "nsai_work_tenant_jobs_running", "Jobs running now, by tenant", labels=["tenant"]
        )
        for tenant_id, counts in rows:
            for status in _TERMINAL:
                completed.add_metric([tenant_id, status], getattr(counts, status))
            submitted.add_metric([tenant_id], counts.submitted)
            running_by_tenant.add_metric([tenant_id], counts.running)
        out += [completed, submitted, running_by_tenant]

        rejected = CounterMetricFamily(
            "nsai_work_jobs_rejected",
            "Submits refused, by tenant and reason (tenant _other, reason invalid: jobs "
            "without a valid tenant id)",
            labels=["tenant", "reason"],
        )
        for tenant_id, reason, count in _rejections(stats, named):
            rejected.add_metric([tenant_id, reason], count)
        out.append(rejected)

        running = GaugeMetricFamily(
            "nsai_work_jobs_running",
            "Jobs running now, by backend and pool",
            labels=["backend", "pool"],
        )
        capacity = GaugeMetricFamily(
            "nsai_work_pool_capacity",
            "A pool's declared capacity, by resource (slots, cpu, memory_mb, gpu:<type>, "
            "custom:<name>)",
            labels=["backend", "pool", "resource"],
        )
        used = GaugeMetricFamily(
            "nsai_work_pool_used",
            "What runs hold on a pool now, by resource",
            labels=["backend", "pool", "resource"],
        )
        stopping = GaugeMetricFamily(
            "nsai_work_pool_stopping_slots",
            "Slots held by runs told to stop that have not ended yet",
            labels=["backend", "pool"],
        )
        for name, pool in sorted(stats.pools.items()):
            labels = [pool.backend, name]
            running.add_metric(labels, pool.used.slots - pool.used.stopping)
            stopping.add_metric(labels, pool.used.stopping)
            for resource, have, held in _resources(pool):
                if have is not None:
                    capacity.add_metric([*labels, resource], have)
                used.add_metric([*labels, resource], held)
        out += [running, capacity, used, stopping]

        spent = CounterMetricFamily(
            "nsai_work_cost_usd",
            "What finished runs cost (USD, since the scheduler started), by tenant",
            labels=["tenant"],
        )
        committed = GaugeMetricFamily(
            "nsai_work_committed_usd",
            "Estimated maximum cost of admitted, unfinished jobs (USD), by tenant",
            labels=["tenant"],
        )
        money = _money(stats, named)
        for tenant_id, (total, promised) in money.items():
            spent.add_metric([tenant_id], total)
            committed.add_metric([tenant_id], promised)
        out += [spent, committed]

        reasons = GaugeMetricFamily(
            "nsai_work_waiting_reason_jobs",
            "Waiting jobs by why they wait",
            labels=["reason"],
        )
        for reason, count in sorted(stats.waiting_reasons.items()):
            reasons.add_metric([reason], count)
        out.append(reasons)
        return out


def _rest(stats: Stats, named: list[str]) -> Counts | None:
    """The totals minus the named tenants (every other tenant, and what no tenant holds)."""
    if not stats.by_tenant and not stats.totals.submitted and not stats.totals.rejected:
        return None
    totals = stats.totals
    fields = {
        name: getattr(totals, name) - sum(getattr(stats.by_tenant[t], name) for t in named)
        for name in Counts.__struct_fields__
    }
    return Counts(**fields)


def _by_priority(stats: Stats, tenant_id: str, named: list[str]) -> dict[str, Counts]:
    """A row's waiting counts by priority (for ``_other``: the totals minus the named)."""
    if tenant_id != OTHER_TENANT:
        return stats.by_tenant[tenant_id].by_priority
    out = {}
    for priority, counts in stats.by_priority.items():
        queued = counts.queued - sum(
            stats.by_tenant[t].by_priority.get(priority, Counts()).queued for t in named
        )
        pending = counts.pending - sum(
            stats.by_tenant[t].by_priority.get(priority, Counts()).pending for t in named
        )
        out[priority] = Counts(queued=queued, pending=pending)
    return out


def _rejections(stats: Stats, named: list[str]) -> list[tuple[str, str, int]]:
    rows = []
    other: dict[str, int] = {}
    for tenant_id, tenant in stats.by_tenant.items():
        for reason, count in tenant.rejections.items():
            if tenant_id in named:
                rows.append((tenant_id, reason, count))
            else:
                other[reason] = other.get(reason, 0) + count
    unattributed = stats.totals.rejected - sum(count for *_, count in rows) - sum(other.values())
    if unattributed > 0:
        other["invalid"] = other.get("invalid", 0) + unattributed
    rows += [(OTHER_TENANT, reason, count) for reason, count in sorted(other.items())]
    return sorted(rows)


def _money(stats: Stats, named: list[str]) -> dict[str, tuple[float, float]]:
    out = {t: (stats.by_tenant[t].spend_total_usd, stats.by_tenant[t].committed_usd) for t in named}
    others = [tenant for t, tenant in stats.by_tenant.items() if t not in named]
    if others:
        out[OTHER_TENANT] = (
            sum(t.spend_total_usd for t in others),
            sum(t.committed_usd for t in others),
        )
    return out


def _resources(pool: Any) -> Iterator[tuple[str, float | None, float]]:
    """(resource, capacity or None when unbounded, in use) of a pool."""
    have, held = pool.capacity, pool.used
    yield "slots", have.slots, held.slots
    yield "cpu", have.cpu, held.cpu
    yield "memory_mb", have.memory_mb, held.memory_mb
    for gpu in sorted({*have.gpus, *held.gpus}):
        yield f"gpu:{gpu}", have.gpus.get(gpu), held.gpus.get(gpu, 0)
    for name in sorted({*have.custom, *held.custom}):
        yield f"custom:{name}", have.custom.get(name), held.custom.get(name, 0.0)

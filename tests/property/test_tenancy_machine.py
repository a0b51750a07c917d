"""A hypothesis state machine drives ``SchedulingCore``'s tenancy: quotas, namespace limits,
concurrency groups and weighted fair share, against an independent model of who holds what.

Setup: 3-5 tenants (weights in {0.5, 1, 2, 4}; random ``max_running``, ``cpu`` and
``max_queued`` quotas; limits on namespace ``ns1`` for some), one or two pools (slots and cpu)
reached by up to four routes, concurrency groups ``g1`` and ``g2`` with configured or default
limits, jobs of two or three priority levels asking cpu none/0/1/2, sometimes with a timeout or a
second attempt. Rules: submit batches (rejections included), advance the clock and end a
running run, cancel, change a tenant (weight, quota, namespace limits; often below current use),
change a concurrency limit, advance the clock and fire due timers. After every ``handle()``:

- I6 quotas hold. The model counts a run from its Dispatch until the engine sends its RunEnded
  (a timed-out or canceled run still holds). Every Dispatch leaves its tenant, its namespace
  (when limited) and its concurrency group within ``max_running``, the cpu cap and the group's
  limit. At rest, use is within every limit except where a TenantChanged or
  ConcurrencyLimitChanged lowered a limit below use, and then use does not grow (no dispatch
  into it) until it is back under. Admission: a batch is admitted iff every job could ever
  run (route, quota) and each tenant's and namespace's waiting jobs plus the batch stay within
  ``max_queued``; a rejection is the documented error (``UnschedulableError``,
  ``QuotaExceededError``), the index names an offending job, and nothing else changes.
  ``stats().by_tenant[t].usage``, ``weight`` and ``quota`` and ``concurrency_usage(g)`` agree
  with the model.
- I5 fair share, selection: ``CheckedCore.try_start`` asserts, before each start, that the
  queue's keys carry the tenants' virtual times and that no other active tenant of the same
  GroupQueue with a strictly smaller virtual time has a head that would start now (limits
  pass, and it fits one of its pools): drain offers tenants in key order, so such a tenant
  would have been started first. Proportions: two simulations saturate a pool for 2000
  dispatches and check that backlogged tenants get dispatched resource-time in proportion to
  their weights within the lag bound of fair queuing (equal run times, also with a tenant
  back from idle; and different run times per tenant).
- Liveness under limits: at rest, no tenant's oldest queued job in a (level, pool group)
  passes every limit and fits a pool (a parked tenant or FIFO is let go when what blocked it
  goes), capacity held for a younger job of the same tenant does not keep it out, and with
  nothing running no such job waits at all (holds only wait for runs to end).
- I4 per FIFO (tenant, level, pools, namespace, group); I2 pools within capacity and equal to
  the model; I8 every Record is an edge of ``ALLOWED_TRANSITIONS``; I1 after a final drain
  (limits lifted) every admitted job is terminal exactly once; determinism: the recorded events
  replayed into a fresh ``CheckedCore`` give the same decisions.

The fixed examples at the end are core bugs this machine found, each reduced to a few events.

A failing run is reported unshrunk unless ``TENANCY_MACHINE_SHRINK=1`` (or
``CORE_MACHINE_SHRINK=1``) is set; ``TENANCY_MACHINE_EXAMPLES`` sets the number of runs.
"""

from __future__ import annotations

import datetime as dt
import heapq
import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from nsai_work._errors import QuotaExceededError, UnschedulableError
from nsai_work._ir import (
    TERMINAL_STATUSES,
    Constraints,
    Job,
    JobError,
    Pool,
    Priority,
    Quota,
    Resources,
    RetryPolicy,
    Status,
    Tenant,
)
from nsai_work.core import (
    ALLOWED_TRANSITIONS,
    DEFAULT_FAIR_SHARE_RESOLUTION_S,
    ArmTimer,
    Cancel,
    ConcurrencyLimitChanged,
    Decision,
    Dispatch,
    Event,
    Failed,
    Record,
    Reject,
    Route,
    RunEnded,
    SchedulingCore,
    Stopped,
    StopRun,
    Submit,
    Succeeded,
    TenantChanged,
    TimerFired,
)
from nsai_work.core._queues import Entry, TenantQueue
from tests._core_builders import key_of

from ._machines import check_live_jobs, milli, normalized, phases, step

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
BACKEND = "b"
WEIGHTS = (0.5, 1.0, 2.0, 4.0)
NAMESPACES = ("default", "ns1")  # only ns1 ever has limits of its own
GROUPS = ("g1", "g2")
LIMITED_NS = "ns1"


# ---- the core under test, with the fair-share selection check -----------------------------
class CheckedCore(SchedulingCore):
    """``SchedulingCore`` that checks each pick of ``GroupQueue.drain`` before starting it."""

    probes = 0  # picks checked
    contested = 0  # picks with another active tenant of smaller virtual time in the queue

    def try_start(self, entry: Entry, queue: TenantQueue, out: list[Decision]) -> float | None:
        self.check_pick(entry)
        return super().try_start(entry, queue, out)

    def passes_limits(self, head: Entry) -> bool:
        """Whether tenant, namespace and concurrency-group limits let ``head`` start now
        (recomputed from the counters, without the core's gate and its side effects)."""
        state = head.tenant_state
        scopes = [(state.quota, state.running, state.usage.cpu)]
        namespace = state.namespaces.get(head.namespace)
        if namespace is not None:
            scopes.append((namespace.quota, namespace.running, namespace.usage.cpu))
        for quota, running, cpu in scopes:
            if quota.max_running is not None and running + 1 > quota.max_running:
                return False
            if quota.cpu is not None and cpu + head.needs.cpu > milli(quota.cpu):
                return False
        for key in head.limits:
            limit = self._limits.states[key]
            if limit.max_running is not None and limit.running + 1 > limit.max_running:
                return False
        return True

    def check_pick(self, entry: Entry) -> None:
        """I5: drain offers tenants in order of (virtual time, head seq), so when it starts
        ``entry`` no other active tenant with a strictly smaller virtual time may have a head
        that would start now.

        Keys hold virtual times rounded down to the fair-share resolution (``queue.step``) and
        follow corrected charges lazily: a virtual time that passed its key's step by more than
        one typical job (``slack``) is re-keyed when the key reaches the top (so the tenant
        competes at its virtual time), a smaller correction at the next key; a refund only
        re-keys once it exceeds a step and about two jobs. A tenant therefore competes at its
        key unless its virtual time is more than ``step + slack`` above it, and the tenant
        served is keyed no more than ``step + slack`` below its virtual time."""
        self.probes += 1
        queue = self._queues.queue_of(entry)
        slack = queue.step + queue.capacity.slot_share * queue.expected_run_s
        served = queue.tenants.get(entry.tenant)
        assert served is not None, f"{entry.job.id} started while its tenant has no queue"
        key = served.key
        assert key is not None, f"{entry.job.id} started while its tenant has no key"
        assert entry.tenant not in queue.parked, f"{entry.job.id} started from a parked tenant"
        assert self.passes_limits(entry), f"{entry.job.id} offered while a limit holds it back"
        mine = key[0]
        assert served.vtime <= mine + slack, (
            f"{entry.tenant} served at key {mine}, more than {slack} below its virtual time "
            f"{served.vtime}"
        )
        competing = False
        for other, tenant_queue in list(queue.tenants.items()):
            other_key = tenant_queue.key
            if other_key is None:
                continue
            actual = tenant_queue.vtime
            ahead = other_key[0] if actual <= other_key[0] + slack else actual
            if other == entry.tenant or other in queue.parked or ahead >= mine:
                continue
            competing = True
            head = tenant_queue.peek()
            if head is None or not self.passes_limits(head):
                continue
            fits = [
                pool.name
                for _, pool in head.placement
                if pool.fits_now(head.needs, head.rank, head.job.id)
            ]
            assert not fits, (
                f"fair share broken at level {queue.rank}, pools {queue.group}: "
                f"{entry.job.id} of {entry.tenant} (keyed at {mine:.6g}) starts while "
                f"{head.job.id} of {other} (virtual time {actual:.6g}, keyed at "
                f"{other_key[0]:.6g}: competes at {ahead:.6g}, smaller) passes its limits and "
                f"fits {fits}"
            )
        self.contested += competing


# ---- strategies ------------------------------------------------------------------------------
LEVEL_SETS = (
    (Priority.INTERACTIVE, Priority.BATCH),
    (Priority.BATCH, Priority.OFFLINE),
    (Priority.INTERACTIVE, Priority.BATCH, Priority.OFFLINE),
    (Priority.REALTIME, Priority.BATCH, Priority.OFFLINE),
)

initial_quotas = st.builds(
    Quota,
    max_queued=st.sampled_from([None, None, None, 4, 8]),
    max_running=st.sampled_from([None, None, 1, 2, 3]),
    cpu=st.sampled_from([None, None, 1.0, 2.0, 3.0]),
)
# Changes go below current use often (max_running 0, cpu 0, max_queued 0 included).
changed_quotas = st.builds(
    Quota,
    max_queued=st.sampled_from([None, None, 0, 3, 8]),
    max_running=st.sampled_from([None, 0, 1, 2, 3]),
    cpu=st.sampled_from([None, None, 0.0, 1.0, 2.0, 3.0]),
)
namespace_limits = st.builds(
    Quota,
    max_queued=st.sampled_from([None, None, 1, 4]),
    max_running=st.sampled_from([None, 0, 1, 2]),
    cpu=st.sampled_from([None, 1.0, 2.0]),
)
# Namespace limits are given at start to a third of the tenants and often set or changed later.
initial_namespace_quotas = st.none() | st.none() | namespace_limits
changed_namespace_quotas = st.none() | namespace_limits | namespace_limits
tenant_params = st.tuples(st.sampled_from(WEIGHTS), initial_quotas, initial_namespace_quotas)


def make_tenant(tenant_id: str, weight: float, quota: Quota, ns_quota: Quota | None) -> Tenant:
    namespaces = {} if ns_quota is None else {LIMITED_NS: ns_quota}
    return Tenant(tenant_id, weight=weight, quota=quota, namespaces=namespaces)


@dataclass(frozen=True)
class JobSpec:
    tenant: int
    level: int
    cpu: float | None
    namespace: str
    group: str | None
    timeout_ms: int | None
    attempts: int
    route: int


job_specs = st.builds(
    JobSpec,
    tenant=st.integers(0, 4),
    level=st.integers(0, 2),
    cpu=st.sampled_from([None, None, 0.0, 1.0, 2.0, 2.0]),
    namespace=st.sampled_from(NAMESPACES),
    group=st.sampled_from([None, None, "g1", "g2"]),
    timeout_ms=st.sampled_from([None, None, None, 400, 1500]),
    attempts=st.sampled_from([1, 1, 2]),
    route=st.integers(0, 7),
)
OUTCOMES = ("succeeded", "failed", "non-retryable")


def _diff(before: Any, after: Any, path: str = "") -> list[str]:
    """Where two nested values differ."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in sorted(set(before) | set(after), key=str):
            out += _diff(before.get(key, "<absent>"), after.get(key, "<absent>"), f"{path}.{key}")
        return out
    if (
        isinstance(before, list | tuple)
        and isinstance(after, list | tuple)
        and len(before) == len(after)
    ):
        pairs = enumerate(zip(before, after, strict=True))
        return [d for i, (b, a) in pairs for d in _diff(b, a, f"{path}[{i}]")]
    return [] if before == after else [f"{path}: {before!r} -> {after!r}"]


# ---- the model -------------------------------------------------------------------------------
@dataclass
class Info:
    """What the model knows of one submitted job."""

    job: Job
    tenant: str
    namespace: str
    group: str | None  # concurrency group
    cpu: int | None  # thousandths; None: asks no cpu at all
    level: int
    pools: tuple[str, ...]  # the pools it may use (its queue group)
    status: Status | None = None
    attempt: int = 0
    seq: int = 0  # order of entering QUEUED (the core's FIFO order)
    terminal_records: int = 0

    @property
    def fifo(self) -> tuple[object, ...]:
        return (self.tenant, self.level, self.pools, self.namespace, self.group)


@dataclass
class Run:
    """A dispatched run: it holds until the engine sends its RunEnded."""

    job_id: str
    tenant: str
    namespace: str
    group: str | None
    cpu: int
    pool: str
    stopped: bool = False


Scope = tuple[str, ...]  # ("tenant", t) | ("ns", t) | ("group", g)


def seq_of(info: Info) -> int:
    return info.seq


class TenancyMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.core: CheckedCore | None = None
        self.clean = True

    @initialize(
        count=st.integers(3, 5),
        params=st.lists(tenant_params, min_size=5, max_size=5),
        p1=st.builds(
            lambda slots, cpu: Pool(name="p1", slots=slots, cpu=cpu),
            st.integers(1, 4),
            st.sampled_from([2.0, 3.0, 4.0]),
        ),
        p2=st.none()
        | st.builds(
            lambda slots, cpu: Pool(name="p2", slots=slots, cpu=cpu),
            st.integers(1, 3),
            st.sampled_from([1.0, None]),
        ),
        levels=st.sampled_from(LEVEL_SETS),
        group_limits=st.fixed_dictionaries({g: st.sampled_from([None, 1, 2, 3]) for g in GROUPS}),
        default_limit=st.sampled_from([1, 2]),
        resolution=st.sampled_from([DEFAULT_FAIR_SHARE_RESOLUTION_S, 0.05, 0.5]),
        idle_ttl=st.sampled_from([None, 1.0, 3600.0]),
        seed=st.integers(0, 2**32 - 1),
    )
    def setup(
        self,
        count: int,
        params: list[tuple[float, Quota, Quota | None]],
        p1: Pool,
        p2: Pool | None,
        levels: tuple[Priority, ...],
        group_limits: dict[str, int | None],
        default_limit: int,
        resolution: float,
        idle_ttl: float | None,
        seed: int,
    ) -> None:
        self.resolution = resolution
        self.idle_ttl = idle_ttl
        self.specs: dict[str, Tenant] = {
            f"t{i}": make_tenant(f"t{i}", *params[i]) for i in range(count)
        }
        self.tenant_ids = sorted(self.specs)
        self.initial = [self.specs[t] for t in self.tenant_ids]
        self.pools = {p.name: p for p in (p1, p2) if p is not None}
        self.routes: list[Route] = [((BACKEND, ("p1",)),)]
        if p2 is not None:
            self.routes += [
                ((BACKEND, ("p1", "p2")),),
                ((BACKEND, ("p2",)),),
                ((BACKEND, ("p2", "p1")),),
            ]
        self.levels = levels
        self.configured_limits = {g: n for g, n in group_limits.items() if n is not None}
        self.limits = dict(self.configured_limits)
        self.default_limit = default_limit
        self.seed = seed
        self.core = self.new_core()
        self.now = 1000.0
        self.jobs: dict[str, Info] = {}
        self.admitted: list[str] = []
        self.runs: dict[tuple[str, int], Run] = {}
        self.timers: list[tuple[float, int, tuple[str, str, int]]] = []
        self.timer_seq = 0
        self.queue_seq = 0
        self.over: set[tuple[Scope, str]] = set()  # (scope, "running"|"cpu") lowered below use
        self.history: list[tuple[Event, float, list[object]]] = []
        self.next_id = 0

    #: The class of the cores the machine drives (a subclass may feed them a wall clock).
    core_class: type[CheckedCore] = CheckedCore

    def new_core(self, rand: Callable[[], float] | None = None) -> CheckedCore:
        """A core with the machine's configuration (jitter from the seed unless ``rand``)."""
        return self.core_class(
            pools={BACKEND: list(self.pools.values())},
            rand=rand or random.Random(self.seed).random,
            tenants=self.initial,
            concurrency_limits=self.configured_limits,
            default_concurrency_limit=self.default_limit,
            fair_share_resolution_s=self.resolution,
            tenant_idle_ttl_s=self.idle_ttl,
        )

    # -- the model's view of limits and use ------------------------------------------------

    def limit_of(self, group: str) -> int:
        return self.limits.get(group, self.default_limit)

    def ns_quota(self, tenant: str) -> Quota | None:
        return self.specs[tenant].namespaces.get(LIMITED_NS)

    def scopes_of(self, tenant: str, namespace: str, group: str | None) -> list[Scope]:
        scopes: list[Scope] = [("tenant", tenant)]
        if namespace == LIMITED_NS and self.ns_quota(tenant) is not None:
            scopes.append(("ns", tenant))
        if group is not None:
            scopes.append(("group", group))
        return scopes

    def caps(self, scope: Scope) -> tuple[int | None, int | None]:
        """(max running, cpu cap in thousandths) of a scope; None: unlimited."""
        if scope[0] == "group":
            return (self.limit_of(scope[1]), None)
        quota = self.specs[scope[1]].quota if scope[0] == "tenant" else self.ns_quota(scope[1])
        if quota is None:
            return (None, None)
        return (quota.max_running, None if quota.cpu is None else milli(quota.cpu))

    def use(self, scope: Scope) -> tuple[int, int]:
        """(runs held, cpu held) in a scope."""
        runs = [
            r
            for r in self.runs.values()
            if (scope[0] == "tenant" and r.tenant == scope[1])
            or (scope[0] == "ns" and r.tenant == scope[1] and r.namespace == LIMITED_NS)
            or (scope[0] == "group" and r.group == scope[1])
        ]
        return (len(runs), sum(r.cpu for r in runs))

    def all_scopes(self) -> list[Scope]:
        scopes: list[Scope] = [("group", g) for g in GROUPS]
        for t in self.tenant_ids:
            scopes.append(("tenant", t))
            if self.ns_quota(t) is not None:
                scopes.append(("ns", t))
        return scopes

    def breaches(self, scope: Scope) -> list[str]:
        """The dimensions in which a scope's use exceeds its limits now."""
        (max_running, cpu_cap), (running, cpu) = self.caps(scope), self.use(scope)
        out = []
        if max_running is not None and running > max_running:
            out.append("running")
        if cpu_cap is not None and cpu > cpu_cap:
            out.append("cpu")
        return out

    def passes_limits(self, info: Info) -> bool:
        for scope in self.scopes_of(info.tenant, info.namespace, info.group):
            (max_running, cpu_cap), (running, cpu) = self.caps(scope), self.use(scope)
            if max_running is not None and running + 1 > max_running:
                return False
            if cpu_cap is not None and cpu + (info.cpu or 0) > cpu_cap:
                return False
        return True

    def pool_use(self) -> dict[str, tuple[int, int]]:
        used = dict.fromkeys(self.pools, (0, 0))
        for run in self.runs.values():
            slots, cpu = used[run.pool]
            used[run.pool] = (slots + 1, cpu + run.cpu)
        return used

    def fits_now(
        self, info: Info, pool: str, used: tuple[int, int], ignore: frozenset[str] = frozenset()
    ) -> bool:
        """Whether one more run of ``info`` fits ``pool`` beyond what it holds and what is held
        there for other jobs of its level or higher (backfill holds), except for the jobs in
        ``ignore``."""
        assert self.core is not None
        slots, cpu = used
        for hold in self.core.pool_states()[pool].holds:
            if (
                hold.rank <= info.level
                and hold.job.job.id != info.job.id
                and hold.job.job.id not in ignore
            ):
                slots, cpu = slots + 1, cpu + hold.needs.cpu
        spec = self.pools[pool]
        if slots + 1 > spec.slots:
            return False
        if info.cpu is None or spec.cpu is None:
            return True
        return cpu + info.cpu <= milli(spec.cpu)

    def waiting(self, tenant: str, namespace: str | None = None) -> int:
        return sum(
            1
            for i in self.jobs.values()
            if i.tenant == tenant
            and i.status in (Status.PENDING, Status.QUEUED)
            and (namespace is None or i.namespace == namespace)
        )

    # -- feeding the core ------------------------------------------------------------------

    def feed(self, event: Event) -> list[Decision]:
        """Hand one event to the core at the current time, carry out and check its
        decisions, then check the invariants at rest."""
        assert self.core is not None
        decisions = self.core.handle(event, self.now)
        self.history.append((event, self.now, normalized(decisions)))
        rejects = [d for d in decisions if isinstance(d, Reject)]
        if rejects:
            assert decisions == rejects[:1], f"a Reject comes alone: {decisions}"
        for d in decisions:
            if isinstance(d, Record):
                self.on_record(d)
            elif isinstance(d, Dispatch):
                self.on_dispatch(d)
            elif isinstance(d, ArmTimer):
                assert d.at >= self.now, f"timer armed in the past: {d} at {self.now}"
                self.timer_seq += 1
                heapq.heappush(self.timers, (d.at, self.timer_seq, d.key))
            elif isinstance(d, StopRun):
                run = self.runs.get((d.job_id, d.attempt))
                assert run is not None, f"StopRun for a run that is not active: {d}"
                run.stopped = True
        self.check_at_rest()
        return decisions

    def on_record(self, d: Record) -> None:
        job = d.job
        info = self.jobs[job.id]
        if d.previous is None:
            assert info.status is None, f"second admission Record for {job.id}"
            self.admitted.append(job.id)
        # I8: an edge of the lifecycle table, chained to the last status seen.
        assert d.previous == info.status, (
            f"Record of {job.id} says previous={d.previous}, the model last saw {info.status}"
        )
        assert job.status in ALLOWED_TRANSITIONS[d.previous], (
            f"illegal edge {d.previous} -> {job.status} for {job.id}"
        )
        info.status = job.status
        info.job = job
        if job.status is Status.QUEUED:
            self.queue_seq += 1
            info.seq = self.queue_seq
        if job.status in TERMINAL_STATUSES:
            info.terminal_records += 1
            assert info.terminal_records == 1, f"{job.id} got a second terminal Record"

    def on_dispatch(self, d: Dispatch) -> None:
        job = d.job
        info = self.jobs[job.id]
        assert info.status is Status.QUEUED, f"Dispatch of {job.id} while {info.status}"
        assert job.status is Status.RUNNING
        assert job.attempt == info.attempt + 1
        assert d.pool in info.pools, f"{job.id} dispatched to {d.pool}, its pools {info.pools}"
        # I4: first of its FIFO (tenant, level, pools, namespace, concurrency group).
        older = [
            other.job.id
            for other in self.jobs.values()
            if other.status is Status.QUEUED and other.fifo == info.fifo and other.seq < info.seq
        ]
        assert not older, f"FIFO broken: {job.id} started before {older} (same FIFO)"
        info.status = Status.RUNNING
        info.attempt = job.attempt
        info.job = job
        cpu = info.cpu or 0
        self.runs[(job.id, job.attempt)] = Run(
            job.id, info.tenant, info.namespace, info.group, cpu, d.pool
        )
        # I2: the pool stays within capacity.
        spec = self.pools[d.pool]
        slots, used_cpu = self.pool_use()[d.pool]
        assert slots <= spec.slots, f"over-commit of {d.pool}: {slots} runs, {spec}"
        if info.cpu is not None and spec.cpu is not None:
            assert used_cpu <= milli(spec.cpu), f"over-commit of {d.pool}: cpu {used_cpu}, {spec}"
        # I6: the dispatch leaves every scope it counts against within its limits (a scope
        # lowered below use takes nothing new until it is back under).
        for scope in self.scopes_of(info.tenant, info.namespace, info.group):
            broken = self.breaches(scope)
            assert not broken, (
                f"I6: dispatch of {job.id} took {scope} over its limit in {broken}: holds "
                f"{self.use(scope)} (runs, milli-cpu), limits {self.caps(scope)} "
                f"(max_running, milli-cpu)"
            )

    def check_at_rest(self) -> None:
        assert self.core is not None
        core = self.core
        # I1 and statuses: live in the core, or terminal exactly once.
        check_live_jobs(core, self.admitted, self.jobs, len(self.runs))
        waiting = sum(self.waiting(t) for t in self.tenant_ids)
        assert core.waiting == waiting, f"{core.waiting} waiting in the core, {waiting} expected"
        # Public queries agree with the model.
        stats = core.stats()
        # Totals count every admitted job once, also after idle tenants were dropped.
        totals = stats.totals
        assert totals.submitted == len(self.admitted), (totals, len(self.admitted))
        by_status = Counter(self.jobs[j].status for j in self.admitted)
        assert (totals.pending, totals.queued, totals.running) == (
            by_status[Status.PENDING],
            by_status[Status.QUEUED],
            by_status[Status.RUNNING],
        ), (totals, by_status)
        assert totals.finished == sum(by_status[s] for s in TERMINAL_STATUSES), totals
        for t in self.tenant_ids:
            runs, cpu = self.use(("tenant", t))
            mine = stats.by_tenant.get(t)
            if mine is None:  # never seen, or dropped after being idle long enough
                assert runs == 0, f"{t} holds {runs} runs but has no stats"
                assert self.waiting(t) == 0, f"{t} has waiting jobs but no stats"
                assert core.tenant(t) == self.specs[t], f"{t}: its configured spec was lost"
                continue
            assert (mine.usage.running, milli(mine.usage.cpu)) == (runs, cpu), (
                f"stats().by_tenant[{t!r}].usage is {mine.usage}; the model holds {runs} runs, "
                f"{cpu} milli-cpu"
            )
            spec = self.specs[t]
            assert core.tenant(t) == spec, f"core.tenant({t!r}) is {core.tenant(t)}, not {spec}"
            if mine.submitted:  # a tenant only rejected so far has no state to report
                reported = (mine.weight, mine.quota)
                assert reported == (spec.weight, spec.quota), f"{t}: stats say {reported}"
        for g in GROUPS:
            expected = (self.use(("group", g))[0], self.limit_of(g))
            assert core.concurrency_usage(g) == expected, (
                f"concurrency_usage({g!r}) is {core.concurrency_usage(g)}; the model: {expected}"
            )
        # I6 at rest: within limits, or lowered below use (and then it has not grown).
        for scope in self.all_scopes():
            broken = self.breaches(scope)
            for dimension in ("running", "cpu"):
                if dimension not in broken:
                    self.over.discard((scope, dimension))
                else:
                    assert (scope, dimension) in self.over, (
                        f"I6: {scope} over its {dimension} limit without a change below use: "
                        f"holds {self.use(scope)}, limits {self.caps(scope)}"
                    )
        # I2: pools hold what the active runs hold, within capacity.
        used = self.pool_use()
        for name, state in core.pool_states().items():
            assert (state.used_slots, state.used_cpu) == used[name], (
                f"{name} holds {state.usage()}; the active runs hold {used[name]} "
                f"(slots, milli-cpu)"
            )
            assert state.within_capacity(), f"{name} over capacity: {state.usage()}"
        # Liveness under limits: each tenant's oldest queued job per (level, pools) is the head
        # drain offers unless a limit parks it; if every limit passes and it fits, it must have
        # started (or a parked tenant or FIFO was not let go when what blocked it went).
        oldest: dict[tuple[str, int, tuple[str, ...]], Info] = {}
        younger: dict[tuple[str, int, tuple[str, ...]], set[str]] = {}
        for info in self.jobs.values():
            if info.status is Status.QUEUED:
                key = (info.tenant, info.level, info.pools)
                younger.setdefault(key, set()).add(info.job.id)
                if key not in oldest or info.seq < oldest[key].seq:
                    oldest[key] = info
        for key, info in oldest.items():
            if not self.passes_limits(info):
                continue
            # With nothing running, every pool is empty and every admitted job fits one of its
            # pools: capacity held for a job only waits for runs to end, so a hold cannot
            # justify it either.
            assert self.runs, (
                f"stuck: nothing runs, yet {info.job.id} of {info.tenant} (its oldest queued "
                f"job at level {info.level} on {info.pools}) passes every limit and stays queued "
                f"(waiting_reason {core.waiting_reason(info.job.tenant_id, info.job.id)!r}; holds "
                f"{ {p: [h.job for h in s.holds] for p, s in core.pool_states().items()} })"
            )
            fitting = [p for p in info.pools if self.fits_now(info, p, used[p])]
            assert not fitting, (
                f"stuck: {info.job.id} of {info.tenant} is its oldest queued job at level "
                f"{info.level} on {info.pools}, passes every limit and fits {fitting}, but "
                f"stays queued (waiting_reason "
                f"{core.waiting_reason(info.job.tenant_id, info.job.id)!r})"
            )
            # Capacity is held for the head that is first in line; a younger job of the same
            # tenant and queue is not, so what is held for it must not keep this one out.
            mine = frozenset(younger[key])
            fitting = [p for p in info.pools if self.fits_now(info, p, used[p], mine)]
            assert not fitting, (
                f"stuck: {info.job.id} of {info.tenant} is its oldest queued job at level "
                f"{info.level} on {info.pools} and passes every limit; it would fit {fitting} "
                f"but for capacity held there for younger jobs of its own tenant "
                f"({ {p: [h.job for h in core.pool_states()[p].holds] for p in fitting} }; "
                f"waiting_reason {core.waiting_reason(info.job.tenant_id, info.job.id)!r})"
            )

    def footprint(self) -> object:
        """What a rejected submit must leave as it was (rejection counters aside)."""
        assert self.core is not None

        def strip(value: Any) -> Any:
            if isinstance(value, dict):  # counts left empty by the strip go too
                kept = {
                    k: strip(v) for k, v in value.items() if k not in ("rejected", "rejections")
                }
                return {k: v for k, v in kept.items() if v != {}}
            return value

        stats = strip(msgspec.to_builtins(self.core.stats()))
        tenants = stats.get("by_tenant", {})
        stats["by_tenant"] = {t: s for t, s in tenants.items() if s.get("submitted")}
        queued = [[j.id for j in level] for level in self.core.queued_in_order()]
        return (stats, queued, self.core.waiting, self.core.live_jobs, self.core.active_runs)

    # -- rules -----------------------------------------------------------------------------

    def expected_rejection(
        self, jobs: list[Job], infos: list[Info]
    ) -> tuple[type[Exception], set[int], str] | None:
        """DESIGN.md's admission, all or nothing: (error type, indexes it may name, a
        fragment of its message) or None when the batch is admitted."""
        for index, info in enumerate(infos):
            if not info.pools:
                return (UnschedulableError, {index}, "no pool can ever hold this job")
        for index, info in enumerate(infos):
            quotas = [self.specs[info.tenant].quota]
            if info.namespace == LIMITED_NS and self.ns_quota(info.tenant) is not None:
                quotas.append(self.ns_quota(info.tenant))  # type: ignore[arg-type]
            for quota in quotas:
                if quota.max_running == 0:
                    return (QuotaExceededError, {index}, "max_running=0")
                if quota.cpu is not None and (info.cpu or 0) > milli(quota.cpu):
                    return (QuotaExceededError, {index}, f"cpu={quota.cpu}")
        adding: Counter[tuple[str, str | None]] = Counter()
        for info in infos:
            adding[(info.tenant, None)] += 1
            if info.namespace == LIMITED_NS:
                adding[(info.tenant, LIMITED_NS)] += 1
        offending: set[int] = set()
        for (tenant, namespace), count in adding.items():
            quota = self.specs[tenant].quota if namespace is None else self.ns_quota(tenant)
            if quota is None or quota.max_queued is None:
                continue
            if self.waiting(tenant, namespace) + count > quota.max_queued:
                offending.add(
                    next(
                        i
                        for i, info in enumerate(infos)
                        if info.tenant == tenant and namespace in (None, info.namespace)
                    )
                )
        if offending:
            return (QuotaExceededError, offending, "max_queued=")
        return None

    @rule(batch=st.lists(job_specs, min_size=1, max_size=4))
    @step
    def submit(self, batch: list[JobSpec]) -> None:
        self.submit_batch(batch)

    @rule(spec=job_specs, count=st.integers(2, 6))
    @step
    def burst(self, spec: JobSpec, count: int) -> None:
        """One tenant submits several alike jobs at once (backlogs build up)."""
        self.submit_batch([spec] * count)

    def submit_batch(self, batch: list[JobSpec]) -> None:
        jobs: list[Job] = []
        routes: list[Route] = []
        infos: list[Info] = []
        for spec in batch:
            self.next_id += 1
            tenant = self.tenant_ids[spec.tenant % len(self.tenant_ids)]
            priority = self.levels[spec.level % len(self.levels)]
            job = Job(
                kind="step",
                tenant_id=tenant,
                namespace=spec.namespace,
                priority=priority,
                resources=Resources(cpu=spec.cpu, timeout_ms=spec.timeout_ms),
                constraints=Constraints(
                    concurrency_group=spec.group,
                    retry_policy=RetryPolicy(
                        max_attempts=spec.attempts, base_delay_ms=300, jitter=False
                    ),
                ),
                id=f"j{self.next_id}",
                created_at=T0,
            )
            route = self.routes[spec.route % len(self.routes)]
            cpu = None if spec.cpu is None else milli(spec.cpu)
            pools = tuple(
                name
                for name in route[0][1]
                if self.pools[name].slots >= 1
                and (
                    cpu is None
                    or self.pools[name].cpu is None
                    or cpu <= milli(self.pools[name].cpu)
                )
            )
            info = Info(job, tenant, spec.namespace, spec.group, cpu, priority.rank, pools)
            jobs.append(job)
            routes.append(route)
            infos.append(info)
        expected = self.expected_rejection(jobs, infos)
        before = self.footprint()
        waiting_before = {
            (t, ns): self.waiting(t, ns) for t in self.tenant_ids for ns in (None, LIMITED_NS)
        }
        for info in infos:
            self.jobs[info.job.id] = info
        decisions = self.feed(Submit(tuple(jobs), tuple(routes)))
        admitted = [d.job.id for d in decisions if isinstance(d, Record) and d.previous is None]
        rejects = [d for d in decisions if isinstance(d, Reject)]
        if expected is None:
            assert not rejects, f"batch {[(j.id, j.tenant_id) for j in jobs]} rejected: {rejects}"
            assert admitted == [j.id for j in jobs], f"admitted {admitted} of {len(jobs)} jobs"
            # I6 max_queued, the admission-time rule: waiting jobs then plus the batch.
            for (tenant, namespace), waited in waiting_before.items():
                quota = self.specs[tenant].quota if namespace is None else self.ns_quota(tenant)
                if quota is not None and quota.max_queued is not None:
                    adding = sum(
                        1 for i in infos if i.tenant == tenant and namespace in (None, i.namespace)
                    )
                    assert not adding or waited + adding <= quota.max_queued, (
                        f"admitted {adding} jobs of {tenant}/{namespace or '*'} with {waited} "
                        f"waiting and max_queued={quota.max_queued}"
                    )
            return
        for info in infos:
            del self.jobs[info.job.id]
        kind, indexes, fragment = expected
        assert not admitted, f"admitted {admitted} from a batch the model rejects ({kind})"
        assert len(rejects) == 1, f"expected a {kind.__name__}, got {decisions}"
        error, index = rejects[0].error, rejects[0].index
        assert type(error) is kind, f"expected {kind.__name__}, got {error!r}"
        assert index in indexes, f"{error!r} names job {index}, expected one of {indexes}"
        assert fragment in str(error), f"{fragment!r} not in {error}"
        after = self.footprint()
        assert after == before, f"a rejection changed something: {_diff(before, after)}"

    @precondition(lambda self: bool(self.runs))
    @rule(
        dt_ms=st.sampled_from([0, 10, 100, 250, 700, 2000]),
        pick=st.integers(0, 10_000),
        kind=st.sampled_from(OUTCOMES),
    )
    @step
    def end_run(self, dt_ms: int, pick: int, kind: str) -> None:
        self.advance_to(self.now + dt_ms / 1000.0)
        keys = sorted(self.runs)
        self.end(keys[pick % len(keys)], kind)

    @precondition(lambda self: len(self.runs) > 1)
    @rule(dt_ms=st.sampled_from([0, 100, 700]), count=st.integers(2, 4))
    @step
    def end_oldest_runs(self, dt_ms: int, count: int) -> None:
        """Several runs end (the oldest first), as a busy pool turns over."""
        self.advance_to(self.now + dt_ms / 1000.0)
        for key in list(self.runs)[:count]:
            if key in self.runs:
                self.end(key, "succeeded")

    def end(self, key: tuple[str, int], kind: str) -> None:
        run = self.runs.pop(key)  # the reservation goes at the start of handle()
        job_id, attempt = key
        outcome: Succeeded | Failed | Stopped
        if run.stopped:
            outcome = Stopped()
        elif kind == "succeeded":
            outcome = Succeeded(None)
        else:
            error = JobError(type="RuntimeError", message="boom")
            outcome = Failed(error, retryable=kind == "failed")
        self.feed(RunEnded(self.jobs[job_id].job.tenant_id, job_id, attempt, outcome))

    @rule(dt_ms=st.sampled_from([0, 50, 300, 1000, 2500]))
    @step
    def advance(self, dt_ms: int) -> None:
        self.advance_to(self.now + dt_ms / 1000.0)

    def advance_to(self, target: float) -> None:
        while self.timers and self.timers[0][0] <= target:
            at, _, key = heapq.heappop(self.timers)
            self.now = max(self.now, at)
            self.feed(TimerFired(key))
        self.now = max(self.now, target)

    @rule(pick=st.integers(0, 10_000), which=st.sampled_from(["head", "head", "live", "any"]))
    @step
    def cancel(self, pick: int, which: str) -> None:
        """Cancel a queued head (what parks a tenant or holds capacity), a live job, or any
        job (terminal and unknown ones change nothing)."""
        queued = sorted((i for i in self.jobs.values() if i.status is Status.QUEUED), key=seq_of)
        heads = list({i.fifo[:3]: i.job.id for i in reversed(queued)}.values())
        live = [j for j in self.admitted if self.jobs[j].status not in TERMINAL_STATUSES]
        ids = {"head": heads, "live": live}.get(which) or [*self.admitted, "no-such-job"]
        job_id = ids[pick % len(ids)]
        info = self.jobs.get(job_id)
        before = None if info is None else info.status
        tenant = info.job.tenant_id if info is not None else "no-such-tenant"
        decisions = self.feed(Cancel(tenant, job_id))
        if before is None or before in TERMINAL_STATUSES:
            assert decisions == [], f"cancel of a terminal or unknown job decided {decisions}"
            return
        mine = [d for d in decisions if isinstance(d, Record) and d.job.id == job_id]
        assert [(d.previous, d.job.status) for d in mine] == [(before, Status.CANCELED)]
        stops = [d.job_id for d in decisions if isinstance(d, StopRun)]
        assert stops == ([job_id] if before is Status.RUNNING else [])

    @rule(
        pick=st.integers(0, 4),
        weight=st.sampled_from(WEIGHTS),
        quota=changed_quotas,
        ns_quota=changed_namespace_quotas,
    )
    @step
    def change_tenant(self, pick: int, weight: float, quota: Quota, ns_quota: Quota | None) -> None:
        tenant = self.tenant_ids[pick % len(self.tenant_ids)]
        self.change(make_tenant(tenant, weight, quota, ns_quota))

    def change(self, spec: Tenant) -> None:
        self.specs[spec.id] = spec
        self.note_lowered()
        decisions = self.feed(TenantChanged(spec))
        changed = [d for d in decisions if isinstance(d, StopRun | Record | Reject)]
        assert not changed, f"a tenant change stops or moves nothing: {changed}"

    @rule(group=st.sampled_from(GROUPS), limit=st.integers(1, 3))
    @step
    def change_limit(self, group: str, limit: int) -> None:
        self.limits[group] = limit
        self.note_lowered()
        self.feed(ConcurrencyLimitChanged(group, limit))

    def note_lowered(self) -> None:
        """A limit changed: the scopes now over it may stay over (nothing running is stopped),
        but must not grow."""
        for scope in self.all_scopes():
            for dimension in self.breaches(scope):
                self.over.add((scope, dimension))

    # -- the end -------------------------------------------------------------------------------

    def drain(self) -> None:
        """Lift every tenant limit, then end runs and fire timers until quiet."""
        for t in self.tenant_ids:
            self.change(Tenant(t, weight=self.specs[t].weight))
        for _ in range(10_000):
            if self.runs:
                self.now += 0.1
                for key in sorted(self.runs):
                    self.end(key, "succeeded")
            elif self.timers:
                self.advance_to(self.timers[0][0])
            else:
                break
        assert self.core is not None
        stuck = {
            j: (self.jobs[j].status, self.core.waiting_reason(self.jobs[j].job.tenant_id, j))
            for j in self.admitted
            if self.core.get(self.jobs[j].job.tenant_id, j) is not None
        }
        assert not stuck, f"after draining these jobs are still live: {stuck}"
        assert (self.core.live_jobs, self.core.active_runs, self.core.waiting) == (0, 0, 0)
        once = [j for j in self.admitted if self.jobs[j].terminal_records != 1]
        assert not once, f"not terminal exactly once: {once}"

    def replay(self) -> None:
        """Determinism: the same events, clock readings and seed give the same decisions."""
        fresh = self.new_core()
        for index, (event, now, expected) in enumerate(self.history):
            again = normalized(fresh.handle(event, now))
            assert again == expected, f"replay diverged at step {index}: {event}"

    def teardown(self) -> None:
        if self.core is None or not self.clean:
            return  # a step failed: that failure is the report, not the drain
        self.drain()
        self.replay()


def _settings(max_examples: int) -> Any:
    # Long runs find more than many short ones for the same time: the bugs below each need a
    # limit changed, a backlog, and then the right cancel or run end (80 steps x 200 runs found
    # each of them more often than 40 x 400, in about 10 s).
    return settings(
        max_examples=int(os.environ.get("TENANCY_MACHINE_EXAMPLES", str(max_examples))),
        stateful_step_count=80,
        report_multiple_bugs=False,
        phases=phases("TENANCY_MACHINE_SHRINK", "CORE_MACHINE_SHRINK"),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


TenancyMachine.TestCase.settings = _settings(200)
TestTenancyMachine = TenancyMachine.TestCase


# ---- I5 in proportion: a saturated pool over 2000 dispatches ----------------------------------
ONE_SHOT = RetryPolicy(max_attempts=1, jitter=False)
HORIZON = 2000  # dispatches


def saturate(
    weights: list[float],
    slots: int,
    cpu: float | None,
    run_times: list[float],
    seed: int,
    late: bool,
    resolution: float = DEFAULT_FAIR_SHARE_RESOLUTION_S,
) -> tuple[Counter[str], Counter[str]]:
    """Run a core on one pool (``slots`` slots, 4 cpu) where every tenant stays backlogged
    with alike jobs; tenant i's jobs run ``run_times[i]`` seconds. With ``late``, the last
    tenant submits one job at first and its backlog only halfway, and only dispatches from then
    on are counted.
    Returns (jobs dispatched, resource-seconds dispatched) per tenant over the window."""
    tenants = [f"t{i}" for i in range(len(weights))]
    core = CheckedCore(
        pools={BACKEND: [Pool(name="p", slots=slots, cpu=4.0)]},
        rand=random.Random(0).random,
        tenants=[Tenant(t, weight=w) for t, w in zip(tenants, weights, strict=True)],
        fair_share_resolution_s=resolution,
    )
    duration = dict(zip(tenants, run_times, strict=True))
    route: Route = ((BACKEND, ("p",)),)

    def backlog(of: list[str], size: int = 2 * HORIZON + slots, first: int = 0) -> Submit:
        jobs = [
            Job(
                kind="k",
                tenant_id=t,
                resources=Resources(cpu=cpu),
                constraints=Constraints(retry_policy=ONE_SHOT),
                id=f"{t}-{n}",
                created_at=T0,
            )
            for t in of
            for n in range(first, first + size)
        ]
        random.Random(seed).shuffle(jobs)
        return Submit(tuple(jobs), (route,) * len(jobs))

    ends: list[tuple[float, int, Job]] = []
    counts: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    total = 0
    now = 0.0

    def take(decisions: list[Decision]) -> None:
        nonlocal total
        for d in decisions:
            if isinstance(d, Dispatch):
                total += 1
                tenant = d.job.tenant_id
                heapq.heappush(ends, (now + duration[tenant], total, d.job))
                counts[tenant] += 1
                seconds[tenant] += duration[tenant]

    take(core.handle(backlog(tenants[:-1] if late else tenants), now))
    if late:  # the last tenant runs one job, is idle while the others are served, comes back
        take(core.handle(backlog(tenants[-1:], size=1), now))
        while total < HORIZON // 2:
            now, _, done = heapq.heappop(ends)
            take(core.handle(RunEnded(done.tenant_id, done.id, done.attempt, Succeeded(None)), now))
        counts.clear()
        seconds.clear()
        take(core.handle(backlog(tenants[-1:], first=1), now))
    while sum(counts.values()) < HORIZON:
        now, _, done = heapq.heappop(ends)
        take(core.handle(RunEnded(done.tenant_id, done.id, done.attempt, Succeeded(None)), now))
    return counts, seconds


simulation_settings = settings(
    max_examples=int(os.environ.get("TENANCY_SIMULATION_EXAMPLES", "25")),
    phases=phases("TENANCY_MACHINE_SHRINK", "CORE_MACHINE_SHRINK"),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@simulation_settings
@given(
    weights=st.lists(st.sampled_from(WEIGHTS), min_size=2, max_size=5),
    slots=st.integers(1, 8),
    cpu=st.sampled_from([None, 1.0, 2.0]),
    run_s=st.sampled_from([1.0, 0.3, 2.5]),
    late=st.booleans(),
    resolution=st.sampled_from([DEFAULT_FAIR_SHARE_RESOLUTION_S, 0.1, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_backlogged_tenants_share_in_proportion_to_weight(
    weights: list[float],
    slots: int,
    cpu: float | None,
    run_s: float,
    late: bool,
    resolution: float,
    seed: int,
) -> None:
    """I5: tenants that stay backlogged on one saturated pool, with equal jobs and equal run
    times, are dispatched resource-time (here: jobs, all alike) in proportion to their weights;
    a tenant that comes back after being idle gets its share from then on, no more (it banked
    no credit while idle).

    Tolerance, from the lag bound of fair queuing: with exact charges c/w_i per dispatch (c the
    job's dominant share times its run time), the tenant served has the smallest virtual time
    m, so every tenant i stays within m <= x_i <= m + c/w_i. In jobs, n_i = w_i * x_i / c lies
    in [w_i*m/c, w_i*m/c + 1]; summing over the k tenants pins m, so n_i - N*w_i/W lies in
    [-k*w_i/W, 1]. Charges are estimated at dispatch (a moving average of run times) and
    corrected when runs end, and a refund reaches the heap key at the tenant's next dispatch or
    once it exceeds about two jobs; with equal run times the refunds are small, so in-flight
    runs and pending refunds add one more job either way; a window that
    starts mid-run (the tenant back from idle) adds the bound at its start once more.
    Keys are virtual times rounded down to the resolution r, so the tenant served has the
    smallest rounded value and every x_i lies in [m, m + r + c/w_i]: each bound widens by
    w_i*r/c jobs.
    """
    counts, _ = saturate(weights, slots, cpu, [run_s] * len(weights), seed, late, resolution)
    total, weight_sum, k = sum(counts.values()), sum(weights), len(weights)
    charge = max(1 / slots, (cpu or 0.0) / 4.0) * run_s  # c: dominant share x run time
    for i, weight in enumerate(weights):
        tenant = f"t{i}"
        lag = counts[tenant] - total * weight / weight_sum
        step = weight * resolution / charge
        spread = k * weight / weight_sum + 1.0 + step
        low, high = (-2 * spread, 4.0 + 2 * step) if late else (-spread, 2.0 + step)
        assert low <= lag <= high, (
            f"{tenant} (weight {weight} of {weights}{', late' if late and i == k - 1 else ''}) "
            f"got {counts[tenant]} of {total} dispatches, {lag:+.2f} from its share; allowed "
            f"[{low:.2f}, {high:.2f}]"
        )


@simulation_settings
@given(
    weights=st.lists(st.sampled_from(WEIGHTS), min_size=2, max_size=4),
    slots=st.integers(1, 8),
    run_times=st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=4, max_size=4),
    resolution=st.sampled_from([DEFAULT_FAIR_SHARE_RESOLUTION_S, 0.1, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_resource_time_follows_weights_when_run_times_differ(
    weights: list[float], slots: int, run_times: list[float], resolution: float, seed: int
) -> None:
    """I5 counts resource-time, not jobs: tenants whose jobs run 0.5, 1 or 2 s get slot-seconds
    in proportion to their weights (a tenant with 4x longer jobs gets 1/4 of the jobs). Charges
    use a shared estimate of run time and are corrected when a run ends, so only runs in flight
    are charged wrong: the bound of the test above, in jobs' worth of the longest job, plus the
    runs in flight (at most ``slots``), plus the resolution step (``w_i * r`` of the whole
    pool's time: ``w_i * r * slots`` slot-seconds)."""
    k = len(weights)
    _, seconds = saturate(weights, slots, None, run_times[:k], seed, False, resolution)
    total, weight_sum, longest = sum(seconds.values()), sum(weights), max(run_times[:k])
    for i, weight in enumerate(weights):
        tenant = f"t{i}"
        lag = (seconds[tenant] - total * weight / weight_sum) / longest
        bound = k * weight / weight_sum + 2.0 + slots + weight * resolution * slots / longest
        assert -bound <= lag <= bound, (
            f"{tenant} (weight {weight} of {weights}, runs {run_times[i]} s of "
            f"{run_times[:k]}) got {seconds[tenant]:.1f} of {total:.1f} slot-seconds, "
            f"{lag:+.2f} longest jobs from its share; allowed +-{bound:.2f}"
        )


# ---- core bugs the machine found, each reduced to a few events -------------------------------
# Each docstring says what the core did wrong when it was found (fixed in f5d065a, except the
# last one, found in that fix).
ROUTE_P: Route = ((BACKEND, ("p",)),)


def _job(job_id: str, tenant: str = "t", **fields: Any) -> Job:
    cpu, group = fields.pop("cpu", None), fields.pop("group", None)
    return Job(
        kind="k",
        tenant_id=tenant,
        id=job_id,
        created_at=T0,
        resources=Resources(cpu=cpu),
        constraints=Constraints(concurrency_group=group, retry_policy=ONE_SHOT),
        **fields,
    )


def _core(*pools: Pool, tenants: tuple[Tenant, ...] = ()) -> SchedulingCore:
    return SchedulingCore(
        pools={BACKEND: list(pools)}, rand=random.Random(0).random, tenants=tenants
    )


def _started(decisions: list[Decision]) -> list[str]:
    return [d.job.id for d in decisions if isinstance(d, Dispatch)]


def _submit(core: SchedulingCore, now: float, *jobs: Job, route: Route = ROUTE_P) -> list[str]:
    return _started(core.handle(Submit(jobs, (route,) * len(jobs)), now))


def _end(core: SchedulingCore, now: float, job_id: str) -> list[str]:
    return _started(core.handle(RunEnded(*key_of(core, job_id), 1, Succeeded(None)), now))


def test_namespace_limits_set_at_runtime_count_the_runs_already_there() -> None:
    """I6. Found: namespace limits given by a TenantChanged started counting from zero
    (``TenantState.update`` creates a fresh ``NamespaceState``), so the runs already in the
    namespace are not counted: a limit of 1 with 2 running admits a third, and when the old
    runs end the counter goes negative."""
    core = _core(Pool(name="p", slots=4), tenants=(Tenant("t"),))
    assert _submit(core, 1.0, _job("a", namespace="ci"), _job("b", namespace="ci")) == ["a", "b"]
    core.handle(TenantChanged(Tenant("t", namespaces={"ci": Quota(max_running=1)})), 2.0)
    assert _submit(core, 3.0, _job("c", namespace="ci")) == [], (
        "namespace 'ci' runs 2 jobs and its max_running is 1: c must wait"
    )


def test_namespace_limits_set_at_runtime_count_the_jobs_already_waiting() -> None:
    """I6 ``max_queued``. Found: same cause, at admission: 2 jobs of the namespace waited and
    its new max_queued was 2, yet one more was admitted."""
    core = _core(Pool(name="p", slots=1), tenants=(Tenant("t"),))
    _submit(core, 1.0, *(_job(i, namespace="ci") for i in "abc"))  # a runs, b and c wait
    core.handle(TenantChanged(Tenant("t", namespaces={"ci": Quota(max_queued=2)})), 2.0)
    decisions = core.handle(Submit((_job("d", namespace="ci"),), (ROUTE_P,)), 3.0)
    assert [type(d.error) for d in decisions if isinstance(d, Reject)] == [QuotaExceededError], (
        f"2 jobs of 'ci' wait and its max_queued is 2: d must be rejected, got {decisions}"
    )


def test_a_tenant_parked_for_its_heads_needs_is_let_go_when_that_head_is_canceled() -> None:
    """Liveness. Found: a tenant-level park is decided on the head's needs (``quota_gate`` with
    ``head.needs``) but is only lifted when one of the tenant's runs ends or its quota changes.
    Here the tenant's 2-cpu head is over its (lowered) cpu quota; once that head is canceled,
    its next job asks no cpu and fits, but the tenant stays parked: with no run of its own to
    end, forever."""
    core = _core(Pool(name="p", slots=4, cpu=2.0))
    assert _submit(core, 1.0, _job("other", tenant="o", cpu=2.0)) == ["other"]
    assert _submit(core, 2.0, _job("big", cpu=2.0), _job("small")) == []  # big waits for cpu
    core.handle(TenantChanged(Tenant("t", quota=Quota(cpu=1.0))), 3.0)  # big can never start
    canceled = core.handle(Cancel(*key_of(core, "big"), "requested"), 4.0)
    started = _started(canceled) + _end(core, 5.0, "other")
    assert started == ["small"], (
        f"small asks no cpu, t uses none, its quota is cpu=1.0 and the pool is free, yet it "
        f"stays queued: {core.waiting_reason(*key_of(core, 'small'))!r}"
    )


def test_a_tenant_parked_for_its_heads_needs_is_let_go_when_an_older_fifo_reopens() -> None:
    """Liveness. Found, same cause: the tenant was parked on the needs of its head at the time (the
    older job's FIFO was parked on its concurrency group); when the group frees up, the older
    job is the head and passes every limit, but the tenant stays parked (``activate`` returns
    early for a parked tenant), with no run of its own to end: forever."""
    core = _core(Pool(name="p", slots=4, cpu=2.0))
    assert _submit(core, 1.0, _job("other", tenant="o", cpu=2.0, group="g")) == ["other"]
    assert _submit(core, 2.0, _job("light", group="g")) == []  # its FIFO parks on g
    assert _submit(core, 3.0, _job("heavy", cpu=2.0)) == []  # waits for cpu
    core.handle(TenantChanged(Tenant("t", quota=Quota(cpu=1.0))), 4.0)  # heavy never starts
    assert _end(core, 5.0, "other") == ["light"], (
        f"light asks no cpu, its group g is free and t uses nothing, yet it stays queued: "
        f"{core.waiting_reason(*key_of(core, 'light'))!r}"
    )


def test_a_fifo_parked_for_its_heads_needs_is_let_go_when_that_head_is_canceled() -> None:
    """Liveness. Found by the tenancy machine: the FIFO-level
    twin of the test above. A FIFO is parked on its namespace's quota for the needs of its head
    and only let go when a run of that namespace ends or the tenant changes. Here the 2-cpu
    head is over the namespace's (lowered) cpu quota and nothing of the namespace runs; once
    that head is canceled, the 1-cpu job behind it fits, but the FIFO stays parked: forever."""
    core = _core(Pool(name="p", slots=4, cpu=4.0))
    assert _submit(core, 1.0, _job("other", tenant="o", cpu=4.0)) == ["other"]
    big, small = _job("big", cpu=2.0, namespace="ns"), _job("small", cpu=1.0, namespace="ns")
    assert _submit(core, 2.0, big, small) == []  # both wait for cpu
    lowered = Tenant("t", namespaces={"ns": Quota(cpu=1.0)})
    core.handle(TenantChanged(lowered), 3.0)  # big can never start now
    assert _end(core, 4.0, "other") == []  # big, the FIFO's head, parks it on the namespace
    assert core.waiting_reason(*key_of(core, "small")) == "namespace_quota:cpu"
    started = _started(core.handle(Cancel(*key_of(core, "big"), "requested"), 5.0))
    assert started == ["small"], (
        f"small asks 1 cpu, namespace ns uses none of its 1.0 and the pool is free, yet it "
        f"stays queued: {core.waiting_reason(*key_of(core, 'small'))!r}"
    )


def test_capacity_held_for_a_younger_job_never_blocks_its_tenants_older_head() -> None:
    """Liveness (backfill holds). Found: capacity is held for ``held`` while the older ``head``
    of the same tenant waits on its concurrency group. When the group frees up, ``head`` is the
    tenant's head again and does not fit beside the hold; ``held`` is never offered (it is not
    the head), so its hold is never released: two jobs wait forever on an empty pool."""
    core = _core(Pool(name="p", slots=3, cpu=2.0))
    assert _submit(core, 1.0, _job("other", tenant="o", cpu=2.0)) == ["other"]
    assert _submit(core, 2.0, _job("grouped", group="g")) == ["grouped"]
    assert _submit(core, 3.0, _job("head", cpu=2.0, group="g")) == []  # parks on g
    assert _submit(core, 4.0, _job("held", cpu=2.0)) == []  # no cpu: capacity held for it
    _end(core, 5.0, "grouped")
    started = _end(core, 6.0, "other")
    assert started, (
        f"nothing runs and the pool is empty, yet head waits "
        f"({core.waiting_reason(*key_of(core, 'head'))!r}) "
        f"and held waits ({core.waiting_reason(*key_of(core, 'held'))!r})"
    )


def test_capacity_held_by_two_queues_on_one_pool_does_not_deadlock() -> None:
    """Liveness (backfill holds). Found: each GroupQueue held capacity for its first head, on the
    first pool of its placement, whatever is held there already. Two queues of one level
    sharing pool p (routes p and p,q) both hold p, two more both hold q; then every held job
    is kept out by the other's hold: four jobs wait forever on two empty pools."""
    core = _core(Pool(name="p", slots=4, cpu=2.0), Pool(name="q", slots=4, cpu=2.0))
    p, q, pq, qp = (((BACKEND, names),) for names in (("p",), ("q",), ("p", "q"), ("q", "p")))
    assert _submit(core, 1.0, _job("r1", cpu=2.0), route=p) == ["r1"]
    assert _submit(core, 1.0, _job("r2", cpu=2.0), route=q) == ["r2"]
    for job_id, route in (("a", p), ("b", pq), ("c", q), ("d", qp)):
        assert _submit(core, 2.0, _job(job_id, cpu=2.0), route=route) == []
    started = _end(core, 3.0, "r1") + _end(core, 4.0, "r2")
    assert len(started) == 2, (
        f"p and q are empty and each could run one of a-d, yet {started} started; holds: "
        f"{ {n: [h.job for h in s.holds] for n, s in core.pool_states().items()} }"
    )


def test_capacity_freed_during_a_pass_goes_to_the_least_served_tenant() -> None:
    """I5 selection. Found: drain sets aside a head that does not fit (``declined``) until the
    end of the pass. If capacity held for another job is released later in the same pass (here
    the held job's tenant is parked by a quota change, and ``gate`` unholds it), the next
    tenants in the pass take it, while the declined tenant with the smallest virtual time waits
    (the second pass comes too late)."""
    core = _core(
        Pool(name="p", slots=4, cpu=4.0),
        tenants=(Tenant("u"), Tenant("v"), Tenant("w", weight=0.25)),
    )
    assert _submit(core, 1.0, _job("w0", tenant="w")) == ["w0"]  # w: virtual time 1.0
    assert _end(core, 2.0, "w0") == []
    assert _submit(core, 3.0, _job("r", tenant="v", cpu=3.0)) == ["r"]  # v: 0.75
    assert _submit(core, 4.0, _job("held", tenant="v", cpu=2.0)) == []  # capacity held for it
    assert _submit(core, 5.0, _job("a", tenant="u", cpu=1.0)) == []  # u: 0, kept out by hold
    assert _submit(core, 6.0, _job("b", tenant="w", cpu=1.0)) == []
    # v may run one job at most: its head is parked and the capacity held for it is freed
    started = _started(core.handle(TenantChanged(Tenant("v", quota=Quota(max_running=1))), 7.0))
    assert started == ["a"], (
        f"one cpu is free; u (virtual time 0) is served before w (1.0), but {started} started"
    )


def test_capacity_released_for_a_tenants_head_goes_to_the_least_served_tenant_first() -> None:
    """I5 selection. Found in f5d065a: when drain offers a tenant's head, it first lets go of
    capacity held for a younger job of the same tenant (``Holds.release_other_than``), then
    starts that head in the same step, before the heads it set aside because of that hold are
    offered again. Here t2 (virtual time 0) was set aside for t1's hold and t1 (virtual time 1)
    takes the cpu."""
    core = _core(Pool(name="p", slots=4, cpu=2.0))
    assert _submit(core, 1.0, _job("g", tenant="t1", cpu=2.0, group="g")) == ["g"]
    assert _submit(core, 2.0, _job("head", tenant="t1", cpu=2.0, group="g")) == []  # parks on g
    assert _submit(core, 3.0, _job("held", tenant="t1", cpu=2.0)) == []  # capacity held for it
    assert _submit(core, 4.0, _job("k", tenant="t2", cpu=2.0)) == []  # t2: virtual time 0
    started = _end(core, 5.0, "g")  # g's cpu and group are free; t1's head is "head" again
    assert started == ["k"], (
        f"t2 (virtual time 0) is served before t1 (1.0) once the hold is let go, but {started} "
        f"started ({core.waiting_reason(*key_of(core, 'k'))!r})"
    )

"""Runs: what a dispatched execution holds from its start until the engine reports its end.

A run holds its reservation on a pool, its part of its tenant's (and namespace's) usage, a slot
of each of its limits, and what its dispatch charged its tenant in fair share. When it has
really ended it gives all of that back: the charge is corrected with the real run time, and its
tenant, namespace and limits may let parked jobs go. A run told to stop (cancel, timeout) holds
its capacity until then, counted in its pool's ``stopping``.
"""

from __future__ import annotations

from msgspec import Struct

from ._capacity import NO_NEEDS, Reservation
from ._limits import LimitState
from ._parking import unpark_fifos, unpark_tenant
from ._queues import Entry, TenantQueue
from ._tenants import TenantState, job_share

__all__ = ["Run", "end_run", "start_run", "stop_run"]


class Run(Struct, gc=False):
    """A dispatched execution and what it holds. Not tracked by the garbage collector: nothing
    it refers to refers back to it."""

    reservation: Reservation
    entry: Entry  # the job's (its status and attempt say whether the run is still current)
    backend: str
    tenant: TenantState
    namespace: str
    limits: tuple[LimitState, ...]
    started: float
    rate: float  # USD per hour
    # its tenant's queue in the group it was picked from, what its dispatch charged the tenant
    # in virtual time, its dominant share of the group's capacity and its tenant's weight then
    queue: TenantQueue
    charged: float
    share: float
    weight: float
    stopping: bool = False  # told to stop (cancel, timeout): counted in its pool's stopping


def start_run(
    entry: Entry,
    reservation: Reservation,
    rate: float,
    limits: tuple[LimitState, ...],
    queue: TenantQueue,
    now: float,
) -> Run:
    """A queued job starts with this reservation (its limits already count it): its tenant's
    usage counts it, and its dispatch is charged to the tenant in ``queue``'s group: its
    dominant share of the group's capacity times the expected run time, over the tenant's
    weight (corrected with the real run time when it ends)."""
    tenant = entry.tenant_state
    tenant.reserve(reservation, entry.namespace)
    group, needs = queue.queue, entry.needs
    share = group.capacity.slot_share if needs is NO_NEEDS else job_share(needs, group.capacity)
    weight = tenant.weight
    charged = share * group.expected_run_s / weight
    return Run(
        reservation,
        entry,
        entry.backend,
        tenant,
        entry.namespace,
        limits,
        now,
        rate,
        queue,
        charged,
        share,
        weight,
    )


def stop_run(run: Run) -> None:
    """The run is told to stop: until it ends, its pool counts it as stopping."""
    if not run.stopping:
        run.stopping = True
        run.reservation.pool.stopping += 1


def end_run(run: Run, now: float) -> None:
    """The run has really ended: everything it held comes back (see the module docstring), and
    its cost is spent from its tenant's budget."""
    reservation = run.reservation
    pool = reservation.pool
    pool.release(reservation)
    if run.stopping:
        pool.stopping -= 1
    tenant = run.tenant
    tenant.release(reservation, run.namespace)
    run_s = now - run.started
    if run.rate:
        tenant.spend(run.rate * run_s / 3600.0, now)
    queue = run.queue
    queue.queue.adjust(
        queue, run.share * run_s / run.weight - run.charged, run_s, run.share, run.weight
    )
    for limit in run.limits:
        limit.running -= 1
        unpark_fifos(limit.parked)
    if tenant.limited:  # (only a limited tenant has namespace limits or is parked)
        namespace = tenant.namespaces.get(run.namespace)
        if namespace is not None:
            unpark_fifos(namespace.parked)
        unpark_tenant(tenant)

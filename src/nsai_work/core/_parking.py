"""Parking: a queue head held back by a limit leaves the competition until what blocks it
changes, so a blocked tenant costs nothing per dispatch.

- A tenant at its own quota is parked in the group queue it was offered in: it leaves that
  queue's keys (``GroupQueue.parked`` says why), and ``TenantState.parked_in`` lists where it
  is parked. One of its runs ending, or its spec changing, puts it back everywhere.
- A FIFO whose namespace quota or one of whose limits (concurrency group, tool) is at its limit
  leaves its tenant's heads (``TenantQueue.parked`` says why) and waits in that namespace's or
  limit's ``parked`` list. A run of theirs ending, the limit changing or a tool's token coming
  back puts the FIFOs of the list back; a queued job of a parked FIFO leaving (canceled, or
  moved to other pools) puts that FIFO back, since it was parked for its old head's needs.

A FIFO or tenant that is put back competes again and is gated again when its head is offered.
This module is the only one that changes what is parked; the queues and waiting reasons read
it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._limits import Limits
    from ._queues import Entry, GroupQueue, SubKey, TenantQueue
    from ._tenants import TenantState

__all__ = [
    "ParkedFifos",
    "park_fifo",
    "park_tenant",
    "queued_job_left",
    "restore_parked_fifo",
    "restore_parked_tenant",
    "unpark_fifo",
    "unpark_fifos",
    "unpark_tenant",
    "unpark_tenant_in",
]

#: The FIFOs parked on a namespace or a limit: (their tenant's queue, the FIFO's key).
ParkedFifos = list[tuple["TenantQueue", "SubKey"]]


def park_tenant(queue: TenantQueue, tenant: TenantState, reason: str) -> None:
    """The tenant of ``queue`` is at its quota: it leaves its group queue's keys."""
    group = queue.queue
    tenant.parked_in.add(group)
    queue.key = None
    group.parked[queue.tenant] = reason


def park_fifo(queue: TenantQueue, sub: SubKey, reason: str, parked_on: ParkedFifos) -> None:
    """The FIFO ``sub`` of ``queue``, whose head was just offered, is held back by a namespace
    quota or a limit: it leaves its tenant's heads and waits in ``parked_on``."""
    queue.withdraw_head()
    queue.parked[sub] = reason
    parked_on.append((queue, sub))


def restore_parked_tenant(group: GroupQueue, tenant: TenantState, reason: str) -> None:
    """A restored tenant is parked in ``group`` as it was (it gets no key there)."""
    tenant.parked_in.add(group)
    group.parked[tenant.spec.id] = reason


def restore_parked_fifo(
    queue: TenantQueue, sub: SubKey, reason: str, parked_on: ParkedFifos
) -> None:
    """A restored FIFO is parked as it was, waiting in ``parked_on``. Called before its jobs
    are added, so that it never is among its tenant's heads."""
    queue.parked[sub] = reason
    parked_on.append((queue, sub))


def unpark_fifos(parked_on: ParkedFifos) -> None:
    """What held back the FIFOs waiting in ``parked_on`` changed: they go back among their
    tenants' heads, and each tenant competes again (its head may have changed)."""
    if not parked_on:
        return
    waiting = parked_on[:]
    parked_on.clear()
    for queue, sub in waiting:
        if queue.parked.pop(sub, None) is not None:
            _compete(queue, sub)


def unpark_fifo(queue: TenantQueue, sub: SubKey, lists: Iterable[ParkedFifos]) -> None:
    """A queued job of the FIFO ``sub`` left (canceled, or moved to another pool group): if the
    FIFO is parked, its head may have changed (a smaller job behind a too-big one), so it
    leaves the list of ``lists`` it waits in and competes again; its new head is gated when it
    is offered."""
    if queue.parked.pop(sub, None) is None:
        return
    for parked_on in lists:
        parked_on[:] = [(q, s) for q, s in parked_on if q is not queue or s != sub]
    _compete(queue, sub)


def _compete(queue: TenantQueue, sub: SubKey) -> None:
    """A FIFO that is no longer parked goes back among its tenant's heads; the tenant competes
    again (re-keyed: the FIFO's head may be the oldest now)."""
    if queue.restore(sub):
        group = queue.queue
        group.parked.pop(queue.tenant, None)
        group.activate(queue.tenant)


def unpark_tenant(tenant: TenantState) -> None:
    """One of the tenant's runs ended or its spec changed: it competes again wherever it is
    parked."""
    if tenant.parked_in:
        for group in tenant.parked_in:
            unpark_tenant_in(group, tenant.spec.id)
        tenant.parked_in.clear()


def unpark_tenant_in(group: GroupQueue, tenant_id: str) -> None:
    """If the tenant is parked in ``group``, it competes there again (a queued job of its was
    canceled: its head may have changed)."""
    if group.parked.pop(tenant_id, None) is not None:
        group.activate(tenant_id)


def queued_job_left(group: GroupQueue, entry: Entry, limits: Limits) -> None:
    """A queued job left ``group`` other than by starting (canceled, or moved to another pool
    group): its tenant and its FIFO, if parked, compete again with their new heads, and no key
    names it any more."""
    unpark_tenant_in(group, entry.tenant)
    queue = group.tenants.get(entry.tenant)
    sub = entry.fifo
    if queue is not None and sub in queue.parked:
        lists = [limits.states[key].parked for key in sub[1] if key in limits.states]
        namespace = entry.tenant_state.namespaces.get(sub[0])
        if namespace is not None:
            lists.append(namespace.parked)
        unpark_fifo(queue, sub, lists)
    group.rekey_if_keyed_at(entry)

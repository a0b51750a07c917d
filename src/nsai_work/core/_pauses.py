"""Pauses: what an operator stopped from starting new work (a tenant, a tenant's namespace, a
pool), and how a pause is carried out with the core's own gates.

- A paused tenant is held back at its queue heads like a tenant at its quota: it is parked with
  the waiting reason ``tenant_paused`` (``TenantState.paused``, checked first by
  ``Limits.holding_back``), and resuming puts it back wherever it is parked.
- A paused namespace is held back like a namespace at its quota (``namespace_paused``): the
  tenant gets a namespace state for it if it had none (counting its live jobs there, as a
  namespace limit set at run time does), and resuming puts its FIFOs back.
- A paused pool takes no new reservation (``PoolState.paused``); its runs go on.
- ``Pause`` naming nothing pauses the whole scheduler (a drain before maintenance): nothing
  starts until it is resumed. This one is not kept by a restore (a restarted scheduler runs).

Runs already going are left alone, submits are admitted as usual (they wait), and a pause
survives a tenant being forgotten while idle and a restore (``CoreState.paused``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._ir import UNLIMITED
from ._lifecycle import WAITING
from ._parking import unpark_fifos, unpark_tenant
from ._tenants import NamespaceState, TenantState

if TYPE_CHECKING:
    from ._core import SchedulingCore
    from ._messages import Pause

__all__ = ["Pauses", "apply_pause", "pause_records"]


class Pauses:
    """What is paused now: tenants, (tenant, namespace) pairs, pools."""

    __slots__ = ("namespaces", "pools", "tenants")

    def __init__(self) -> None:
        self.tenants: set[str] = set()
        self.namespaces: set[tuple[str, str]] = set()
        self.pools: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self.tenants or self.namespaces or self.pools)

    def adopt(self, tenant_id: str, state: TenantState) -> None:
        """A tenant's state was just made (first seen, or back after being forgotten): it takes
        its pauses."""
        if tenant_id in self.tenants:
            state.paused = True
            state.limited = True
        for owner, namespace in self.namespaces:
            if owner == tenant_id:
                state.namespaces.setdefault(namespace, NamespaceState(UNLIMITED)).paused = True
                state.limited = True


def pause_records(pauses: Pauses) -> tuple[tuple[str, str, str], ...]:
    """The pauses as ``CoreState.paused`` keeps them: (scope, id, namespace or "")."""
    return (
        *(("tenant", t, "") for t in sorted(pauses.tenants)),
        *(("namespace", t, n) for t, n in sorted(pauses.namespaces)),
        *(("pool", p, "") for p in sorted(pauses.pools)),
    )


def apply_pause(core: SchedulingCore, event: Pause) -> None:
    """Carry out a ``Pause`` event (pause or resume); an unknown pool or tenant is recorded, and
    takes effect when it appears. Naming nothing pauses (or resumes) all dispatching."""
    pauses = core._pauses
    paused = event.paused
    if event.pool is not None:
        (pauses.pools.add if paused else pauses.pools.discard)(event.pool)
        pool = core._pools.get(event.pool)
        if pool is not None:
            pool.paused = paused
        return
    tenant_id = event.tenant_id
    if tenant_id is None:
        core.dispatching = not paused
        return
    state = core._tenants.states.get(tenant_id)
    if event.namespace is None:
        (pauses.tenants.add if paused else pauses.tenants.discard)(tenant_id)
        if state is not None:
            state.paused = paused
            state.limited = paused or state.quota is not UNLIMITED or bool(state.namespaces)
            if not paused:
                unpark_tenant(state)
        return
    key = (tenant_id, event.namespace)
    (pauses.namespaces.add if paused else pauses.namespaces.discard)(key)
    if state is None:
        return
    namespace = state.namespaces.get(event.namespace)
    if namespace is None:
        if not paused:
            return
        namespace = state.namespaces[event.namespace] = NamespaceState(UNLIMITED)
        _count_live(core, state, event.namespace, namespace)
        state.limited = True
    namespace.paused = paused
    if not paused:
        unpark_fifos(namespace.parked)


def _count_live(
    core: SchedulingCore, state: TenantState, name: str, namespace: NamespaceState
) -> None:
    """A namespace state made now starts from the tenant's live jobs and runs there."""
    for entry in core._jobs.entries():
        if entry.tenant_state is state and entry.namespace == name and entry.status in WAITING:
            namespace.waiting += 1
    for run in core._runs.values():
        if run.tenant is state and run.namespace == name:
            namespace.running += 1
            namespace.usage.add(run.reservation)

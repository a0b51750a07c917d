"""Routing: which configured backends, and which of their pools, may run a job.

``Router`` looks each backend up once (``BackendInfo``) and answers, per job, the route the core
keeps (backends in order, each with its pools) and the shared limits of the first of them.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from .._errors import UnschedulableError
from .._ir import Job
from ..core import Limit, Route

if TYPE_CHECKING:
    from ._config import ResolvedBackends

__all__ = ["BackendInfo", "Router", "shared_limits"]


class BackendInfo:
    """What routing and running need from one backend, looked up once."""

    __slots__ = (
        "async_execute",
        "auto",
        "backend",
        "check",
        "extra_pools",
        "name",
        "pools",
        "pools_for",
        "routes",
        "shared_limits",
    )

    def __init__(self, backend: Any, pools: tuple[str, ...], extra: tuple[str, ...]) -> None:
        self.backend = backend
        self.name: str = backend.name
        self.pools = pools
        self.extra_pools = extra
        self.pools_for = getattr(backend, "pools_for", None)
        self.shared_limits = getattr(backend, "shared_limits", None)
        self.check = getattr(backend, "validate", None)
        self.auto = bool(getattr(backend, "auto_select", True))
        self.async_execute = inspect.iscoroutinefunction(backend.execute)
        # its routes, one object per set of pools: the jobs of a batch share them (a tuple per
        # job would only be work for the garbage collector until the batch is admitted)
        self.routes: dict[tuple[str, ...], tuple[str, tuple[str, ...]]] = {}

    def route_for(self, job: Job) -> tuple[str, tuple[str, ...]]:
        pools = self.pools if self.pools_for is None else tuple(self.pools_for(job))
        route = self.routes.get(pools)
        if route is None:
            all_pools = pools + self.extra_pools if self.pools_for is not None else pools
            route = self.routes[pools] = (self.name, all_pools)
        return route

    def validate(self, job: Job) -> None:
        if self.check is not None:
            self.check(job)

    def explain(self, job: Job) -> str:
        explain = getattr(self.backend, "explain", None)
        if explain is not None:
            return str(explain(job))
        return f"{self.name}: supports() is False for this job"


class Router:
    """The configured backends (by name, and in auto-selection order) and the routes of jobs."""

    def __init__(self, resolved: ResolvedBackends, default_backend: str | None) -> None:
        self.backends: dict[str, BackendInfo] = {
            b.name: BackendInfo(
                b, tuple(p.name for p in resolved.pools[b.name]), resolved.extra[b.name]
            )
            for b in resolved.backends
        }
        order = [b for b in self.backends.values() if b.auto]
        if default_backend is not None:
            default = self.backends[default_backend]
            order = [default] + [b for b in order if b is not default]
        self._auto_order = order
        self._routes: dict[Route, Route] = {}

    def route(self, job: Job) -> tuple[Route, tuple[Limit, ...]]:
        """The backends that may run the job, with their pools, in order, and the shared
        limits (across tenants) of the first of them."""
        name = job.constraints.backend
        if name is not None:
            info = self.backends.get(name)
            if info is None:
                raise UnschedulableError(
                    f"unknown backend {name!r}; configured backends: {sorted(self.backends)} "
                    f"- at $.constraints.backend"
                )
            if not info.backend.supports(job):
                raise UnschedulableError(
                    f"backend {name!r} does not run this job: {info.explain(job)} - at "
                    f"$.constraints.backend"
                )
            info.validate(job)
            return self._interned((info.route_for(job),)), shared_limits(info, job)
        route = []
        first: BackendInfo | None = None
        for info in self._auto_order:
            if info.backend.supports(job):
                info.validate(job)
                route.append(info.route_for(job))
                first = first or info
        if first is None:
            reasons = "; ".join(info.explain(job) for info in self._auto_order)
            raise UnschedulableError(f"no backend runs kind {job.kind!r}: {reasons} - at $.kind")
        return self._interned(tuple(route)), shared_limits(first, job)

    def _interned(self, route: Route) -> Route:
        """One object per distinct route (see ``BackendInfo.routes``)."""
        return self._routes.setdefault(route, route)


def shared_limits(info: BackendInfo, job: Job) -> tuple[Limit, ...]:
    """The limits across tenants that ``info``'s backend puts on ``job`` (none by default)."""
    if info.shared_limits is None:
        return ()
    return tuple(info.shared_limits(job))

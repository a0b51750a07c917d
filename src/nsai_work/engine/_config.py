"""The scheduler's configuration, and how it turns into backends and pools."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeVar

from msgspec import Struct

from .._clock import Clock
from .._errors import ConfigurationError, ValidationError
from .._ir import Pool, PriorityGuard, Tenant
from .._validate import DEFAULT_MAX_PAYLOAD_BYTES, validate_struct
from ..backends import AltarBackend, Backend, LocalBackend, MockBackend, ProcessBackend, RayBackend
from ..core import DEFAULT_FAIR_SHARE_RESOLUTION_S, DEFAULT_TENANT_IDLE_TTL_S, check_resolution
from ..stores import MemoryStore, Store, store_from_url
from ..telemetry import Telemetry

__all__ = [
    "BUILTIN_BACKENDS",
    "DEFAULT_POOL_SLOTS",
    "Config",
    "ResolvedBackends",
    "resolve",
    "store_of",
]

BUILTIN_BACKENDS: Final = {
    "local": LocalBackend,
    "process": ProcessBackend,
    "altar": AltarBackend,
    "mock": MockBackend,
    "ray": RayBackend,  # (connects when the scheduler starts; needs the ray extra)
}
T = TypeVar("T", bound=Struct)

#: Slots of the one pool a backend without ``pools()`` offers.
DEFAULT_POOL_SLOTS: Final = 64
#: The largest duration option in seconds (about 31,700 years): finite, so timers stay numbers.
_MAX_SECONDS: Final = 1e12


class Config(Struct, kw_only=True, frozen=True):
    """Everything a scheduler can be given (the same keywords ``Scheduler(...)``,
    ``SyncScheduler(...)`` and ``work.start(...)`` take).

    - ``backends``: in selection order; names of built-ins ("local", "altar", "mock") or Backend
      objects. The mock is registered but chosen only when named.
    - ``pools``: declared capacity per backend name: a pool with a name the backend offers
      replaces it, another one is added (and any job of that backend may use it).
    - ``default_backend``: tried first for jobs that name none.
    - ``max_waiting``: cap on pending + queued jobs (``QueueFullError`` beyond); None: no cap.
    - ``finished_ttl_s`` / ``finished_max``: how long and how many finished jobs are kept.
    - ``max_result_bytes``: the largest JSON result a handler may return.
    - ``max_payload_bytes``: the largest JSON a job's payload (and, apart, its metadata) may
      encode to; a larger one is refused at submit naming the field.
    - ``seed``: seeds retry jitter (None: random), for reproducible runs.
    - ``telemetry``: the bus to emit on (default: the process-wide ``work.telemetry``).
    - ``tenants``: configured tenants (``work.Tenant``: weight, quota, namespace limits).
    - ``default_tenant``: the weight and quota of tenants not configured (under their own id);
      ``unknown_tenants="reject"`` rejects them instead.
    - ``concurrency_limits``: ``{group: n}`` for ``constraints.concurrency_group`` (default 1).
    - ``priority_guard``: the opt-in starvation guard (``work.PriorityGuard``).
    - ``fair_share_resolution_s``: how finely fair share tells tenants apart, in seconds of a
      pool group's whole capacity per unit of weight (default 0.001): tenants closer than that
      are served oldest job first.
    - ``enable_altar``: False makes the built-in "altar" backend refuse tool calls (the seed's
      ``enable_altar``).
    - ``exit_timeout_s``: how long the default scheduler (``work.start``) lets running jobs
      finish when the interpreter exits or gets SIGTERM, before canceling them.
    - ``tenant_idle_ttl_s``: how long the state of a tenant with no waiting or running job is
      kept (usage, fair-share standing, counters); None keeps it forever. A configured tenant's
      spec is never dropped, nor a tenant that owes submit-rate tokens or has spent in its
      budget period; dropped tenants leave ``stats().by_tenant`` but still count in the totals.
    - ``store``: where jobs are kept: a URL (``"memory://"``, the default, keeps them in this
      process; ``"sqlite:///path/work.db"`` and ``"postgresql://user@host/db"`` keep them
      across restarts, see docs/stores.md) or a ``work.stores.Store`` object.
    - ``store_flush_s``: with a durable store, how long a transition may wait to be committed
      with others (a submit never waits for it: it commits at once, sharing the commit with
      concurrent submits).
    - ``store_timeout_s``: with a durable store, how long a call waits for a commit while the
      store fails before it raises ``StoreUnavailableError`` (the write is kept and retried).
    - ``clock``: the ``work.Clock`` the engine reads (monotonic time for durations and timers,
      wall time for timestamps); default the system's. ``work.testing.FakeClock`` drives a
      scheduler by hand in tests.
    """

    backends: tuple[Any, ...] = ("local", "altar", "mock")
    pools: dict[str, tuple[Pool, ...]] = {}
    default_backend: str | None = None
    max_waiting: int | None = 1_000_000
    finished_ttl_s: float = 3600.0
    finished_max: int = 100_000
    max_result_bytes: int = 1_048_576
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    seed: int | None = None
    telemetry: Any = None
    tenants: tuple[Tenant, ...] = ()
    default_tenant: Tenant = Tenant("*")
    unknown_tenants: str = "admit"
    concurrency_limits: dict[str, int] = {}
    priority_guard: PriorityGuard | None = None
    fair_share_resolution_s: float = DEFAULT_FAIR_SHARE_RESOLUTION_S
    enable_altar: bool = True
    exit_timeout_s: float = 10.0
    tenant_idle_ttl_s: float | None = DEFAULT_TENANT_IDLE_TTL_S
    clock: Any = None
    store: Any = "memory://"
    store_flush_s: float = 0.005
    store_timeout_s: float = 30.0

    def check(self) -> None:
        """Raise ``ConfigurationError`` naming the first bad option."""
        if self.max_waiting is not None and (
            not isinstance(self.max_waiting, int) or self.max_waiting < 0
        ):
            raise ConfigurationError(
                f"max_waiting must be an int >= 0 or None, got {self.max_waiting!r}"
            )
        for name in ("finished_max", "max_result_bytes", "max_payload_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigurationError(f"{name} must be an int >= 0, got {value!r}")
        for name in ("finished_ttl_s", "exit_timeout_s", "store_flush_s", "store_timeout_s"):
            value = getattr(self, name)
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not 0 <= value <= _MAX_SECONDS  # NaN and infinity fail this too
            ):
                raise ConfigurationError(
                    f"{name} must be a finite number of seconds, 0 to {_MAX_SECONDS:.0e}, "
                    f"got {value!r}"
                )
        if not isinstance(self.store, str) and not isinstance(self.store, Store):
            raise ConfigurationError(
                f"store is a URL (memory://, sqlite:///path/work.db, postgresql://user@host/db) "
                f"or a work.stores.Store, got {type(self.store).__name__}"
            )
        if self.clock is not None and not isinstance(self.clock, Clock):
            raise ConfigurationError(
                f"clock must have monotonic() and time() (a work.Clock, e.g. "
                f"work.testing.FakeClock()), got {type(self.clock).__name__}"
            )
        if self.telemetry is not None and not isinstance(self.telemetry, Telemetry):
            raise ConfigurationError(
                f"telemetry must be a work.telemetry.Telemetry, got {type(self.telemetry).__name__}"
            )
        check_resolution(self.fair_share_resolution_s)
        ttl = self.tenant_idle_ttl_s
        if ttl is not None and (
            not isinstance(ttl, int | float)
            or isinstance(ttl, bool)
            or not math.isfinite(ttl)
            or ttl <= 0
        ):
            raise ConfigurationError(
                f"tenant_idle_ttl_s must be a finite number of seconds > 0 or None, got {ttl!r}"
            )
        if not self.backends:
            raise ConfigurationError("backends is empty: give at least one backend")
        if not isinstance(self.enable_altar, bool):
            raise ConfigurationError(f"enable_altar is True or False, got {self.enable_altar!r}")
        if self.unknown_tenants not in ("admit", "reject"):
            raise ConfigurationError(
                f"unknown_tenants is 'admit' or 'reject', got {self.unknown_tenants!r}"
            )
        # Structs given in a Config (not as options) are checked here too: identifiers, bounds.
        for index, tenant in enumerate(self.tenants):
            _option(tenant, Tenant, f"tenants[{index}]")
        _option(self.default_tenant, Tenant, "default_tenant", check_id=False)
        if self.priority_guard is not None:
            _option(self.priority_guard, PriorityGuard, "priority_guard")
        for backend, pools in self.pools.items():
            for index, pool in enumerate(pools):
                _option(pool, Pool, f"pools[{backend!r}][{index}]")
        ids = [t.id for t in self.tenants]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ConfigurationError(f"tenants: each id once, got {duplicates} twice")


def make_config(config: Config | None, options: Mapping[str, Any]) -> Config:
    """A Config from a Config and/or keyword options (options win)."""
    base = config or Config()
    if options:
        unknown = sorted(set(options) - set(Config.__struct_fields__))
        if unknown:
            raise ConfigurationError(
                f"unknown option(s) {unknown}; the options are {sorted(Config.__struct_fields__)}"
            )
        values = {name: getattr(base, name) for name in Config.__struct_fields__}
        values.update(options)
        if "backends" in options:
            values["backends"] = tuple(options["backends"])
        if "pools" in options:
            values["pools"] = _pools_option(options["pools"])
        if "tenants" in options:
            values["tenants"] = tuple(
                _option(t, Tenant, f"tenants[{i}]") for i, t in enumerate(options["tenants"])
            )
        if "default_tenant" in options:
            values["default_tenant"] = _option(
                options["default_tenant"], Tenant, "default_tenant", check_id=False
            )
        if options.get("priority_guard") is not None:
            values["priority_guard"] = _option(
                options["priority_guard"], PriorityGuard, "priority_guard"
            )
        if "concurrency_limits" in options:
            values["concurrency_limits"] = _concurrency_limits(options["concurrency_limits"])
        base = Config(**values)
    base.check()
    return base


def _option(value: object, kind: type[T], name: str, *, check_id: bool = True) -> T:
    """A validated copy of a Struct option given as the Struct or as a dict."""
    try:
        return validate_struct(value, kind, check_id=check_id)
    except ValidationError as exc:
        raise ConfigurationError(f"{name}: {exc}") from None


def _concurrency_limits(limits: object) -> dict[str, int]:
    if not isinstance(limits, Mapping):
        raise ConfigurationError(f"concurrency_limits maps a group to an int >= 1, got {limits!r}")
    for group, limit in limits.items():
        if not isinstance(group, str) or not group:
            raise ConfigurationError(
                f"concurrency_limits: a group is a non-empty string: {group!r}"
            )
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ConfigurationError(
                f"concurrency_limits[{group!r}] must be an int >= 1, got {limit!r}"
            )
    return dict(limits)


def _pools_option(pools: object) -> dict[str, tuple[Pool, ...]]:
    if not isinstance(pools, Mapping):
        raise ConfigurationError(
            f"pools maps a backend name to a list of work.Pool, got {type(pools).__name__}"
        )
    out: dict[str, tuple[Pool, ...]] = {}
    for backend, specs in pools.items():
        items = [specs] if isinstance(specs, Pool | dict) else list(specs)
        out[str(backend)] = tuple(
            _option(spec, Pool, f"pools[{backend!r}][{index}]") for index, spec in enumerate(items)
        )
    return out


class ResolvedBackends:
    """Backend objects by name, in selection order, with their final pools."""

    def __init__(
        self, backends: list[Any], pools: dict[str, list[Pool]], extra: dict[str, tuple[str, ...]]
    ):
        self.backends = backends
        self.by_name = {b.name: b for b in backends}
        self.pools = pools
        #: pools declared in config that a backend does not offer (any of its jobs may use them)
        self.extra = extra


def resolve(config: Config) -> ResolvedBackends:
    """Instantiate named built-ins, check every backend against the Protocol, merge pools."""
    backends: list[Any] = []
    for index, item in enumerate(config.backends):
        if isinstance(item, str):
            factory = BUILTIN_BACKENDS.get(item)
            if factory is None:
                raise ConfigurationError(
                    f"backends[{index}]: unknown backend {item!r}; built-in backends are "
                    f"{sorted(BUILTIN_BACKENDS)}, or pass a Backend object"
                )
            item = AltarBackend(enabled=config.enable_altar) if item == "altar" else factory()
        _check_backend(item, index)
        if item.name in {b.name for b in backends}:
            raise ConfigurationError(f"backends[{index}]: the name {item.name!r} is used twice")
        backends.append(item)
    names = {b.name for b in backends}
    if config.default_backend is not None and config.default_backend not in names:
        raise ConfigurationError(
            f"default_backend {config.default_backend!r} is not among the backends {sorted(names)}"
        )
    unknown = sorted(set(config.pools) - names)
    if unknown:
        raise ConfigurationError(
            f"pools are declared for unknown backend(s) {unknown}; backends are {sorted(names)}"
        )
    pools: dict[str, list[Pool]] = {}
    extra: dict[str, tuple[str, ...]] = {}
    for backend in backends:
        offered = _offered_pools(backend)
        declared = config.pools.get(backend.name, ())
        by_name = {p.name: p for p in offered}
        added = []
        for spec in declared:
            if spec.name not in by_name:
                added.append(spec.name)
            by_name[spec.name] = spec
        pools[backend.name] = list(by_name.values())
        extra[backend.name] = tuple(added)
    return ResolvedBackends(backends, pools, extra)


def _offered_pools(backend: Any) -> Sequence[Pool]:
    pools_fn = getattr(backend, "pools", None)
    if pools_fn is None:
        return [Pool(name=backend.name, slots=DEFAULT_POOL_SLOTS)]
    offered = list(pools_fn())
    for spec in offered:
        if not isinstance(spec, Pool):
            raise ConfigurationError(
                f"backend {backend.name!r}: pools() must return work.Pool objects, got {spec!r}"
            )
    return offered


def _check_backend(backend: object, index: int) -> None:
    if not isinstance(backend, Backend):
        missing = [
            member
            for member in ("name", "supports", "execute", "cancel")
            if not hasattr(backend, member)
        ]
        raise ConfigurationError(
            f"backends[{index}]: {backend!r} is not a Backend: it lacks {missing} (see "
            f"work.Backend: name, supports(job), execute(job, ctx), cancel(job_id))"
        )
    name = getattr(backend, "name", None)
    if not isinstance(name, str) or not name:
        raise ConfigurationError(
            f"backends[{index}]: a backend's name is a non-empty string, got {name!r}"
        )


def store_of(config: Config) -> Store:
    """The store a config names (a URL, or a Store object), not opened yet."""
    store = config.store
    if not isinstance(store, str):
        return store  # type: ignore[no-any-return]
    if store.split("://", 1)[0].lower() == "memory":  # retention options are the memory store's
        return MemoryStore(finished_ttl_s=config.finished_ttl_s, finished_max=config.finished_max)
    return store_from_url(store)

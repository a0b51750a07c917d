"""The Ray backend: jobs run on a Ray cluster, with nsai-work's priorities, quotas, fair share,
timeouts and cost on top (the ``ray`` extra: ``pip install nsai-work[ray]``).

- Callable jobs (a handler registered for the kind, as for the local backend) run as Ray tasks,
  with Ray's own retries off (the job's retry policy decides), pinned to the node of the pool
  they were placed on (``NodeAffinitySchedulingStrategy(soft=False)``), asking Ray for exactly
  what they ask nsai-work (``_ray_nodes.ray_resources``). One thread awaits the ends of all
  of them (``_ray_waits``: no thread per running job, no callback on Ray's own I/O thread)
  and hands them to the loop in batches; an exception comes back as the job's error with its
  type, message and traceback; a timeout or cancel calls ``ray.cancel(force=True)``.
- Command jobs (``kind="command"``) go through Ray Jobs (``_ray_jobs``).
- Every alive node is a pool (``_ray_nodes``); the node list is polled every ``poll_s`` seconds
  (Ray pushes no event when a node joins or leaves) and changes go to the engine through
  ``BackendEvents.pools_changed``. Losing the cluster is reported with
  ``availability_changed(False)`` and the backend reconnects with backoff.
- The attempt's handle is ``task:<Ray task id>`` or ``job:<submission id>``;
  ``cancel_orphan`` stops the Ray job of a dead scheduler (its tasks die with it: Ray kills the
  tasks of a driver that is gone).

``ray`` is imported only here, when the backend is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from .._errors import BackendError, ConfigurationError, NonRetryableError, UnschedulableError
from .._handlers import HandlerRegistry, RegisteredFunction, default_handlers
from .._ir import Job, Pool, Prices, json_encoder
from ._process_boundary import remote_exception
from ._ray_jobs import RayJobs, check_ray_command
from ._ray_nodes import NodePool, node_pools, ray_resources
from ._ray_remote import make_runner
from ._ray_waits import TaskEnds
from ._worker_wire import Err

if TYPE_CHECKING:
    from .._context import JobContext
    from ..engine import BackendEvents

__all__ = ["Ray", "RayBackend"]

_log = logging.getLogger("nsai_work.backends.ray")
#: How long a canceled task may take to really end before its run is reported ended anyway.
_CANCEL_WAIT_S: Final = 10.0
#: How long a task failed in Ray waits for its node to be seen gone before its end is told:
#: after an error that says the node or its worker died, and after any other error of Ray's.
_NODE_FATE_S: Final = 15.0
_NODE_CHECK_S: Final = 2.0
#: How long a TCP connection to Ray's control store may take before it counts as gone.
_GCS_PROBE_S: Final = 2.0
#: Ray's errors that say a task's node (or its worker process) died, or that its node is gone.
_NODE_ERRORS: Final = frozenset(
    {"NodeDiedError", "WorkerCrashedError", "TaskUnschedulableError", "LocalRayletDiedError"}
)
_COMMAND: Final = "command"
#: The engine's default ``max_result_bytes`` (a result is checked in the worker too).
DEFAULT_MAX_RESULT_BYTES: Final = 1_048_576


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - the extra is part of the test install
        raise ConfigurationError("the Ray backend needs Ray: pip install 'nsai-work[ray]'") from exc
    return ray


class RayBackend:
    """Run jobs on a Ray cluster (see the module docstring and docs/ray.md).

    ``address``: ``None`` starts a local cluster (sized by ``num_cpus``, ``num_gpus``,
    ``resources`` and ``object_store_memory``) and stops it with the scheduler; ``"auto"``
    connects to the cluster running on this machine; ``"ray://host:10001"`` or
    ``"host:6379"`` to a remote one. A Ray connection already open in this process is used as
    it is (and left open at stop). ``namespace`` and ``runtime_env`` go to ``ray.init``;
    ``jobs_address`` is the dashboard's address for Ray Jobs (default: the connection's).
    ``prefetch`` lets that many more tasks per node than it has CPUs be handed to Ray at once
    (0: every waiting job waits in nsai-work's queues); ``poll_s`` is how often the node list is
    read; ``node_grace_s`` how long a job no node can hold any more waits for one (None: for
    ever); ``prices`` maps an accelerator type, ``"cpu"`` or ``"default"`` to node prices.
    """

    name = "ray"
    auto_select = True

    def __init__(
        self,
        address: str | None = None,
        *,
        namespace: str = "nsai-work",
        runtime_env: dict[str, Any] | None = None,
        handlers: HandlerRegistry | None = None,
        kinds: Iterable[str] | None = None,
        num_cpus: int | None = None,
        num_gpus: int | None = None,
        resources: dict[str, float] | None = None,
        object_store_memory: int | None = None,
        jobs_address: str | None = None,
        prefetch: int = 0,
        poll_s: float = 2.0,
        node_grace_s: float | None = 300.0,
        prices: Mapping[str, Prices] | None = None,
        log_tail_bytes: int = 4096,
        reconnect_max_s: float = 30.0,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ) -> None:
        _check_int("prefetch", prefetch, 0)
        _check_int("log_tail_bytes", log_tail_bytes, 1)
        _check_positive("poll_s", poll_s)
        _check_positive("reconnect_max_s", reconnect_max_s)
        if node_grace_s is not None:
            _check_positive("node_grace_s", node_grace_s, zero=True)
        if runtime_env is not None and not isinstance(runtime_env, dict):
            raise ConfigurationError(f"runtime_env is a dict, got {type(runtime_env).__name__}")
        self.address = address
        self.namespace = namespace
        self.runtime_env = runtime_env
        self.handlers = default_handlers() if handlers is None else handlers
        self.kinds = None if kinds is None else frozenset(kinds)
        self.cluster_options = {
            k: v
            for k, v in {
                "num_cpus": num_cpus,
                "num_gpus": num_gpus,
                "resources": resources,
                "object_store_memory": object_store_memory,
            }.items()
            if v is not None
        }
        self.jobs_address = jobs_address
        self.prefetch = prefetch
        self.poll_s = poll_s
        self.node_grace_s = node_grace_s
        self.prices = dict(prices or {})
        self.log_tail_bytes = log_tail_bytes
        self.reconnect_max_s = reconnect_max_s
        self.max_result_bytes = max_result_bytes
        self._ray: Any = None
        self._owned = False  # we called ray.init (so we call ray.shutdown)
        self._nodes: dict[str, NodePool] = {}  # by pool name
        self._reported: list[Pool] = []
        self._events: BackendEvents | None = None
        self._poller: asyncio.Task[None] | None = None
        self._refs: dict[str, Any] = {}  # job id -> the ObjectRef of its running task
        self._remotes: dict[str, tuple[Any, Any]] = {}  # kind -> (its function, remote)
        self._options: dict[tuple[Any, ...], Any] = {}
        self._jobs: RayJobs | None = None
        self._ends: TaskEnds | None = None  # started with the backend

    def __repr__(self) -> str:
        return f"RayBackend(address={self.address!r}, namespace={self.namespace!r})"

    # ---- connection ---------------------------------------------------------------------

    def connect(self) -> None:
        """Connect to (or start) the cluster, if not connected yet; blocks (Ray's own calls
        do). ``pools()`` and ``start()`` call it."""
        if self._ray is not None:
            return
        ray = _import_ray()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        context = None
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "namespace": self.namespace,
                "runtime_env": self.runtime_env,
                "logging_level": logging.WARNING,
                "log_to_driver": False,
            }
            if self.address is None:
                kwargs.update(self.cluster_options, include_dashboard=True)
                kwargs["_node_ip_address"] = "127.0.0.1"
            else:
                kwargs["address"] = self.address
            try:
                context = ray.init(**kwargs)
            except Exception as exc:
                raise BackendError(
                    f"the Ray backend could not connect to {self.address or 'a new local'} "
                    f"cluster: {exc}"
                ) from exc
            self._owned = True
        self._ray = ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._affinity = NodeAffinitySchedulingStrategy
        address = self.jobs_address
        if address is None:
            url = getattr(context, "dashboard_url", None) if context is not None else None
            url = url or _dashboard_url(ray)
            address = url if url.startswith("http") else f"http://{url}"
        self._jobs = RayJobs(address, tail_bytes=self.log_tail_bytes, runtime_env=self.runtime_env)
        self._refresh()

    def _refresh(self) -> list[Pool]:
        """Read the alive nodes (blocking: one call to Ray's control store); their pools.

        Raises ``BackendError`` without asking Ray when this process is not connected, or when
        the control store (GCS) does not take a TCP connection: there Ray's own call would wait
        for it (up to 60 s, then Ray ends the process), and a control store started again on
        its port is a new cluster, which Ray's call meets with a fatal check (the process
        aborts: ``WrongClusterID``)."""
        ray = self._ray
        if not ray.is_initialized():
            raise BackendError("not connected to Ray")
        address = _gcs_address(ray)
        if address is not None:
            host, _, port = address.rpartition(":")
            host = host.strip("[]")  # (an IPv6 address: [::1]:6379)
            try:
                socket.create_connection((host, int(port)), timeout=_GCS_PROBE_S).close()
            except OSError as exc:
                raise BackendError(
                    f"Ray's control store at {address} does not answer: {exc}"
                ) from exc
        found = node_pools(ray.nodes(), prefetch=self.prefetch, prices=self.prices)
        self._nodes = {node.pool.name: node for node in found}
        return [node.pool for node in found]

    # ---- the Backend protocol: capacity ------------------------------------------------------

    def pools(self) -> list[Pool]:
        """One pool per alive node (connects first)."""
        self.connect()
        pools = [node.pool for node in self._nodes.values()]
        self._reported = pools
        if not pools:
            raise BackendError("the Ray cluster has no alive node")
        return pools

    def bind(self, events: BackendEvents) -> None:
        """Keep the channel to tell the engine of node and connection changes."""
        self._events = events

    async def start(self) -> None:
        """Connect (in a thread) and follow the nodes."""
        await asyncio.to_thread(self.connect)
        if self._ends is None:
            self._ends = TaskEnds(asyncio.get_running_loop(), self._ray)
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._follow_nodes())

    async def stop(self) -> None:
        """Stop following the nodes; disconnect (and stop a local cluster) if we connected."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        if self._ends is not None:
            await asyncio.to_thread(self._ends.close)
            self._ends = None
        if self._owned and self._ray is not None:
            await asyncio.to_thread(self._ray.shutdown)
            self._owned = False
        self._ray = None
        self._remotes.clear()
        self._options.clear()

    async def _follow_nodes(self) -> None:
        """Every ``poll_s``: read the nodes and tell the engine what changed; on a failure,
        report the backend unavailable and reconnect with backoff."""
        delay = self.poll_s
        available = True
        while True:
            await asyncio.sleep(delay)
            try:
                pools = await asyncio.to_thread(self._refresh)
            except Exception as exc:
                if available and self._events is not None:
                    self._events.availability_changed(False, f"Ray is unreachable: {exc}")
                available = False
                delay = min(self.reconnect_max_s, delay * 2)
                await self._reconnect()
                continue
            self._report(pools)  # (first: the pools of a cluster that came back may be new
            if not available and self._events is not None:  # nodes, and nothing may start
                self._events.availability_changed(True)  # on the old ones meanwhile)
            available, delay = True, self.poll_s

    def _report(self, pools: list[Pool]) -> None:
        """Tell the engine the pools, if they changed since last told."""
        if pools != self._reported and self._events is not None:
            self._reported = pools
            self._events.pools_changed(pools, grace_s=self.node_grace_s)

    async def _check_node(self, node: NodePool, wait_s: float) -> None:
        """A task failed in Ray itself (its worker or node died, its node is gone): before that
        run's end is reported (its slot stays taken meanwhile), read the nodes until the node
        is seen gone (then the engine is told at once, so nothing more is placed there) or for
        ``wait_s`` seconds (Ray's control store may learn of a dead node some seconds late)."""
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            try:
                pools = await asyncio.to_thread(self._refresh)
            except Exception:
                return  # (the poll reports an unreachable cluster)
            if node.pool.name not in self._nodes:
                self._report(pools)
                return
            if asyncio.get_running_loop().time() > deadline:
                return
            await asyncio.sleep(0.2)

    async def _reconnect(self) -> None:
        """Connect again if this backend made the connection (one it was given is the
        owner's to mend)."""
        if not self._owned or self.address is None:
            return
        ray = self._ray
        if self._ends is not None:  # (its tasks are the old connection's: their runs are lost)
            await asyncio.to_thread(self._ends.close)
        try:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(ray.shutdown)
                await asyncio.to_thread(
                    ray.init, address=self.address, namespace=self.namespace, log_to_driver=False
                )
        finally:
            self._ends = TaskEnds(asyncio.get_running_loop(), ray)

    # ---- the Backend protocol: what runs here ------------------------------------------------

    def supports(self, job: Job) -> bool:
        """Command jobs, and kinds with a registered handler (within ``kinds``)."""
        if self.kinds is not None and job.kind not in self.kinds:
            return False
        return job.kind == _COMMAND or self.handlers.get(job.kind) is not None

    def explain(self, job: Job) -> str:
        """Why this backend does not run ``job``."""
        if self.kinds is not None and job.kind not in self.kinds:
            return f"ray runs only the kinds {sorted(self.kinds)}; not {job.kind!r}"
        return (
            f"ray runs kind 'command' and registered handlers; kind {job.kind!r} has none "
            f"(register one with @work.handler({job.kind!r}))"
        )

    def validate(self, job: Job) -> None:
        """Refuse at submit a command Ray Jobs cannot run, a runtime_env that is not an object,
        and (with ``prefetch``) a job no node has the CPUs for."""
        if job.kind == _COMMAND:
            check_ray_command(job)
        runtime_env = job.metadata.get("runtime_env")
        if runtime_env is not None and not isinstance(runtime_env, dict):
            from .._errors import ValidationError

            raise ValidationError(
                "metadata.runtime_env is an object (Ray's runtime environment for this job), "
                f"got {type(runtime_env).__name__}",
                path="$.metadata.runtime_env",
            )
        cpu = job.resources.cpu
        if self.prefetch and cpu and self._nodes:
            most = max(node.total.get("CPU", 0.0) for node in self._nodes.values())
            if cpu > most:
                raise UnschedulableError(
                    f"no Ray node can ever hold this job: it asks cpu={cpu} and the largest "
                    f"node has {most} CPUs - at $.resources.cpu"
                )

    async def execute(self, job: Job, ctx: JobContext) -> Any:
        """Run one attempt: a Ray task, or a Ray job for a command."""
        node = self._nodes.get(job.pool or "")
        if node is None:  # the node left between dispatch and now
            raise BackendError(f"the Ray node of pool {job.pool!r} is gone")
        if job.kind == _COMMAND:
            assert self._jobs is not None
            return await self._jobs.run(job, ctx, node.node_id)
        function = self.handlers.get(job.kind)
        if function is None:
            raise NonRetryableError(f"the handler for kind {job.kind!r} was unregistered")
        ends = self._ends
        assert ends is not None, "the Ray backend was not started"
        task = self._task(job, node, function)
        if job.constraints.depends_on:
            ref = task.remote(json_encoder.encode(job), ctx.upstream)
        else:
            ref = task.remote(json_encoder.encode(job))
        self._refs[job.id] = ref
        try:
            ctx.set_handle(f"task:{ref.task_id().hex()}")
            value = await ends.watch(ref)
        except asyncio.CancelledError:
            self._cancel_ref(ref)  # (again: a stop may come without a cancel)
            await self._let_go(ref, ends)
            raise
        except self._ray.exceptions.RayError as exc:  # Ray's own failure (the task never raises)
            await self._check_node(node, _NODE_FATE_S if _node_trouble(exc) else _NODE_CHECK_S)
            raise
        finally:
            self._refs.pop(job.id, None)
        if type(value) is Err:
            raise remote_exception(value)
        return value

    async def _let_go(self, ref: Any, ends: TaskEnds) -> None:
        """Wait (up to ``_CANCEL_WAIT_S``) for a canceled task's end, so that its capacity is
        given back only once Ray has let it go; the current waiter is asked (a reconnect may
        have made a new one since the task started)."""
        with contextlib.suppress(BaseException):
            await asyncio.wait_for((self._ends or ends).watch(ref), _CANCEL_WAIT_S)

    def _task(self, job: Job, node: NodePool, function: RegisteredFunction) -> Any:
        """The kind's remote function with this job's options (cached per kind, node and
        resources)."""
        remote = self._remotes.get(job.kind)
        if remote is None or remote[0] is not function:  # (new, or registered again)
            runner = make_runner(function.fn, function.takes_context, self.max_result_bytes)
            remote = (function, self._ray.remote(max_retries=0, retry_exceptions=False)(runner))
            self._remotes[job.kind] = remote
            self._options.clear()
        runtime_env = job.metadata.get("runtime_env")
        r = job.resources
        key = (
            job.kind,
            node.node_id,
            r.cpu,
            r.memory_mb,
            r.gpu,
            r.gpus_needed,
            tuple(sorted(r.custom.items())) if r.custom else (),
            repr(runtime_env) if runtime_env else None,
        )
        task = self._options.get(key)
        if task is None:
            options = ray_resources(job.resources)
            if runtime_env:
                options["runtime_env"] = runtime_env
            options["scheduling_strategy"] = self._affinity(node.node_id, soft=False)
            task = remote[1].options(**options)
            if len(self._options) > 1024:
                self._options.clear()
            self._options[key] = task
        return task

    def cancel(self, job_id: str) -> None:
        """Cancel the job's Ray task (``force=True``: its worker is killed); a command's Ray
        job is stopped as its run is cancelled."""
        ref = self._refs.get(job_id)
        if ref is not None:
            self._cancel_ref(ref)

    def _cancel_ref(self, ref: Any) -> None:
        try:
            self._ray.cancel(ref, force=True, recursive=True)
        except Exception:  # (it ended meanwhile)
            _log.debug("ray.cancel failed", exc_info=True)

    async def cancel_orphan(self, job: Job, handle: str) -> None:
        """Stop what a dead scheduler left running: its Ray job (a task died with its driver,
        the dead scheduler: Ray kills the tasks whose owner is gone)."""
        kind, _, ident = handle.partition(":")
        if kind == "job" and self._jobs is not None:
            await self._jobs.stop(ident)
        elif kind == "task":
            _log.info("nsai-work: Ray task %s died with the scheduler that started it", ident)


def _node_trouble(exc: BaseException) -> bool:
    """Whether a Ray error says the task's node or worker died (or its node is gone)."""
    return any(cls.__name__ in _NODE_ERRORS for cls in type(exc).__mro__)


def _gcs_address(ray: Any) -> str | None:
    """The ``host:port`` of the connection's control store (None when Ray does not say, as
    through Ray Client)."""
    try:
        address = ray.get_runtime_context().gcs_address
    except Exception:
        return None
    return address if isinstance(address, str) and ":" in address else None


def _dashboard_url(ray: Any) -> str:
    """The dashboard's address of the current connection (from Ray's control store)."""
    try:
        from ray._private.services import get_webui_url_from_internal_kv

        url = get_webui_url_from_internal_kv()  # type: ignore[no-untyped-call]
    except Exception:
        url = None
    return str(url or "127.0.0.1:8265")


def _check_int(name: str, value: object, least: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ConfigurationError(f"{name} is an int >= {least}, got {value!r}")


def _check_positive(name: str, value: object, *, zero: bool = False) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not (value >= 0 if zero else value > 0)
    ):
        raise ConfigurationError(
            f"{name} is a number of seconds {'>=' if zero else '>'} 0, got {value!r}"
        )


#: The seed's name for it, like ``Mock``.
Ray = RayBackend

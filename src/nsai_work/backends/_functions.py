"""Shared by the local and altar backends: run a registered Python function, async ones as tasks
on the engine's loop and sync ones in a thread pool, each kind in its own pool of slots."""

from __future__ import annotations

from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .._ir import Pool
from ._machine import machine_cpu, machine_gpus, machine_memory_mb
from ._threads import run_in_thread

if TYPE_CHECKING:
    from .._handlers import RegisteredFunction

__all__ = ["FunctionBackend"]

DEFAULT_ASYNC_SLOTS = 256
DEFAULT_THREADS = 16


class FunctionBackend:
    """Base for backends that call an in-process function per job.

    Two pools: ``<name>:async`` (``async_slots`` concurrent coroutines) and ``<name>:threads``
    (``threads`` slots, one per worker thread), each with cpu = cores, memory = RAM and the GPUs
    ``nvidia-smi`` reports (discovered; ``cpu``, ``memory_mb`` and ``gpus`` override).
    """

    name = "function"
    auto_select = True

    def __init__(
        self,
        *,
        threads: int = DEFAULT_THREADS,
        async_slots: int = DEFAULT_ASYNC_SLOTS,
        cpu: float | None = None,
        memory_mb: int | None = None,
        gpus: dict[str, int] | None = None,
    ) -> None:
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {threads!r}")
        if not isinstance(async_slots, int) or async_slots < 1:
            raise ValueError(f"async_slots must be an int >= 1, got {async_slots!r}")
        self.threads = threads
        self.async_slots = async_slots
        self.cpu = machine_cpu() if cpu is None else cpu
        self.memory_mb = machine_memory_mb() if memory_mb is None else memory_mb
        self.gpus = dict(machine_gpus()) if gpus is None else dict(gpus)
        self.async_pool = f"{self.name}:async"
        self.threads_pool = f"{self.name}:threads"
        self._async_route = (self.async_pool,)
        self._threads_route = (self.threads_pool,)
        self._executor: ThreadPoolExecutor | None = None

    # ---- capacity ---------------------------------------------------------------------------

    def pools(self) -> list[Pool]:
        """The two pools: async coroutines and worker threads."""
        return [
            Pool(
                name=self.async_pool,
                slots=self.async_slots,
                cpu=self.cpu,
                memory_mb=self.memory_mb,
                gpus=self.gpus,
                labels={"runs": "async"},
            ),
            Pool(
                name=self.threads_pool,
                slots=self.threads,
                cpu=self.cpu,
                memory_mb=self.memory_mb,
                gpus=self.gpus,
                labels={"runs": "threads"},
            ),
        ]

    def _pools_for_function(self, function: RegisteredFunction | None) -> tuple[str, ...]:
        if function is not None and function.is_async:
            return self._async_route
        return self._threads_route

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Create the thread pool. Threads start lazily; the core's slots bound how many run."""
        if self._executor is None:
            # Sized well above the slots: declared extra pools may also run sync functions, and
            # a timed-out thread keeps its worker until it returns.
            self._executor = ThreadPoolExecutor(
                max_workers=self.threads + 256, thread_name_prefix=f"nsai-{self.name}"
            )

    def stop(self) -> None:
        """Let running threads finish on their own; accept no new ones."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def cancel(self, job_id: str) -> None:
        """Nothing to do here: the engine cancels the task, and a sync function's context says
        ``cancelled`` (threads cannot be killed; the slot is held until the thread returns)."""

    # ---- running ------------------------------------------------------------------------------

    def _call(self, function: RegisteredFunction, *args: Any) -> Awaitable[Any]:
        """What to await for ``function(*args)``: an async function's own coroutine (no extra
        frame on the hot path), or a sync one's call in the thread pool."""
        if function.is_async:
            return function.fn(*args)  # type: ignore[no-any-return]
        if self._executor is None:
            self.start()
        return run_in_thread(self._executor, function.fn, *args)

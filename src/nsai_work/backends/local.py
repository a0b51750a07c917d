"""The local backend: runs registered handlers in this process.

Async handlers run as cancellable tasks on the engine's loop (pool ``local:async``); sync
handlers run in a thread pool (pool ``local:threads``). A job is supported when a handler is
registered for its kind (``@work.handler("kind")``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._errors import NonRetryableError
from .._handlers import HandlerRegistry, default_handlers
from ._functions import DEFAULT_ASYNC_SLOTS, DEFAULT_THREADS, FunctionBackend

if TYPE_CHECKING:
    from .._context import JobContext
    from .._ir import Job

__all__ = ["LocalBackend"]


class LocalBackend(FunctionBackend):
    """Run handlers by job kind, in-process (see the module docstring)."""

    name = "local"

    def __init__(
        self,
        *,
        handlers: HandlerRegistry | None = None,
        threads: int = DEFAULT_THREADS,
        async_slots: int = DEFAULT_ASYNC_SLOTS,
        cpu: float | None = None,
        memory_mb: int | None = None,
        gpus: dict[str, int] | None = None,
    ) -> None:
        super().__init__(
            threads=threads, async_slots=async_slots, cpu=cpu, memory_mb=memory_mb, gpus=gpus
        )
        self.handlers = default_handlers() if handlers is None else handlers

    def supports(self, job: Job) -> bool:
        """True when a handler is registered for the job's kind."""
        return self.handlers.get(job.kind) is not None

    def explain(self, job: Job) -> str:
        """Why this backend does not run ``job``."""
        return (
            f"local has no handler for kind {job.kind!r} (register one with "
            f"@work.handler({job.kind!r}); registered: {self.handlers.kinds()})"
        )

    def pools_for(self, job: Job) -> tuple[str, ...]:
        """``local:async`` for an async handler, ``local:threads`` for a sync one."""
        return self._pools_for_function(self.handlers.get(job.kind))

    async def execute(self, job: Job, ctx: JobContext) -> Any:
        """Call the kind's handler with the job (and ctx when it takes two arguments)."""
        function = self.handlers.get(job.kind)
        if function is None:
            raise NonRetryableError(f"the handler for kind {job.kind!r} was unregistered")
        if function.takes_context:
            return await self._call(function, job, ctx)
        return await self._call(function, job)

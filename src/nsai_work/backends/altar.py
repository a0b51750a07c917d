"""The altar backend: runs ``tool_call`` jobs with tools from the ALTAR registry.

The payload names the tool (``tool_name``, ``function_name``, ``tool`` or ``tool_id``) and passes
``args`` (or ``arguments``), which the tool receives as its one argument. At submit, ``validate``
rejects a call naming an unregistered tool, and checks the arguments against the tool's ADM
declaration: one ``ToolArgumentsError`` lists every violation by path. Async tools run on the
engine's loop (pool ``altar:async``), sync ones in threads (``altar:threads``).

A step of a workflow may take arguments from the results of the steps before it:
``payload["args_from"] = {"text": "proposer.result.text"}`` (see ``_args_from``); those calls are
checked against the declaration when the step runs, with the upstream values in place.

``AltarBackend(enabled=False)`` is the seed's ``enable_altar: false``: it still claims
``tool_call`` jobs (so they are not routed elsewhere) and rejects every one at submit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._errors import NonRetryableError, UnschedulableError, ValidationError
from ..altar import ToolLimits, ToolRegistry, default_registry, resolve_call
from ..core import Limit
from ._args_from import ARGS_FROM, check_args_from, resolve_args_from
from ._functions import DEFAULT_ASYNC_SLOTS, DEFAULT_THREADS, FunctionBackend

if TYPE_CHECKING:
    from .._context import JobContext
    from .._ir import Job

__all__ = ["TOOL_CALL", "AltarBackend"]

TOOL_CALL = "tool_call"


class AltarBackend(FunctionBackend):
    """Run tool calls from a tool registry (the process-wide ``work.altar`` by default)."""

    name = "altar"

    def __init__(
        self,
        *,
        tools: ToolRegistry | None = None,
        threads: int = DEFAULT_THREADS,
        async_slots: int = DEFAULT_ASYNC_SLOTS,
        cpu: float | None = None,
        memory_mb: int | None = None,
        gpus: dict[str, int] | None = None,
        enabled: bool = True,
    ) -> None:
        super().__init__(
            threads=threads, async_slots=async_slots, cpu=cpu, memory_mb=memory_mb, gpus=gpus
        )
        if not isinstance(enabled, bool):
            raise ValueError(f"enabled must be True or False, got {enabled!r}")
        self.tools = default_registry() if tools is None else tools
        self.enabled = enabled

    def supports(self, job: Job) -> bool:
        """True for ``tool_call`` jobs."""
        return job.kind == TOOL_CALL

    def explain(self, job: Job) -> str:
        """Why this backend does not run ``job``."""
        return f"altar runs only kind {TOOL_CALL!r}"

    def validate(self, job: Job) -> None:
        """Reject at submit a call to an unknown tool, or whose arguments break the tool's
        declaration (``ToolArgumentsError`` listing every violation), or any call when ALTAR is
        disabled (``UnschedulableError``)."""
        if not self.enabled:
            raise UnschedulableError(
                "ALTAR is disabled (enable_altar=False): tool_call jobs are rejected; start the "
                "scheduler with ALTAR enabled to run tools - at $.kind"
            )
        if ARGS_FROM in job.payload:  # (its arguments are checked when it is ready)
            check_args_from(job)
            name, _ = resolve_call(job.payload)
            if self.tools.function(name) is None:
                self.tools.check_call(job.payload)  # (raises: an unknown tool, named)
            return
        self.tools.check_call(job.payload)

    def limits_for(self, job: Job) -> ToolLimits:
        """The limits of the tool a ``tool_call`` job calls (all None if it has none), for the
        scheduler to enforce across tenants when it dispatches tool calls."""
        name, _ = resolve_call(job.payload)
        return self.tools.limits(name)

    def shared_limits(self, job: Job) -> tuple[Limit, ...]:
        """The limits the scheduler enforces on this call across tenants: its tool's
        ``max_concurrency`` and ``rate``/``burst`` (none if the tool declares none)."""
        name, _ = resolve_call(job.payload)
        limits = self.tools.limits(name)
        if limits.max_concurrency is None and limits.rate is None:
            return ()
        return (
            Limit(
                name=name,
                max_concurrency=limits.max_concurrency,
                rate=limits.rate,
                burst=limits.burst,
            ),
        )

    def pools_for(self, job: Job) -> tuple[str, ...]:
        """``altar:async`` for an async tool, ``altar:threads`` for a sync one."""
        name, _ = resolve_call(job.payload)
        return self._pools_for_function(self.tools.function(name))

    async def execute(self, job: Job, ctx: JobContext) -> Any:
        """Call the tool with the call's arguments."""
        name, args = resolve_call(job.payload)
        function = self.tools.function(name)
        if function is None:
            raise NonRetryableError(f"the tool {name!r} was unregistered after submit")
        if ARGS_FROM in job.payload:
            args = self._ready_args(job, name, args, ctx)
        return await self._call(function, args)

    def _ready_args(
        self, job: Job, name: str, args: dict[str, Any], ctx: JobContext
    ) -> dict[str, Any]:
        """A step's arguments with those it takes from upstream results (``args_from``),
        checked against the tool's declaration now that the step is ready; a violation fails
        the step (not retried), naming the path."""
        merged = {**args, **resolve_args_from(job.payload[ARGS_FROM], ctx.upstream)}
        try:
            self.tools.check_call({"tool_name": name, "args": merged})
        except ValidationError as exc:
            raise NonRetryableError(f"args_from: {exc}") from None
        return merged

"""The mock backend, for tests: configurable behaviour, an execution history, no real work.

As in the seed, its configuration is process-wide::

    work.backends.Mock.configure(behavior=("fail", "Simulated failure"))
    work.backends.Mock.configure(delay_ms=500)
    work.backends.Mock.history()
    work.backends.Mock.reset()

Behaviours: ``"ok"`` (returns ``{"ok": True, "job_id": ...}``), ``("ok", result)``,
``("fail", message)`` (raises ``RuntimeError(message)``, retried per the job's policy),
``("fail_permanently", message)`` (raises ``NonRetryableError``), ``"hang"`` (runs until
canceled or timed out). It is registered as ``"mock"`` but chosen only when a job names it
(``constraints.backend="mock"``) or the config makes it the default backend.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any, Final

from .._errors import NonRetryableError, ValidationError
from .._ir import Pool

if TYPE_CHECKING:
    from .._context import JobContext
    from .._ir import Job

__all__ = ["Mock", "MockBackend", "MockExecution"]

_BEHAVIORS: Final = ("ok", "fail", "fail_permanently", "hang")


class MockExecution:
    """One call of ``execute``: the job as it was started, and the attempt."""

    __slots__ = ("attempt", "job")

    def __init__(self, job: Job, attempt: int) -> None:
        self.job = job
        self.attempt = attempt

    def __repr__(self) -> str:
        return (
            f"MockExecution(job_id={self.job.id!r}, kind={self.job.kind!r}, attempt={self.attempt})"
        )


class _MockState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.behavior: tuple[str, Any] = ("ok", None)
        self.delay_ms = 0
        self.history: list[MockExecution] = []


def _parse_behavior(behavior: object) -> tuple[str, Any]:
    if isinstance(behavior, str) and behavior in ("ok", "hang"):
        return (behavior, None)
    if (
        isinstance(behavior, tuple)
        and len(behavior) == 2
        and isinstance(behavior[0], str)
        and behavior[0] in _BEHAVIORS
    ):
        return behavior[0], behavior[1]
    raise ValidationError(
        f"behavior is 'ok', ('ok', result), ('fail', message), ('fail_permanently', message) or "
        f"'hang'; got {behavior!r}",
        path="$.behavior",
    )


class _SharedOrOwn:
    """Makes ``configure``/``history``/``reset`` act on the process-wide state when called on the
    class (the seed's API) and on an instance's own state when it has one."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.__doc__ = fn.__doc__

    def __get__(self, obj: MockBackend | None, owner: type[MockBackend]) -> Any:
        state = owner._shared if obj is None else obj._state

        def bound(*args: Any, **kwargs: Any) -> Any:
            return self.fn(state, *args, **kwargs)

        bound.__doc__ = self.fn.__doc__
        return bound


class MockBackend:
    """A backend that pretends to run jobs (see the module docstring).

    ``MockBackend()`` shares the process-wide configuration; ``MockBackend(isolated=True)`` has
    its own, configured with the same methods on the instance.
    """

    auto_select = False
    _shared: Final = _MockState()

    def __init__(self, *, name: str = "mock", slots: int = 64, isolated: bool = False) -> None:
        self.name = name
        self.slots = slots
        self._state = _MockState() if isolated else MockBackend._shared

    @_SharedOrOwn
    def configure(
        state: _MockState,
        *,
        behavior: object = None,
        delay_ms: int | None = None,
    ) -> None:
        """Set the behaviour and/or the delay before it (in ms) for every later execution."""
        parsed = None if behavior is None else _parse_behavior(behavior)
        if delay_ms is not None and (not isinstance(delay_ms, int) or delay_ms < 0):
            raise ValidationError(f"delay_ms is an int >= 0, got {delay_ms!r}", path="$.delay_ms")
        with state.lock:
            if parsed is not None:
                state.behavior = parsed
            if delay_ms is not None:
                state.delay_ms = delay_ms

    @_SharedOrOwn
    def history(state: _MockState) -> list[MockExecution]:
        """Every execution so far, oldest first."""
        with state.lock:
            return list(state.history)

    @_SharedOrOwn
    def reset(state: _MockState) -> None:
        """Back to ``"ok"``, no delay, empty history."""
        with state.lock:
            state.behavior = ("ok", None)
            state.delay_ms = 0
            state.history.clear()

    def supports(self, job: Job) -> bool:
        """The mock runs anything it is given."""
        return True

    def pools(self) -> list[Pool]:
        """One pool of ``slots`` slots."""
        return [Pool(name=self.name, slots=self.slots)]

    async def execute(self, job: Job, ctx: JobContext) -> Any:
        """Record the call, wait ``delay_ms``, then behave as configured."""
        state = self._state
        with state.lock:
            state.history.append(MockExecution(job, ctx.attempt))
            (kind, value), delay_ms = state.behavior, state.delay_ms
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000.0)
        if kind == "ok":
            return {"ok": True, "job_id": job.id} if value is None else value
        if kind == "fail":
            raise RuntimeError(value)
        if kind == "fail_permanently":
            raise NonRetryableError(value)
        await asyncio.Event().wait()  # "hang": until canceled or timed out
        return None  # pragma: no cover

    def cancel(self, job_id: str) -> None:
        """Nothing to stop beyond the task the engine cancels."""


#: The seed's name for the mock backend.
Mock = MockBackend

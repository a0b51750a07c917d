"""The handler registry: which function runs a job of a given kind on the local backend.

Handlers are plain or async functions taking the Job, or ``(job, ctx)`` where ``ctx`` is the
running job's ``JobContext``. Their return value is the job's result (JSON-encodable); raising
fails the attempt; raising ``work.NonRetryableError`` fails the job at once. The registry is
process-wide, as in the seed; a ``LocalBackend(handlers=HandlerRegistry())`` may have its own.

Registration checks what would otherwise fail at run time, once per job: the kind is an
identifier; the function can be called with ``(job)`` or ``(job, ctx)`` (builtins without a
signature pass); a kind a built-in backend runs (``RESERVED_KINDS``) is taken over only with
``replace=True``. ``@handler`` without parentheses registers the function under its
``__name__``.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar, overload

from ._errors import ConflictError, NotFoundError, ValidationError
from ._validate import check_identifier

__all__ = [
    "RESERVED_KINDS",
    "HandlerRegistry",
    "RegisteredFunction",
    "default_handlers",
    "describe_callable",
]

F = TypeVar("F", bound=Callable[..., Any])


class RegisteredFunction:
    """A handler or tool function, with how to call it."""

    __slots__ = ("fn", "is_async", "name", "takes_context")

    def __init__(self, name: str, fn: Callable[..., Any], *, max_args: int) -> None:
        if not callable(fn):
            raise ValidationError(f"{name!r}: expected a function, got {fn!r}", path="$.fn")
        self.name = name
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
        )
        self.takes_context = _positional_count(fn) >= 2 if max_args >= 2 else False


def _positional_count(fn: Callable[..., Any]) -> int:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: call with the job only
        return 1
    count = 0
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            return 2
        if parameter.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            count += 1
    return count


#: Kinds the built-in backends run, and what for: the local backend comes first in the usual
#: order, so a handler for one would take over every such job; that needs ``replace=True``.
RESERVED_KINDS: Final = {
    "tool_call": "the kind of ALTAR tool calls, which the altar backend runs with the tools of "
    "work.altar (add a tool with work.altar.register(name, description, parameters, fn))",
    "command": "the kind of command jobs, which the process backend runs as an executable",
}


def _check_signature(kind: str, entry: RegisteredFunction) -> None:
    """Refuse a function that cannot be called as the local backend will call it."""
    try:
        signature = inspect.signature(entry.fn)
    except (TypeError, ValueError):  # builtins without a signature: they get the benefit
        return
    call = "(job, ctx)" if entry.takes_context else "(job)"
    try:
        signature.bind(*((None, None) if entry.takes_context else (None,)))
    except TypeError as exc:
        raise ValidationError(
            f"a handler is called with (job) or (job, ctx); {describe_callable(entry.fn)}"
            f"{signature} cannot be called as {call} for kind {kind!r} ({exc}) - give it one "
            f"positional parameter for the job and optionally a second for the context, with "
            f"defaults for any others",
            path="$.fn",
        ) from None


def _kind_of(fn: Callable[..., Any]) -> str:
    """The kind a bare ``@handler`` gives ``fn``: its ``__name__``."""
    name = getattr(fn, "__name__", None)
    check_identifier(
        name,
        "$.kind",
        what="a handler's kind (a bare @work.handler takes the function's __name__; pass one "
        "with @work.handler('kind'))",
    )
    return str(name)


def describe_callable(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of a function, for messages."""
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


class HandlerRegistry:
    """Handlers by job kind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_kind: dict[str, RegisteredFunction] = {}
        #: ``get(kind)``: the handler of ``kind``, or None (the dict's own lookup: no Python
        #: frame per job on the hot path).
        self.get: Callable[[str], RegisteredFunction | None] = self._by_kind.get

    def register(self, kind: str, fn: Callable[..., Any], *, replace: bool = False) -> None:
        """Run ``fn`` for jobs of ``kind``; registering a kind twice, or a kind of
        ``RESERVED_KINDS``, needs ``replace=True``. ``fn`` takes ``(job)`` or ``(job, ctx)``."""
        check_identifier(kind, "$.kind", what="a handler's kind")
        entry = RegisteredFunction(kind, fn, max_args=2)
        _check_signature(kind, entry)
        if kind in RESERVED_KINDS and not replace:
            raise ConflictError(
                f"kind {kind!r} is reserved: it is {RESERVED_KINDS[kind]}; a handler for it would "
                f"take over every such job on the local backend. Use another kind, or pass "
                f"replace=True if taking them over is what you want"
            )
        with self._lock:
            if kind in self._by_kind and not replace:
                raise ConflictError(
                    f"a handler for kind {kind!r} is already registered "
                    f"({describe_callable(self._by_kind[kind].fn)}); pass replace=True to swap it"
                )
            self._by_kind[kind] = entry

    @overload
    def handler(self, kind: F, *, replace: bool = False) -> F: ...

    @overload
    def handler(self, kind: str | None = None, *, replace: bool = False) -> Callable[[F], F]: ...

    def handler(
        self, kind: str | F | None = None, *, replace: bool = False
    ) -> F | Callable[[F], F]:
        """Decorator form of ``register``: ``@handler("kind")``; ``@handler`` and ``@handler()``
        take the function's ``__name__`` as the kind."""
        if callable(kind):  # bare @handler: ``kind`` is the function
            self.register(_kind_of(kind), kind, replace=replace)
            return kind
        chosen = kind

        def decorate(fn: F) -> F:
            self.register(chosen if chosen is not None else _kind_of(fn), fn, replace=replace)
            return fn

        return decorate

    def unregister(self, kind: str) -> None:
        """Forget the handler of ``kind`` (``NotFoundError`` if there is none)."""
        with self._lock:
            if self._by_kind.pop(kind, None) is None:
                raise NotFoundError(f"no handler is registered for kind {kind!r}")

    def __contains__(self, kind: object) -> bool:
        return kind in self._by_kind

    def kinds(self) -> list[str]:
        """Every registered kind, sorted."""
        return sorted(self._by_kind)


_DEFAULT: Final = HandlerRegistry()


def default_handlers() -> HandlerRegistry:
    """The process-wide registry that ``work.handler`` and ``work.register_handler`` fill."""
    return _DEFAULT

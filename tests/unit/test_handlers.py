"""Registering handlers: the forms of the decorator, and what registration refuses because it
would only fail at run time (a signature that cannot take the job, a built-in backend's kind)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import pytest

import nsai_work as work
from nsai_work._handlers import RESERVED_KINDS, HandlerRegistry
from nsai_work.backends._process_boundary import COMMAND_KIND


@pytest.fixture
def registry() -> HandlerRegistry:
    return HandlerRegistry()


# ---- the decorator's forms ---------------------------------------------------------------------


def test_a_bare_decorator_registers_under_the_function_name(registry: HandlerRegistry) -> None:
    @registry.handler
    def summarize(job: work.Job) -> str:
        return "ok"

    assert callable(summarize)  # the function is returned, not replaced
    assert summarize(None) == "ok"  # type: ignore[arg-type]
    entry = registry.get("summarize")
    assert entry is not None
    assert entry.fn is summarize


def test_empty_parentheses_use_the_function_name_too(registry: HandlerRegistry) -> None:
    @registry.handler()
    async def embed(job: work.Job, ctx: work.JobContext) -> None:
        return None

    entry = registry.get("embed")
    assert entry is not None
    assert entry.is_async
    assert entry.takes_context


def test_a_named_kind_and_replace_still_work(registry: HandlerRegistry) -> None:
    registry.handler("a.kind")(lambda job: 1)
    registry.handler("a.kind", replace=True)(lambda job: 2)
    entry = registry.get("a.kind")
    assert entry is not None
    assert entry.fn(None) == 2


def test_a_bare_decorator_on_a_lambda_asks_for_a_kind(registry: HandlerRegistry) -> None:
    with pytest.raises(work.ValidationError, match=r"__name__.*@work\.handler\('kind'\)") as info:
        registry.handler(lambda job: None)
    assert "'<lambda>'" in str(info.value)
    assert registry.kinds() == []


@pytest.fixture
def module_kinds() -> Iterator[list[str]]:
    kinds: list[str] = []
    yield kinds
    for kind in kinds:
        work.unregister_handler(kind)


def test_the_module_decorator_supports_the_bare_form(module_kinds: list[str]) -> None:
    @work.handler
    def hardening_bare_handler(job: work.Job) -> int:
        return 7

    module_kinds.append("hardening_bare_handler")
    assert "hardening_bare_handler" in work.default_handlers().kinds()
    assert hardening_bare_handler(None) == 7  # type: ignore[arg-type]


# ---- signatures --------------------------------------------------------------------------------


def _none() -> None:
    return None


def _three(job: Any, ctx: Any, extra: Any) -> None:
    return None


def _keyword_only(*, job: Any) -> None:
    return None


def _required_keyword(job: Any, *, flag: bool) -> None:
    return None


class _NoArgsCall:
    def __call__(self) -> None:
        return None


@pytest.mark.parametrize(
    "fn",
    [_none, _three, _keyword_only, _required_keyword, _NoArgsCall(), lambda: None],
    ids=["no-parameter", "three", "keyword-only", "required-keyword", "object", "lambda"],
)
def test_a_function_that_cannot_take_the_job_is_refused(registry: HandlerRegistry, fn: Any) -> None:
    with pytest.raises(work.ValidationError, match=r"called with \(job\) or \(job, ctx\)") as info:
        registry.register("k", fn)
    assert info.value.path == "$.fn"
    assert "'k'" in str(info.value)
    assert "k" not in registry


def _job(job: Any) -> None:
    return None


def _job_ctx(job: Any, ctx: Any) -> None:
    return None


def _defaults(job: Any, ctx: Any = None, extra: int = 1, *, flag: bool = False) -> None:
    return None


def _star(*args: Any, **kwargs: Any) -> None:
    return None


class _Callable:
    def __call__(self, job: Any) -> None:
        return None


@pytest.mark.parametrize(
    "fn",
    [_job, _job_ctx, _defaults, _star, _Callable(), functools.partial(_three, extra=1), len],
    ids=["job", "job-ctx", "defaults", "star", "object", "partial", "builtin"],
)
def test_functions_that_take_the_job_are_accepted(registry: HandlerRegistry, fn: Any) -> None:
    registry.register("k", fn)
    assert "k" in registry


# ---- reserved kinds ----------------------------------------------------------------------------


def test_the_reserved_kinds_are_the_builtin_backends_kinds() -> None:
    assert set(RESERVED_KINDS) == {"tool_call", COMMAND_KIND}


@pytest.mark.parametrize(
    ("kind", "words"),
    [("tool_call", "ALTAR tool calls"), ("command", "process backend")],
)
def test_a_reserved_kind_needs_replace(registry: HandlerRegistry, kind: str, words: str) -> None:
    with pytest.raises(work.ConflictError, match="replace=True") as info:
        registry.register(kind, _job)
    assert f"kind {kind!r} is reserved" in str(info.value)
    assert words in str(info.value)
    assert kind not in registry
    registry.register(kind, _job, replace=True)
    assert kind in registry


def test_register_handler_refuses_tool_call_without_replace() -> None:
    with pytest.raises(work.ConflictError, match=r"work\.altar\.register"):
        work.register_handler("tool_call", _job)
    assert "tool_call" not in work.default_handlers()

"""ALTAR tools: the one tool registry, ADM declarations, and how a ``tool_call`` job names its tool.

``register(name, description, parameters, fn, *, replace=False, max_concurrency=None,
rate=None, burst=None)`` declares a tool with an ADM schema (the OpenAPI subset LLM function
declarations use; types in capitals: OBJECT, STRING, NUMBER, INTEGER, BOOLEAN, ARRAY) and the
function that runs it: it takes the call's arguments (a dict) as its one argument and returns the
result or raises. The declaration is checked at register (``ValidationError`` naming the path and
the rule) and compiled once into a validator; a ``tool_call`` job's arguments are checked against
it at submit, and every violation is listed in one ``ToolArgumentsError``. ``echo`` is built in.

A tool's name is 1 to 128 characters: an ASCII letter or digit, then letters, digits, ``.``,
``_``, ``:``, ``@`` or ``-`` (``[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}``, the identifier rule of the
Job IR). A tool call names its tool in the payload by the first of ``tool_name``,
``function_name``, ``tool``, ``tool_id`` (two different names is an error) and passes ``args``
(or ``arguments``).

``list()``/``describe(name)`` return ``FunctionDeclaration``s; ``export_openai(strict=...)`` and
``export_gemini()`` give them in the shapes those tool-calling APIs take, by each provider's rules
(``_export.py``); ``from_openai(name, arguments)`` and ``from_gemini(name, arguments)`` turn a
model's call back into the declaration's terms and check it (``_arguments.py``). The rules are
in docs/altar.md.
"""

from __future__ import annotations

import builtins
import functools
import math
import string
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final, overload

from msgspec import Struct

from .._errors import ConflictError, NotFoundError, ValidationError
from .._handlers import RegisteredFunction
from ._adm import ADM_TYPES as _ADM_TYPES_ORDERED
from ._adm import _short, normalize_parameters
from ._arguments import decode_arguments, gemini_arguments, openai_arguments
from ._export import (
    Build,
    ToolExportWarning,
    export,
    gemini_declaration,
    openai_tool,
    to_json_schema,
)
from ._validator import ArgumentsValidator, ToolArgumentsError, Violation

__all__ = [
    "ADM_TYPES",
    "TOOL_NAME_KEYS",
    "ArgumentsValidator",
    "FunctionDeclaration",
    "ToolArgumentsError",
    "ToolExportWarning",
    "ToolLimits",
    "ToolRegistry",
    "Violation",
    "check_arguments",
    "default_registry",
    "describe",
    "export_gemini",
    "export_openai",
    "from_gemini",
    "from_openai",
    "is_registered",
    "limits",
    "list",
    "register",
    "resolve_call",
    "to_json_schema",
    "unregister",
]

ADM_TYPES: Final = frozenset(_ADM_TYPES_ORDERED)
TOOL_NAME_KEYS: Final = ("tool_name", "function_name", "tool", "tool_id")
_ARG_KEYS: Final = ("args", "arguments")

#: A tool's name (as the Job IR's identifiers: tenant ids, namespaces, kinds, pool names).
_NAME_RULE: Final = "[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}"
_NAME_MAX: Final = 128
_NAME_START: Final = frozenset(string.ascii_letters + string.digits)
_NAME_CHARS: Final = _NAME_START | frozenset("._:@-")
_NAME_RULE_TEXT: Final = (
    f"a tool name is 1 to {_NAME_MAX} characters: an ASCII letter or digit, then letters, "
    f"digits, '.', '_', ':', '@' or '-' ({_NAME_RULE})"
)


def _name_problem(name: object) -> str | None:
    """Why ``name`` breaks the tool-name rule, or None if it follows it."""
    if not isinstance(name, str):
        return f"its type is {type(name).__name__}, not str"
    if not name:
        return "it is empty"
    if len(name) > _NAME_MAX:
        return f"it has {len(name):,} characters"
    for index, char in enumerate(name):
        if char not in (_NAME_CHARS if index else _NAME_START):
            return f"its character {char!r} at index {index} is not allowed"
    return None


def _check_name(name: object) -> None:
    """``ValidationError`` at ``$.name`` if ``name`` breaks the tool-name rule."""
    problem = _name_problem(name)
    if problem is None:
        return
    fix = "pass the name as a string"
    if isinstance(name, str):
        cleaned = "".join(c if c in _NAME_CHARS else "_" for c in name[:_NAME_MAX])
        fix = f"rename the tool, for example {cleaned.lstrip('._:@-') or 'my_tool'!r}"
    raise ValidationError(f"{_NAME_RULE_TEXT}; got {_short(name)}: {problem}; {fix}", path="$.name")


class FunctionDeclaration(Struct, frozen=True, kw_only=True):
    """A tool as an LLM sees it: name, description and ADM parameters schema (normalized:
    types in capitals)."""

    name: str
    description: str
    parameters: dict[str, Any]


class ToolLimits(Struct, frozen=True, kw_only=True):
    """A tool's own limits, across every tenant and separate from any job's concurrency group.

    ``max_concurrency``: at most this many calls of the tool run at once (None: no cap).
    ``rate`` and ``burst``: a token bucket; calls start at most ``rate`` per second on average,
    with up to ``burst`` at once after a quiet spell (None: no rate limit). They are for the
    scheduler to enforce when it dispatches ``tool_call`` jobs (``AltarBackend.limits_for``);
    docs/altar.md says what is enforced in this release.
    """

    max_concurrency: int | None = None
    rate: float | None = None
    burst: int | None = None


_NO_LIMITS: Final = ToolLimits()


class _Tool:
    __slots__ = ("declaration", "function", "limits", "validator")

    def __init__(
        self,
        declaration: FunctionDeclaration,
        function: RegisteredFunction,
        validator: ArgumentsValidator,
        limits: ToolLimits,
    ) -> None:
        self.declaration = declaration
        self.function = function
        self.validator = validator
        self.limits = limits


def _check_limits(
    name: str, max_concurrency: int | None, rate: float | None, burst: int | None
) -> ToolLimits:
    if max_concurrency is not None and (
        not isinstance(max_concurrency, int)
        or isinstance(max_concurrency, bool)
        or max_concurrency < 1
    ):
        raise ValidationError(
            f"tool {name!r}: max_concurrency is an int >= 1 (or None for no cap), got "
            f"{max_concurrency!r}",
            path="$.max_concurrency",
        )
    if rate is not None and (
        not isinstance(rate, int | float)
        or isinstance(rate, bool)
        or not math.isfinite(rate)
        or rate <= 0
    ):
        raise ValidationError(
            f"tool {name!r}: rate is calls per second, a finite number > 0 (or None for no "
            f"limit), got {rate!r}",
            path="$.rate",
        )
    if burst is not None:
        if rate is None:
            raise ValidationError(
                f"tool {name!r}: burst sizes the rate limit's bucket, so it needs rate= too",
                path="$.burst",
            )
        if not isinstance(burst, int) or isinstance(burst, bool) or burst < 1:
            raise ValidationError(
                f"tool {name!r}: burst is an int >= 1 (calls that may start at once), got "
                f"{burst!r}",
                path="$.burst",
            )
    if max_concurrency is None and rate is None:
        return _NO_LIMITS
    return ToolLimits(
        max_concurrency=max_concurrency,
        rate=None if rate is None else float(rate),
        burst=None if rate is None else (1 if burst is None else burst),
    )


class ToolRegistry:
    """Tools by name. The process-wide one is ``work.altar``; a backend may have its own."""

    def __init__(self, *, builtins: bool = True) -> None:
        self._lock = threading.Lock()
        self._tools: dict[str, _Tool] = {}
        if builtins:
            self.register(
                "echo",
                "Return the call's arguments unchanged.",
                {"type": "OBJECT"},
                _echo,
            )

    def register(
        self,
        name: str,
        description: str,
        parameters: Mapping[str, Any] | None,
        fn: Callable[..., Any],
        *,
        replace: bool = False,
        max_concurrency: int | None = None,
        rate: float | None = None,
        burst: int | None = None,
    ) -> FunctionDeclaration:
        """Declare a tool; registering a name twice needs ``replace=True``.

        ``name`` matches ``[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}`` (``ValidationError`` at ``$.name``
        otherwise). ``parameters`` is an ADM schema, checked here (``ValidationError`` naming the
        path and the rule) and compiled once; None means the tool takes any arguments object.
        ``max_concurrency``, ``rate`` (calls per second) and ``burst`` are the tool's own limits
        (``limits(name)``).
        """
        _check_name(name)
        if not isinstance(description, str):
            raise ValidationError(
                f"tool {name!r}: description is a string, got {type(description).__name__}",
                path="$.description",
            )
        normalized = normalize_parameters(name, parameters)
        limits = _check_limits(name, max_concurrency, rate, burst)
        declaration = FunctionDeclaration(name=name, description=description, parameters=normalized)
        tool = _Tool(
            declaration,
            RegisteredFunction(name, fn, max_args=1),
            ArgumentsValidator(normalized),
            limits,
        )
        with self._lock:
            if name in self._tools and not replace:
                raise ConflictError(
                    f"a tool named {name!r} is already registered; pass replace=True to swap it"
                )
            self._tools[name] = tool
        return declaration

    def is_registered(self, name: str) -> bool:
        """Whether a tool of this name exists (False for anything that is not a string)."""
        return isinstance(name, str) and name in self._tools

    def unregister(self, name: str) -> None:
        """Remove a tool (``NotFoundError`` if there is none)."""
        _check_is_str(name)
        with self._lock:
            if self._tools.pop(name, None) is None:
                raise NotFoundError(_not_registered(name))

    def list(self) -> builtins.list[FunctionDeclaration]:
        """Every tool's declaration, by name."""
        tools = dict(self._tools)
        return [tools[name].declaration for name in sorted(tools)]

    def describe(self, name: str) -> FunctionDeclaration:
        """One tool's declaration (``NotFoundError`` if unknown)."""
        return self._get(name).declaration

    def limits(self, name: str) -> ToolLimits:
        """One tool's limits (``NotFoundError`` if unknown); all None when it has none."""
        return self._get(name).limits

    def function(self, name: str) -> RegisteredFunction | None:
        """The function behind a tool, or None."""
        tool = self._tools.get(name) if isinstance(name, str) else None
        return None if tool is None else tool.function

    @overload
    def export_openai(self, name: None = None, *, strict: bool = False) -> _Tools: ...
    @overload
    def export_openai(self, name: str, *, strict: bool = False) -> dict[str, Any]: ...
    @overload
    def export_openai(self, name: _Names, *, strict: bool = False) -> _Tools: ...
    def export_openai(
        self, name: str | _Names | None = None, *, strict: bool = False
    ) -> _Tools | dict[str, Any]:
        """Declarations as OpenAI tools (``{"type": "function", "function": {...}}`` with JSON
        Schema parameters): every tool's (by name), one tool's, or those of a list of names.

        ``strict=True``: schemas OpenAI's strict mode takes, marked ``"strict": true``. A tool
        OpenAI cannot take (its name, or a free-form object under strict) raises
        ``ValidationError`` naming the path and the rule when asked for by name; an every-tool
        export leaves it out with a ``ToolExportWarning`` saying why.
        """
        if not isinstance(strict, bool):
            raise ValidationError(f"strict is True or False, got {_short(strict)}", path="$.strict")
        build = functools.partial(openai_tool, strict=strict)
        return self._export(name, build, "OpenAI strict mode" if strict else "OpenAI")

    @overload
    def export_gemini(self, name: None = None) -> _Tools: ...
    @overload
    def export_gemini(self, name: str) -> dict[str, Any]: ...
    @overload
    def export_gemini(self, name: _Names) -> _Tools: ...
    def export_gemini(self, name: str | _Names | None = None) -> _Tools | dict[str, Any]:
        """Declarations as Gemini function declarations (``{"name", "description",
        "parameters"}`` with the ADM schema; a NUMBER or INTEGER enum as a STRING enum of its
        values' spellings): every tool's, one tool's, or those of a list of names. Refusals as
        in ``export_openai``."""
        return self._export(name, gemini_declaration, "Gemini")

    def _export(
        self, name: str | _Names | None, build: Build, provider: str
    ) -> _Tools | dict[str, Any]:
        if name is None:
            return export(self.list(), build, provider=provider, leave_out=True)
        if isinstance(name, str):
            return export([self.describe(name)], build, provider=provider, leave_out=False)[0]
        if not isinstance(name, builtins.list | tuple):
            raise ValidationError(
                f"name is a tool's name, a list of names or None, got {_short(name)}",
                path="$.name",
            )
        declarations = [self.describe(one) for one in name]
        return export(declarations, build, provider=provider, leave_out=False)

    def from_openai(self, name: str, arguments: Any) -> dict[str, Any]:
        """An OpenAI tool call's arguments (a dict, or ``function.arguments``' JSON text) in the
        declaration's terms, checked: the ``null`` that strict mode sends for an optional
        property it leaves out is dropped. ``ToolArgumentsError`` lists every violation."""
        tool = self._get(name)
        args = openai_arguments(tool.declaration.parameters, decode_arguments(arguments))
        return self._checked(name, tool, args)

    def from_gemini(self, name: str, arguments: Any) -> dict[str, Any]:
        """A Gemini function call's ``args`` in the declaration's terms, checked: a numeric enum
        value sent as its STRING spelling becomes the number again, an integral double where
        the declaration says INTEGER an int. ``ToolArgumentsError`` lists every violation."""
        tool = self._get(name)
        args = gemini_arguments(tool.declaration.parameters, decode_arguments(arguments))
        return self._checked(name, tool, args)

    def _checked(self, name: str, tool: _Tool, args: Any) -> dict[str, Any]:
        if not tool.validator.is_valid(args):
            raise ToolArgumentsError(name, tool.validator.violations(args, "$"))
        return args  # type: ignore[no-any-return]  # the validator saw an OBJECT

    def check_arguments(self, name: str, args: Any, *, path: str = "$") -> None:
        """Check arguments against a tool's declaration: ``ToolArgumentsError`` listing every
        violation (paths under ``path``), ``NotFoundError`` for an unknown tool."""
        tool = self._get(name)
        if not tool.validator.is_valid(args):
            raise ToolArgumentsError(name, tool.validator.violations(args, path))

    def check_call(self, payload: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """Resolve and check a tool call's payload: (tool name, arguments).

        ``ValidationError`` for an unclear or unknown tool name; ``ToolArgumentsError`` (a
        ``ValidationError``) listing every violation of the declaration, by path under
        ``$.payload.args`` (or ``$.payload.arguments``).
        """
        name, args = resolve_call(payload)
        tool = self._tools.get(name)
        if tool is None:
            problem = _name_problem(name)
            if problem is None:
                message = (
                    f"unknown tool {name!r}: it is not registered (register it with "
                    f"work.altar.register(name, description, parameters, fn))"
                )
            else:
                message = (
                    f"no tool can be named {_short(name)}: {problem} (tool names match "
                    f"{_NAME_RULE})"
                )
            raise ValidationError(
                f"{message}; registered: {sorted(self._tools)}",
                path="$.payload." + _name_key(payload),
            )
        if not tool.validator.is_valid(args):
            raise ToolArgumentsError(
                name, tool.validator.violations(args, f"$.payload.{_args_key(payload)}")
            )
        return name, args

    def _get(self, name: str) -> _Tool:
        _check_is_str(name)
        tool = self._tools.get(name)
        if tool is None:
            raise NotFoundError(f"{_not_registered(name)}; registered: {sorted(self._tools)}")
        return tool


_Tools = builtins.list[dict[str, Any]]
_Names = builtins.list[str] | tuple[str, ...]


def _check_is_str(name: object) -> None:
    if not isinstance(name, str):
        raise ValidationError(
            f"a tool name is a string, got {type(name).__name__} {_short(name)}", path="$.name"
        )


def _not_registered(name: str) -> str:
    problem = _name_problem(name)
    if problem is None:
        return f"no tool named {name!r} is registered"
    return (
        f"no tool named {_short(name)} is registered, nor can be: {problem} (tool names match "
        f"{_NAME_RULE})"
    )


def _name_key(payload: Mapping[str, Any]) -> str:
    return next((key for key in TOOL_NAME_KEYS if key in payload), "tool_name")


def _args_key(payload: Mapping[str, Any]) -> str:
    return next((key for key in _ARG_KEYS if key in payload), "args")


def resolve_call(payload: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The tool a payload names and the arguments it passes (``ValidationError`` if unclear)."""
    name: str | None = None
    name_key = ""
    for key in TOOL_NAME_KEYS:
        value = payload.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise ValidationError(
                f"a tool name is a non-empty string, got {_short(value)}", path=f"$.payload.{key}"
            )
        if name is None:
            name, name_key = value, key
        elif value != name:
            raise ValidationError(
                f"the payload names two different tools: {name_key}={_short(name)} and "
                f"{key}={_short(value)}",
                path=f"$.payload.{key}",
            )
    if name is None:
        raise ValidationError(
            "a tool_call job names its tool in payload.tool_name (or function_name, tool, tool_id)",
            path="$.payload.tool_name",
        )
    args: Any = {}
    args_key = ""
    for key in _ARG_KEYS:
        if key in payload:
            if args_key and payload[key] != args:
                raise ValidationError(
                    f"the payload passes both {args_key} and {key} with different values",
                    path=f"$.payload.{key}",
                )
            args, args_key = payload[key], key
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ValidationError(
            f"tool arguments are a JSON object (a dict of named arguments), got "
            f"{type(args).__name__}",
            path=f"$.payload.{args_key or 'args'}",
        )
    return name, args


def _echo(args: dict[str, Any]) -> dict[str, Any]:
    return args


_DEFAULT: Final = ToolRegistry()


def default_registry() -> ToolRegistry:
    """The process-wide tool registry (what ``work.altar.register`` fills)."""
    return _DEFAULT


def register(
    name: str,
    description: str,
    parameters: Mapping[str, Any] | None,
    fn: Callable[..., Any],
    *,
    replace: bool = False,
    max_concurrency: int | None = None,
    rate: float | None = None,
    burst: int | None = None,
) -> FunctionDeclaration:
    """Register a tool in the process-wide registry (the seed's argument order).

    See ``ToolRegistry.register``: the ADM schema is checked here, ``replace=True`` swaps an
    existing tool, ``max_concurrency``/``rate``/``burst`` are the tool's own limits.
    """
    return _DEFAULT.register(
        name,
        description,
        parameters,
        fn,
        replace=replace,
        max_concurrency=max_concurrency,
        rate=rate,
        burst=burst,
    )


def is_registered(name: str) -> bool:
    """Whether the process-wide registry has this tool (the seed's ``registered?``)."""
    return _DEFAULT.is_registered(name)


def unregister(name: str) -> None:
    """Remove a tool from the process-wide registry."""
    _DEFAULT.unregister(name)


def list() -> builtins.list[FunctionDeclaration]:
    """Every registered tool's declaration."""
    return _DEFAULT.list()


def describe(name: str) -> FunctionDeclaration:
    """One tool's declaration."""
    return _DEFAULT.describe(name)


def limits(name: str) -> ToolLimits:
    """One tool's limits (``max_concurrency``, ``rate``, ``burst``)."""
    return _DEFAULT.limits(name)


def check_arguments(name: str, args: Any) -> None:
    """Check arguments against a tool's declaration without submitting a job: raises
    ``ToolArgumentsError`` listing every violation by path (``$.filters.date_range.start``)."""
    _DEFAULT.check_arguments(name, args)


@overload
def export_openai(name: None = None, *, strict: bool = False) -> _Tools: ...
@overload
def export_openai(name: str, *, strict: bool = False) -> dict[str, Any]: ...
@overload
def export_openai(name: _Names, *, strict: bool = False) -> _Tools: ...
def export_openai(
    name: str | _Names | None = None, *, strict: bool = False
) -> _Tools | dict[str, Any]:
    """Every tool (or one, or a list) as an OpenAI tool: ``{"type": "function", "function":
    {"name", "description", "parameters"}}``, parameters as JSON Schema with lower-case types;
    ``strict=True`` for strict mode. See ``ToolRegistry.export_openai``."""
    return _DEFAULT.export_openai(name, strict=strict)


@overload
def export_gemini(name: None = None) -> _Tools: ...
@overload
def export_gemini(name: str) -> dict[str, Any]: ...
@overload
def export_gemini(name: _Names) -> _Tools: ...
def export_gemini(name: str | _Names | None = None) -> _Tools | dict[str, Any]:
    """Every tool (or one, or a list) as a Gemini function declaration: ``{"name",
    "description", "parameters"}``, parameters as the ADM schema with upper-case types. See
    ``ToolRegistry.export_gemini``."""
    return _DEFAULT.export_gemini(name)


def from_openai(name: str, arguments: Any) -> dict[str, Any]:
    """An OpenAI tool call's arguments (dict or JSON text), in the declaration's terms and
    checked. See ``ToolRegistry.from_openai``."""
    return _DEFAULT.from_openai(name, arguments)


def from_gemini(name: str, arguments: Any) -> dict[str, Any]:
    """A Gemini function call's args, in the declaration's terms and checked. See
    ``ToolRegistry.from_gemini``."""
    return _DEFAULT.from_gemini(name, arguments)

"""ALTAR tools: the one tool registry, and how a ``tool_call`` job names its tool.

``register(name, description, parameters, fn, *, replace=False)`` declares a tool with an ADM
schema (types in capitals: OBJECT, STRING, NUMBER, INTEGER, BOOLEAN, ARRAY) and the function
that runs it: it takes the call's arguments (a dict) as its one argument and returns the result
or raises. ``echo`` is built in. The ``altar`` backend runs ``tool_call`` jobs from this registry.

A tool call names its tool in the payload by the first of ``tool_name``, ``function_name``,
``tool``, ``tool_id`` (two different names is an error) and passes ``args`` (or ``arguments``).
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final

from msgspec import Struct

from .._errors import ConflictError, NotFoundError, ValidationError
from .._handlers import RegisteredFunction

__all__ = [
    "ADM_TYPES",
    "TOOL_NAME_KEYS",
    "FunctionDeclaration",
    "ToolRegistry",
    "default_registry",
    "describe",
    "is_registered",
    "list",
    "register",
    "resolve_call",
    "unregister",
]

ADM_TYPES: Final = frozenset({"OBJECT", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY"})
TOOL_NAME_KEYS: Final = ("tool_name", "function_name", "tool", "tool_id")
_ARG_KEYS: Final = ("args", "arguments")


class FunctionDeclaration(Struct, frozen=True, kw_only=True):
    """A tool as an LLM sees it: name, description and ADM parameters schema."""

    name: str
    description: str
    parameters: dict[str, Any]


class _Tool:
    __slots__ = ("declaration", "function")

    def __init__(self, declaration: FunctionDeclaration, function: RegisteredFunction) -> None:
        self.declaration = declaration
        self.function = function


def _check_parameters(name: str, parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    if parameters is None:
        return {"type": "OBJECT", "properties": {}}
    if not isinstance(parameters, Mapping):
        raise ValidationError(
            f"tool {name!r}: parameters is an ADM schema (a dict like "
            f"{{'type': 'OBJECT', 'properties': {{...}}}}), got {type(parameters).__name__}",
            path="$.parameters",
        )
    kind = parameters.get("type", "OBJECT")
    if kind not in ADM_TYPES:
        raise ValidationError(
            f"tool {name!r}: ADM type must be one of {sorted(ADM_TYPES)} (in capitals), "
            f"got {kind!r}",
            path="$.parameters.type",
        )
    properties = parameters.get("properties", {})
    if not isinstance(properties, Mapping):
        raise ValidationError(
            f"tool {name!r}: properties must be a dict of property schemas",
            path="$.parameters.properties",
        )
    required = parameters.get("required", [])
    if not isinstance(required, builtins.list | tuple) or not all(
        isinstance(r, str) for r in required
    ):
        raise ValidationError(
            f"tool {name!r}: required must be a list of property names",
            path="$.parameters.required",
        )
    for index, field in enumerate(required):
        if field not in properties:
            raise ValidationError(
                f"tool {name!r}: required names {field!r}, which is not among the properties "
                f"{sorted(properties)}",
                path=f"$.parameters.required[{index}]",
            )
    return dict(parameters)


class ToolRegistry:
    """Tools by name. The process-wide one is ``work.altar``; a backend may have its own."""

    def __init__(self, *, builtins: bool = True) -> None:
        self._lock = threading.Lock()
        self._tools: dict[str, _Tool] = {}
        if builtins:
            self.register(
                "echo",
                "Return the call's arguments unchanged.",
                {"type": "OBJECT", "properties": {}},
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
    ) -> FunctionDeclaration:
        """Declare a tool; registering a name twice needs ``replace=True``."""
        if not isinstance(name, str) or not name:
            raise ValidationError(f"a tool name is a non-empty string, got {name!r}", path="$.name")
        if not isinstance(description, str):
            raise ValidationError(
                f"tool {name!r}: description is a string, got {type(description).__name__}",
                path="$.description",
            )
        declaration = FunctionDeclaration(
            name=name, description=description, parameters=_check_parameters(name, parameters)
        )
        tool = _Tool(declaration, RegisteredFunction(name, fn, max_args=1))
        with self._lock:
            if name in self._tools and not replace:
                raise ConflictError(
                    f"a tool named {name!r} is already registered; pass replace=True to swap it"
                )
            self._tools[name] = tool
        return declaration

    def is_registered(self, name: str) -> bool:
        """Whether a tool of this name exists."""
        return name in self._tools

    def unregister(self, name: str) -> None:
        """Remove a tool (``NotFoundError`` if there is none)."""
        with self._lock:
            if self._tools.pop(name, None) is None:
                raise NotFoundError(f"no tool named {name!r} is registered")

    def list(self) -> builtins.list[FunctionDeclaration]:
        """Every tool's declaration, by name."""
        return [self._tools[name].declaration for name in sorted(self._tools)]

    def describe(self, name: str) -> FunctionDeclaration:
        """One tool's declaration (``NotFoundError`` if unknown)."""
        tool = self._tools.get(name)
        if tool is None:
            raise NotFoundError(f"no tool named {name!r} is registered")
        return tool.declaration

    def function(self, name: str) -> RegisteredFunction | None:
        """The function behind a tool, or None."""
        tool = self._tools.get(name)
        return None if tool is None else tool.function

    def check_call(self, payload: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """Resolve and check a tool call's payload: (tool name, arguments)."""
        name, args = resolve_call(payload)
        tool = self._tools.get(name)
        if tool is None:
            raise ValidationError(
                f"unknown tool {name!r}: it is not registered (register it with "
                f"work.altar.register(name, description, parameters, fn)); registered: "
                f"{sorted(self._tools)}",
                path="$.payload." + _name_key(payload),
            )
        required = tool.declaration.parameters.get("required", ())
        missing = [field for field in required if field not in args]
        if missing:
            raise ValidationError(
                f"tool {name!r} requires {missing[0]!r} in its arguments (required: {[*required]})",
                path=f"$.payload.{_args_key(payload)}.{missing[0]}",
            )
        return name, args


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
                f"a tool name is a non-empty string, got {value!r}", path=f"$.payload.{key}"
            )
        if name is None:
            name, name_key = value, key
        elif value != name:
            raise ValidationError(
                f"the payload names two different tools: {name_key}={name!r} and {key}={value!r}",
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
) -> FunctionDeclaration:
    """Register a tool in the process-wide registry (the seed's argument order)."""
    return _DEFAULT.register(name, description, parameters, fn, replace=replace)


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

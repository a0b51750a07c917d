"""Tool arguments against an ADM schema: each declaration is compiled once into closures.

Every schema node compiles into two functions: ``ok(value) -> bool``, the fast path a valid call
pays (no paths built, no lists allocated), and ``collect(value, path, out)``, which runs only when
``ok`` said no and appends every violation with its path. The two are written side by side so
they agree; a property test checks both against jsonschema.

The rules (docs/altar.md says the same):

- STRING: a ``str``; NUMBER: an ``int`` or a finite ``float``, not a ``bool``; INTEGER: an
  ``int``, not a ``bool`` and not ``1.0``; BOOLEAN: a ``bool``; ARRAY: a ``list`` (or
  ``tuple``); OBJECT: a ``dict``.
- ``None`` (JSON null) only where the schema says ``nullable: true``; an optional property is
  left out, not sent as null.
- An OBJECT that declares ``properties`` is closed: a property it does not declare is a
  violation. An OBJECT without ``properties`` takes any JSON object.
- ``minimum``/``maximum`` and the length and item limits are inclusive; ``pattern`` is searched
  for anywhere in the string (anchor it with ``^...$`` to match the whole) with RE2, in linear
  time (``_pattern.py``); lengths count code points; ``date-time``, ``int32`` and ``int64`` are
  checked (``_formats.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

from .._errors import ValidationError
from ._adm import key_path
from ._formats import INT_SPANS, is_date_time
from ._pattern import compile_search

__all__ = ["ArgumentsValidator", "ToolArgumentsError", "Violation", "compile_schema"]

#: How many violations a ``ToolArgumentsError`` message spells out (``violations`` has all).
MESSAGE_VIOLATIONS: Final = 20

Ok = Callable[[Any], bool]
Collect = Callable[[Any, str, list["Violation"]], None]


class Violation(NamedTuple):
    """One broken rule in a tool call's arguments: where, and what was expected and found."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ToolArgumentsError(ValidationError):
    """A tool call's arguments break its declaration: ``violations`` lists every broken rule.

    ``path`` is the first violation's path; the message lists them all (the first
    ``MESSAGE_VIOLATIONS``, then a count of the rest).
    """

    def __init__(
        self, tool: str, violations: Sequence[Violation], *, index: int | None = None
    ) -> None:
        if not violations:
            raise ValueError("a ToolArgumentsError needs at least one violation")
        self.tool = tool
        self.violations = list(violations)
        count = len(self.violations)
        shown = "; ".join(str(v) for v in self.violations[:MESSAGE_VIOLATIONS])
        if count > MESSAGE_VIOLATIONS:
            shown += f"; and {count - MESSAGE_VIOLATIONS} more"
        message = (
            f"tool {tool!r} was called with invalid arguments ({count} "
            f"violation{'s' if count > 1 else ''}): {shown}. Fix the arguments to match its "
            f"declaration (work.altar.describe({tool!r}))"
        )
        super().__init__(message, path=self.violations[0].path, index=index)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.tool, self.violations, self.index))


def _rebuild(tool: str, violations: list[Violation], index: int | None) -> ToolArgumentsError:
    return ToolArgumentsError(tool, violations, index=index)


class ArgumentsValidator:
    """A compiled ADM schema: ``is_valid(value)`` and ``violations(value, path)``."""

    __slots__ = ("_collect", "_ok")

    def __init__(self, schema: dict[str, Any]) -> None:
        self._ok, self._collect = compile_schema(schema)

    def is_valid(self, value: Any) -> bool:
        """Whether ``value`` conforms (the fast path: no violation is built)."""
        return self._ok(value)

    def violations(self, value: Any, path: str = "$") -> list[Violation]:
        """Every violation in ``value``, with paths under ``path``; empty if it conforms."""
        out: list[Violation] = []
        self._collect(value, path, out)
        return out


def compile_schema(schema: dict[str, Any]) -> tuple[Ok, Collect]:
    """The (``ok``, ``collect``) pair of a normalized schema (see ``normalize_parameters``)."""
    return _COMPILERS[schema["type"]](schema)


# ---- what was found ----------------------------------------------------------------------------


def kind_of(value: Any) -> str:
    """The ADM name of a value's type (``null`` for None)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "INTEGER"
    if isinstance(value, float):
        return "NUMBER"
    if isinstance(value, str):
        return "STRING"
    if isinstance(value, list | tuple):
        return "ARRAY"
    if isinstance(value, dict):
        return "OBJECT"
    return type(value).__name__


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _count(number: float, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _found(value: Any) -> str:
    kind = kind_of(value)
    if kind in ("null", "OBJECT", "ARRAY"):
        return kind
    return f"{kind} ({_short(value)})"


def _type_violation(expected: str, nullable: bool, value: Any) -> str:
    also = " or null" if nullable else ""
    return f"expected {expected}{also}, got {_found(value)}"


# ---- scalars -----------------------------------------------------------------------------------


def _compile_string(schema: dict[str, Any]) -> tuple[Ok, Collect]:
    nullable: bool = schema.get("nullable", False)
    enum = schema.get("enum")
    choices = frozenset(enum) if enum is not None else None
    low: int = schema.get("minLength", 0)
    high: float = schema.get("maxLength", math.inf)
    pattern: str | None = schema.get("pattern")
    search = compile_search(pattern) if pattern is not None else None
    date_time = schema.get("format") == "date-time"
    plain = choices is None and search is None and not date_time and low == 0 and high == math.inf

    def ok_plain(value: Any) -> bool:
        return isinstance(value, str) or (nullable and value is None)

    def ok(value: Any) -> bool:
        if not isinstance(value, str):
            return nullable and value is None
        if choices is not None and value not in choices:
            return False
        if not low <= len(value) <= high:
            return False
        if search is not None and not search(value):
            return False
        return not date_time or is_date_time(value)

    def collect(value: Any, path: str, out: list[Violation]) -> None:
        if not isinstance(value, str):
            if not (nullable and value is None):
                out.append(Violation(path, _type_violation("STRING", nullable, value)))
            return
        if choices is not None and value not in choices:
            out.append(Violation(path, f"expected one of {enum!r}, got {_short(value)}"))
        size = len(value)
        if size < low:
            out.append(
                Violation(
                    path,
                    f"expected at least {_count(low, 'character')}, got {size} ({_short(value)})",
                )
            )
        if size > high:
            out.append(
                Violation(
                    path,
                    f"expected at most {_count(high, 'character')}, got {size} ({_short(value)})",
                )
            )
        if search is not None and not search(value):
            out.append(
                Violation(path, f"expected a string matching {pattern!r}, got {_short(value)}")
            )
        if date_time and not is_date_time(value):
            out.append(
                Violation(
                    path,
                    f"expected an RFC 3339 date-time like '2024-01-31T12:00:00Z' (format "
                    f"date-time), got {_short(value)}",
                )
            )

    return (ok_plain if plain else ok), collect


def _compile_number(schema: dict[str, Any]) -> tuple[Ok, Collect]:
    integer = schema["type"] == "INTEGER"
    expected = schema["type"]
    nullable: bool = schema.get("nullable", False)
    enum = schema.get("enum")
    choices = frozenset(enum) if enum is not None else None
    low: float = schema.get("minimum", -math.inf)
    high: float = schema.get("maximum", math.inf)
    span = INT_SPANS.get(schema.get("format", ""))
    if span is not None:  # int32 / int64: the format's range narrows the limits
        if low < -span:
            low = -span
        if high > span - 1:
            high = span - 1
    accepted: Any = (int,) if integer else (int, float)  # Any: keep `value` unnarrowed
    isfinite = math.isfinite
    plain = choices is None and low == -math.inf and high == math.inf

    def ok_plain_int(value: Any) -> bool:
        if isinstance(value, int) and not isinstance(value, bool):
            return True
        return nullable and value is None

    def ok(value: Any) -> bool:
        if not isinstance(value, accepted) or isinstance(value, bool):
            return nullable and value is None
        if isinstance(value, float) and not isfinite(value):
            return False
        if choices is not None and value not in choices:
            return False
        return not (value < low or value > high)

    def collect(value: Any, path: str, out: list[Violation]) -> None:
        if not isinstance(value, accepted) or isinstance(value, bool):
            if not (nullable and value is None):
                out.append(Violation(path, _type_violation(expected, nullable, value)))
            return
        if isinstance(value, float) and not isfinite(value):
            out.append(Violation(path, f"expected a finite {expected}, got {value!r}"))
            return
        if choices is not None and value not in choices:
            out.append(Violation(path, f"expected one of {enum!r}, got {value!r}"))
        if value < low:
            out.append(Violation(path, f"expected a value >= {low!r}, got {value!r}"))
        if value > high:
            out.append(Violation(path, f"expected a value <= {high!r}, got {value!r}"))

    return (ok_plain_int if plain and integer else ok), collect


def _compile_boolean(schema: dict[str, Any]) -> tuple[Ok, Collect]:
    nullable: bool = schema.get("nullable", False)

    def ok(value: Any) -> bool:
        return isinstance(value, bool) or (nullable and value is None)

    def collect(value: Any, path: str, out: list[Violation]) -> None:
        if not ok(value):
            out.append(Violation(path, _type_violation("BOOLEAN", nullable, value)))

    return ok, collect


# ---- containers --------------------------------------------------------------------------------


def _compile_array(schema: dict[str, Any]) -> tuple[Ok, Collect]:
    nullable: bool = schema.get("nullable", False)
    low: int = schema.get("minItems", 0)
    high: float = schema.get("maxItems", math.inf)
    item_ok, item_collect = compile_schema(schema["items"])

    def ok(value: Any) -> bool:
        if not isinstance(value, list | tuple):
            return nullable and value is None
        if not low <= len(value) <= high:
            return False
        for item in value:  # noqa: SIM110 - a loop is faster than all() over a generator
            if not item_ok(item):
                return False
        return True

    def collect(value: Any, path: str, out: list[Violation]) -> None:
        if not isinstance(value, list | tuple):
            if not (nullable and value is None):
                out.append(Violation(path, _type_violation("ARRAY", nullable, value)))
            return
        size = len(value)
        if size < low:
            out.append(Violation(path, f"expected at least {_count(low, 'item')}, got {size}"))
        if size > high:
            out.append(Violation(path, f"expected at most {_count(high, 'item')}, got {size}"))
        for index, item in enumerate(value):
            if not item_ok(item):
                item_collect(item, f"{path}[{index}]", out)

    return ok, collect


def _compile_object(schema: dict[str, Any]) -> tuple[Ok, Collect]:
    nullable: bool = schema.get("nullable", False)
    declared: dict[str, Any] | None = schema.get("properties")
    if declared is None:  # free-form: any JSON object

        def ok_any(value: Any) -> bool:
            return isinstance(value, dict) or (nullable and value is None)

        def collect_any(value: Any, path: str, out: list[Violation]) -> None:
            if not ok_any(value):
                out.append(Violation(path, _type_violation("OBJECT", nullable, value)))

        return ok_any, collect_any

    compiled = {name: compile_schema(sub) for name, sub in declared.items()}
    checks = {name: pair[0] for name, pair in compiled.items()}
    required: tuple[str, ...] = tuple(schema.get("required", ()))
    names = list(declared)

    def ok(value: Any) -> bool:
        if not isinstance(value, dict):
            return nullable and value is None
        for name in required:
            if name not in value:
                return False
        for name, item in value.items():
            check = checks.get(name)
            if check is None or not check(item):
                return False
        return True

    def collect(value: Any, path: str, out: list[Violation]) -> None:
        if not isinstance(value, dict):
            if not (nullable and value is None):
                out.append(Violation(path, _type_violation("OBJECT", nullable, value)))
            return
        for name, (item_ok, item_collect) in compiled.items():
            if name in value:
                item = value[name]
                if not item_ok(item):
                    item_collect(item, key_path(path, name), out)
            elif name in required:
                out.append(
                    Violation(
                        key_path(path, name),
                        f"missing required property {name!r} (required: {list(required)})",
                    )
                )
        for name in value:
            if name not in checks:
                where = key_path(path, name) if isinstance(name, str) else f"{path}[{name!r}]"
                out.append(
                    Violation(
                        where,
                        f"unknown property {name!r}: undeclared properties are rejected "
                        f"(declared: {names})",
                    )
                )

    return ok, collect


_COMPILERS: Final[dict[str, Callable[[dict[str, Any]], tuple[Ok, Collect]]]] = {
    "OBJECT": _compile_object,
    "ARRAY": _compile_array,
    "STRING": _compile_string,
    "NUMBER": _compile_number,
    "INTEGER": _compile_number,
    "BOOLEAN": _compile_boolean,
}

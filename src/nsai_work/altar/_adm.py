"""ADM schemas: what a tool's ``parameters`` may say, checked once at register.

An ADM schema is the OpenAPI subset that LLM function declarations use (Gemini's ``Schema``,
which ALTAR's ADM follows). ``normalize_parameters`` checks a declaration and returns its
canonical copy (types in capitals, lists as lists); the first rule it breaks raises
``ValidationError`` naming the path (``$.parameters.properties.filters.type``) and the rule.

The keys each type takes (any other key is an error, so a typo never silently loosens a check):

======== ================================================================================
type     keys (besides ``type``, ``description`` and ``nullable``)
======== ================================================================================
OBJECT   ``properties`` (name -> schema), ``required`` (names among the properties),
         ``propertyOrdering`` (Gemini's: every declared property, once each, in order)
ARRAY    ``items`` (mandatory: the schema of every element), ``minItems``, ``maxItems``
STRING   ``enum``, ``minLength``, ``maxLength``, ``pattern``, ``format`` (enum, date-time)
NUMBER   ``enum``, ``minimum``, ``maximum``, ``format`` (float, double)
INTEGER  ``enum``, ``minimum``, ``maximum``, ``format`` (int32, int64)
BOOLEAN  nothing more
======== ================================================================================

Beyond each key's own type, a declaration must be satisfiable as written: a minimum above its
maximum, or an ``enum`` value the schema's other keys refuse (``7`` with ``maximum: 5``, ``"abc"``
with ``maxLength: 2``), is an error. A bound that is a Python ``int`` must be one a double holds
exactly (any up to 2**53; larger ones only if a double has them): the providers' SDKs and most
JSON parsers read numbers as doubles, and a bound they would round is refused rather than
silently moved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from .._errors import ValidationError
from ._formats import INT_SPANS, is_date_time
from ._pattern import PatternError, compile_search

__all__ = [
    "ADM_TYPES",
    "FORMATS",
    "KEYS",
    "MAX_DEPTH",
    "key_path",
    "normalize_parameters",
]

ADM_TYPES: Final = ("OBJECT", "ARRAY", "STRING", "NUMBER", "INTEGER", "BOOLEAN")

_COMMON: Final = ("type", "description", "nullable")
#: The keys a schema of each type may have.
KEYS: Final[dict[str, tuple[str, ...]]] = {
    "OBJECT": (*_COMMON, "properties", "required", "propertyOrdering"),
    "ARRAY": (*_COMMON, "items", "minItems", "maxItems"),
    "STRING": (*_COMMON, "enum", "format", "minLength", "maxLength", "pattern"),
    "NUMBER": (*_COMMON, "enum", "format", "minimum", "maximum"),
    "INTEGER": (*_COMMON, "enum", "format", "minimum", "maximum"),
    "BOOLEAN": _COMMON,
}
#: The ``format`` values each type accepts (Gemini's list). ``date-time``, ``int32`` and
#: ``int64`` are checked; ``enum``, ``float`` and ``double`` are annotations.
FORMATS: Final[dict[str, tuple[str, ...]]] = {
    "STRING": ("enum", "date-time"),
    "NUMBER": ("float", "double"),
    "INTEGER": ("int32", "int64"),
}
#: Deepest nesting of schemas a declaration may have.
MAX_DEPTH: Final = 32

_TYPE_NAMES: Final = {name: name for name in ADM_TYPES} | {name.lower(): name for name in ADM_TYPES}
_KEY_OWNERS: Final = {
    key: [kind for kind in ADM_TYPES if key in KEYS[kind]]
    for kind in ADM_TYPES
    for key in KEYS[kind]
}


def key_path(path: str, key: str) -> str:
    """``path.key``, or ``path['key']`` when the key is not an identifier."""
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{key!r}]"


def normalize_parameters(tool: str, parameters: Any) -> dict[str, Any]:
    """Check a tool's parameters schema and return its canonical copy.

    ``None`` means the tool takes any arguments object (``{"type": "OBJECT"}``, no properties
    declared). The top-level schema is an OBJECT (``type`` may be left out there); every other
    schema names its ``type``. Types are spelled in capitals; lower-case is accepted and
    normalized to capitals.
    """
    if parameters is None:
        return {"type": "OBJECT"}
    if not isinstance(parameters, Mapping):
        raise ValidationError(
            f"tool {tool!r}: parameters is an ADM schema, a dict like "
            f"{{'type': 'OBJECT', 'properties': {{...}}}}; got {type(parameters).__name__}",
            path="$.parameters",
        )
    if "type" not in parameters:
        parameters = {"type": "OBJECT", **parameters}
    normalized = _Checker(tool).schema(parameters, "$.parameters", 0)
    if normalized["type"] != "OBJECT":
        raise ValidationError(
            f"tool {tool!r}: the parameters schema is an OBJECT (a call's arguments are named), "
            f"got {normalized['type']}",
            path="$.parameters.type",
        )
    return normalized


class _Checker:
    """Walks one declaration; ``fail`` raises at the first broken rule."""

    __slots__ = ("tool",)

    def __init__(self, tool: str) -> None:
        self.tool = tool

    def fail(self, path: str, rule: str) -> ValidationError:
        return ValidationError(f"tool {self.tool!r}: {rule}", path=path)

    def schema(self, node: Any, path: str, depth: int) -> dict[str, Any]:
        if depth > MAX_DEPTH:
            raise self.fail(path, f"schemas nest at most {MAX_DEPTH} levels deep")
        if not isinstance(node, Mapping):
            raise self.fail(
                path,
                f"expected a schema (a dict like {{'type': 'STRING'}}), got "
                f"{type(node).__name__} {_short(node)}",
            )
        for key in node:
            if not isinstance(key, str):
                raise self.fail(path, f"schema keys are strings, got {key!r}")
        if "type" not in node:
            raise self.fail(
                f"{path}.type",
                f"a schema names its type, one of {', '.join(ADM_TYPES)}; this one has "
                f"only {sorted(node)}",
            )
        raw = node["type"]
        kind = _TYPE_NAMES.get(raw) if isinstance(raw, str) else None
        if kind is None:
            raise self.fail(
                f"{path}.type",
                f"type must be one of {', '.join(ADM_TYPES)} (capitals; lower-case is accepted "
                f"too), got {raw!r}",
            )
        allowed = KEYS[kind]
        for key in node:
            if key not in allowed:
                raise self.fail(key_path(path, key), self._unknown_key(key, kind))
        out: dict[str, Any] = {}
        for key, value in node.items():
            where = key_path(path, key)
            if key == "type":
                out["type"] = kind
            elif key == "description":
                if not isinstance(value, str):
                    raise self.fail(where, f"description is a string, got {_short(value)}")
                out[key] = value
            elif key == "nullable":
                if not isinstance(value, bool):
                    raise self.fail(where, f"nullable is true or false, got {_short(value)}")
                out[key] = value
            elif key == "properties":
                out[key] = self.properties(value, where, depth)
            elif key == "items":
                out[key] = self.schema(value, where, depth + 1)
            elif key in ("minimum", "maximum"):
                out[key] = self.bound(key, value, where)
            elif key in ("minLength", "maxLength", "minItems", "maxItems"):
                if not _is_int(value) or value < 0:
                    raise self.fail(where, f"{key} is an integer >= 0, got {_short(value)}")
                out[key] = value
            elif key == "pattern":
                out[key] = self.pattern(value, where)
            elif key == "format":
                if value not in FORMATS[kind]:
                    raise self.fail(
                        where,
                        f"format of a {kind} is one of {list(FORMATS[kind])}, got {_short(value)}",
                    )
                out[key] = value
            else:  # enum, required, propertyOrdering: checked below, once the rest is known
                out[key] = value
        if kind == "ARRAY" and "items" not in out:
            raise self.fail(
                f"{path}.items",
                "an ARRAY schema needs items, the schema of its elements (for example "
                "{'type': 'ARRAY', 'items': {'type': 'STRING'}})",
            )
        if "required" in out:
            out["required"] = self.required(out["required"], out.get("properties"), path)
        if "propertyOrdering" in out:
            out["propertyOrdering"] = self.ordering(
                out["propertyOrdering"], out.get("properties"), f"{path}.propertyOrdering"
            )
        for low, high in (
            ("minimum", "maximum"),
            ("minLength", "maxLength"),
            ("minItems", "maxItems"),
        ):
            if low in out and high in out and out[low] > out[high]:
                raise self.fail(
                    f"{path}.{high}",
                    f"{high} ({out[high]!r}) is less than {low} ({out[low]!r}): no value could "
                    f"satisfy both",
                )
        if "enum" in out:
            out["enum"] = self.enum(out["enum"], out, f"{path}.enum")
        return out

    def properties(self, value: Any, path: str, depth: int) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(
                path, f"properties is a dict of name -> schema, got {type(value).__name__}"
            )
        out: dict[str, Any] = {}
        for name, schema in value.items():
            if not isinstance(name, str) or not name:
                raise self.fail(path, f"property names are non-empty strings, got {name!r}")
            out[name] = self.schema(schema, key_path(path, name), depth + 1)
        return out

    def required(self, value: Any, properties: dict[str, Any] | None, path: str) -> list[str]:
        where = f"{path}.required"
        if not isinstance(value, list | tuple):
            raise self.fail(where, f"required is a list of property names, got {_short(value)}")
        seen: set[str] = set()
        for index, name in enumerate(value):
            if not isinstance(name, str):
                raise self.fail(f"{where}[{index}]", f"a property name is a string, got {name!r}")
            if name in seen:
                raise self.fail(f"{where}[{index}]", f"required names {name!r} twice")
            seen.add(name)
            if properties is None or name not in properties:
                declared = sorted(properties or ())
                raise self.fail(
                    f"{where}[{index}]",
                    f"required names {name!r}, which is not among the declared properties "
                    f"{declared}; declare it under properties or drop it from required",
                )
        return list(value)

    def ordering(self, value: Any, properties: dict[str, Any] | None, path: str) -> list[str]:
        declared = list(properties or ())
        rule = (
            f"propertyOrdering lists every declared property once, in the order the model "
            f"should produce them (declared: {declared})"
        )
        if properties is None:
            raise self.fail(path, f"propertyOrdering needs properties to order; {rule}")
        if not isinstance(value, list | tuple):
            raise self.fail(path, f"{rule}; got {_short(value)}")
        seen: set[str] = set()
        for index, name in enumerate(value):
            if not isinstance(name, str) or name not in properties:
                raise self.fail(
                    f"{path}[{index}]", f"{rule}; {_short(name)} is not a declared property"
                )
            if name in seen:
                raise self.fail(f"{path}[{index}]", f"{rule}; it names {name!r} twice")
            seen.add(name)
        missing = [name for name in properties if name not in seen]
        if missing:
            raise self.fail(path, f"{rule}; it leaves out {missing}")
        return list(value)

    def bound(self, key: str, value: Any, path: str) -> Any:
        if not _is_number(value) or not _is_finite(value):
            raise self.fail(path, f"{key} is a finite number, got {_short(value)}")
        if isinstance(value, int) and not _double_holds(value):
            raise self.fail(
                path,
                f"{key} {_short(value)} is not a number a double holds exactly: the providers' "
                f"SDKs and most JSON parsers read numbers as doubles and would move it. Use a "
                f"bound within +-2**53 (9007199254740992), or format int64 for the 64-bit range",
            )
        return value

    def enum(self, value: Any, schema: dict[str, Any], path: str) -> list[Any]:
        kind = schema["type"]
        if not isinstance(value, list | tuple) or not value:
            raise self.fail(path, f"enum is a non-empty list of values, got {_short(value)}")
        seen: list[Any] = []
        for index, item in enumerate(value):
            fits = (
                isinstance(item, str)
                if kind == "STRING"
                else _is_int(item)
                if kind == "INTEGER"
                else _is_number(item) and _is_finite(item)
            )
            if not fits:
                raise self.fail(
                    f"{path}[{index}]", f"an enum value of a {kind} is a {kind}, got {_short(item)}"
                )
            if item in seen:
                raise self.fail(f"{path}[{index}]", f"enum lists {item!r} twice")
            refused = _refused_by(schema, item)
            if refused is not None:
                raise self.fail(
                    f"{path}[{index}]",
                    f"enum lists {_short(item)}, which {refused}: no call could pass it; drop it "
                    f"or widen the schema",
                )
            seen.append(item)
        return list(value)

    def pattern(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"pattern is a regular expression string, got {_short(value)}")
        try:
            compile_search(value)
        except PatternError as exc:
            raise self.fail(
                path,
                f"pattern {_short(value)} is not a valid RE2 regular expression: {exc}. Patterns "
                f"use the RE2 dialect, which matches in linear time so that no pattern can stall "
                f"the scheduler: no look-around, backreferences, atomic groups or possessive "
                f"quantifiers (syntax: https://github.com/google/re2/wiki/Syntax)",
            ) from None
        return value

    def _unknown_key(self, key: str, kind: str) -> str:
        owners = _KEY_OWNERS.get(key)
        if owners:
            names = owners[0] if len(owners) == 1 else f"{', '.join(owners[:-1])} and {owners[-1]}"
            return f"{key} applies to {names}, not to {kind}"
        return (
            f"unknown schema key {key!r}; an ADM {kind} schema takes only {', '.join(KEYS[kind])}"
        )


def _refused_by(schema: dict[str, Any], item: Any) -> str | None:
    """Which of the schema's other keys refuses an enum value, in words (None: none does)."""
    if isinstance(item, str):
        size = len(item)
        if size < schema.get("minLength", 0):
            return f"is shorter than minLength {schema['minLength']}"
        if size > schema.get("maxLength", size):
            return f"is longer than maxLength {schema['maxLength']}"
        pattern = schema.get("pattern")
        if pattern is not None and not compile_search(pattern)(item):
            return f"does not match the pattern {pattern!r}"
        if schema.get("format") == "date-time" and not is_date_time(item):
            return "is not an RFC 3339 date-time (format date-time)"
        return None
    if item < schema.get("minimum", item):
        return f"is below minimum {schema['minimum']!r}"
    if item > schema.get("maximum", item):
        return f"is above maximum {schema['maximum']!r}"
    span = INT_SPANS.get(schema.get("format", ""))
    if span is not None and not -span <= item < span:
        return f"is outside the {schema['format']} range"
    return None


def _is_finite(value: int | float) -> bool:
    """Whether a number is finite (any int is, even one too large for a double)."""
    return isinstance(value, int) or math.isfinite(value)


def _double_holds(value: int) -> bool:
    """Whether a double holds this int exactly (every int up to 2**53 in size, some beyond)."""
    try:
        return float(value) == value
    except OverflowError:
        return False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

"""For random ADM schemas and random values, the compiled validator accepts exactly the values
that conform, judged by an independent oracle: the schema translated to JSON Schema here (not by
the library's export) and checked with ``jsonschema.Draft202012Validator``.

The oracle's adjustments: ``integer`` means a Python ``int`` that is not a ``bool`` (ADM
INTEGER does not take ``1.0``; JSON Schema would), and ``pattern`` has JSON Schema's ECMA-262
meaning, not Python's: jsonschema searches with Python's ``re``, whose ``$`` also matches before a
trailing newline and whose ``\\d`` and ``\\w`` take any Unicode digit or letter, so each pattern
drawn here comes with its ECMA-262 meaning spelled in Python by hand. Values are JSON as a payload
holds it: dicts, lists, str, int, finite float, bool, None.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nsai_work.altar import ArgumentsValidator, to_json_schema
from nsai_work.altar._adm import normalize_parameters

# ---- the oracle ----------------------------------------------------------------------------------


def _strict_int(checker: Any, instance: Any) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


#: Each pattern the schemas use, and what it means in ECMA-262 written for Python's ``re``: ``$``
#: is ``\\Z`` (the very end), ``\\d`` is ``[0-9]``, ``\\w`` is ``[A-Za-z0-9_]``.
ECMA_IN_PYTHON = {
    "^a": r"^a",
    "b$": r"b\Z",
    "^[ab]*$": r"^[ab]*\Z",
    "[0-9]": r"[0-9]",
    "^(a|bb)+$": r"^(a|bb)+\Z",
    "..": r"..",
    "^$": r"^\Z",
    r"\d": r"[0-9]",
    r"^\w+$": r"^[A-Za-z0-9_]+\Z",
}


def _ecma_pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    if validator.is_type(instance, "string") and not re.search(ECMA_IN_PYTHON[pattern], instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


Oracle = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    validators={"pattern": _ecma_pattern},
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _strict_int),
)

_JSON_TYPES = {
    "OBJECT": "object",
    "ARRAY": "array",
    "STRING": "string",
    "NUMBER": "number",
    "INTEGER": "integer",
    "BOOLEAN": "boolean",
}
_COPIED = ("minLength", "maxLength", "pattern", "minimum", "maximum", "minItems", "maxItems")


def oracle_schema(adm: dict[str, Any]) -> dict[str, Any]:
    """ADM -> JSON Schema, written independently of ``nsai_work.altar.to_json_schema``:
    nullable becomes ``anyOf: [null, ...]``, a declared-properties object is closed."""
    core: dict[str, Any] = {"type": _JSON_TYPES[adm["type"]]}
    for key in _COPIED:
        if key in adm:
            core[key] = adm[key]
    if "enum" in adm:
        core["enum"] = adm["enum"]
    if "items" in adm:
        core["items"] = oracle_schema(adm["items"])
    if "properties" in adm:
        core["properties"] = {k: oracle_schema(v) for k, v in adm["properties"].items()}
        core["additionalProperties"] = False
        if adm.get("required"):
            core["required"] = adm["required"]
    if adm.get("nullable"):
        return {"anyOf": [{"type": "null"}, core]}
    return core


# ---- random schemas ------------------------------------------------------------------------------

NAMES = ("a", "b", "query", "date_range", "x y")
PATTERNS = tuple(ECMA_IN_PYTHON)
ALPHABET = "ab0 ü\n٣"  # a newline before which Python's $ matches, a non-ASCII digit
#: Texts on which ECMA-262 (and RE2) and Python's ``re`` disagree for some of the PATTERNS.
DIALECT_TEXTS = ("a\n", "b\n", "ab\n", "\n", "٣", "a٣", "ü", "üa", "a\nb", "")

small_text = st.text(alphabet=ALPHABET, max_size=6)
small_number = st.one_of(
    st.integers(-6, 6),
    st.floats(-6, 6, allow_nan=False, allow_infinity=False).map(lambda f: round(f, 2)),
)


@st.composite
def bounds(draw: st.DrawFn, low_key: str, high_key: str, values: st.SearchStrategy[Any]) -> dict:
    out: dict[str, Any] = {}
    low = draw(st.none() | values)
    high = draw(st.none() | values)
    if low is not None and high is not None and low > high:
        low, high = high, low
    if low is not None:
        out[low_key] = low
    if high is not None:
        out[high_key] = high
    return out


def _common(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind}
    if draw(st.booleans()):
        out["nullable"] = draw(st.booleans())
    if draw(st.integers(0, 5)) == 0:
        out["description"] = draw(small_text)
    return out


@st.composite
def string_schema(draw: st.DrawFn) -> dict[str, Any]:
    out = _common(draw, "STRING")
    out |= draw(bounds("minLength", "maxLength", st.integers(0, 4)))
    if draw(st.booleans()):
        out["pattern"] = draw(st.sampled_from(PATTERNS))
    if draw(st.integers(0, 2)) == 0:
        out["enum"] = draw(st.lists(small_text, min_size=1, max_size=4, unique=True))
    return out


@st.composite
def number_schema(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    out = _common(draw, kind)
    out |= draw(bounds("minimum", "maximum", small_number))
    if draw(st.integers(0, 2)) == 0:
        values = st.integers(-6, 6) if kind == "INTEGER" else small_number
        out["enum"] = draw(st.lists(values, min_size=1, max_size=4, unique_by=float))
    return out


@st.composite
def boolean_schema(draw: st.DrawFn) -> dict[str, Any]:
    return _common(draw, "BOOLEAN")


scalar_schema = st.one_of(
    string_schema(), number_schema("NUMBER"), number_schema("INTEGER"), boolean_schema()
)


@st.composite
def array_schema(draw: st.DrawFn, children: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    out = _common(draw, "ARRAY")
    out["items"] = draw(children)
    out |= draw(bounds("minItems", "maxItems", st.integers(0, 3)))
    return out


@st.composite
def object_schema(
    draw: st.DrawFn, children: st.SearchStrategy[dict[str, Any]], top: bool = False
) -> dict[str, Any]:
    out = {"type": "OBJECT"} if top else _common(draw, "OBJECT")
    if not top and draw(st.integers(0, 4)) == 0:
        return out  # free-form
    names = draw(st.lists(st.sampled_from(NAMES), max_size=4, unique=True))
    out["properties"] = {name: draw(children) for name in names}
    if names and draw(st.booleans()):
        out["required"] = draw(st.lists(st.sampled_from(names), unique=True))
    return out


any_schema = st.recursive(
    scalar_schema,
    lambda children: st.one_of(array_schema(children), object_schema(children)),
    max_leaves=8,
)
top_schema = object_schema(any_schema, top=True)

# ---- random values, often close to the schema ----------------------------------------------------

json_scalar = st.one_of(st.none(), st.booleans(), small_number, small_text)
any_json = st.recursive(
    json_scalar,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(NAMES), children, max_size=3),
    ),
    max_leaves=6,
)


Slot = tuple[Any, Any, dict[str, Any]]  # (container, key or index, schema of the value there)


def draw_near_miss(draw: st.DrawFn, schema: dict[str, Any]) -> Any:
    """A value that just misses the schema (past a limit, a bool for a number, a missing required
    or an undeclared property...), or of another type, or anything JSON."""
    roll = draw(st.integers(0, 5))
    if roll == 0:
        return draw(json_scalar)
    if roll == 1:
        return draw(any_json)
    kind = schema["type"]
    if kind == "STRING":
        low, high = schema.get("minLength", 0), schema.get("maxLength", 6)
        size = draw(st.sampled_from([max(0, low - 1), high + 1]))
        return draw(st.text(alphabet=ALPHABET, min_size=size, max_size=size))
    if kind in ("NUMBER", "INTEGER"):
        low, high = schema.get("minimum", -8), schema.get("maximum", 8)
        return draw(st.sampled_from([low, high, low - 1, high + 1, high + 0.5, True, 1.0, None]))
    if kind == "BOOLEAN":
        return draw(st.sampled_from([0, 1, "true", None]))
    if kind == "ARRAY":
        low, high = schema.get("minItems", 0), schema.get("maxItems", 4)
        size = draw(st.sampled_from([max(0, low - 1), high + 1]))
        return [draw_shaped(draw, schema["items"], []) for _ in range(size)]
    value = draw_shaped(draw, schema, [])
    if isinstance(value, dict) and "properties" in schema:
        if schema.get("required") and draw(st.booleans()):
            value.pop(draw(st.sampled_from(schema["required"])), None)
        else:
            value["zz"] = draw(json_scalar)
    return value


def draw_shaped(draw: st.DrawFn, schema: dict[str, Any], slots: list[Slot]) -> Any:
    """A value of the schema's shape within its limits (a pattern or enum may still miss);
    every nested value's place is appended to ``slots``."""
    kind = schema["type"]
    if schema.get("nullable") and draw(st.integers(0, 5)) == 0:
        return None
    if kind == "STRING":
        if "enum" in schema and draw(st.booleans()):
            return draw(st.sampled_from(schema["enum"]))
        if "pattern" in schema and draw(st.booleans()):
            return draw(st.sampled_from(DIALECT_TEXTS))
        low, high = schema.get("minLength", 0), schema.get("maxLength", 6)
        return draw(st.text(alphabet=ALPHABET, min_size=low, max_size=max(low, high)))
    if kind in ("NUMBER", "INTEGER"):
        if "enum" in schema and draw(st.booleans()):
            return draw(st.sampled_from(schema["enum"]))
        low, high = schema.get("minimum", -8), schema.get("maximum", 8)
        if draw(st.integers(0, 3)) == 0:
            return draw(st.sampled_from([low, high]))
        if kind == "NUMBER" and low < high and draw(st.booleans()):
            return draw(st.floats(low, high, allow_nan=False, allow_infinity=False))
        low, high = math.ceil(low), math.floor(high)
        return draw(st.integers(low, high) if low <= high else st.integers(-8, 8))
    if kind == "BOOLEAN":
        return draw(st.booleans())
    if kind == "ARRAY":
        low = schema.get("minItems", 0)
        size = draw(st.integers(low, max(low, min(schema.get("maxItems", 4), low + 3))))
        items: list[Any] = []
        for index in range(size):
            items.append(draw_shaped(draw, schema["items"], slots))
            slots.append((items, index, schema["items"]))
        return items
    if "properties" not in schema:
        return draw(st.dictionaries(small_text, any_json, max_size=3))
    required = schema.get("required", [])
    out: dict[str, Any] = {}
    for name, sub in schema["properties"].items():
        if name in required or draw(st.integers(0, 3)):  # optional ones mostly present
            out[name] = draw_shaped(draw, sub, slots)
            slots.append((out, name, sub))
    return out


@st.composite
def schema_and_value(draw: st.DrawFn) -> tuple[dict[str, Any], Any]:
    """A random schema and a value for it: about half the time one of its nested values (or the
    whole) is swapped for a near miss, so that one rule decides."""
    schema = draw(top_schema)
    slots: list[Slot] = []
    value = draw_shaped(draw, schema, slots)
    if draw(st.booleans()):
        place = draw(st.integers(0, len(slots)))
        if place == len(slots):
            value = draw_near_miss(draw, schema)
        else:
            container, key, sub = slots[place]
            container[key] = draw_near_miss(draw, sub)
    return schema, value


# ---- the properties ------------------------------------------------------------------------------


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema_and_value())
def test_the_validator_accepts_exactly_what_the_oracle_accepts(
    case: tuple[dict[str, Any], Any],
) -> None:
    schema, value = case
    assert normalize_parameters("t", schema) == schema  # a valid declaration, already canonical
    validator = ArgumentsValidator(schema)
    oracle = Oracle(oracle_schema(schema))
    expected = oracle.is_valid(value)

    assert validator.is_valid(value) == expected, (schema, value, list(oracle.iter_errors(value)))
    violations = validator.violations(value, "$.payload.args")
    assert bool(violations) != expected, (schema, value, violations)
    assert all(v.path.startswith("$.payload.args") and v.message for v in violations)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(PATTERNS),
    st.sampled_from(DIALECT_TEXTS) | st.text(alphabet=ALPHABET, max_size=6),
)
def test_a_pattern_means_what_it_means_in_json_schema(pattern: str, text: str) -> None:
    schema = {"type": "OBJECT", "properties": {"s": {"type": "STRING", "pattern": pattern}}}
    expected = Oracle(oracle_schema(schema)).is_valid({"s": text})
    assert ArgumentsValidator(schema).is_valid({"s": text}) == expected, (pattern, text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema_and_value())
def test_the_openai_export_accepts_the_same_values(case: tuple[dict[str, Any], Any]) -> None:
    schema, value = case
    exported = to_json_schema(schema)
    Oracle.check_schema(exported)
    assert Oracle(exported).is_valid(value) == ArgumentsValidator(schema).is_valid(value), (
        schema,
        value,
    )


@settings(max_examples=200, deadline=None)
@given(top_schema)
def test_lower_case_types_normalize_to_the_same_declaration(schema: dict[str, Any]) -> None:
    def lower(node: dict[str, Any]) -> dict[str, Any]:
        out = {**node, "type": node["type"].lower()}
        if "items" in node:
            out["items"] = lower(node["items"])
        if "properties" in node:
            out["properties"] = {k: lower(v) for k, v in node["properties"].items()}
        return out

    assert normalize_parameters("t", lower(schema)) == schema

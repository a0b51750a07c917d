"""For random ADM schemas and random values, the compiled validator accepts exactly the values
that conform, judged by an independent oracle: the schema translated to JSON Schema here (not by
the library's export) and checked with ``jsonschema.Draft202012Validator``.

The schemas use every ADM key, ``pattern`` and ``format`` included, and the oracle runs with
jsonschema's format checker on (``date-time`` is rfc3339-validator's check). ``int32``/``int64``
are OpenAPI formats JSON Schema does not know: the oracle spells them as bounds.

The documented exceptions, where the oracle departs from plain jsonschema:

- ``integer`` means a Python ``int`` that is not a ``bool``: ADM INTEGER does not take ``1.0``
  (integers sent as floats); JSON Schema would. Non-finite numbers are never drawn (a payload
  cannot hold them; the validator refuses them, tests/unit/test_adm_validation.py).
- ``pattern`` has JSON Schema's ECMA-262 meaning, not Python's: jsonschema searches with Python's
  ``re``, whose ``$`` also matches before a trailing newline and whose ``\\d`` and ``\\w`` take
  any Unicode digit or letter, so each pattern drawn here comes with its ECMA-262 meaning spelled
  in Python by hand.
- ``date-time`` as JSON Schema's test suite reads RFC 3339, where rfc3339-validator departs from
  it: a leap second is valid at 23:59:60 UTC (rfc3339-validator refuses every leap second), and
  a trailing newline is not (its ``$`` lets one through).

Values are JSON as a payload holds it: dicts, lists, str, int, finite float, bool, None.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nsai_work import ValidationError
from nsai_work.altar import ArgumentsValidator, to_json_schema
from nsai_work.altar._adm import normalize_parameters
from nsai_work.altar._arguments import openai_arguments

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
    r"^C[0-9]{6}$": r"^C[0-9]{6}\Z",
    "[0-9]{4}-": "[0-9]{4}-",
}


def _ecma_pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    if validator.is_type(instance, "string") and not re.search(ECMA_IN_PYTHON[pattern], instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


FORMATS = jsonschema.FormatChecker()
_rfc3339 = FORMATS.checkers["date-time"][0]
assert _rfc3339("2024-01-31T12:00:00Z")
assert not _rfc3339("2024-02-30T12:00:00Z")


@FORMATS.checks("date-time")
def _date_time(instance: object) -> bool:
    """jsonschema's check, with the two departures of the module docstring put right."""
    if not isinstance(instance, str):
        return True
    if instance.endswith("\n"):
        return False
    if (
        len(instance) > 19
        and instance[16:20] == ":60" + instance[19:20]
        and instance[19] in ".Zz+-"
    ):
        second = instance[:17] + "59" + instance[19:]
        if not _rfc3339(second):
            return False
        when = dt.datetime.fromisoformat(second.upper().replace("Z", "+00:00"))
        offset = when.utcoffset()
        assert offset is not None
        utc = dt.datetime.combine(dt.date(2000, 1, 1), when.time()) - offset  # no year 0 here
        return (utc.hour, utc.minute) == (23, 59)
    return bool(_rfc3339(instance))


Oracle = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    validators={"pattern": _ecma_pattern},
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _strict_int),
)


def oracle(schema: dict[str, Any]) -> Any:
    """The oracle's validator of a JSON Schema, with the format checker on."""
    return Oracle(schema, format_checker=FORMATS)


_JSON_TYPES = {
    "OBJECT": "object",
    "ARRAY": "array",
    "STRING": "string",
    "NUMBER": "number",
    "INTEGER": "integer",
    "BOOLEAN": "boolean",
}
_COPIED = (
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "format",
)
_INT_FORMATS = {"int32": 31, "int64": 63}


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
    if adm.get("format") in _INT_FORMATS:
        bits = _INT_FORMATS[adm["format"]]
        core = {"allOf": [core, {"minimum": -(2**bits), "maximum": 2**bits - 1}]}
    if adm.get("propertyOrdering"):
        assert sorted(adm["propertyOrdering"]) == sorted(adm["properties"])
    if adm.get("nullable"):
        return {"anyOf": [{"type": "null"}, core]}
    return core


# ---- random schemas ------------------------------------------------------------------------------

NAMES = ("a", "b", "query", "date_range", "x y")
PATTERNS = tuple(ECMA_IN_PYTHON)
ALPHABET = "ab0 ü\n٣"  # a newline before which Python's $ matches, a non-ASCII digit
#: Texts on which ECMA-262 (and RE2) and Python's ``re`` disagree for some of the PATTERNS.
DIALECT_TEXTS = (
    "a\n",
    "b\n",
    "ab\n",
    "\n",
    "٣",
    "a٣",
    "ü",
    "üa",
    "a\nb",
    "",
    "C123456",
    "C123456\n",
)


#: The parts of an RFC 3339 date-time: valid choices first, then ones that break it.
_DATE_TIME_PARTS = (
    (["0001", "1998", "2023", "2024"], ["0000", "٢٠٢٤", "999"]),
    (["-"], ["/"]),
    (["01", "02", "06", "12"], ["13", "00"]),
    (["-"], [""]),
    (["01", "28", "29", "30", "31"], ["32", "00"]),
    (["T", "t"], [" "]),
    (["00", "05", "15", "22", "23"], ["24"]),
    ([":"], ["."]),
    (["00", "29", "58", "59"], ["60"]),
    ([":"], [""]),
    (["00", "59", "60"], ["61"]),
    (["", ".5", ".123456"], ["."]),
    (["Z", "z", "+00:00", "-08:00", "+05:30", "+01:00"], ["+24:00", "", "+0100"]),
    ([""], ["\n", " "]),
)


#: (hour, minute, offset): the first four are 23:59 in UTC, the rest are not.
_LEAP_MINUTES = (
    ("23", "59", "Z"),
    ("15", "59", "-08:00"),
    ("05", "29", "+05:30"),
    ("00", "59", "+01:00"),
    ("23", "59", "+01:00"),
    ("23", "58", "Z"),
    ("22", "59", "z"),
    ("00", "59", "-01:00"),
)


@st.composite
def date_time_text(draw: st.DrawFn) -> str:
    """Strings near RFC 3339 date-times: mostly well formed (leap seconds at every kind of
    minute and offset, days past the end of a month, lower-case letters), about half with one
    part broken (year 0, a trailing newline, hour 24...)."""
    parts = [draw(st.sampled_from(good)) for good, _ in _DATE_TIME_PARTS]
    if draw(st.integers(0, 3)) == 0:  # a leap second, at 23:59 UTC or a minute near it
        parts[6], parts[8], parts[12] = draw(st.sampled_from(_LEAP_MINUTES))
        parts[10] = "60"
    if draw(st.booleans()):
        index = draw(st.integers(0, len(_DATE_TIME_PARTS) - 1))
        parts[index] = draw(st.sampled_from(_DATE_TIME_PARTS[index][1]))
    return "".join(parts)


small_text = st.text(alphabet=ALPHABET, max_size=6)
#: Integers at the edges of the int32 and int64 formats.
BIG_INTS = tuple(
    edge + step for bits in (31, 63) for edge in (2**bits, -(2**bits)) for step in (-1, 0, 1)
)
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


def _enum_fits(schema: dict[str, Any], value: Any) -> bool:
    """Whether the schema's other keys take an enum value (``register`` refuses one they do
    not): judged by the oracle, on the schema without its enum."""
    bare = {key: item for key, item in schema.items() if key not in ("enum", "nullable")}
    return bool(oracle(oracle_schema(bare)).is_valid(value))


def _fitting_enum(draw: st.DrawFn, schema: dict[str, Any], values: list[Any]) -> dict[str, Any]:
    kept = [value for value in values if _enum_fits(schema, value)]
    return {**schema, "enum": kept} if kept else schema


@st.composite
def string_schema(draw: st.DrawFn) -> dict[str, Any]:
    out = _common(draw, "STRING")
    out |= draw(bounds("minLength", "maxLength", st.integers(0, 4)))
    if draw(st.booleans()):
        out["pattern"] = draw(st.sampled_from(PATTERNS))
    if draw(st.integers(0, 2)) == 0:
        out["format"] = draw(st.sampled_from(["date-time", "date-time", "enum"]))
        if out["format"] == "date-time":
            out.pop("minLength", None)
            out.pop("maxLength", None)
    if draw(st.integers(0, 2)) == 0:
        texts = small_text | date_time_text() if "format" in out else small_text
        out = _fitting_enum(draw, out, draw(st.lists(texts, min_size=1, max_size=4, unique=True)))
    return out


@st.composite
def number_schema(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    out = _common(draw, kind)
    out |= draw(bounds("minimum", "maximum", small_number))
    if draw(st.integers(0, 2)) == 0:
        formats = ["int32", "int64"] if kind == "INTEGER" else ["float", "double"]
        out["format"] = draw(st.sampled_from(formats))
    if draw(st.integers(0, 2)) == 0:
        values = (
            (st.integers(-6, 6) | st.sampled_from(BIG_INTS)) if kind == "INTEGER" else small_number
        )
        out = _fitting_enum(
            draw, out, draw(st.lists(values, min_size=1, max_size=4, unique_by=float))
        )
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
    if draw(st.integers(0, 3)) == 0:
        out["propertyOrdering"] = draw(st.permutations(names))
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
        edges = [low, high, low - 1, high + 1, high + 0.5, True, 1.0, None, *BIG_INTS]
        return draw(st.sampled_from(edges))
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
        if schema.get("format") == "date-time" and draw(st.integers(0, 3)):
            return draw(date_time_text())
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
        if kind == "INTEGER" and "format" in schema and draw(st.integers(0, 3)) == 0:
            return draw(st.sampled_from(BIG_INTS))
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
    judge = oracle(oracle_schema(schema))
    expected = judge.is_valid(value)

    assert validator.is_valid(value) == expected, (schema, value, list(judge.iter_errors(value)))
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
    expected = oracle(oracle_schema(schema)).is_valid({"s": text})
    assert ArgumentsValidator(schema).is_valid({"s": text}) == expected, (pattern, text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema_and_value())
def test_the_openai_export_accepts_the_same_values(case: tuple[dict[str, Any], Any]) -> None:
    schema, value = case
    exported = to_json_schema(schema)
    Oracle.check_schema(exported)
    assert oracle(exported).is_valid(value) == ArgumentsValidator(schema).is_valid(value), (
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


@settings(max_examples=300, deadline=None)
@given(date_time_text())
def test_date_time_means_what_json_schema_says(text: str) -> None:
    schema = {"type": "OBJECT", "properties": {"t": {"type": "STRING", "format": "date-time"}}}
    assert ArgumentsValidator(schema).is_valid({"t": text}) == _date_time(text), text


# ---- strict mode ---------------------------------------------------------------------------------


def _free_form(schema: dict[str, Any]) -> bool:
    """Whether an OBJECT without properties is anywhere in the schema."""
    if schema["type"] == "OBJECT":
        props = schema.get("properties")
        return props is None or any(_free_form(sub) for sub in props.values())
    return schema["type"] == "ARRAY" and _free_form(schema["items"])


def _as_strict_model_sends(schema: dict[str, Any], value: Any) -> Any:
    """``value`` as a model in strict mode sends it: every declared property present, null for
    one the value leaves out."""
    if schema["type"] == "OBJECT" and isinstance(value, dict) and "properties" in schema:
        out = {}
        for name, sub in schema["properties"].items():
            out[name] = _as_strict_model_sends(sub, value[name]) if name in value else None
        return out | {k: v for k, v in value.items() if k not in schema["properties"]}
    if schema["type"] == "ARRAY" and isinstance(value, list):
        return [_as_strict_model_sends(schema["items"], item) for item in value]
    return value


def _without_lengths(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema less ``minLength``/``maxLength``, which strict mode says in words only."""
    out = {k: v for k, v in schema.items() if k not in ("minLength", "maxLength")}
    if "properties" in out:
        out["properties"] = {k: _without_lengths(v) for k, v in out["properties"].items()}
    if "items" in out:
        out["items"] = _without_lengths(out["items"])
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema_and_value())
def test_the_strict_export_takes_what_the_validator_takes(case: tuple[dict[str, Any], Any]) -> None:
    """What a model constrained by the strict schema may send, mapped back by
    ``openai_arguments``, is what the validator accepts (lengths aside: strict mode has none)."""
    schema, value = case
    if _free_form(schema):
        with pytest.raises(ValidationError, match="free-form OBJECT"):
            to_json_schema(schema, strict=True)
        return
    strict = to_json_schema(schema, strict=True)
    Oracle.check_schema(strict)
    sent = _as_strict_model_sends(schema, value)
    back = openai_arguments(schema, sent)
    relaxed = ArgumentsValidator(_without_lengths(schema))
    assert oracle(strict).is_valid(sent) == relaxed.is_valid(back), (schema, sent, back)

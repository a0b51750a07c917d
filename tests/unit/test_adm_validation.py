"""Tool arguments against their declaration: every rule, every violation listed by path, and
the error's shape. No scheduler here (tests/integration/test_altar.py submits)."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest

import nsai_work as work
from nsai_work.altar import ArgumentsValidator, ToolArgumentsError, ToolRegistry, Violation
from nsai_work.altar._adm import normalize_parameters
from nsai_work.altar._pattern import compile_search
from tests._adm_schemas import SEARCH


def validator(schema: dict[str, Any]) -> ArgumentsValidator:
    return ArgumentsValidator(normalize_parameters("t", schema))


def one(schema: dict[str, Any]) -> ArgumentsValidator:
    """A validator of ``{"v": schema}`` with ``v`` required."""
    return validator({"type": "OBJECT", "properties": {"v": schema}, "required": ["v"]})


def messages(v: ArgumentsValidator, value: Any) -> list[str]:
    found = [str(x) for x in v.violations(value)]
    assert (not found) == v.is_valid(value), (found, v.is_valid(value))
    return found


# ---- types ---------------------------------------------------------------------------------------

ACCEPTS: list[tuple[str, Any, list[Any], list[tuple[Any, str]]]] = [
    (
        "STRING",
        {"type": "STRING"},
        ["", "abc", "ü"],
        [(1, "INTEGER (1)"), (None, "null"), (["a"], "ARRAY"), (True, "BOOLEAN (True)")],
    ),
    (
        "NUMBER",
        {"type": "NUMBER"},
        [0, -3, 2.5, 10**30],
        [(True, "BOOLEAN (True)"), ("1", "STRING ('1')"), (None, "null"), ({}, "OBJECT")],
    ),
    (
        "INTEGER",
        {"type": "INTEGER"},
        [0, -7, 10**30],
        [(1.0, "NUMBER (1.0)"), (1.5, "NUMBER (1.5)"), (False, "BOOLEAN (False)"), ("1", "STR")],
    ),
    (
        "BOOLEAN",
        {"type": "BOOLEAN"},
        [True, False],
        [(0, "INTEGER (0)"), (1, "INTEGER (1)"), ("true", "STRING"), (None, "null")],
    ),
    (
        "ARRAY",
        {"type": "ARRAY", "items": {"type": "INTEGER"}},
        [[], [1, 2], (1, 2)],
        [("12", "STRING"), ({"0": 1}, "OBJECT"), (None, "null")],
    ),
    (
        "OBJECT",
        {"type": "OBJECT"},
        [{}, {"any": [1, {"thing": None}]}],
        [([], "ARRAY"), ("{}", "STRING"), (None, "null")],
    ),
]


@pytest.mark.parametrize(
    ("schema", "good", "bad"), [c[1:] for c in ACCEPTS], ids=[c[0] for c in ACCEPTS]
)
def test_each_type_accepts_its_values_only(
    schema: dict[str, Any], good: list[Any], bad: list[tuple[Any, str]]
) -> None:
    v = one(schema)
    for value in good:
        assert messages(v, {"v": value}) == [], value
    for value, found in bad:
        (message,) = messages(v, {"v": value})
        assert message.startswith(f"$.v: expected {schema['type']}, got {found}"), message


def test_non_finite_numbers_are_refused() -> None:
    v = one({"type": "NUMBER"})
    assert messages(v, {"v": float("nan")}) == ["$.v: expected a finite NUMBER, got nan"]
    assert messages(v, {"v": float("-inf")}) == ["$.v: expected a finite NUMBER, got -inf"]


def test_nullable_accepts_null_whatever_else_the_schema_says() -> None:
    v = one({"type": "STRING", "nullable": True, "enum": ["a"], "minLength": 1})
    assert messages(v, {"v": None}) == []
    assert messages(v, {"v": 3}) == ["$.v: expected STRING or null, got INTEGER (3)"]
    for kind in ("NUMBER", "INTEGER", "BOOLEAN", "OBJECT"):
        assert messages(one({"type": kind, "nullable": True}), {"v": None}) == []
    array = one({"type": "ARRAY", "items": {"type": "STRING"}, "nullable": True})
    assert messages(array, {"v": None}) == []
    assert messages(array, {"v": [None]}) == ["$.v[0]: expected STRING, got null"]


# ---- objects: required, unknown, free-form ------------------------------------------------------


def test_a_missing_required_property_is_named_by_its_path() -> None:
    v = validator(SEARCH)
    assert messages(v, {}) == ["$.query: missing required property 'query' (required: ['query'])"]


def test_optional_properties_may_be_left_out_but_not_sent_as_null() -> None:
    v = validator(SEARCH)
    assert messages(v, {"query": "q"}) == []
    assert messages(v, {"query": "q", "limit": None}) == ["$.limit: expected NUMBER, got null"]


def test_undeclared_properties_are_rejected_at_every_level() -> None:
    v = validator(SEARCH)
    found = messages(
        v, {"query": "q", "lmit": 3, "filters": {"date_range": {"start": "a", "stop": "b"}}}
    )
    assert found == [
        "$.filters.date_range.stop: unknown property 'stop': undeclared properties are rejected "
        "(declared: ['start', 'end'])",
        "$.lmit: unknown property 'lmit': undeclared properties are rejected (declared: "
        "['query', 'limit', 'filters'])",
    ]


def test_an_object_with_empty_properties_takes_no_properties() -> None:
    v = validator({"type": "OBJECT", "properties": {}})
    assert messages(v, {}) == []
    assert messages(v, {"x": 1}) == [
        "$.x: unknown property 'x': undeclared properties are rejected (declared: [])"
    ]


def test_an_object_without_properties_is_free_form() -> None:
    v = one({"type": "OBJECT", "description": "SNO graph"})
    assert messages(v, {"v": {"claims": ["a"], "edges": [[0, 1]], "meta": None}}) == []


def test_odd_property_names_get_bracket_paths() -> None:
    v = validator({"properties": {"date range": {"type": "STRING"}}})
    assert messages(v, {"date range": 1}) == ["$['date range']: expected STRING, got INTEGER (1)"]
    assert messages(v, {"a.b": 1})[0].startswith("$['a.b']: unknown property 'a.b'")


# ---- limits --------------------------------------------------------------------------------------


def test_string_limits() -> None:
    v = one({"type": "STRING", "minLength": 2, "maxLength": 3, "pattern": "^[a-z]+$"})
    assert messages(v, {"v": "ab"}) == []
    assert messages(v, {"v": "abc"}) == []
    assert messages(v, {"v": "a"}) == ["$.v: expected at least 2 characters, got 1 ('a')"]
    assert messages(v, {"v": "abcd"}) == ["$.v: expected at most 3 characters, got 4 ('abcd')"]
    assert messages(v, {"v": "A1"}) == ["$.v: expected a string matching '^[a-z]+$', got 'A1'"]
    assert messages(v, {"v": "ABCDE"}) == [
        "$.v: expected at most 3 characters, got 5 ('ABCDE')",
        "$.v: expected a string matching '^[a-z]+$', got 'ABCDE'",
    ]


def test_lengths_count_code_points() -> None:
    v = one({"type": "STRING", "maxLength": 2})
    assert messages(v, {"v": "üé"}) == []


def test_an_unanchored_pattern_matches_anywhere() -> None:
    v = one({"type": "STRING", "pattern": "[0-9]"})
    assert messages(v, {"v": "abc1def"}) == []
    assert len(messages(v, {"v": "abc"})) == 1


def test_dollar_matches_only_at_the_very_end_as_in_json_schema() -> None:
    v = one({"type": "STRING", "pattern": "^C[0-9]{6}$"})
    assert messages(v, {"v": "C123456"}) == []
    for bad in ("C123456\n", "C123456\nx", "\nC123456", "xC123456"):
        assert messages(v, {"v": bad}) == [
            f"$.v: expected a string matching '^C[0-9]{{6}}$', got {bad!r}"
        ], bad


def test_shorthand_classes_are_ascii_as_in_json_schema() -> None:
    digits = one({"type": "STRING", "pattern": r"^\d+$"})
    assert messages(digits, {"v": "0123456789"}) == []
    assert len(messages(digits, {"v": "١٢٣"})) == 1  # Arabic-Indic digits: \d is [0-9]
    word = one({"type": "STRING", "pattern": r"^\w+$"})
    assert messages(word, {"v": "snake_case_2"}) == []
    assert len(messages(word, {"v": "café"})) == 1  # \w is [A-Za-z0-9_]


@pytest.mark.timeout(60)  # a hang guard: backtracking takes years here, RE2 microseconds
def test_a_catastrophic_pattern_is_checked_in_linear_time() -> None:
    v = one({"type": "STRING", "pattern": "^(a+)+$"})
    assert messages(v, {"v": "a" * 100_000}) == []
    assert messages(v, {"v": "a" * 27 + "b"}) == [
        f"$.v: expected a string matching '^(a+)+$', got {'a' * 27 + 'b'!r}"
    ]
    assert len(messages(v, {"v": "a" * 100_000 + "b"})) == 1


def test_a_string_that_is_not_valid_unicode_matches_no_pattern() -> None:
    v = one({"type": "STRING", "pattern": "a"})
    assert messages(v, {"v": "a"}) == []
    assert messages(v, {"v": "a\ud800"}) == ["$.v: expected a string matching 'a', got 'a\\ud800'"]
    plain = one({"type": "STRING"})  # without a pattern a string is a string
    assert messages(plain, {"v": "a\ud800"}) == []


@pytest.mark.parametrize(
    "pattern", ["^a", "b$", "[0-9]+", "^(a|bb)+$", "..", "^$", r"\bC\b", "(?i)é", r"^\p{Greek}+$"]
)
def test_the_search_agrees_with_re2s_public_search(pattern: str) -> None:
    import re2  # type: ignore[import-untyped]

    search = compile_search(pattern)
    texts = [
        "",
        "a",
        "b",
        "ab",
        "bb\n",
        "a\nb",
        "0",
        "x12y",
        "C",
        "a C b",
        "É",
        "αβγ",
        "αβ1",
        "é\n",
    ]
    for text in texts:
        assert search(text) == (re2.search(pattern, text) is not None), (pattern, text)


def test_string_enum() -> None:
    v = one({"type": "STRING", "enum": ["asc", "desc"]})
    assert messages(v, {"v": "asc"}) == []
    assert messages(v, {"v": "up"}) == ["$.v: expected one of ['asc', 'desc'], got 'up'"]


def test_number_limits_are_inclusive() -> None:
    v = one({"type": "NUMBER", "minimum": 0, "maximum": 1.5})
    for ok in (0, 0.0, 1, 1.5):
        assert messages(v, {"v": ok}) == []
    assert messages(v, {"v": -0.1}) == ["$.v: expected a value >= 0, got -0.1"]
    assert messages(v, {"v": 2}) == ["$.v: expected a value <= 1.5, got 2"]


def test_integer_limits_and_enum() -> None:
    v = one({"type": "INTEGER", "minimum": 1, "maximum": 5, "enum": [1, 3, 5]})
    assert messages(v, {"v": 3}) == []
    assert messages(v, {"v": 2}) == ["$.v: expected one of [1, 3, 5], got 2"]
    assert messages(v, {"v": 9}) == [
        "$.v: expected one of [1, 3, 5], got 9",
        "$.v: expected a value <= 5, got 9",
    ]


def test_number_enum_compares_numerically() -> None:
    v = one({"type": "NUMBER", "enum": [1, 2.5]})
    assert messages(v, {"v": 1.0}) == []
    assert messages(v, {"v": 2.5}) == []
    assert len(messages(v, {"v": 2})) == 1


def test_integer_formats_bound_the_range() -> None:
    v = one({"type": "INTEGER", "format": "int32"})
    assert messages(v, {"v": 2**31 - 1}) == []
    assert messages(v, {"v": -(2**31)}) == []
    assert messages(v, {"v": 2**31}) == [f"$.v: expected a value <= {2**31 - 1}, got {2**31}"]
    assert messages(one({"type": "INTEGER", "format": "int64"}), {"v": 2**63}) != []
    assert messages(one({"type": "INTEGER", "format": "int64"}), {"v": 2**62}) == []


def test_float_and_double_formats_are_annotations() -> None:
    assert messages(one({"type": "NUMBER", "format": "float"}), {"v": 1e300}) == []


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-31T12:00:00Z",
        "2024-01-31t12:00:00z",
        "2024-02-29T23:59:59.123456+05:30",
        "1998-12-31T23:59:60Z",  # a leap second, at 23:59:60 in UTC
        "1998-12-31T15:59:60.123-08:00",
        "1999-01-01T05:29:60+05:30",
        "0001-01-01T00:00:00Z",
    ],
)
def test_date_time_accepts_rfc_3339(text: str) -> None:
    assert messages(one({"type": "STRING", "format": "date-time"}), {"v": text}) == []


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-31",
        "2024-01-31T12:00:00",  # no offset
        "2023-02-29T12:00:00Z",  # not a leap year
        "2024-13-01T12:00:00Z",
        "2024-01-31T24:00:00Z",
        "2024-01-31T12:00:00+25:00",
        "yesterday",
        "2024-01-31T12:00:00Z trailing",
        "2024-01-31T12:00:00Z\n",  # Python's $ would match before it; RFC 3339 has no newline
        "1998-12-31T23:58:60Z",  # a leap second is 23:59:60 in UTC, never another minute
        "1998-12-31T22:59:60Z",
        "1998-12-31T23:59:60+01:00",  # 22:59:60 in UTC
        "1998-12-31T23:59:61Z",
        "0000-01-01T00:00:00Z",  # year 0 (neither Python's datetime nor jsonschema has it)
        "２０２４-01-31T12:00:00Z",  # digits are ASCII
    ],
)
def test_date_time_refuses_what_is_not_rfc_3339(text: str) -> None:
    (message,) = messages(one({"type": "STRING", "format": "date-time"}), {"v": text})
    assert "expected an RFC 3339 date-time" in message


def test_array_limits_and_items() -> None:
    v = one({"type": "ARRAY", "items": {"type": "STRING"}, "minItems": 1, "maxItems": 2})
    assert messages(v, {"v": ["a"]}) == []
    assert messages(v, {"v": []}) == ["$.v: expected at least 1 item, got 0"]
    assert messages(v, {"v": ["a", 1, 2]}) == [
        "$.v: expected at most 2 items, got 3",
        "$.v[1]: expected STRING, got INTEGER (1)",
        "$.v[2]: expected STRING, got INTEGER (2)",
    ]


# ---- every violation, in order -------------------------------------------------------------------


def test_every_violation_is_listed_by_path_in_declaration_order() -> None:
    v = validator(
        {
            "type": "OBJECT",
            "properties": {
                "query": {"type": "STRING", "minLength": 1},
                "limit": {"type": "INTEGER", "minimum": 1},
                "tags": {"type": "ARRAY", "items": {"type": "STRING"}},
                "filters": SEARCH["properties"]["filters"],
            },
            "required": ["query", "limit"],
        }
    )
    found = v.violations(
        {
            "query": "",
            "tags": ["a", 2],
            "filters": {"category": 7, "date_range": {"start": 20240101, "end": None}},
            "extra": True,
        },
        "$.payload.args",
    )
    assert [x.path for x in found] == [
        "$.payload.args.query",
        "$.payload.args.limit",
        "$.payload.args.tags[1]",
        "$.payload.args.filters.category",
        "$.payload.args.filters.date_range.start",
        "$.payload.args.filters.date_range.end",
        "$.payload.args.extra",
    ]
    assert str(found[4]) == (
        "$.payload.args.filters.date_range.start: expected STRING, got INTEGER (20240101)"
    )


def test_long_values_are_shortened_in_messages() -> None:
    (message,) = messages(one({"type": "INTEGER"}), {"v": "x" * 500})
    assert len(message) < 100
    assert message.endswith("...)")


def test_the_validator_does_not_change_the_arguments() -> None:
    args = {"query": 1, "filters": {"date_range": {"start": 2}}, "x": [1]}
    before = copy.deepcopy(args)
    validator(SEARCH).violations(args)
    assert args == before


# ---- the error -----------------------------------------------------------------------------------


def test_check_arguments_raises_one_error_listing_every_violation() -> None:
    registry = ToolRegistry(builtins=False)
    registry.register("search_documents", "Search", SEARCH, lambda args: args)
    with pytest.raises(ToolArgumentsError) as info:
        registry.check_arguments(
            "search_documents",
            {"limit": "ten", "filters": {"date_range": {"start": 20240101.0}}},
        )
    error = info.value
    assert isinstance(error, work.ValidationError)
    assert error.tool == "search_documents"
    assert error.path == "$.query"
    assert error.violations == [
        Violation("$.query", "missing required property 'query' (required: ['query'])"),
        Violation("$.limit", "expected NUMBER, got STRING ('ten')"),
        Violation("$.filters.date_range.start", "expected STRING, got NUMBER (20240101.0)"),
    ]
    text = str(error)
    assert text.startswith(
        "tool 'search_documents' was called with invalid arguments (3 violations): $.query: "
    )
    for violation in error.violations:
        assert str(violation) in text
    assert text.endswith("- at $.query")


def test_check_arguments_of_an_unknown_tool_is_not_found() -> None:
    with pytest.raises(work.NotFoundError, match="no tool named 'nope'"):
        ToolRegistry().check_arguments("nope", {})


def test_the_message_spells_out_the_first_twenty_and_counts_the_rest() -> None:
    v = one({"type": "ARRAY", "items": {"type": "STRING"}})
    violations = v.violations({"v": list(range(25))})
    error = ToolArgumentsError("t", violations)
    assert len(error.violations) == 25
    assert "(25 violations)" in str(error)
    assert "$.v[19]" in str(error)
    assert "$.v[20]" not in str(error)
    assert "and 5 more" in str(error)


def test_the_error_pickles_and_needs_a_violation() -> None:
    error = ToolArgumentsError("t", [Violation("$.a", "expected STRING, got null")], index=2)
    copied = pickle.loads(pickle.dumps(error))
    assert (copied.tool, copied.violations, copied.path, copied.index, str(copied)) == (
        "t",
        error.violations,
        "$.a",
        2,
        str(error),
    )
    with pytest.raises(ValueError, match="at least one violation"):
        ToolArgumentsError("t", [])


def test_check_call_roots_paths_at_the_payload_key() -> None:
    registry = ToolRegistry(builtins=False)
    registry.register("search_documents", "Search", SEARCH, lambda args: args)
    for key in ("args", "arguments"):
        with pytest.raises(ToolArgumentsError) as info:
            registry.check_call({"tool_id": "search_documents", key: {"query": 1}})
        assert info.value.path == f"$.payload.{key}.query"
    assert registry.check_call({"tool": "search_documents", "args": {"query": "q"}}) == (
        "search_documents",
        {"query": "q"},
    )


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("bad\nname", "its character '\\n' at index 3 is not allowed"),
        ("x\x1b[31mred", "its character '\\x1b' at index 1 is not allowed"),
        ("\ud800", "its character '\\ud800' at index 0 is not allowed"),
        ("a" * 1_000_000, "it has 1,000,000 characters"),
        ("café", "its character 'é' at index 3 is not allowed"),
    ],
    ids=["newline", "escape sequence", "lone surrogate", "huge", "unicode"],
)
def test_a_call_naming_an_invalid_tool_name_says_no_tool_can_have_it(
    name: str, problem: str
) -> None:
    registry = ToolRegistry()
    with pytest.raises(work.ValidationError) as info:
        registry.check_call({"function_name": name, "args": {}})
    assert info.value.path == "$.payload.function_name"
    message = str(info.value)
    assert "no tool can be named " in message
    assert f"{problem} (tool names match [A-Za-z0-9][A-Za-z0-9._:@-]{{0,127}})" in message
    assert message.isprintable(), message  # control characters and surrogates come escaped
    assert len(message) < 600


def test_a_call_naming_its_tool_by_something_huge_gets_a_short_message() -> None:
    registry = ToolRegistry()
    for payload in (
        {"tool_name": list(range(100_000))},
        {"tool_name": "echo", "tool": "x" * 100_000},
    ):
        with pytest.raises(work.ValidationError) as info:
            registry.check_call(payload)
        assert len(str(info.value)) < 600

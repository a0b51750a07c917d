"""ADM declarations at register: what is accepted and normalized, what is refused (with the path
and the rule), duplicates, per-tool limits, list/describe (the exports: test_altar_exports.py)."""

from __future__ import annotations

import pickle
import re
from typing import Any

import pytest

import nsai_work as work
from nsai_work.altar import FunctionDeclaration, ToolLimits, ToolRegistry
from tests._adm_schemas import SEARCH


def noop(args: dict[str, Any]) -> None:
    return None


@pytest.fixture
def registry() -> ToolRegistry:
    return ToolRegistry(builtins=False)


def register(registry: ToolRegistry, parameters: Any, name: str = "t") -> FunctionDeclaration:
    return registry.register(name, "a tool", parameters, noop)


# ---- accepted ------------------------------------------------------------------------------------


def test_the_seed_declaration_is_accepted_as_written(registry: ToolRegistry) -> None:
    declaration = register(registry, SEARCH, "search_documents")
    assert declaration == FunctionDeclaration(
        name="search_documents", description="a tool", parameters=SEARCH
    )
    assert registry.describe("search_documents") == declaration
    assert registry.is_registered("search_documents")


def test_every_keyword_is_accepted() -> None:
    registry = ToolRegistry(builtins=False)
    register(
        registry,
        {
            "type": "OBJECT",
            "description": "all of it",
            "properties": {
                "s": {
                    "type": "STRING",
                    "enum": ["a", "bb"],
                    "minLength": 1,
                    "maxLength": 2,
                    "pattern": "^[ab]+$",
                    "nullable": True,
                },
                "when": {"type": "STRING", "format": "date-time"},
                "n": {"type": "NUMBER", "minimum": -1.5, "maximum": 1e9, "format": "double"},
                "i": {"type": "INTEGER", "minimum": 0, "maximum": 10, "enum": [1, 2, 3]},
                "i32": {"type": "INTEGER", "format": "int32"},
                "b": {"type": "BOOLEAN", "description": "flag"},
                "a": {
                    "type": "ARRAY",
                    "items": {"type": "OBJECT", "properties": {"x": {"type": "INTEGER"}}},
                    "minItems": 0,
                    "maxItems": 3,
                },
                "free": {"type": "OBJECT", "description": "any object"},
            },
            "required": ["s", "i"],
        },
    )


def test_property_ordering_and_exact_bounds_are_accepted(registry: ToolRegistry) -> None:
    parameters = {
        "type": "OBJECT",
        "properties": {
            "b": {"type": "INTEGER", "minimum": -(2**53), "maximum": 2**60},  # doubles hold both
            "a": {"type": "OBJECT", "properties": {}, "propertyOrdering": []},
        },
        "propertyOrdering": ["a", "b"],
    }
    assert register(registry, parameters).parameters == parameters


def test_lower_case_types_are_normalized_to_capitals(registry: ToolRegistry) -> None:
    declaration = register(
        registry,
        {
            "type": "object",
            "properties": {"tags": {"type": "array", "items": {"type": "string"}}},
        },
    )
    assert declaration.parameters == {
        "type": "OBJECT",
        "properties": {"tags": {"type": "ARRAY", "items": {"type": "STRING"}}},
    }


def test_top_level_type_may_be_left_out_and_none_means_any_arguments(
    registry: ToolRegistry,
) -> None:
    assert register(registry, {"properties": {}}, "a").parameters == {
        "type": "OBJECT",
        "properties": {},
    }
    assert register(registry, None, "b").parameters == {"type": "OBJECT"}


def test_the_declaration_is_a_copy_the_caller_cannot_change(registry: ToolRegistry) -> None:
    schema: dict[str, Any] = {"type": "OBJECT", "properties": {"q": {"type": "STRING"}}}
    register(registry, schema)
    schema["properties"]["q"]["type"] = "NUMBER"
    assert registry.describe("t").parameters["properties"]["q"]["type"] == "STRING"
    registry.check_arguments("t", {"q": "still a string"})


# ---- refused: the path and the rule --------------------------------------------------------------

P = "$.parameters"
INVALID: list[tuple[str, Any, str, str]] = [
    ("not a dict", ["OBJECT"], P, "got list"),
    ("top level not OBJECT", {"type": "STRING"}, f"{P}.type", "is an OBJECT"),
    (
        "unknown type",
        {"type": "OBJECT", "properties": {"filters": {"type": "DICT"}}},
        f"{P}.properties.filters.type",
        "type must be one of OBJECT, ARRAY, STRING, NUMBER, INTEGER, BOOLEAN",
    ),
    (
        "mixed-case type",
        {"properties": {"x": {"type": "String"}}},
        f"{P}.properties.x.type",
        "got 'String'",
    ),
    ("type not a string", {"properties": {"x": {"type": 1}}}, f"{P}.properties.x.type", "got 1"),
    (
        "nested schema without type",
        {"properties": {"x": {"description": "what"}}},
        f"{P}.properties.x.type",
        "names its type",
    ),
    (
        "schema not a dict",
        {"properties": {"x": "STRING"}},
        f"{P}.properties.x",
        "expected a schema",
    ),
    (
        "ARRAY without items",
        {"properties": {"tags": {"type": "ARRAY"}}},
        f"{P}.properties.tags.items",
        "needs items",
    ),
    (
        "bad items",
        {"properties": {"tags": {"type": "ARRAY", "items": {"type": "LIST"}}}},
        f"{P}.properties.tags.items.type",
        "got 'LIST'",
    ),
    (
        "required names a missing property",
        {"properties": {"a": {"type": "STRING"}}, "required": ["a", "b"]},
        f"{P}.required[1]",
        "required names 'b', which is not among the declared properties ['a']",
    ),
    (
        "required without properties",
        {"type": "OBJECT", "required": ["a"]},
        f"{P}.required[0]",
        "not among the declared properties []",
    ),
    (
        "required not a list",
        {"properties": {"a": {"type": "STRING"}}, "required": "a"},
        f"{P}.required",
        "list of property names",
    ),
    (
        "required twice",
        {"properties": {"a": {"type": "STRING"}}, "required": ["a", "a"]},
        f"{P}.required[1]",
        "twice",
    ),
    (
        "properties not a dict",
        {"properties": [{"type": "STRING"}]},
        f"{P}.properties",
        "dict of name -> schema",
    ),
    (
        "minLength a string",
        {"properties": {"s": {"type": "STRING", "minLength": "3"}}},
        f"{P}.properties.s.minLength",
        "minLength is an integer >= 0, got '3'",
    ),
    (
        "maxItems negative",
        {"properties": {"a": {"type": "ARRAY", "items": {"type": "STRING"}, "maxItems": -1}}},
        f"{P}.properties.a.maxItems",
        "integer >= 0",
    ),
    (
        "minItems a float",
        {"properties": {"a": {"type": "ARRAY", "items": {"type": "STRING"}, "minItems": 1.0}}},
        f"{P}.properties.a.minItems",
        "integer >= 0",
    ),
    (
        "minimum a bool",
        {"properties": {"n": {"type": "NUMBER", "minimum": True}}},
        f"{P}.properties.n.minimum",
        "finite number",
    ),
    (
        "maximum infinite",
        {"properties": {"n": {"type": "NUMBER", "maximum": float("inf")}}},
        f"{P}.properties.n.maximum",
        "finite number",
    ),
    (
        "minimum > maximum",
        {"properties": {"n": {"type": "INTEGER", "minimum": 5, "maximum": 1}}},
        f"{P}.properties.n.maximum",
        "maximum (1) is less than minimum (5)",
    ),
    (
        "minLength > maxLength",
        {"properties": {"s": {"type": "STRING", "minLength": 3, "maxLength": 2}}},
        f"{P}.properties.s.maxLength",
        "maxLength (2) is less than minLength (3)",
    ),
    (
        "minItems > maxItems",
        {
            "properties": {
                "a": {"type": "ARRAY", "items": {"type": "STRING"}, "minItems": 2, "maxItems": 1}
            }
        },
        f"{P}.properties.a.maxItems",
        "maxItems (1) is less than minItems (2)",
    ),
    (
        "bad regex",
        {"properties": {"s": {"type": "STRING", "pattern": "(["}}},
        f"{P}.properties.s.pattern",
        "pattern '([' is not a valid RE2 regular expression: RE2 says 'missing ]: ['",
    ),
    (
        "pattern not a string",
        {"properties": {"s": {"type": "STRING", "pattern": 3}}},
        f"{P}.properties.s.pattern",
        "regular expression string",
    ),
    (
        "limit on the wrong type",
        {"properties": {"n": {"type": "NUMBER", "minLength": 1}}},
        f"{P}.properties.n.minLength",
        "minLength applies to STRING, not to NUMBER",
    ),
    (
        "unknown key",
        {"properties": {"o": {"type": "OBJECT", "additionalProperties": False}}},
        f"{P}.properties.o.additionalProperties",
        "unknown schema key 'additionalProperties'",
    ),
    ("unknown top-level key", {"type": "OBJECT", "$schema": "x"}, f"{P}['$schema']", "unknown"),
    (
        "enum on BOOLEAN",
        {"properties": {"b": {"type": "BOOLEAN", "enum": [True]}}},
        f"{P}.properties.b.enum",
        "enum applies to STRING, NUMBER and INTEGER",
    ),
    (
        "enum empty",
        {"properties": {"s": {"type": "STRING", "enum": []}}},
        f"{P}.properties.s.enum",
        "non-empty list",
    ),
    (
        "enum value of the wrong type",
        {"properties": {"s": {"type": "STRING", "enum": ["a", 2]}}},
        f"{P}.properties.s.enum[1]",
        "an enum value of a STRING is a STRING, got 2",
    ),
    (
        "INTEGER enum with a bool",
        {"properties": {"i": {"type": "INTEGER", "enum": [1, True]}}},
        f"{P}.properties.i.enum[1]",
        "got True",
    ),
    (
        "enum repeats",
        {"properties": {"s": {"type": "STRING", "enum": ["a", "a"]}}},
        f"{P}.properties.s.enum[1]",
        "twice",
    ),
    (
        "format unknown",
        {"properties": {"s": {"type": "STRING", "format": "email"}}},
        f"{P}.properties.s.format",
        "format of a STRING is one of ['enum', 'date-time']",
    ),
    (
        "format of another type",
        {"properties": {"i": {"type": "INTEGER", "format": "double"}}},
        f"{P}.properties.i.format",
        "['int32', 'int64']",
    ),
    (
        "nullable not a bool",
        {"properties": {"s": {"type": "STRING", "nullable": "yes"}}},
        f"{P}.properties.s.nullable",
        "true or false",
    ),
    (
        "description not a string",
        {"properties": {"s": {"type": "STRING", "description": 3}}},
        f"{P}.properties.s.description",
        "description is a string",
    ),
    (
        "property name not an identifier",
        {"properties": {"date range": {"type": "DATE"}}},
        f"{P}.properties['date range'].type",
        "got 'DATE'",
    ),
    (
        "empty property name",
        {"properties": {"": {"type": "STRING"}}},
        f"{P}.properties",
        "non-empty strings",
    ),
    (
        "propertyOrdering leaves one out",
        {
            "properties": {"a": {"type": "STRING"}, "b": {"type": "STRING"}},
            "propertyOrdering": ["b"],
        },
        f"{P}.propertyOrdering",
        "propertyOrdering lists every declared property once, in the order the model should "
        "produce them (declared: ['a', 'b']); it leaves out ['a']",
    ),
    (
        "propertyOrdering names an undeclared property",
        {"properties": {"a": {"type": "STRING"}}, "propertyOrdering": ["a", "c"]},
        f"{P}.propertyOrdering[1]",
        "'c' is not a declared property",
    ),
    (
        "propertyOrdering names one twice",
        {"properties": {"a": {"type": "STRING"}}, "propertyOrdering": ["a", "a"]},
        f"{P}.propertyOrdering[1]",
        "it names 'a' twice",
    ),
    (
        "propertyOrdering without properties",
        {"type": "OBJECT", "propertyOrdering": []},
        f"{P}.propertyOrdering",
        "propertyOrdering needs properties to order",
    ),
    (
        "propertyOrdering not a list",
        {"properties": {"a": {"type": "STRING"}}, "propertyOrdering": "a"},
        f"{P}.propertyOrdering",
        "got 'a'",
    ),
    (
        "propertyOrdering on a STRING",
        {"properties": {"a": {"type": "STRING", "propertyOrdering": []}}},
        f"{P}.properties.a.propertyOrdering",
        "propertyOrdering applies to OBJECT, not to STRING",
    ),
    (
        "a bound a double cannot hold",
        {"properties": {"i": {"type": "INTEGER", "maximum": 2**53 + 1}}},
        f"{P}.properties.i.maximum",
        "maximum 9007199254740993 is not a number a double holds exactly",
    ),
    (
        "a bound too large for a double",
        {"properties": {"i": {"type": "INTEGER", "minimum": -(10**400)}}},
        f"{P}.properties.i.minimum",
        "is not a number a double holds exactly",
    ),
    (
        "an enum value above the maximum",
        {"properties": {"i": {"type": "INTEGER", "enum": [1, 7], "maximum": 5}}},
        f"{P}.properties.i.enum[1]",
        "enum lists 7, which is above maximum 5: no call could pass it",
    ),
    (
        "an enum value outside int32",
        {"properties": {"i": {"type": "INTEGER", "enum": [2**31], "format": "int32"}}},
        f"{P}.properties.i.enum[0]",
        "is outside the int32 range",
    ),
    (
        "an enum value below the minimum",
        {"properties": {"n": {"type": "NUMBER", "enum": [0.5, -1], "minimum": 0}}},
        f"{P}.properties.n.enum[1]",
        "is below minimum 0",
    ),
    (
        "an enum value the pattern refuses",
        {"properties": {"s": {"type": "STRING", "enum": ["C123456", "X1"], "pattern": "^C"}}},
        f"{P}.properties.s.enum[1]",
        "enum lists 'X1', which does not match the pattern '^C'",
    ),
    (
        "an enum value longer than maxLength",
        {"properties": {"s": {"type": "STRING", "enum": ["ab", "abc"], "maxLength": 2}}},
        f"{P}.properties.s.enum[1]",
        "is longer than maxLength 2",
    ),
    (
        "an enum value that is no date-time",
        {"properties": {"s": {"type": "STRING", "enum": ["today"], "format": "date-time"}}},
        f"{P}.properties.s.enum[0]",
        "is not an RFC 3339 date-time",
    ),
]


@pytest.mark.parametrize(
    ("parameters", "path", "rule"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_an_invalid_declaration_is_refused_naming_the_path_and_the_rule(
    registry: ToolRegistry, parameters: Any, path: str, rule: str
) -> None:
    with pytest.raises(work.ValidationError) as info:
        register(registry, parameters)
    assert info.value.path == path, str(info.value)
    assert rule in str(info.value)
    assert "tool 't'" in str(info.value)
    assert not registry.is_registered("t")


RE2_REFUSED = [
    ("^(?=.*[0-9])", "a look-ahead is not supported"),
    ("^(?!admin)", "a negative look-ahead is not supported"),
    ("(?<=@)example", "a look-behind is not supported"),
    ("(?<!@)example", "a negative look-behind is not supported"),
    (r"^(a)\1$", "a backreference is not supported"),
    ("(?P<x>a)(?P=x)", "a named backreference is not supported"),
    ("^a++$", "a possessive quantifier is not supported"),
    ("(?>ab)c", "an atomic group is not supported"),
    (r"^C[0-9]{6}\Z", "Python's \\Z (the end of the text is \\z or $ in RE2) is not supported"),
]


@pytest.mark.parametrize(("pattern", "construct"), RE2_REFUSED)
def test_a_pattern_re2_cannot_compile_is_refused_naming_the_construct(
    registry: ToolRegistry, pattern: str, construct: str
) -> None:
    with pytest.raises(work.ValidationError) as info:
        register(registry, {"properties": {"code": {"type": "STRING", "pattern": pattern}}})
    assert info.value.path == "$.parameters.properties.code.pattern"
    message = str(info.value)
    assert f"pattern {pattern!r} is not a valid RE2 regular expression: {construct}" in message
    assert "RE2 dialect, which matches in linear time" in message
    assert not registry.is_registered("t")


def test_patterns_in_the_re2_dialect_are_accepted(registry: ToolRegistry) -> None:
    patterns = [
        r"^(?P<year>[0-9]{4})-\d{2}$",
        "(?i)^abc",
        r"^\p{Greek}+\z",
        "[[:alpha:]]",
        r"\bC\b",
    ]
    register(
        registry,
        {"properties": {f"s{i}": {"type": "STRING", "pattern": p} for i, p in enumerate(patterns)}},
    )
    assert [s["pattern"] for s in registry.describe("t").parameters["properties"].values()] == (
        patterns
    )


def test_too_deep_a_declaration_is_refused(registry: ToolRegistry) -> None:
    schema: dict[str, Any] = {"type": "STRING"}
    for _ in range(40):
        schema = {"type": "ARRAY", "items": schema}
    with pytest.raises(work.ValidationError, match="at most 32 levels"):
        register(registry, {"properties": {"deep": schema}})


def test_a_self_referencing_declaration_is_refused_not_a_recursion_error(
    registry: ToolRegistry,
) -> None:
    node: dict[str, Any] = {"type": "OBJECT", "properties": {}}
    node["properties"]["again"] = node
    with pytest.raises(work.ValidationError, match="levels deep"):
        register(registry, node)


@pytest.mark.parametrize(
    ("name", "description", "path"),
    [("", "d", "$.name"), (3, "d", "$.name"), ("t", None, "$.description")],
)
def test_name_and_description_are_checked(
    registry: ToolRegistry, name: Any, description: Any, path: str
) -> None:
    with pytest.raises(work.ValidationError) as info:
        registry.register(name, description, None, noop)
    assert info.value.path == path


NAME_RULE = "[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}"
BAD_NAMES: list[tuple[str, Any, str]] = [
    ("empty", "", "got '': it is empty; rename the tool, for example 'my_tool'"),
    (
        "space",
        "my tool",
        "its character ' ' at index 2 is not allowed; rename the tool, for example 'my_tool'",
    ),
    ("129 characters", "a" * 129, "it has 129 characters"),
    ("huge", "a" * 1_000_000, "it has 1,000,000 characters"),
    ("unicode", "café", "its character 'é' at index 3 is not allowed"),
    ("newline", "search\n", "its character '\\n' at index 6 is not allowed"),
    ("escape sequence", "x\x1b[31m", "its character '\\x1b' at index 1 is not allowed"),
    ("lone surrogate", "\ud800", "its character '\\ud800' at index 0 is not allowed"),
    ("leading dot", ".hidden", "at index 0 is not allowed; rename the tool, for example 'hidden'"),
    ("leading dash", "-x", "its character '-' at index 0 is not allowed"),
    ("slash", "a/b", "its character '/' at index 1 is not allowed"),
    ("int", 3, "got 3: its type is int, not str; pass the name as a string"),
    ("None", None, "its type is NoneType, not str"),
    ("list", ["a"], "its type is list, not str"),
]


@pytest.mark.parametrize(
    ("name", "problem"), [case[1:] for case in BAD_NAMES], ids=[case[0] for case in BAD_NAMES]
)
def test_a_tool_name_breaking_the_identifier_rule_is_refused(
    registry: ToolRegistry, name: Any, problem: str
) -> None:
    assert not (isinstance(name, str) and re.fullmatch(NAME_RULE, name))
    with pytest.raises(work.ValidationError) as info:
        registry.register(name, "d", None, noop)
    assert info.value.path == "$.name"
    message = str(info.value)
    assert (
        f"a tool name is 1 to 128 characters: an ASCII letter or digit, then letters, digits, "
        f"'.', '_', ':', '@' or '-' ({NAME_RULE})" in message
    )
    assert problem in message
    assert message.isprintable(), message  # control characters and surrogates come escaped
    assert len(message) < 600
    assert registry.list() == []


GOOD_NAMES = ["a", "9", "A" * 128, "calculator_add", "bench.altar.search", "ns:tool@v2", "get-w"]


def test_a_tool_name_following_the_identifier_rule_is_accepted(registry: ToolRegistry) -> None:
    for name in GOOD_NAMES:
        assert re.fullmatch(NAME_RULE, name)
        assert registry.register(name, "d", None, noop).name == name
        assert registry.is_registered(name)
    assert [d.name for d in registry.list()] == sorted(GOOD_NAMES)


ODD_NAMES: list[tuple[str, Any]] = [
    ("int", 3),
    ("None", None),
    ("list", ["a"]),
    ("dict", {"a": 1}),
    ("empty", ""),
    ("huge", "a" * 1_000_000),
    ("unicode", "café"),
    ("newline", "a\nb"),
    ("lone surrogate", "\ud800"),
    ("escape sequence", "x\x1b[2J"),
]


@pytest.mark.parametrize("name", [n for _, n in ODD_NAMES], ids=[i for i, _ in ODD_NAMES])
def test_lookups_of_odd_names_are_false_or_a_clear_error(registry: ToolRegistry, name: Any) -> None:
    register(registry, None)
    assert registry.is_registered(name) is False
    assert work.altar.is_registered(name) is False
    assert registry.function(name) is None
    lookups = [
        registry.unregister,
        registry.describe,
        registry.limits,
        lambda n: registry.check_arguments(n, {}),
        work.altar.describe,
    ]
    for lookup in lookups:
        with pytest.raises(work.WorkError) as info:
            lookup(name)
        message = str(info.value)
        assert message.isprintable(), message
        assert len(message) < 600, message
        if isinstance(name, str):
            assert isinstance(info.value, work.NotFoundError)
            assert "is registered, nor can be: " in message
            assert NAME_RULE in message
        else:
            assert isinstance(info.value, work.ValidationError)
            assert info.value.path == "$.name"
            assert f"a tool name is a string, got {type(name).__name__}" in message
    assert registry.is_registered("t")


def test_fn_must_be_callable(registry: ToolRegistry) -> None:
    with pytest.raises(work.ValidationError, match="expected a function"):
        registry.register("t", "d", None, "not a function")  # type: ignore[arg-type]


# ---- duplicates ----------------------------------------------------------------------------------


def test_registering_a_name_twice_is_a_conflict_unless_replace(registry: ToolRegistry) -> None:
    register(registry, SEARCH)
    with pytest.raises(work.ConflictError, match="replace=True"):
        register(registry, {"properties": {"x": {"type": "STRING"}}})
    assert registry.describe("t").parameters == SEARCH  # unchanged
    replaced = registry.register(
        "t", "new", {"properties": {"x": {"type": "STRING"}}}, noop, replace=True
    )
    assert registry.describe("t") == replaced
    registry.check_arguments("t", {"x": "y"})


def test_an_invalid_replacement_keeps_the_old_tool(registry: ToolRegistry) -> None:
    register(registry, SEARCH)
    with pytest.raises(work.ValidationError):
        registry.register("t", "d", {"properties": {"x": {"type": "?"}}}, noop, replace=True)
    assert registry.describe("t").parameters == SEARCH


def test_the_process_wide_registry_refuses_duplicates_too() -> None:
    with pytest.raises(work.ConflictError, match="'echo' is already registered"):
        work.altar.register("echo", "again", None, noop)


def test_unregister_and_unknown_names(registry: ToolRegistry) -> None:
    register(registry, None)
    registry.unregister("t")
    assert not registry.is_registered("t")
    for call in (registry.unregister, registry.describe, registry.limits):
        with pytest.raises(work.NotFoundError, match="no tool named 't'"):
            call("t")


# ---- list and describe ---------------------------------------------------------------------------


def test_list_returns_every_declaration_by_name(registry: ToolRegistry) -> None:
    register(registry, SEARCH, "b")
    register(registry, None, "a")
    assert [d.name for d in registry.list()] == ["a", "b"]
    assert all(isinstance(d, FunctionDeclaration) for d in registry.list())


def test_the_builtin_echo_takes_any_object() -> None:
    echo = work.altar.describe("echo")
    assert echo.parameters == {"type": "OBJECT"}
    work.altar.check_arguments("echo", {"anything": [1, {"goes": None}]})


# ---- per-tool limits -----------------------------------------------------------------------------


def test_limits_are_stored_and_returned(registry: ToolRegistry) -> None:
    registry.register("a", "d", None, noop, max_concurrency=2, rate=5, burst=3)
    registry.register("b", "d", None, noop, rate=0.5)
    registry.register("c", "d", None, noop, max_concurrency=1)
    registry.register("d", "d", None, noop)
    assert registry.limits("a") == ToolLimits(max_concurrency=2, rate=5.0, burst=3)
    assert registry.limits("b") == ToolLimits(rate=0.5, burst=1)
    assert registry.limits("c") == ToolLimits(max_concurrency=1)
    assert registry.limits("d") == ToolLimits()
    assert isinstance(registry.limits("a").rate, float)


@pytest.mark.parametrize(
    ("options", "path", "rule"),
    [
        ({"max_concurrency": 0}, "$.max_concurrency", "int >= 1"),
        ({"max_concurrency": 1.5}, "$.max_concurrency", "int >= 1"),
        ({"max_concurrency": True}, "$.max_concurrency", "int >= 1"),
        ({"rate": 0}, "$.rate", "> 0"),
        ({"rate": -1.0}, "$.rate", "> 0"),
        ({"rate": float("inf")}, "$.rate", "finite"),
        ({"rate": "10/s"}, "$.rate", "calls per second"),
        ({"burst": 2}, "$.burst", "needs rate="),
        ({"rate": 1, "burst": 0}, "$.burst", "int >= 1"),
        ({"rate": 1, "burst": 2.0}, "$.burst", "int >= 1"),
    ],
)
def test_bad_limits_are_refused(
    registry: ToolRegistry, options: dict[str, Any], path: str, rule: str
) -> None:
    with pytest.raises(work.ValidationError) as info:
        registry.register("t", "d", None, noop, **options)
    assert info.value.path == path
    assert rule in str(info.value)
    assert not registry.is_registered("t")


def test_the_module_functions_reach_the_process_wide_registry(
    tools: Any,
) -> None:
    name = tools(noop)
    assert work.altar.limits(name) == ToolLimits()
    assert work.altar.describe(name).name == name
    assert name in [d.name for d in work.altar.list()]
    assert work.altar.export_gemini(name)["name"] == name
    with pytest.raises(work.ValidationError, match=r"OpenAI tool names match") as info:
        work.altar.export_openai(name)  # the fixture's names have a '.', which OpenAI refuses
    assert info.value.path == "$.name"


def test_declarations_round_trip_through_json_and_pickle(registry: ToolRegistry) -> None:
    import json

    import msgspec

    declaration = register(registry, SEARCH)
    assert json.loads(msgspec.json.encode(declaration))["parameters"] == SEARCH
    assert pickle.loads(pickle.dumps(declaration)) == declaration

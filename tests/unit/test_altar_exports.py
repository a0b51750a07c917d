"""The OpenAI and Gemini exports of a registry: their shapes, property order, the options they
take, and what OpenAI's strict mode refuses (tests/integration/test_altar_sdks.py hands them to
the real SDKs)."""

from __future__ import annotations

import re
from typing import Any

import pytest

import nsai_work as work
from nsai_work.altar import FunctionDeclaration, ToolRegistry
from tests._adm_schemas import SEARCH


def noop(args: dict[str, Any]) -> None:
    return None


@pytest.fixture
def registry() -> ToolRegistry:
    return ToolRegistry(builtins=False)


def register(registry: ToolRegistry, parameters: Any, name: str = "t") -> FunctionDeclaration:
    return registry.register(name, "a tool", parameters, noop)


def test_openai_export_is_json_schema_with_lower_case_types(registry: ToolRegistry) -> None:
    register(registry, SEARCH, "search_documents")
    assert registry.export_openai("search_documents") == {
        "type": "function",
        "function": {
            "name": "search_documents",
            "description": "a tool",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "Search query"},
                    "limit": {"type": "number", "description": "Max results"},
                    "filters": {
                        "type": "object",
                        "properties": {
                            "category": {"type": "string"},
                            "date_range": {
                                "type": "object",
                                "properties": {
                                    "start": {"type": "string"},
                                    "end": {"type": "string"},
                                },
                                "additionalProperties": False,
                            },
                        },
                        "additionalProperties": False,
                    },
                },
                "required": ["query"],
                "additionalProperties": False,
            },
        },
    }


def test_openai_export_translates_nullable_formats_and_free_form_objects(
    registry: ToolRegistry,
) -> None:
    register(
        registry,
        {
            "properties": {
                "s": {"type": "STRING", "enum": ["a"], "nullable": True, "format": "enum"},
                "when": {"type": "STRING", "format": "date-time"},
                "i": {"type": "INTEGER", "format": "int32", "minimum": 0},
                "n": {"type": "NUMBER", "format": "float"},
                "graph": {"type": "OBJECT", "description": "anything"},
                "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "maxItems": 2},
            }
        },
    )
    props = registry.export_openai("t")["function"]["parameters"]["properties"]
    assert props == {
        "s": {"type": ["string", "null"], "enum": ["a", None]},
        "when": {"type": "string", "format": "date-time"},
        "i": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        "n": {"type": "number"},
        "graph": {"type": "object", "description": "anything"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
    }


def test_gemini_export_is_the_adm_schema(registry: ToolRegistry) -> None:
    register(registry, {"type": "object", "properties": {"q": {"type": "string"}}}, "q")
    register(registry, SEARCH, "search_documents")
    exported = registry.export_gemini()
    assert exported == [
        {
            "name": "q",
            "description": "a tool",
            "parameters": {"type": "OBJECT", "properties": {"q": {"type": "STRING"}}},
        },
        {"name": "search_documents", "description": "a tool", "parameters": SEARCH},
    ]
    exported[1]["parameters"]["properties"].clear()  # a copy: the registry is untouched
    assert registry.describe("search_documents").parameters == SEARCH


def test_exports_of_every_tool_are_lists_by_name(registry: ToolRegistry) -> None:
    register(registry, None, "b")
    register(registry, None, "a")
    assert [t["function"]["name"] for t in registry.export_openai()] == ["a", "b"]
    assert [t["name"] for t in registry.export_gemini()] == ["a", "b"]
    with pytest.raises(work.NotFoundError):
        registry.export_openai("nope")


def test_exports_take_a_list_of_names_and_check_their_options(registry: ToolRegistry) -> None:
    register(registry, None, "b")
    register(registry, None, "a")
    assert [t["function"]["name"] for t in registry.export_openai(["b", "a"])] == ["b", "a"]
    assert [t["name"] for t in registry.export_gemini(("a",))] == ["a"]
    with pytest.raises(work.ValidationError, match="strict is True or False") as info:
        registry.export_openai(strict="yes")  # type: ignore[call-overload]
    assert info.value.path == "$.strict"
    with pytest.raises(work.ValidationError, match="a list of names or None") as info:
        registry.export_gemini({"a"})  # type: ignore[call-overload]
    assert info.value.path == "$.name"
    with pytest.raises(work.NotFoundError):
        registry.export_gemini(["a", "nope"])


def test_the_json_schema_export_follows_property_ordering(registry: ToolRegistry) -> None:
    register(
        registry,
        {
            "properties": {"a": {"type": "STRING"}, "b": {"type": "STRING"}},
            "required": ["a"],
            "propertyOrdering": ["b", "a"],
        },
    )
    parameters = registry.export_openai("t")["function"]["parameters"]
    assert list(parameters["properties"]) == ["b", "a"]
    assert "propertyOrdering" not in parameters
    assert registry.export_gemini("t")["parameters"]["propertyOrdering"] == ["b", "a"]


def _nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "OBJECT", "properties": {}}
    for _ in range(levels):
        schema = {"type": "OBJECT", "properties": {"inner": schema}}
    return schema


@pytest.mark.parametrize(
    ("parameters", "path", "rule"),
    [
        (_nested(11), "$.parameters" + ".properties.inner" * 11, "at most 10 levels deep"),
        (
            {"properties": {f"p{i}": {"type": "BOOLEAN"} for i in range(5001)}},
            "$.parameters",
            "at most 5,000 object properties",
        ),
        (
            {"properties": {"n": {"type": "INTEGER", "enum": list(range(1001))}}},
            "$.parameters.properties.n.enum",
            "at most 1,000 enum values",
        ),
        (
            {"properties": {"s": {"type": "STRING", "enum": ["x" * 60_000, "y" * 60_001]}}},
            "$.parameters.properties.s.enum",
            "at most 120,000 characters of property names and enum strings",
        ),
        ({"properties": {}, "nullable": True}, "$.parameters.nullable", "not null"),
        (None, "$.parameters", "free-form OBJECT"),
    ],
    ids=["nesting", "properties", "enum values", "characters", "nullable", "free-form"],
)
def test_strict_mode_refuses_what_openai_documents_it_cannot_take(
    registry: ToolRegistry, parameters: Any, path: str, rule: str
) -> None:
    register(registry, parameters)
    with pytest.raises(work.ValidationError, match=re.escape(rule)) as info:
        registry.export_openai("t", strict=True)
    assert info.value.path == path
    assert str(info.value).startswith("tool 't' cannot be exported to OpenAI strict mode: ")
    registry.export_openai("t")  # without strict it goes


def test_strict_mode_takes_the_limits_themselves(registry: ToolRegistry) -> None:
    register(registry, _nested(10))
    assert registry.export_openai("t", strict=True)["function"]["strict"] is True

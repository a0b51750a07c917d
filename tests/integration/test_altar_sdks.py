"""The exports handed to the real Gemini and OpenAI SDKs, as a user would, offline.

Each SDK's client gets an HTTP client with a mock transport: the SDK builds its real request
from our declarations (which the test reads back) and parses a canned reply, and nothing leaves
the machine. Beside that, each export passes the SDK's own types: Gemini's
``FunctionDeclaration.model_validate`` and ``Tool(...)`` with nothing dropped (a dump back equals
the export), OpenAI's tool types, ``Draft202012Validator.check_schema``, and for strict tools the
SDK's own strict conversion (``openai.lib._pydantic.to_strict_json_schema``, what
``pydantic_function_tool`` runs), which must leave them unchanged.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Annotated, Any

import httpx2
import jsonschema
import pydantic
import pytest
from google import genai
from google.genai import types as gemini
from openai import OpenAI
from openai.lib._pydantic import to_strict_json_schema
from openai.types.chat import ChatCompletionFunctionTool, ChatCompletionFunctionToolParam

import nsai_work as work
from nsai_work.altar import ToolExportWarning, ToolRegistry
from nsai_work.altar._adm import normalize_parameters
from nsai_work.backends import AltarBackend

# ---- a varied set of tools -----------------------------------------------------------------------

ADDRESS = {
    "type": "OBJECT",
    "description": "A postal address",
    "properties": {
        "street": {"type": "STRING", "minLength": 1, "maxLength": 200},
        "postcode": {"type": "STRING", "pattern": "^[0-9]{4,5}$"},
        "country": {"type": "STRING", "enum": ["NO", "SE", "DK"], "format": "enum"},
    },
    "required": ["street", "country"],
    "propertyOrdering": ["country", "street", "postcode"],
}

TOOLS: dict[str, dict[str, Any] | None] = {
    "create_order": {
        "type": "OBJECT",
        "properties": {
            "customer": {"type": "STRING", "pattern": "^C[0-9]{6}$", "description": "Customer"},
            "placed_at": {"type": "STRING", "format": "date-time"},
            "priority": {"type": "INTEGER", "enum": [1, 2, 3], "description": "1 is urgent"},
            "discount": {"type": "NUMBER", "enum": [0, 0.05, 0.1], "nullable": True},
            "express": {"type": "BOOLEAN", "nullable": True},
            "ship_to": ADDRESS,
            "lines": {
                "type": "ARRAY",
                "minItems": 1,
                "maxItems": 50,
                "items": {
                    "type": "OBJECT",
                    "properties": {
                        "sku": {"type": "STRING", "minLength": 3},
                        "quantity": {"type": "INTEGER", "minimum": 1, "maximum": 1000},
                        "unit_price": {"type": "NUMBER", "minimum": 0, "format": "double"},
                        "tags": {
                            "type": "ARRAY",
                            "items": {"type": "STRING", "enum": ["gift", "fragile"]},
                            "nullable": True,
                        },
                    },
                    "required": ["sku", "quantity"],
                },
            },
            "reference": {"type": "INTEGER", "format": "int64", "minimum": 0},
            "weight_g": {"type": "INTEGER", "format": "int32", "nullable": True},
            "ratio": {"type": "NUMBER", "format": "float", "minimum": -1.5, "maximum": 1.5},
        },
        "required": ["customer", "lines", "ship_to", "priority"],
        "propertyOrdering": [
            "customer",
            "priority",
            "lines",
            "ship_to",
            "placed_at",
            "discount",
            "express",
            "reference",
            "weight_g",
            "ratio",
        ],
    },
    "get_weather": {
        "properties": {
            "city": {"type": "STRING"},
            "unit": {"type": "STRING", "enum": ["celsius", "fahrenheit"], "nullable": True},
            "days": {"type": "INTEGER", "enum": [1, 3, 7]},
        },
        "required": ["city"],
    },
    "ping": {"type": "OBJECT", "properties": {}},
}
#: Free-form objects: fine for Gemini and plain OpenAI, refused by OpenAI's strict mode.
FREE_FORM: dict[str, dict[str, Any] | None] = {
    "annotate": {
        "type": "OBJECT",
        "properties": {"graph": {"type": "OBJECT", "description": "any JSON object"}},
    },
    "anything": None,
}


@pytest.fixture
def registry() -> ToolRegistry:
    registry = ToolRegistry(builtins=False)
    for name, parameters in (TOOLS | FREE_FORM).items():
        registry.register(name, f"The {name} tool", parameters, lambda args: args)
    return registry


def _numbers_equal(a: Any, b: Any) -> bool:
    """Equal as JSON, where ``1`` and ``1.0`` are the same number but ``True`` is no number."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_numbers_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_numbers_equal, a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


# ---- Gemini --------------------------------------------------------------------------------------


def test_every_gemini_export_passes_the_sdk_with_nothing_dropped(registry: ToolRegistry) -> None:
    exported = registry.export_gemini()
    assert [d["name"] for d in exported] == sorted(TOOLS | FREE_FORM)
    for declaration in exported:
        parsed = gemini.FunctionDeclaration.model_validate(declaration)
        back = parsed.model_dump(mode="json", by_alias=True, exclude_none=True)
        assert _numbers_equal(back, declaration), (declaration, back)
        # what Gemini gets is still ADM, and says the same as the declaration
        assert normalize_parameters("t", declaration["parameters"]) == declaration["parameters"]
    tool = gemini.Tool(function_declarations=exported)  # one list, every tool in it
    assert [d.name for d in tool.function_declarations or []] == sorted(TOOLS | FREE_FORM)


def test_gemini_gets_numeric_enums_as_string_enums(registry: ToolRegistry) -> None:
    properties = registry.export_gemini("create_order")["parameters"]["properties"]
    assert properties["priority"] == {
        "type": "STRING",
        "description": "1 is urgent",
        "enum": ["1", "2", "3"],
        "format": "enum",
    }
    assert properties["discount"] == {
        "type": "STRING",
        "nullable": True,
        "enum": ["0", "0.05", "0.1"],
        "format": "enum",
    }
    assert properties["ship_to"]["propertyOrdering"] == ["country", "street", "postcode"]
    # the registry's declaration is untouched
    assert registry.describe("create_order").parameters["properties"]["priority"]["enum"] == [
        1,
        2,
        3,
    ]


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


def _camel_keys(value: Any) -> Any:
    """The SDK sends some keys in snake case (``property_ordering``); the API reads both."""
    if isinstance(value, dict):
        return {
            (key if key == "properties" or "_" not in key else _camel(key)): (
                {name: _camel_keys(sub) for name, sub in item.items()}
                if key == "properties"
                else _camel_keys(item)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_camel_keys(item) for item in value]
    return value


@pytest.fixture
def gemini_client() -> Iterator[tuple[genai.Client, list[dict[str, Any]], list[dict[str, Any]]]]:
    """A Gemini client whose HTTP requests land in ``sent``; it answers ``replies`` in turn."""
    sent: list[dict[str, Any]] = []
    replies: list[dict[str, Any]] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        sent.append(json.loads(request.content))
        return httpx2.Response(200, json=replies.pop(0))

    http = httpx2.Client(transport=httpx2.MockTransport(answer))
    client = genai.Client(api_key="offline", http_options=gemini.HttpOptions(httpx_client=http))
    yield client, sent, replies
    http.close()


def _gemini_call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"functionCall": {"name": name, "args": args}}],
                },
                "finishReason": "STOP",
            }
        ]
    }


def test_a_gemini_call_round_trips_through_the_sdk_and_runs(
    registry: ToolRegistry, gemini_client: Any
) -> None:
    client, sent, replies = gemini_client
    declarations = registry.export_gemini(["create_order", "get_weather"])
    replies.append(
        _gemini_call(
            "create_order",
            {
                "customer": "C123456",
                "priority": "2",  # the STRING enum's spelling of 2
                "discount": "0.05",
                "lines": [{"sku": "ABC-1", "quantity": 3.0}],  # Gemini's numbers are doubles
                "ship_to": {"country": "NO", "street": "Storgata 1"},
            },
        )
    )
    response = client.models.generate_content(
        model="gemini-2.5-flash",
        contents="Order three ABC-1 for C123456, urgent-ish, to Storgata 1 in Norway",
        config=gemini.GenerateContentConfig(
            tools=[gemini.Tool(function_declarations=declarations)]
        ),
    )
    (request,) = sent
    (tool,) = request["tools"]
    assert _numbers_equal(_camel_keys(tool["functionDeclarations"]), declarations)

    (call,) = response.function_calls or []
    assert call.name is not None
    args = registry.from_gemini(call.name, call.args)
    assert args["priority"] == 2
    assert type(args["priority"]) is int
    assert args["discount"] == 0.05
    assert args["lines"] == [{"sku": "ABC-1", "quantity": 3}]
    assert type(args["lines"][0]["quantity"]) is int

    with work.SyncScheduler(backends=(AltarBackend(tools=registry),)) as scheduler:
        job = scheduler.submit(
            work.Job(kind="tool_call", tenant_id="acme", payload={"tool": call.name, "args": args})
        )
        assert scheduler.wait(job.id).result == args


def test_gemini_arguments_that_break_the_declaration_are_listed(registry: ToolRegistry) -> None:
    with pytest.raises(work.altar.ToolArgumentsError) as info:
        registry.from_gemini("get_weather", {"city": "Oslo", "days": "2", "unit": 1})
    assert [v.path for v in info.value.violations] == ["$.unit", "$.days"]


# ---- OpenAI --------------------------------------------------------------------------------------

_TOOL_PARAM = pydantic.TypeAdapter(ChatCompletionFunctionToolParam)


def _sdk_strict(parameters: dict[str, Any]) -> dict[str, Any]:
    """The SDK's own strict conversion of a JSON Schema, as ``pydantic_function_tool`` runs it."""
    schema_only = pydantic.TypeAdapter(
        Annotated[dict[str, Any], pydantic.WithJsonSchema(copy.deepcopy(parameters))]
    )
    return to_strict_json_schema(schema_only)


@pytest.mark.parametrize("strict", [False, True])
def test_every_openai_export_passes_the_sdk_types(registry: ToolRegistry, strict: bool) -> None:
    names = sorted(TOOLS if strict else TOOLS | FREE_FORM)
    exported = registry.export_openai(names, strict=strict)
    for tool in exported:
        parameters = tool["function"]["parameters"]
        jsonschema.Draft202012Validator.check_schema(parameters)
        assert _TOOL_PARAM.validate_python(tool) == tool
        parsed = ChatCompletionFunctionTool.model_validate(tool)
        assert parsed.model_dump(mode="json", exclude_none=True) == tool
        assert tool["function"].get("strict", False) is strict
        if strict:
            assert _sdk_strict(parameters) == parameters  # the SDK's conversion changes nothing


def test_strict_export_makes_optional_properties_required_and_nullable(
    registry: ToolRegistry,
) -> None:
    parameters = registry.export_openai("get_weather", strict=True)["function"]["parameters"]
    assert parameters == {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": ["string", "null"], "enum": ["celsius", "fahrenheit", None]},
            "days": {"type": ["integer", "null"], "enum": [1, 3, 7, None]},
        },
        "required": ["city", "unit", "days"],
        "additionalProperties": False,
    }
    order = registry.export_openai("create_order", strict=True)["function"]["parameters"]
    ship_to = order["properties"]["ship_to"]
    assert list(ship_to["properties"]) == ["country", "street", "postcode"]
    assert ship_to["required"] == ["country", "street", "postcode"]
    assert ship_to["properties"]["street"] == {
        "type": "string",
        "description": "1 to 200 characters",  # strict mode has no minLength/maxLength
    }
    assert list(order["properties"]) == TOOLS["create_order"]["propertyOrdering"]  # type: ignore[index]


@pytest.fixture
def openai_client() -> Iterator[tuple[OpenAI, list[dict[str, Any]], list[dict[str, Any]]]]:
    """An OpenAI client whose HTTP requests land in ``sent``; it answers ``replies`` in turn."""
    sent: list[dict[str, Any]] = []
    replies: list[dict[str, Any]] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        sent.append(json.loads(request.content))
        return httpx2.Response(200, json=replies.pop(0))

    http = httpx2.Client(transport=httpx2.MockTransport(answer))
    client = OpenAI(api_key="offline", base_url="http://openai.invalid/v1", http_client=http)
    yield client, sent, replies
    http.close()


def _openai_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": None, "tool_calls": [call]},
            }
        ],
    }


def test_a_strict_openai_call_round_trips_through_parse_and_runs(
    registry: ToolRegistry, openai_client: Any
) -> None:
    client, sent, replies = openai_client
    tools = registry.export_openai(["get_weather", "create_order"], strict=True)
    replies.append(_openai_call("get_weather", {"city": "Oslo", "unit": None, "days": 3}))
    completion = client.chat.completions.parse(
        model="gpt-4o-2024-08-06",
        messages=[{"role": "user", "content": "Weather in Oslo for three days?"}],
        tools=tools,
    )
    (request,) = sent
    assert request["tools"] == tools  # sent as exported

    (call,) = completion.choices[0].message.tool_calls or []
    assert call.function.parsed_arguments == {"city": "Oslo", "unit": None, "days": 3}
    args = registry.from_openai(call.function.name, call.function.arguments)
    assert args == {"city": "Oslo", "unit": None, "days": 3}  # unit is nullable: null stays
    with work.SyncScheduler(backends=(AltarBackend(tools=registry),)) as scheduler:
        job = scheduler.submit(
            work.Job(
                kind="tool_call", tenant_id="acme", payload={"tool": "get_weather", "args": args}
            )
        )
        assert scheduler.wait(job.id).status == "succeeded"


def test_parse_refuses_a_plain_export_and_takes_a_strict_one(
    registry: ToolRegistry, openai_client: Any
) -> None:
    client, _, replies = openai_client
    with pytest.raises(ValueError, match="`get_weather` is not strict"):
        client.chat.completions.parse(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            tools=registry.export_openai(["get_weather"]),
        )
    replies.append(_openai_call("ping", {}))
    client.chat.completions.parse(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hi"}],
        tools=registry.export_openai(["ping"], strict=True),
    )


def test_strict_nulls_for_left_out_properties_are_dropped(registry: ToolRegistry) -> None:
    sent = {
        "customer": "C123456",
        "priority": 1,
        "lines": [{"sku": "ABC", "quantity": 1, "unit_price": None, "tags": None}],
        "ship_to": {"country": "SE", "street": "Drottninggatan 1", "postcode": None},
        "placed_at": None,
        "discount": None,
        "express": None,
        "reference": None,
        "weight_g": None,
        "ratio": None,
    }
    args = registry.from_openai("create_order", json.dumps(sent))
    assert args == {
        "customer": "C123456",
        "priority": 1,
        "lines": [{"sku": "ABC", "quantity": 1, "tags": None}],  # tags is nullable: kept
        "ship_to": {"country": "SE", "street": "Drottninggatan 1"},
        "discount": None,
        "express": None,
        "weight_g": None,
    }
    with pytest.raises(work.altar.ToolArgumentsError) as info:
        registry.from_openai("create_order", {**sent, "customer": None, "priority": 4})
    assert [v.path for v in info.value.violations] == ["$.customer", "$.priority"]
    assert registry.from_openai("ping", "{}") == registry.from_gemini("ping", None) == {}
    with pytest.raises(work.ValidationError, match="not JSON") as text:
        registry.from_openai("create_order", '{"customer": NaN}')
    assert text.value.path == "$"


# ---- what a provider cannot take -----------------------------------------------------------------


def test_strict_mode_refuses_a_free_form_object_naming_it(registry: ToolRegistry) -> None:
    with pytest.raises(work.ValidationError) as info:
        registry.export_openai("annotate", strict=True)
    assert info.value.path == "$.parameters.properties.graph"
    assert "tool 'annotate' cannot be exported to OpenAI strict mode" in str(info.value)
    assert "free-form OBJECT" in str(info.value)
    with pytest.warns(ToolExportWarning) as caught:
        exported = registry.export_openai(strict=True)
    assert [t["function"]["name"] for t in exported] == sorted(TOOLS)
    (warning,) = caught
    assert "left out 2 tools" in str(warning.message)
    assert "'annotate'" in str(warning.message)
    assert "'anything'" in str(warning.message)


@pytest.mark.parametrize(
    ("name", "parameters", "export", "path", "rule"),
    [
        ("db.query", None, "export_openai", "$.name", "^[a-zA-Z0-9_-]{1,64}$"),
        ("ns:tool", None, "export_openai", "$.name", "^[a-zA-Z0-9_-]{1,64}$"),
        ("a" * 65, None, "export_openai", "$.name", "^[a-zA-Z0-9_-]{1,64}$"),
        ("2fa_check", None, "export_gemini", "$.name", "^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$"),
        ("me@home", None, "export_gemini", "$.name", "^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$"),
        (
            "lookup",
            {"properties": {"x y": {"type": "STRING"}}},
            "export_gemini",
            "$.parameters.properties['x y']",
            "^[A-Za-z_][A-Za-z0-9_]{0,63}$",
        ),
    ],
)
def test_names_a_provider_refuses_are_named_with_the_rule(
    name: str, parameters: Any, export: str, path: str, rule: str
) -> None:
    registry = ToolRegistry(builtins=False)
    registry.register(name, "d", parameters, lambda args: args)
    registry.register("fine", "d", None, lambda args: args)
    with pytest.raises(work.ValidationError) as info:
        getattr(registry, export)(name)
    assert info.value.path == path
    assert rule in str(info.value)
    with pytest.warns(ToolExportWarning, match=re.escape(repr(name))):
        assert len(getattr(registry, export)()) == 1  # the rest of the list is still usable

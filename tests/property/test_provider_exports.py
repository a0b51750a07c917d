"""For random ADM declarations (the oracle's schemas: every key, nested objects and arrays, enums
of every type, formats, patterns, propertyOrdering), the exports pass the real SDKs: Gemini's
``FunctionDeclaration`` holds the Gemini export with nothing dropped, or the export names the
rule the declaration breaks; OpenAI's strict conversion leaves the strict export unchanged, or
the export names the free-form object that stops it."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import pytest
from google.genai import types as gemini
from hypothesis import HealthCheck, given, settings

from nsai_work.altar._adm import normalize_parameters
from nsai_work.altar._export import (
    ExportRefusal,
    gemini_declaration,
    gemini_schema,
    openai_tool,
)

from ..integration.test_altar_sdks import _numbers_equal, _sdk_strict
from .test_adm_oracle import _free_form, top_schema


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(top_schema)
def test_gemini_holds_every_export_with_nothing_dropped(schema: dict[str, Any]) -> None:
    if "x y" in schema.get("properties", {}):  # a name Gemini takes for no parameter
        with pytest.raises(ExportRefusal, match=re.escape("^[A-Za-z_][A-Za-z0-9_]{0,63}$")) as no:
            gemini_declaration("tool", "a tool", schema)
        assert no.value.path == "$.parameters.properties['x y']"
        declaration = {"name": "tool", "parameters": gemini_schema(schema)}
    else:
        declaration = gemini_declaration("tool", "a tool", schema)
    parsed = gemini.FunctionDeclaration.model_validate(declaration)
    back = parsed.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert _numbers_equal(back, declaration), (declaration, back)
    gemini.Tool(function_declarations=[parsed])
    # what Gemini gets is ADM still (a numeric enum became a STRING one)
    assert normalize_parameters("t", declaration["parameters"]) == declaration["parameters"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(top_schema)
def test_the_sdk_strict_conversion_leaves_every_strict_export_unchanged(
    schema: dict[str, Any],
) -> None:
    if _free_form(schema):
        with pytest.raises(ExportRefusal, match="free-form OBJECT"):
            openai_tool("tool", "a tool", schema, strict=True)
        return
    tool = openai_tool("tool", "a tool", schema, strict=True)
    parameters = tool["function"]["parameters"]
    jsonschema.Draft202012Validator.check_schema(parameters)
    assert _sdk_strict(parameters) == parameters
    plain = openai_tool("tool", "a tool", schema)["function"]["parameters"]
    jsonschema.Draft202012Validator.check_schema(plain)

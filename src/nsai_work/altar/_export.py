"""Declarations in the shapes LLM tool-calling APIs take.

- OpenAI (Chat Completions ``tools``): ``{"type": "function", "function": {"name",
  "description", "parameters"}}`` where ``parameters`` is JSON Schema (lower-case types,
  ``nullable`` as ``["string", "null"]``, closed objects as ``additionalProperties: false``).
- Gemini (``function_declarations``): ``{"name", "description", "parameters"}`` where
  ``parameters`` is the ADM schema itself (the OpenAPI subset, upper-case types).
"""

from __future__ import annotations

import copy
from typing import Any

from ._adm import FORMATS

__all__ = ["gemini_declaration", "openai_tool", "to_json_schema"]

_INT_SPANS = {"int32": 2**31, "int64": 2**63}


def to_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A normalized ADM schema as JSON Schema (draft 2020-12), accepting the same values."""
    kind: str = schema["type"]
    nullable = schema.get("nullable", False)
    out: dict[str, Any] = {"type": [kind.lower(), "null"] if nullable else kind.lower()}
    if "description" in schema:
        out["description"] = schema["description"]
    if kind == "OBJECT":
        if "properties" in schema:
            out["properties"] = {
                name: to_json_schema(sub) for name, sub in schema["properties"].items()
            }
            if schema.get("required"):
                out["required"] = list(schema["required"])
            out["additionalProperties"] = False
    elif kind == "ARRAY":
        out["items"] = to_json_schema(schema["items"])
        for key in ("minItems", "maxItems"):
            if key in schema:
                out[key] = schema[key]
    else:
        if "enum" in schema:
            out["enum"] = [*schema["enum"], None] if nullable else list(schema["enum"])
        for key in ("minLength", "maxLength", "pattern", "minimum", "maximum"):
            if key in schema:
                out[key] = schema[key]
        fmt = schema.get("format")
        if fmt == "date-time":
            out["format"] = "date-time"
        elif fmt in _INT_SPANS:
            span = _INT_SPANS[fmt]
            out["minimum"] = max(out.get("minimum", -span), -span)
            out["maximum"] = min(out.get("maximum", span - 1), span - 1)
        else:  # enum, float, double: annotations with no JSON Schema counterpart
            assert fmt is None or fmt in FORMATS[kind]
    return out


def openai_tool(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """One declaration in OpenAI's ``tools`` shape."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": to_json_schema(parameters),
        },
    }


def gemini_declaration(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """One declaration in Gemini's ``function_declarations`` shape (a copy of the ADM schema)."""
    return {"name": name, "description": description, "parameters": copy.deepcopy(parameters)}

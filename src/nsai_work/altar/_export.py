"""Declarations in the shapes LLM tool-calling APIs take, and the rules each provider imposes.

- OpenAI (Chat Completions ``tools``): ``{"type": "function", "function": {"name",
  "description", "parameters"}}`` where ``parameters`` is JSON Schema (lower-case types,
  ``nullable`` as ``["string", "null"]``, closed objects as ``additionalProperties: false``,
  properties in ``propertyOrdering``'s order). Names match ``^[a-zA-Z0-9_-]{1,64}$``.
  ``strict=True`` adds ``"strict": true`` and makes the schema one that strict mode (structured
  outputs) accepts: every property in ``required`` (optional ones nullable instead), every object
  closed, no free-form object, keywords strict mode lacks (``minLength``, ``maxLength``) said in
  the description instead, and within OpenAI's documented size limits.
- Gemini (``function_declarations``): ``{"name", "description", "parameters"}`` where
  ``parameters`` is the ADM schema (the OpenAPI subset, upper-case types). Names match
  ``^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$`` and the top-level parameter names
  ``^[A-Za-z_][A-Za-z0-9_]{0,63}$``. Gemini takes ``enum`` on STRING only, so a NUMBER or INTEGER
  enum is exported as a STRING enum of the numbers' JSON spellings (``[1, 2]`` becomes
  ``["1", "2"]``), which ``from_gemini`` turns back into numbers (``_arguments.py``).

A tool a provider cannot take raises ``ExportRefusal`` here, naming the path and the rule; the
registry turns it into a ``ValidationError`` for a tool asked for by name, or leaves the tool out
of an every-tool export with a ``ToolExportWarning`` (one tool never makes the list unusable).
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from collections.abc import Callable, Iterable
from typing import Any, Final

from .._errors import ValidationError
from ._adm import key_path
from ._formats import INT_SPANS

__all__ = [
    "STRICT_LIMITS",
    "ExportRefusal",
    "ToolExportWarning",
    "export",
    "gemini_declaration",
    "gemini_schema",
    "openai_tool",
    "spell_number",
    "to_json_schema",
]

OPENAI_NAME_RULE: Final = "^[a-zA-Z0-9_-]{1,64}$"
GEMINI_NAME_RULE: Final = "^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$"
GEMINI_PARAMETER_RULE: Final = "^[A-Za-z_][A-Za-z0-9_]{0,63}$"
_OPENAI_NAME: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}").fullmatch
_GEMINI_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}").fullmatch
_GEMINI_PARAMETER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}").fullmatch

#: OpenAI's documented limits of a strict schema.
STRICT_LIMITS: Final = {
    "nesting": 10,  # levels of objects nested below the parameters object
    "properties": 5000,  # object properties, all objects together
    "enum_values": 1000,  # enum values, all enums together
    "characters": 120_000,  # property names and string enum values, all together
}


class ExportRefusal(Exception):
    """A provider cannot take a tool: ``path`` says where, ``reason`` which rule."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{reason} - at {path}")
        self.path = path
        self.reason = reason


class ToolExportWarning(UserWarning):
    """An every-tool export left out tools the provider cannot take (the message says which and
    why). Export them by name to get a ``ValidationError`` instead."""


# ---- OpenAI ------------------------------------------------------------------------------------


def to_json_schema(schema: dict[str, Any], *, strict: bool = False) -> dict[str, Any]:
    """A normalized ADM schema as JSON Schema (draft 2020-12), accepting the same values.

    ``strict=True``: the schema OpenAI's strict mode takes (see the module docstring); an
    optional property becomes required and nullable, so a strict call's arguments hold ``null``
    where the tool's declaration has nothing (``from_openai`` maps it back). ``ValidationError``
    naming the path and the rule when a strict schema is impossible (a free-form object, a size
    limit).
    """
    try:
        return _to_json_schema(schema, strict=strict)
    except ExportRefusal as refusal:
        raise ValidationError(
            f"no strict JSON Schema for these parameters: {refusal.reason}", path=refusal.path
        ) from None


def _to_json_schema(schema: dict[str, Any], *, strict: bool) -> dict[str, Any]:
    budget = _Budget() if strict else None
    return _json_schema(schema, "$.parameters", budget, depth=0, optional=False)


class _Budget:
    """What a strict schema has used of ``STRICT_LIMITS`` so far."""

    __slots__ = ("characters", "enum_values", "properties")

    def __init__(self) -> None:
        self.properties = self.enum_values = self.characters = 0

    def spend(self, path: str, what: str, amount: int) -> None:
        total = getattr(self, what) + amount
        setattr(self, what, total)
        if total > STRICT_LIMITS[what]:
            raise ExportRefusal(
                path,
                f"strict mode allows at most {STRICT_LIMITS[what]:,} {_LIMIT_WORDS[what]} in one "
                f"tool; this one has more",
            )


_LIMIT_WORDS: Final = {
    "properties": "object properties",
    "enum_values": "enum values",
    "characters": "characters of property names and enum strings",
}


def _json_schema(
    schema: dict[str, Any], path: str, budget: _Budget | None, *, depth: int, optional: bool
) -> dict[str, Any]:
    kind: str = schema["type"]
    strict = budget is not None
    nullable = schema.get("nullable", False) or optional
    out: dict[str, Any] = {"type": [kind.lower(), "null"] if nullable else kind.lower()}
    if "description" in schema:
        out["description"] = schema["description"]
    if kind == "OBJECT":
        properties: dict[str, Any] | None = schema.get("properties")
        if properties is None:
            if budget is not None:
                raise ExportRefusal(
                    path,
                    "a free-form OBJECT (no properties declared) cannot be strict: strict mode "
                    "needs every object's properties declared and closed (additionalProperties: "
                    "false). Declare its properties, or export the tool without strict",
                )
            return out
        if budget is not None and depth > STRICT_LIMITS["nesting"]:
            raise ExportRefusal(
                path, f"strict mode nests objects at most {STRICT_LIMITS['nesting']} levels deep"
            )
        order: list[str] = schema.get("propertyOrdering") or list(properties)
        required = schema.get("required", [])
        if budget is not None:
            budget.spend(path, "properties", len(order))
            budget.spend(path, "characters", sum(len(name) for name in order))
        out["properties"] = {
            name: _json_schema(
                properties[name],
                key_path(f"{path}.properties", name),
                budget,
                depth=depth + 1,
                optional=strict and name not in required,
            )
            for name in order
        }
        if strict:
            out["required"] = list(order)
        elif required:
            out["required"] = list(required)
        out["additionalProperties"] = False
    elif kind == "ARRAY":
        out["items"] = _json_schema(
            schema["items"], f"{path}.items", budget, depth=depth, optional=False
        )
        for key in ("minItems", "maxItems"):
            if key in schema:
                out[key] = schema[key]
    else:
        _scalar(schema, out, path, budget, nullable)
    return out


def _scalar(
    schema: dict[str, Any],
    out: dict[str, Any],
    path: str,
    budget: _Budget | None,
    nullable: bool,
) -> None:
    if "enum" in schema:
        out["enum"] = [*schema["enum"], None] if nullable else list(schema["enum"])
        if budget is not None:
            budget.spend(f"{path}.enum", "enum_values", len(schema["enum"]))
            strings = [value for value in schema["enum"] if isinstance(value, str)]
            budget.spend(f"{path}.enum", "characters", sum(map(len, strings)))
    lengths = [key for key in ("minLength", "maxLength") if key in schema]
    if budget is not None and lengths:  # strict mode lacks them: said in words instead
        said = _length_words(schema.get("minLength"), schema.get("maxLength"))
        described = schema.get("description")
        out["description"] = f"{described} ({said})" if described else said.capitalize()
    else:
        for key in lengths:
            out[key] = schema[key]
    for copied in ("pattern", "minimum", "maximum"):
        if copied in schema:
            out[copied] = schema[copied]
    fmt = schema.get("format")
    if fmt == "date-time":
        out["format"] = "date-time"
    elif fmt in INT_SPANS:
        span = INT_SPANS[fmt]
        out["minimum"] = max(out.get("minimum", -span), -span)
        out["maximum"] = min(out.get("maximum", span - 1), span - 1)
    # enum, float and double: annotations with no JSON Schema counterpart


def _length_words(low: int | None, high: int | None) -> str:
    def chars(count: int) -> str:
        return f"{count} character" if count == 1 else f"{count} characters"

    if low is not None and high is not None:
        return f"exactly {chars(low)}" if low == high else f"{low} to {chars(high)}"
    if low is not None:
        return f"at least {chars(low)}"
    assert high is not None
    return f"at most {chars(high)}"


def openai_tool(
    name: str, description: str, parameters: dict[str, Any], *, strict: bool = False
) -> dict[str, Any]:
    """One declaration in OpenAI's ``tools`` shape (``ExportRefusal`` if OpenAI cannot take it)."""
    if not _OPENAI_NAME(name):
        raise ExportRefusal("$.name", f"OpenAI tool names match {OPENAI_NAME_RULE}")
    if strict and parameters.get("nullable"):
        raise ExportRefusal(
            "$.parameters.nullable", "strict mode needs the parameters to be an object, not null"
        )
    function: dict[str, Any] = {
        "name": name,
        "description": description,
        "parameters": _to_json_schema(parameters, strict=strict),
    }
    if strict:
        function["strict"] = True
    return {"type": "function", "function": function}


# ---- Gemini ------------------------------------------------------------------------------------


def spell_number(value: int | float) -> str:
    """A number's JSON spelling: how a numeric enum value appears in a Gemini STRING enum."""
    return json.dumps(value)


def gemini_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """An ADM schema as Gemini takes it: a copy, with NUMBER and INTEGER enums as STRING enums.

    The bounds and ``format`` of a numeric enum are dropped with it: every value an enum lists is
    within them (``register`` refuses one that is not), so the STRING enum says the same.
    """
    kind = schema["type"]
    if kind in ("NUMBER", "INTEGER") and "enum" in schema:
        out: dict[str, Any] = {"type": "STRING"}
        for key in ("description", "nullable"):
            if key in schema:
                out[key] = schema[key]
        out["enum"] = [spell_number(value) for value in schema["enum"]]
        out["format"] = "enum"
        return out
    out = dict(schema)
    if "properties" in schema:
        out["properties"] = {name: gemini_schema(sub) for name, sub in schema["properties"].items()}
    if "items" in schema:
        out["items"] = gemini_schema(schema["items"])
    for key in ("enum", "required", "propertyOrdering"):
        if key in out:
            out[key] = copy.copy(out[key])
    return out


def gemini_declaration(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """One declaration in Gemini's ``function_declarations`` shape (``ExportRefusal`` if Gemini
    cannot take it)."""
    if not _GEMINI_NAME(name):
        raise ExportRefusal("$.name", f"Gemini function names match {GEMINI_NAME_RULE}")
    for parameter in parameters.get("properties", ()):
        if not _GEMINI_PARAMETER(parameter):
            raise ExportRefusal(
                key_path("$.parameters.properties", parameter),
                f"Gemini parameter names (the top-level properties) match {GEMINI_PARAMETER_RULE}",
            )
    return {"name": name, "description": description, "parameters": gemini_schema(parameters)}


# ---- many tools --------------------------------------------------------------------------------

Build = Callable[[str, str, dict[str, Any]], dict[str, Any]]


def export(
    declarations: Iterable[Any], build: Build, *, provider: str, leave_out: bool
) -> list[dict[str, Any]]:
    """Each declaration built for a provider. A tool the provider cannot take raises a
    ``ValidationError`` naming it, the path and the rule; with ``leave_out`` (an every-tool
    export) such tools are left out instead, and one ``ToolExportWarning`` names each with its
    reason."""
    built: list[dict[str, Any]] = []
    refused: list[tuple[str, ExportRefusal]] = []
    for d in declarations:
        try:
            built.append(build(d.name, d.description, d.parameters))
        except ExportRefusal as refusal:
            if not leave_out:
                raise refused_error(d.name, provider, refusal) from None
            refused.append((d.name, refusal))
    if refused:
        listed = "; ".join(f"{name!r}: {refusal}" for name, refusal in refused)
        warnings.warn(
            f"the {provider} export left out {len(refused)} tool"
            f"{'s' if len(refused) > 1 else ''} {provider} would refuse: {listed}. Export the "
            f"tools you mean by name to get an error instead",
            ToolExportWarning,
            stacklevel=4,
        )
    return built


def refused_error(name: str, provider: str, refusal: ExportRefusal) -> ValidationError:
    """The ``ValidationError`` for a tool asked for by name that a provider cannot take."""
    return ValidationError(
        f"tool {name!r} cannot be exported to {provider}: {refusal.reason}", path=refusal.path
    )

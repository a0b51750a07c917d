"""A model's tool-call arguments, turned back into the terms of the tool's declaration.

What a provider's export changed on the way out, these undo on the way back, before validation:

- ``openai_arguments``: in strict mode every property is required, and an optional one is sent
  as ``null`` when the model leaves it out; ``null`` for a property that is optional and not
  nullable in the declaration means "absent", so it is dropped. (Where the declaration itself
  says ``nullable``, ``null`` stays: strict mode cannot tell "absent" from "null" there.)
- ``gemini_arguments``: a NUMBER or INTEGER enum went out as a STRING enum of the numbers'
  spellings, so a string among them is turned back into its number; and Gemini carries numbers
  as doubles, so ``3.0`` where the declaration says INTEGER becomes ``3``.

Both also take the arguments as JSON text (OpenAI gives ``function.arguments`` as a string).
Anything else is left as it is, for the validator to judge.
"""

from __future__ import annotations

import json
from typing import Any, Final

from .._errors import ValidationError
from ._export import spell_number

__all__ = ["decode_arguments", "gemini_arguments", "openai_arguments"]

#: Integral floats up to this size turn into ints exactly.
_EXACT: Final = 2**53


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_arguments(arguments: Any) -> Any:
    """Arguments as a dict: JSON text (``str`` or ``bytes``) is decoded, ``None`` (a call with no
    arguments) is ``{}``, anything else is returned as it is.

    ``ValidationError`` at ``$`` for text that is not JSON (``NaN`` and ``Infinity`` included).
    """
    if arguments is None:
        return {}
    if not isinstance(arguments, str | bytes | bytearray):
        return arguments
    try:
        return json.loads(arguments, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise ValidationError(
            f"tool arguments given as text must be a JSON object; this text is not JSON ({exc})",
            path="$",
        ) from None


def openai_arguments(schema: dict[str, Any], value: Any) -> Any:
    """``value`` with each ``null`` that stands for an absent optional property dropped."""
    kind = schema["type"]
    if kind == "OBJECT" and isinstance(value, dict) and "properties" in schema:
        properties: dict[str, Any] = schema["properties"]
        required = schema.get("required", ())
        out: dict[Any, Any] = {}
        for name, item in value.items():
            sub = properties.get(name) if isinstance(name, str) else None
            if sub is None:
                out[name] = item
            elif item is None and name not in required and not sub.get("nullable", False):
                continue  # strict mode's "left out"
            else:
                out[name] = openai_arguments(sub, item)
        return out
    if kind == "ARRAY" and isinstance(value, list):
        return [openai_arguments(schema["items"], item) for item in value]
    return value


def gemini_arguments(schema: dict[str, Any], value: Any) -> Any:
    """``value`` with numeric enum spellings turned back into numbers and integral doubles into
    ints where the declaration says INTEGER."""
    kind = schema["type"]
    if kind == "OBJECT" and isinstance(value, dict) and "properties" in schema:
        properties: dict[str, Any] = schema["properties"]
        return {
            name: gemini_arguments(properties[name], item)
            if isinstance(name, str) and name in properties
            else item
            for name, item in value.items()
        }
    if kind == "ARRAY" and isinstance(value, list):
        return [gemini_arguments(schema["items"], item) for item in value]
    if kind in ("NUMBER", "INTEGER"):
        if isinstance(value, str) and "enum" in schema:
            for number in schema["enum"]:
                if spell_number(number) == value:
                    return number
        if (
            kind == "INTEGER"
            and isinstance(value, float)
            and value.is_integer()
            and abs(value) <= _EXACT
        ):
            return int(value)
    return value

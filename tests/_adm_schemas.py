"""ADM schemas that several ALTAR tests share."""

from __future__ import annotations

from typing import Any

#: The seed's search_documents parameters: a nested object, one required field.
SEARCH: dict[str, Any] = {
    "type": "OBJECT",
    "properties": {
        "query": {"type": "STRING", "description": "Search query"},
        "limit": {"type": "NUMBER", "description": "Max results"},
        "filters": {
            "type": "OBJECT",
            "properties": {
                "category": {"type": "STRING"},
                "date_range": {
                    "type": "OBJECT",
                    "properties": {"start": {"type": "STRING"}, "end": {"type": "STRING"}},
                },
            },
        },
    },
    "required": ["query"],
}

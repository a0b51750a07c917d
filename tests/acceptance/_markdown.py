"""Code blocks of a markdown file: each ```python block, and the ```text block right after it
(its expected standard output), if there is one."""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)


class Example(NamedTuple):
    """One runnable example."""

    source: Path
    line: int
    code: str
    expected: str | None

    @property
    def name(self) -> str:
        return f"{self.source.name}:{self.line}"


def examples(path: Path) -> list[Example]:
    """Every python block of ``path`` with its expected output."""
    text = path.read_text()
    blocks = [
        (m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1, m.start(), m.end())
        for m in _FENCE.finditer(text)
    ]
    found = []
    for i, (lang, body, line, _, end) in enumerate(blocks):
        if lang != "python":
            continue
        expected = None
        if i + 1 < len(blocks):
            next_lang, next_body, _, next_start, _ = blocks[i + 1]
            if next_lang == "text" and not text[end:next_start].strip():
                expected = next_body
        found.append(Example(path, line, body, expected))
    return found

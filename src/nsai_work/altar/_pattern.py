"""ADM ``pattern``: compiled with RE2, so a match takes time linear in the string's length.

A pattern runs on the engine's thread at submit, so a backtracking engine (Python's ``re``) would
let one tool's ``^(a+)+$`` and a 27-character argument stall every tenant's submits for
seconds. RE2 has no backtracking: no look-around, backreferences, atomic groups or possessive
quantifiers, and such a pattern is refused when the tool is registered.

The semantics are JSON Schema's (ECMA-262) where it matters for validation: a pattern is
searched for anywhere in the string unless it anchors itself, and ``$`` matches only at the very
end (not before a trailing newline, as Python's ``re`` does). ``\\d``, ``\\w`` and ``\\s`` are
ASCII classes.

We call google-re2's extension module (``re2._re2``) directly: ``re2.compile(p).search(s)``
runs the same ``RE2.Match`` and then builds a match object (character offsets, groups) that a
yes/no check does not need, about five times the cost. tests/unit/test_adm_validation.py
compares the two.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from re2 import _re2  # type: ignore[import-untyped]  # google-re2 ships no type information

__all__ = ["PatternError", "compile_search"]

_UNANCHORED: Final = _re2.RE2.Anchor.UNANCHORED


def _options() -> object:
    options = _re2.RE2.Options()
    options.log_errors = False  # RE2 would print every refused pattern on stderr
    options.never_capture = True  # yes or no is all we ask: no group offsets to compute
    return options


_OPTIONS: Final = _options()

#: What RE2's refusals name, in words (the rest of RE2's reasons are shown as it says them).
_GROUPS: Final = {
    "(?=": "a look-ahead",
    "(?!": "a negative look-ahead",
    "(?<=": "a look-behind",
    "(?<!": "a negative look-behind",
    "(?>": "an atomic group",
    "(?P": "a named backreference",  # (?P<name>...) itself is accepted
}
_ESCAPES: Final = {
    "\\k": "a named backreference",
    "\\Z": "Python's \\Z (the end of the text is \\z or $ in RE2)",
}


class PatternError(ValueError):
    """RE2 refuses a pattern; the message says why (and names the construct when it can)."""


def compile_search(pattern: str) -> Callable[[str], bool]:
    """Compile ``pattern`` with RE2 and return ``search(text) -> bool``: whether it matches
    anywhere in ``text`` (in time linear in ``len(text)``). ``PatternError`` if RE2 refuses it.

    A text that is not valid Unicode (a lone surrogate such as ``'\\ud800'``) matches nothing.
    """
    try:
        encoded = pattern.encode()
    except UnicodeEncodeError:
        raise PatternError("it is not valid Unicode text (it holds a lone surrogate)") from None
    regexp = _re2.RE2(encoded, _OPTIONS)
    if not regexp.ok():
        raise PatternError(_reason(regexp.error().decode("utf-8", "backslashreplace")))
    match = regexp.Match

    def search(text: str) -> bool:
        try:
            data = text.encode()
        except UnicodeEncodeError:  # a lone surrogate: not text a pattern can describe
            return False
        start: int = match(_UNANCHORED, data, 0, len(data))[0][0]  # -1: no match
        return start >= 0

    return search


def _reason(error: str) -> str:
    """RE2's error, with the construct named when it is one RE2 leaves out on purpose."""
    kind, _, fragment = error.partition(": ")
    construct = None
    if kind == "invalid perl operator":
        construct = _GROUPS.get(fragment)
    elif kind == "invalid escape sequence" and fragment[1:].isdigit():
        construct = "a backreference"
    elif kind == "invalid escape sequence":
        construct = _ESCAPES.get(fragment)
    elif kind == "bad repetition operator" and fragment.endswith("+"):
        construct = "a possessive quantifier"
    said = f"RE2 says {error!r}"
    return said if construct is None else f"{construct} is not supported ({said})"

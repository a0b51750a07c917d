"""Telemetry: the event bus (``attach``, ``detach``, ``execute``, ``span`` ...) and the catalogue of
events nsai-work emits (``nsai_work.telemetry.events``).

The module functions act on the process-wide bus, as in the seed::

    work.telemetry.attach("metrics", ("work", "job", "completed"), handle_event)
    work.telemetry.attach_console_logger()
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any, Final

from . import events
from ._bus import HandlerFn, HandlerInfo, Telemetry
from .events import ALL_EVENTS, Event

__all__ = [
    "ALL_EVENTS",
    "CONSOLE_LOGGER_ID",
    "EXPORTABLE_METADATA",
    "HandlerInfo",
    "Telemetry",
    "attach",
    "attach_console_logger",
    "attach_many",
    "default_bus",
    "detach",
    "escape_value",
    "events",
    "execute",
    "list_handlers",
    "span",
]

_DEFAULT: Final = Telemetry()

#: Metadata keys an exporter (log line, metric label, span attribute) may carry: ids and labels,
#: never the job's payload, result or other secrets.
EXPORTABLE_METADATA: Final = (
    "job_id",
    "tenant_id",
    "namespace",
    "kind",
    "priority",
    "backend",
    "pool",
    "status",
    "attempt",
    "error_type",
    "decision",
    "reason",
    "dependency_id",
    "schedule",
    "fire_time",
)
CONSOLE_LOGGER_ID: Final = "nsai-work-console-logger"
#: A value printed as is: no space, quote, ``=`` or backslash (and printable, checked apart).
_BARE: Final = re.compile(r'[^ "=\\]+').fullmatch
_SHORT_ESCAPES: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t", '"': '\\"', "\\": "\\\\"}


def default_bus() -> Telemetry:
    """The process-wide bus the module functions use."""
    return _DEFAULT


def attach(
    handler_id: str, event_or_events: Event | Iterable[Event], fn: HandlerFn, config: Any = None
) -> None:
    """Attach ``fn(event, measurements, metadata, config)`` to one event or a list of events."""
    _DEFAULT.attach(handler_id, event_or_events, fn, config)


def attach_many(
    handler_id: str, events: Iterable[Event], fn: HandlerFn, config: Any = None
) -> None:
    """Attach one handler to several events."""
    _DEFAULT.attach_many(handler_id, events, fn, config)


def detach(handler_id: str) -> bool:
    """Detach a handler by id; False if it was not attached."""
    return _DEFAULT.detach(handler_id)


def execute(event: Event, measurements: Mapping[str, float], metadata: Mapping[str, Any]) -> None:
    """Emit an event to its handlers."""
    _DEFAULT.execute(event, measurements, metadata)


def list_handlers(prefix: Event = ()) -> list[HandlerInfo]:
    """Handlers attached to events starting with ``prefix``."""
    return _DEFAULT.list_handlers(prefix)


def span(prefix: Event, metadata: Mapping[str, Any] | None = None) -> AbstractContextManager[None]:
    """Time a block: emits ``prefix + ('start'|'stop'|'exception',)``."""
    return _DEFAULT.span(prefix, metadata)


def attach_console_logger(
    *,
    level: int = logging.INFO,
    events: Iterable[Event] = ALL_EVENTS,
    bus: Telemetry | None = None,
) -> str:
    """Log one line per event to the ``nsai_work.telemetry`` logger (to stderr when logging is
    not configured). Lines carry ids, labels and measurements, never payloads or results.
    Returns the handler id (``CONSOLE_LOGGER_ID``) to detach it."""
    logger = logging.getLogger("nsai_work.telemetry")
    if not logger.handlers and not logging.getLogger().handlers:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(stream)
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)

    def log_event(
        event: Event, measurements: Mapping[str, float], metadata: Mapping[str, Any], _: Any
    ) -> None:
        if not logger.isEnabledFor(level):
            return
        labels = " ".join(
            f"{key}={escape_value(metadata[key])}"
            for key in EXPORTABLE_METADATA
            if metadata.get(key) is not None
        )
        numbers = " ".join(
            f"{escape_value(key)}={_number(value)}" for key, value in measurements.items()
        )
        name = escape_value(".".join(str(part) for part in event))
        logger.log(level, "[%s] %s %s", name, labels, numbers)

    (bus or _DEFAULT).attach_many(CONSOLE_LOGGER_ID, events, log_event)
    return CONSOLE_LOGGER_ID


def escape_value(value: object) -> str:
    r"""``value`` as one token of a ``key=value`` log line, so that no value can forge a line or
    a label: as is when it is printable and has no space, quote, ``=`` or backslash; otherwise
    in double quotes, with ``\"``, ``\\``, ``\n``, ``\r``, ``\t``, and ``\xNN``, ``\uNNNN`` or
    ``\UNNNNNNNN`` for every other non-printable character (control characters, ESC, line
    separators, bidirectional overrides, lone surrogates)."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable() and _BARE(text):
        return text
    return '"' + "".join(_escape_char(char) for char in text) + '"'


def _escape_char(char: str) -> str:
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    if char.isprintable():
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _number(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.3f}"
    return escape_value(value)

"""Telemetry: the event bus (``attach``, ``detach``, ``execute``, ``span`` ...) and the catalogue of
events nsai-work emits (``nsai_work.telemetry.events``).

The module functions act on the process-wide bus, as in the seed::

    work.telemetry.attach("metrics", ("work", "job", "completed"), handle_event)
    work.telemetry.attach_console_logger()
"""

from __future__ import annotations

import logging
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
)
CONSOLE_LOGGER_ID: Final = "nsai-work-console-logger"


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
            f"{key}={metadata[key]}" for key in EXPORTABLE_METADATA if metadata.get(key) is not None
        )
        numbers = " ".join(f"{key}={value:.3f}" for key, value in measurements.items())
        logger.log(level, "[%s] %s %s", ".".join(event), labels, numbers)

    (bus or _DEFAULT).attach_many(CONSOLE_LOGGER_ID, events, log_event)
    return CONSOLE_LOGGER_ID

"""Capture telemetry events in a test."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple

from ..telemetry import Telemetry, default_bus
from ..telemetry.events import ALL_EVENTS

__all__ = ["CapturedEvent", "EventLog", "capture_events"]


class CapturedEvent(NamedTuple):
    """One emission."""

    event: tuple[str, ...]
    measurements: dict[str, float]
    metadata: dict[str, Any]


class EventLog(list[CapturedEvent]):
    """The captured events, oldest first, with filters."""

    def named(self, *parts: str) -> list[CapturedEvent]:
        """Events whose name is exactly ``parts``."""
        return [e for e in self if e.event == parts]

    def for_job(self, job_id: str) -> list[tuple[str, ...]]:
        """The event names emitted for one job, in order."""
        return [e.event for e in self if e.metadata.get("job_id") == job_id]


_counter = iter(range(1 << 62))
_counter_lock = threading.Lock()


@contextmanager
def capture_events(
    events: Iterable[tuple[str, ...]] = ALL_EVENTS, *, bus: Telemetry | None = None
) -> Iterator[EventLog]:
    """Record every emission of ``events`` (the whole catalogue by default) while the block
    runs; thread-safe."""
    log = EventLog()
    lock = threading.Lock()
    with _counter_lock:
        handler_id = f"nsai-work-capture-{next(_counter)}"

    def record(
        event: tuple[str, ...],
        measurements: Mapping[str, float],
        metadata: Mapping[str, Any],
        _: Any,
    ) -> None:
        with lock:
            log.append(CapturedEvent(event, dict(measurements), dict(metadata)))

    target = bus or default_bus()
    target.attach_many(handler_id, list(events), record)
    try:
        yield log
    finally:
        target.detach(handler_id)

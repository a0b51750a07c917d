"""The event bus, shaped like Erlang's ``:telemetry``.

Handlers are attached to exact event names (tuples of strings) and called inline as
``fn(event, measurements, metadata, config)``; they must be quick. A handler that raises
anything (``BaseException`` included) is detached (every event of its id) and reported through
``logging``; it never breaks the caller. Emitting an event nobody listens to costs one dict
lookup: the handler table is copied on write, so ``execute`` takes no lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple

from .._errors import ConflictError, ValidationError

__all__ = ["HandlerInfo", "Telemetry"]

Event = tuple[str, ...]
HandlerFn = Callable[[Event, Mapping[str, float], Mapping[str, Any], Any], None]

_log = logging.getLogger("nsai_work.telemetry")


class HandlerInfo(NamedTuple):
    """One attached handler, as ``list_handlers`` reports it."""

    id: str
    event: Event
    function: HandlerFn
    config: Any


def _check_event(event: object, path: str) -> Event:
    if (
        not isinstance(event, tuple)
        or not event
        or not all(isinstance(part, str) and part for part in event)
    ):
        raise ValidationError(
            f"an event name is a non-empty tuple of non-empty strings, like "
            f"('work', 'job', 'completed'); got {event!r}",
            path=path,
        )
    return event


class Telemetry:
    """A telemetry bus. ``nsai_work.telemetry`` exposes the process-wide one; a Scheduler may be
    given its own (``Scheduler(telemetry=Telemetry())``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handlers: dict[str, list[HandlerInfo]] = {}
        self._by_event: dict[Event, tuple[HandlerInfo, ...]] = {}

    # ---- attaching ----------------------------------------------------------------------------

    def attach(
        self,
        handler_id: str,
        event_or_events: Event | Iterable[Event],
        fn: HandlerFn,
        config: Any = None,
    ) -> None:
        """Call ``fn(event, measurements, metadata, config)`` for each emission of the event(s).

        ``handler_id`` must be unique (``ConflictError`` otherwise); detach with it.
        """
        if (
            isinstance(event_or_events, tuple)
            and event_or_events
            and isinstance(event_or_events[0], str)
        ):
            events: list[Event] = [_check_event(event_or_events, "$.event")]
        else:
            if isinstance(event_or_events, str | bytes) or not isinstance(
                event_or_events, Iterable
            ):
                raise ValidationError(
                    f"expected an event tuple or a list of them, got {event_or_events!r}",
                    path="$.event",
                )
            events = [_check_event(e, f"$.events[{i}]") for i, e in enumerate(event_or_events)]
        self.attach_many(handler_id, events, fn, config)

    def attach_many(
        self, handler_id: str, events: Iterable[Event], fn: HandlerFn, config: Any = None
    ) -> None:
        """Attach one handler to several events under one id."""
        if not isinstance(handler_id, str) or not handler_id:
            raise ValidationError(
                f"handler_id must be a non-empty string, got {handler_id!r}", path="$.handler_id"
            )
        if not callable(fn):
            raise ValidationError(
                f"the handler must be callable as fn(event, measurements, metadata, config), "
                f"got {fn!r}",
                path="$.fn",
            )
        checked = [_check_event(e, f"$.events[{i}]") for i, e in enumerate(events)]
        if not checked:
            raise ValidationError("attach at least one event", path="$.events")
        with self._lock:
            if handler_id in self._handlers:
                raise ConflictError(
                    f"a telemetry handler with id {handler_id!r} is already attached; "
                    f"detach it first or pick another id"
                )
            self._handlers[handler_id] = [HandlerInfo(handler_id, e, fn, config) for e in checked]
            self._rebuild()

    def detach(self, handler_id: str) -> bool:
        """Remove every attachment of ``handler_id``; False if there was none."""
        with self._lock:
            if self._handlers.pop(handler_id, None) is None:
                return False
            self._rebuild()
            return True

    def _rebuild(self) -> None:
        table: dict[Event, list[HandlerInfo]] = {}
        for infos in self._handlers.values():
            for info in infos:
                table.setdefault(info.event, []).append(info)
        self._by_event = {event: tuple(infos) for event, infos in table.items()}

    def list_handlers(self, prefix: Event = ()) -> list[HandlerInfo]:
        """Attached handlers whose event starts with ``prefix`` (all of them for ``()``)."""
        n = len(prefix)
        return [
            info
            for infos in self._handlers.values()
            for info in infos
            if info.event[:n] == tuple(prefix)
        ]

    # ---- emitting -----------------------------------------------------------------------------

    def listening(self, event: Event) -> bool:
        """Whether any handler is attached to ``event`` (build metadata only if so)."""
        return event in self._by_event

    def execute(
        self,
        event: Event,
        measurements: Mapping[str, float],
        metadata: Mapping[str, Any],
    ) -> None:
        """Call every handler attached to ``event``; a handler that raises is detached."""
        handlers = self._by_event.get(event)
        if handlers is not None:
            self._deliver(handlers, event, measurements, metadata)

    def _deliver(
        self,
        handlers: tuple[HandlerInfo, ...],
        event: Event,
        measurements: Mapping[str, float],
        metadata: Mapping[str, Any],
    ) -> None:
        """Call ``handlers`` (the bus's entry for ``event``, already looked up by the caller)
        like ``execute`` does: an emitter that checks whether anyone listens pays one lookup."""
        for info in handlers:
            try:
                info.function(event, measurements, metadata, info.config)
            except BaseException:  # even SystemExit or KeyboardInterrupt: the caller goes on
                self._handler_failed(info, event)

    def _handler_failed(self, info: HandlerInfo, event: Event) -> None:
        """Log the exception being handled and detach the handler that raised it."""
        _log.exception(
            "telemetry handler %r raised on event %s and was detached", info.id, ".".join(event)
        )
        self.detach(info.id)

    @contextmanager
    def span(self, prefix: Event, metadata: Mapping[str, Any] | None = None) -> Iterator[None]:
        """Emit ``prefix + ('start',)``, then ``('stop',)`` with ``duration_ms``, or
        ``('exception',)`` with ``kind``, ``reason`` and ``duration_ms`` if the block raises
        (the exception propagates)."""
        _check_event(prefix, "$.prefix")
        meta = dict(metadata or {})
        start = time.perf_counter()
        self.execute(
            (*prefix, "start"),
            {"system_time_s": time.time(), "monotonic_time_s": time.monotonic()},
            meta,
        )
        try:
            yield
        except BaseException as exc:
            duration_ms = (time.perf_counter() - start) * 1000.0
            self.execute(
                (*prefix, "exception"),
                {"duration_ms": duration_ms},
                {**meta, "kind": type(exc).__name__, "reason": str(exc)},
            )
            raise
        self.execute(
            (*prefix, "stop"), {"duration_ms": (time.perf_counter() - start) * 1000.0}, meta
        )

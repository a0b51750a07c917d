"""Backends: where jobs run. ``Backend`` is the Protocol; ``local``, ``altar`` and ``mock`` are
built in (the process, ray and modal backends come with later releases)."""

from ._protocol import Backend
from ._threads import run_in_thread
from .altar import AltarBackend
from .local import LocalBackend
from .mock import Mock, MockBackend, MockExecution

__all__ = [
    "AltarBackend",
    "Backend",
    "LocalBackend",
    "Mock",
    "MockBackend",
    "MockExecution",
    "run_in_thread",
]

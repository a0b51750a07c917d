"""Backends: where jobs run. ``Backend`` is the Protocol; ``local``, ``process``, ``altar`` and
``mock`` are built in (the ray and modal backends come with later releases)."""

from ._protocol import Backend
from ._threads import run_in_thread
from .altar import AltarBackend
from .local import LocalBackend
from .mock import Mock, MockBackend, MockExecution
from .process import (
    CommandFailedError,
    MemoryLimitError,
    ProcessBackend,
    RemoteError,
    RemoteTraceback,
    WorkerCrashedError,
)

__all__ = [
    "AltarBackend",
    "Backend",
    "CommandFailedError",
    "LocalBackend",
    "MemoryLimitError",
    "Mock",
    "MockBackend",
    "MockExecution",
    "ProcessBackend",
    "RemoteError",
    "RemoteTraceback",
    "WorkerCrashedError",
    "run_in_thread",
]

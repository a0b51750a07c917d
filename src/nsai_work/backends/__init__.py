"""Backends: where jobs run. ``Backend`` is the Protocol; ``local``, ``process``, ``altar``,
``mock`` and ``ray`` (the ``ray`` extra) are built in (the modal backend comes later)."""

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
from .ray import Ray, RayBackend

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
    "Ray",
    "RayBackend",
    "RemoteError",
    "RemoteTraceback",
    "WorkerCrashedError",
    "run_in_thread",
]

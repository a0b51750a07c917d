"""Backends: where jobs run. ``Backend`` is the Protocol; ``local``, ``process``, ``altar``,
``mock``, ``ray`` (the ``ray`` extra) and ``modal`` (the ``modal`` extra) are built in."""

from ._protocol import Backend
from ._threads import run_in_thread
from .altar import AltarBackend
from .local import LocalBackend
from .mock import Mock, MockBackend, MockExecution
from .modal import BackendLostError, Modal, ModalBackend
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
    "BackendLostError",
    "CommandFailedError",
    "LocalBackend",
    "MemoryLimitError",
    "Mock",
    "MockBackend",
    "MockExecution",
    "Modal",
    "ModalBackend",
    "ProcessBackend",
    "Ray",
    "RayBackend",
    "RemoteError",
    "RemoteTraceback",
    "WorkerCrashedError",
    "run_in_thread",
]

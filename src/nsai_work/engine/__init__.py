"""The asyncio engine and its three faces: ``Scheduler`` (async), ``SyncScheduler`` (blocking)
and the module functions on a process-wide default; and clients of a store a scheduler in
another process serves: ``Client`` (async), ``SyncClient`` and ``connect`` (blocking)."""

from .._schedule import Schedule
from ._backend_events import BackendEvents
from ._client import Client, SyncClient, connect
from ._config import Config
from ._scheduler import Scheduler
from ._sync import SyncScheduler
from ._tenants import SyncTenantScope, TenantScope
from ._verbs import Page

__all__ = [
    "BackendEvents",
    "Client",
    "Config",
    "Page",
    "Schedule",
    "Scheduler",
    "SyncClient",
    "SyncScheduler",
    "SyncTenantScope",
    "TenantScope",
    "connect",
]

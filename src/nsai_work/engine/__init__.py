"""The asyncio engine and its three faces: ``Scheduler`` (async), ``SyncScheduler`` (blocking)
and the module functions on a process-wide default."""

from ._config import Config
from ._scheduler import Page, Scheduler
from ._sync import SyncScheduler
from ._tenants import SyncTenantScope, TenantScope

__all__ = ["Config", "Page", "Scheduler", "SyncScheduler", "SyncTenantScope", "TenantScope"]

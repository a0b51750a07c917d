"""Stores: where jobs are kept, behind one seam (``Store``). The memory store is the embedded
default; SQLite and Postgres keep jobs across restarts (being built: see the README)."""

from ._protocol import (
    Inbox,
    JobKey,
    Lease,
    ListQuery,
    Quarantined,
    Recovered,
    Role,
    ScheduleState,
    Store,
    WriteBatch,
)
from ._url import redact, store_from_url
from .memory import MemoryStore

__all__ = [
    "Inbox",
    "JobKey",
    "Lease",
    "ListQuery",
    "MemoryStore",
    "Quarantined",
    "Recovered",
    "Role",
    "ScheduleState",
    "Store",
    "WriteBatch",
    "redact",
    "store_from_url",
]

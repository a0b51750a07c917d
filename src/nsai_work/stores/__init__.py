"""Stores: where jobs are kept. The memory store is the embedded default (SQLite and Postgres
come with later releases)."""

from .memory import MemoryStore

__all__ = ["MemoryStore"]

"""Stores by URL: ``memory://``, ``sqlite:///path/work.db``, ``postgresql://user@host/db``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .._errors import ConfigurationError
from ._protocol import Store

__all__ = ["redact", "store_from_url"]

SCHEMES = ("memory", "sqlite", "postgresql", "postgres")


def redact(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable store URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def store_from_url(url: str, **options: Any) -> Store:
    """A store for ``url`` (not opened yet); ``ConfigurationError`` naming the URL (without
    its password) when it is malformed or of an unknown scheme."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"store is a URL such as memory://, sqlite:///path/work.db or "
            f"postgresql://user@host/db; got {redact(url) if isinstance(url, str) else url!r}"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        from .memory import MemoryStore

        return MemoryStore(**options)
    if scheme == "sqlite":
        from .sqlite import SqliteStore

        unknown = sorted(set(options) - set(SqliteStore.OPTIONS))
        if unknown:
            raise ConfigurationError(
                f"unknown SQLite store option(s) {', '.join(unknown)} for {redact(url)}; "
                f"one of {', '.join(SqliteStore.OPTIONS)}"
            )
        return SqliteStore(url, **options)
    if scheme in ("postgresql", "postgres"):  # the Postgres store lands next
        raise ConfigurationError(f"the {scheme} store is not built yet: {redact(url)}")
    raise ConfigurationError(
        f"unknown store scheme {scheme!r} in {redact(url)}; one of {', '.join(SCHEMES)}"
    )

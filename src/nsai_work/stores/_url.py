"""Stores by URL: ``memory://``, ``sqlite:///path/work.db``, ``postgresql://user@host/db``."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from .._errors import ConfigurationError
from ._protocol import Store

__all__ = ["redact", "store_from_url"]

SCHEMES = ("memory", "sqlite", "postgresql", "postgres")


def redact(url: str) -> str:
    """The URL without its password (for messages and logs): in the user info and in a
    ``password=`` query parameter (libpq takes both). The rest is kept as written."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable store URL>"
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        hidden = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
        url = url.replace(f"//{parts.netloc}", f"//{hidden}", 1)
    if "password=" in parts.query:
        head, _, query = url.partition("?")
        url = head + "?" + _PASSWORD_PARAM.sub(r"\1***", query)
    return url


_PASSWORD_PARAM = re.compile(r"((?:^|&)password=)[^&]*")


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
    if scheme in ("postgresql", "postgres"):
        try:
            from .postgres import PostgresStore
        except ImportError as exc:
            raise ConfigurationError(
                f"the PostgreSQL store needs psycopg 3 and psycopg-pool ({exc}); install "
                f"nsai-work[postgres] to use {redact(url)}"
            ) from None
        unknown = sorted(set(options) - set(PostgresStore.OPTIONS))
        if unknown:
            raise ConfigurationError(
                f"unknown PostgreSQL store option(s) {', '.join(unknown)} for {redact(url)}; "
                f"one of {', '.join(PostgresStore.OPTIONS)}"
            )
        return PostgresStore(url, **options)
    raise ConfigurationError(
        f"unknown store scheme {scheme!r} in {redact(url)}; one of {', '.join(SCHEMES)}"
    )

"""API keys kept in the store's database, so that every server on one store shares them.

``KeyRing("sqlite:///path/work.db")`` or ``KeyRing("postgresql://...")`` keeps its keys in a
table of that database, ``nsai_work_api_keys`` (the key's id, and the key as the keys file has
it: never the secret, only its SHA-256). The table belongs to the key ring, not to the store:
the ring creates it if it is missing, and the store's migrations do not know it, so keys and
jobs evolve apart. Each key is one row, written alone (``create``, ``revoke``), so servers
creating keys at once do not overwrite each other. Readers read the whole table again at most
once a second (``RELOAD_S``): a revoked key is refused within a second on every server.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

import msgspec

from .._errors import ConfigurationError
from ..stores import redact

if TYPE_CHECKING:
    from ._keys import ApiKey

__all__ = ["RELOAD_S", "KeyTable", "is_database_url"]

#: How old the keys a server holds may be (seconds): a revocation reaches every server within.
RELOAD_S: Final = 1.0
TABLE: Final = "nsai_work_api_keys"
_CREATE: Final = f"CREATE TABLE IF NOT EXISTS {TABLE} (id TEXT PRIMARY KEY, doc TEXT NOT NULL)"
_UPSERT: Final = (
    f"INSERT INTO {TABLE} (id, doc) VALUES ({{p}}, {{p}}) "
    f"ON CONFLICT (id) DO UPDATE SET doc = excluded.doc"
)


def is_database_url(path: object) -> bool:
    """Whether a key ring's ``path`` names a database (``sqlite://``, ``postgresql://``)."""
    return isinstance(path, str) and path.split("://", 1)[0].lower() in (
        "sqlite",
        "postgresql",
        "postgres",
    )


class KeyTable:
    """The keys table of one database: ``load`` every key, ``put`` one."""

    def __init__(self, url: str) -> None:
        self.url = redact(url)
        scheme = url.split("://", 1)[0].lower()
        self._sqlite = scheme == "sqlite"
        if self._sqlite:
            from ..stores.sqlite import _parse_url

            self._where, _ = _parse_url(url)
        else:
            try:
                import psycopg  # noqa: F401
            except ImportError as exc:  # pragma: no cover - the extra is installed in tests
                raise ConfigurationError(
                    f"keys in PostgreSQL need psycopg 3 ({exc}); install nsai-work[postgres]"
                ) from None
            self._where = url
        with self._connection() as db:
            db.execute(_CREATE)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        """A connection for one operation, committed at its end (a few per key change, one
        per second per server for reads: no pool is worth keeping)."""
        try:
            if self._sqlite:
                db = sqlite3.connect(self._where, timeout=30.0)
                try:
                    with db:
                        yield db
                finally:
                    db.close()
            else:
                import psycopg

                with psycopg.connect(self._where, connect_timeout=10) as conn:
                    yield conn
        except (sqlite3.Error, OSError) as exc:
            raise ConfigurationError(f"the API keys in {self.url} cannot be read: {exc}") from None
        except Exception as exc:
            if type(exc).__module__.startswith("psycopg"):
                raise ConfigurationError(
                    f"the API keys in {self.url} cannot be read: {exc}"
                ) from None
            raise

    def load(self, kind: type[ApiKey]) -> dict[str, ApiKey]:
        """Every key, by id."""
        decoder = msgspec.json.Decoder(kind)
        with self._connection() as db:
            rows = db.execute(f"SELECT id, doc FROM {TABLE}").fetchall()
        return {key_id: decoder.decode(doc) for key_id, doc in rows}

    def put(self, key: ApiKey) -> None:
        """Write one key (a new one, or its revocation)."""
        sql = _UPSERT.format(p="?" if self._sqlite else "%s")
        with self._connection() as db:
            db.execute(sql, (key.id, msgspec.json.encode(key).decode()))

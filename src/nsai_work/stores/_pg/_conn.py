"""The PostgreSQL store's connections: the URL checked before anything connects, the settings
of every connection, the pool, and errors turned into ``StoreError`` naming the URL without its
password.

Every connection is autocommit (transactions are explicit) and plans joins as nested loops
over indexes (``enable_hashjoin`` and ``enable_mergejoin`` off): the store's joins are a batch
of keys against the primary key, which the planner would otherwise turn into a hash join over a
scan of the whole table once a batch is a few percent of it (measured: 2,000 updates against
42,000 rows, 48 ms of hash join instead of 8 ms). Settings the URL gives (``connect_timeout``,
``application_name``, ``keepalives*``, ``options``) are kept.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..._errors import ConfigurationError, StoreError
from .._url import redact

__all__ = ["Connection", "Connector", "InDoubtError", "dropped", "failure", "lost", "run"]

T = TypeVar("T")
Connection = psycopg.AsyncConnection[TupleRow]
Pool = AsyncConnectionPool[Connection]

_SCHEMES: Final = ("postgresql", "postgres")
_PLANNER: Final = "-c enable_hashjoin=off -c enable_mergejoin=off"


class Connector:
    """Makes the store's connections to one URL (checked here: ``ConfigurationError``)."""

    def __init__(self, url: str, *, connect_timeout: float) -> None:
        #: The URL without its password, for messages.
        self.where = redact(url) if isinstance(url, str) else repr(url)
        self._url = url
        self._params = check_url(url, self.where)
        self.connect_timeout = connect_timeout

    def kwargs(self, name: str) -> dict[str, Any]:
        """The settings of a connection called ``name`` (its application_name)."""
        params = self._params
        defaults: dict[str, Any] = {
            "connect_timeout": max(1, math.ceil(self.connect_timeout)),
            "application_name": name,
            # A server that vanishes without closing the socket is noticed in ~10 s.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
        }
        settings = {key: value for key, value in defaults.items() if key not in params}
        given = params.get("options")
        settings["options"] = f"{given} {_PLANNER}" if given else _PLANNER
        settings["autocommit"] = True
        return settings

    async def connect(self, name: str) -> Connection:
        """A new connection; ``StoreError`` naming the URL and the cause."""
        try:
            return await psycopg.AsyncConnection.connect(self._url, **self.kwargs(name))
        except psycopg.Error as exc:
            raise failure(f"cannot connect to {self.where}", exc) from exc

    async def pool(self, name: str, *, min_size: int, max_size: int) -> Pool:
        """An open pool (its first ``min_size`` connections made)."""
        pool: Pool = AsyncConnectionPool(
            self._url,
            min_size=min_size,
            max_size=max_size,
            kwargs=self.kwargs(name),
            open=False,
            timeout=self.connect_timeout,
            name=f"nsai-work {self.where}",
        )
        try:
            await pool.open(wait=True, timeout=self.connect_timeout)
        except BaseException:
            await pool.close()
            raise
        return pool


class InDoubtError(StoreError):
    """The connection was lost while a COMMIT was on its way: it may or may not have
    happened."""


async def run(
    pool: Pool,
    fn: Callable[[Connection], Awaitable[T]],
    *,
    where: str,
    transaction: bool = False,
    idempotent: bool = False,
) -> T:
    """Run ``fn`` on a pooled connection (in a transaction if asked). A connection the server
    dropped while it sat in the pool fails its first statement: then the pool's idle
    connections are checked and ``fn`` runs once more, unless its COMMIT had been sent and it
    is not ``idempotent`` (its outcome is unknown: ``InDoubtError``). A unique violation is
    raised as it is."""
    for attempt in (1, 2):
        conn: Connection | None = None
        committing = False
        try:
            async with pool.connection() as conn:
                if not transaction:
                    return await fn(conn)
                async with conn.transaction():
                    result = await fn(conn)
                    committing = True
                return result
        except PoolTimeout as exc:
            raise StoreError(f"no connection to {where} within {pool.timeout} s ({exc})") from exc
        except pg_errors.UniqueViolation:
            raise
        except psycopg.Error as exc:
            gone = conn is not None and dropped(conn, exc)
            if attempt == 1 and gone and (idempotent or not committing):
                await pool.check()
                continue
            if gone and committing:
                cause = " ".join(str(exc).split())
                raise InDoubtError(
                    f"a request to {where} lost its connection while committing (it may or may "
                    f"not have been committed): {cause}"
                ) from exc
            raise failure(f"a request to {where} failed", exc) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def lost(conn: Connection) -> bool:
    """Whether the connection is unusable (closed, or the server went away)."""
    return conn.closed or conn.broken


def dropped(conn: Connection, exc: psycopg.Error) -> bool:
    """Whether the connection cannot be trusted after ``exc``: it is closed or broken, the
    server said it is ending the session (shutdown, crash, connection errors), or the error
    is not the server's (no SQLSTATE: the protocol failed, e.g. "cannot exit pipeline mode
    while busy" when the socket closed mid-pipeline; psycopg may not have marked the
    connection broken yet)."""
    state = exc.sqlstate
    return lost(conn) or state is None or state in _ENDING or state.startswith("08")


#: admin_shutdown, crash_shutdown, cannot_connect_now, idle_session_timeout.
_ENDING: Final = frozenset({"57P01", "57P02", "57P03", "57P05"})


def failure(what: str, exc: BaseException) -> StoreError:
    """A ``StoreError`` saying what failed and why, on one line."""
    cause = " ".join(str(exc).split()) or type(exc).__name__
    return StoreError(f"{what}: {cause}")


def check_url(url: str, shown: str) -> dict[str, Any]:
    """The parameters of a postgresql:// or postgres:// URL that libpq can parse, with ports
    that are numbers (libpq would only say so when connecting); else ``ConfigurationError``."""
    if not isinstance(url, str):
        raise ConfigurationError(f"a PostgreSQL store URL is a string, got {url!r}")
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise ConfigurationError(f"malformed PostgreSQL URL {shown}: {exc}") from None
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"a PostgreSQL store URL starts with postgresql:// or postgres://, got {shown}"
        )
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error as exc:
        cause = " ".join(str(exc).split())
        raise ConfigurationError(f"malformed PostgreSQL URL {shown}: {cause}") from None
    for port in str(params.get("port") or "").split(","):
        if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ConfigurationError(
                f"malformed PostgreSQL URL {shown}: port {port!r} is not a number 1-65535"
            )
    return params

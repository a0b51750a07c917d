"""A throwaway PostgreSQL cluster for tests: ``initdb`` into a fresh temporary directory, a
server on 127.0.0.1 only (on a free port, its unix socket inside that directory), stopped and
deleted at the end. It never touches a system cluster.

``initdb`` and ``postgres`` refuse to run as root, so as root (this machine, CI) every server
command runs as the ``postgres`` user through ``runuser -u postgres --``, and the directory
belongs to that user; as any other user they run directly. The binaries are found in
``$NSAI_PG_BINDIR``, else the newest ``/usr/lib/postgresql/*/bin`` (Debian's layout, installed
by scripts/setup.sh), else on ``PATH``.

Durability is stock by default (fsync, synchronous_commit and full_page_writes on), because the
stores' tests measure commits and recover from crashes; ``durable=False`` turns the three off
for tests where durability is not under test. ``initdb`` always runs with ``--no-sync``: the
files it writes reach the server through the page cache whatever happens to the server, and
only an operating-system crash, which no test causes, could lose them.

Usage::

    with PostgresCluster() as cluster:
        url = cluster.create_database()  # a fresh, empty database of its own
        ...
        cluster.restart()  # data kept; connections are dropped

tests/conftest.py wraps it in the ``postgres_cluster`` (session) and ``postgres_url`` (one
fresh database per test) fixtures.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

HOST = "127.0.0.1"
SUPERUSER = "postgres"
START_TIMEOUT_S = 60
StopMode = Literal["smart", "fast", "immediate"]


class PostgresUnavailableError(RuntimeError):
    """PostgreSQL cannot run here at all (no server binaries, or no user that may run them).
    The fixtures turn it into a skip, or a failure under ``CI=true``; anything else that goes
    wrong while starting a cluster is an ordinary error."""


class PostgresCommandError(RuntimeError):
    """A server command (initdb, pg_ctl) failed; the message has its output and the end of the
    server's log."""


def find_bindir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or
    :class:`PostgresUnavailableError` naming where it looked."""
    names = ("initdb", "pg_ctl", "postgres")
    override = os.environ.get("NSAI_PG_BINDIR")
    if override:
        candidates = [Path(override)]
    else:
        debian = glob.glob("/usr/lib/postgresql/*/bin")
        debian.sort(key=lambda d: _version_key(Path(d).parent.name), reverse=True)
        candidates = [Path(d) for d in debian]
        on_path = shutil.which("initdb")
        if on_path:
            candidates.append(Path(on_path).resolve().parent)
    for candidate in candidates:
        if all(os.access(candidate / name, os.X_OK) for name in names):
            return candidate
    where = f"$NSAI_PG_BINDIR ({override})" if override else "/usr/lib/postgresql/*/bin and PATH"
    raise PostgresUnavailableError(
        f"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in {where}; "
        "`make setup` (scripts/setup.sh) installs Debian's postgresql, or set NSAI_PG_BINDIR"
    )


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name)) or (0,)


def _run_as() -> list[str]:
    """The prefix that runs a server command as a user PostgreSQL accepts."""
    if os.geteuid() != 0:
        return []
    if _root_in_user_namespace():
        raise PostgresUnavailableError(
            "running as uid 0 inside a user namespace that maps no other user (as "
            "scripts/in-netns.sh does for a non-root user): postgres refuses root and cannot "
            "switch to another user here; run `make test` as root, or pytest outside the namespace"
        )
    user = os.environ.get("NSAI_PG_USER", SUPERUSER)
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise PostgresUnavailableError(
            f"running as root and there is no {user!r} user to run postgres as (it refuses "
            "root); Debian's postgresql package creates it (`make setup`), or set NSAI_PG_USER"
        ) from None
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    if not os.access(runuser, os.X_OK):
        raise PostgresUnavailableError(
            "running as root and `runuser` (util-linux) is missing; `make setup` installs it"
        )
    return [runuser, "-u", user, "--"]


def _root_in_user_namespace() -> bool:
    """True when uid 0 here is some other uid outside (``unshare --map-root-user``)."""
    try:
        lines = Path("/proc/self/uid_map").read_text().split()
    except OSError:
        return False
    # The initial namespace maps "0 0 4294967295"; a --map-root-user one maps "0 <uid> 1".
    return len(lines) == 3 and lines[1] != "0" and lines[2] == "1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


class PostgresCluster:
    """One throwaway PostgreSQL cluster. ``start()`` runs initdb and starts the server
    (``with PostgresCluster() as c:`` does both and ``stop()``); ``url`` is the superuser's
    URL of the ``postgres`` database."""

    def __init__(
        self,
        *,
        durable: bool = True,
        settings: Mapping[str, str | int] | None = None,
        bindir: Path | None = None,
    ) -> None:
        self.durable = durable
        self.settings = dict(settings or {})
        self.bindir = bindir or find_bindir()
        self.prefix = _run_as()
        self.user = self.prefix[2] if self.prefix else None
        self.port = 0
        self.base: Path | None = None
        self.timings: dict[str, float] = {}
        self._running = False

    # ---- where things are -------------------------------------------------------------------

    @property
    def datadir(self) -> Path:
        return self._base / "data"

    @property
    def socket_dir(self) -> Path:
        return self._base

    @property
    def logfile(self) -> Path:
        return self._base / "postgres.log"

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        """The superuser's URL of database ``dbname`` (over TCP to 127.0.0.1)."""
        self._require_started()
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{dbname}"

    @property
    def running(self) -> bool:
        return self._running

    @property
    def _base(self) -> Path:
        if self.base is None:
            raise RuntimeError("the cluster has not been started: call start() first")
        return self.base

    def _require_started(self) -> None:
        if not self._running:
            raise RuntimeError("the cluster is not running: call start() first")

    # ---- life cycle -------------------------------------------------------------------------

    def start(self) -> PostgresCluster:
        """initdb into a fresh temporary directory, then start the server and wait until it
        accepts connections. Returns ``self``."""
        if self.base is not None:
            raise RuntimeError("start() runs once per cluster; use restart() to restart it")
        self.base = Path(tempfile.mkdtemp(prefix="nsai-pg-"))
        atexit.register(self.stop)  # should the owner never call stop()
        try:
            if self.user:
                shutil.chown(self.base, user=self.user)
            t0 = time.perf_counter()
            self._initdb()
            t1 = time.perf_counter()
            self._start_server()
            t2 = time.perf_counter()
        except BaseException:
            self._cleanup()
            raise
        self.timings = {"initdb_s": t1 - t0, "start_s": t2 - t1}
        return self

    def restart(self, *, mode: StopMode = "fast") -> None:
        """``pg_ctl restart``: stop (``fast`` rolls back open transactions and drops every
        connection; ``immediate`` is a crash, recovered from the WAL at start) and start again
        on the same port. Committed data is kept. The first crash restart of a cluster fsyncs
        its whole directory first (initdb ran with ``--no-sync``): up to a few seconds when
        the disk is busy."""
        self._require_started()
        self._running = False
        self._pg_ctl("restart", "-m", mode, "-l", str(self.logfile))
        self._running = True

    def stop(self, *, mode: StopMode = "immediate") -> None:
        """Stop the server and delete its directory. Idempotent. ``immediate`` by default: the
        directory goes anyway, so the shutdown checkpoint (seconds under I/O load) is skipped."""
        try:
            # By the pid file rather than by `running`, so a server a failed restart() left
            # behind is stopped too.
            if self.base is not None and (self.datadir / "postmaster.pid").exists():
                self._pg_ctl("stop", "-m", mode)
        finally:
            self._running = False
            self._cleanup()

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- databases --------------------------------------------------------------------------

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a fresh unique name unless given) and return its URL."""
        import psycopg
        from psycopg import sql

        name = name or f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending the sessions still connected to it."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    # ---- the commands -----------------------------------------------------------------------

    def _initdb(self) -> None:
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ]
        )
        # Appended to postgresql.conf (which keeps its owner), so a restart reads them again.
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/_postgres.py\n")
            for key, value in self._settings().items():
                conf.write(f"{key} = {_quote(value)}\n")

    def _settings(self) -> dict[str, str | int]:
        settings: dict[str, str | int] = {
            "listen_addresses": HOST,
            "unix_socket_directories": str(self.socket_dir),
            "logging_collector": "off",
            "log_min_messages": "warning",
        }
        if not self.durable:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        return settings | self.settings

    def _start_server(self) -> None:
        # The free port may be taken between the check and the bind; try another then.
        for attempt in range(3):
            self.port = free_port()
            self._set_port(self.port)
            try:
                self._pg_ctl("start", "-l", str(self.logfile))
            except PostgresCommandError:
                if attempt == 2 or "could not bind" not in self._log_tail():
                    raise
                continue
            self._running = True
            return

    def _set_port(self, port: int) -> None:
        auto = self.datadir / "postgresql.auto.conf"
        lines = [ln for ln in auto.read_text().splitlines() if not ln.startswith("port =")]
        auto.write_text("\n".join([*lines, f"port = {port}", ""]))

    def _pg_ctl(self, *args: str) -> None:
        pg_ctl = str(self.bindir / "pg_ctl")
        self._run([pg_ctl, "-D", str(self.datadir), "-w", "-t", str(START_TIMEOUT_S), *args])

    def _run(self, argv: Sequence[str]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        # pg_ctl's server writes to its log file (-l), never to these pipes, so run() returns
        # as soon as pg_ctl does.
        done = subprocess.run(
            [*self.prefix, *argv],
            cwd=self._base,  # postgres's user may not enter the caller's directory
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=START_TIMEOUT_S + 30,
        )
        if done.returncode != 0:
            raise PostgresCommandError(
                f"{' '.join(done.args)} exited with {done.returncode}\n"
                f"{done.stdout}{done.stderr}\n"
                f"--- {self.logfile} (last lines) ---\n{self._log_tail()}"
            )

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _cleanup(self) -> None:
        atexit.unregister(self.stop)
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)


def _quote(value: str | int) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"

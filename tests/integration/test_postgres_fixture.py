"""The throwaway PostgreSQL of tests/_postgres.py and its fixtures: a real server that psycopg
reaches, one fresh database per test, restarts that keep committed data, stock durability by
default, and nothing listening beyond 127.0.0.1."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import psycopg
import pytest

from tests._postgres import HOST, PostgresCluster, PostgresUnavailableError


def test_a_fresh_database_takes_a_table_rows_and_a_query(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE jobs (id int PRIMARY KEY, payload jsonb NOT NULL)")
        conn.execute(
            "INSERT INTO jobs VALUES (1, %s), (2, %s)",
            [psycopg.types.json.Jsonb({"n": 1}), psycopg.types.json.Jsonb({"text": "é✓"})],
        )
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT id, payload FROM jobs ORDER BY id").fetchall()
        database = conn.execute("SELECT current_database()").fetchone()
    assert rows == [(1, {"n": 1}), (2, {"text": "é✓"})]
    assert database is not None
    assert postgres_url.endswith("/" + database[0])


def test_restart_keeps_committed_data_and_new_connections_work(
    postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    port = postgres_cluster.port
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE t (v text)")
        conn.execute("INSERT INTO t VALUES ('committed')")
    survivor = psycopg.connect(postgres_url)
    survivor.execute("INSERT INTO t VALUES ('never committed')")

    postgres_cluster.restart()

    # A restart drops every connection (and rolls back what they had open).
    with pytest.raises(psycopg.OperationalError):
        survivor.execute("SELECT 1")
    survivor.close()
    assert postgres_cluster.port == port
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT v FROM t").fetchall() == [("committed",)]


def test_a_crash_restart_recovers_committed_data(
    postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE t (v int)")
        conn.execute("INSERT INTO t SELECT generate_series(1, 1000)")

    postgres_cluster.restart(mode="immediate")  # no checkpoint: recovery replays the WAL

    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*), sum(v) FROM t").fetchone() == (1000, 500500)


def test_fresh_databases_are_isolated(postgres_cluster: PostgresCluster) -> None:
    first = postgres_cluster.create_database()
    second = postgres_cluster.create_database()
    assert first != second
    with psycopg.connect(first) as conn:
        conn.execute("CREATE TABLE only_here (v int)")
        conn.execute("INSERT INTO only_here VALUES (1)")
    with psycopg.connect(second) as conn:
        found = conn.execute("SELECT to_regclass('only_here')").fetchone()
        conn.execute("CREATE TABLE only_here (v int)")  # the name is free in this one
    assert found == (None,)
    for url in (first, second):
        postgres_cluster.drop_database(url.rsplit("/", 1)[1])


def test_the_server_listens_on_127_0_0_1_only(postgres_cluster: PostgresCluster) -> None:
    port = postgres_cluster.port
    with psycopg.connect(postgres_cluster.url) as conn:
        settings = conn.execute(
            "SELECT current_setting('listen_addresses'), "
            "current_setting('unix_socket_directories'), host(inet_server_addr())"
        ).fetchone()
    assert settings == ("127.0.0.1", str(postgres_cluster.socket_dir), "127.0.0.1")
    assert postgres_cluster.url.startswith(f"postgresql://postgres@{HOST}:{port}/")

    # Bound to 127.0.0.1 itself, not to a wildcard: the rest of 127/8 and ::1 are refused.
    with socket.create_connection((HOST, port), timeout=5):
        pass
    for family, address in [(socket.AF_INET, "127.0.0.2"), (socket.AF_INET6, "::1")]:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            try:
                s.connect((address, port))
            except OSError:
                continue  # refused, or no such address here: either way not listening
            pytest.fail(f"the test cluster accepts connections on {address}:{port}")


def test_the_server_never_runs_as_root(postgres_cluster: PostgresCluster) -> None:
    pid = int((postgres_cluster.datadir / "postmaster.pid").read_text().split()[0])
    status = Path(f"/proc/{pid}/status").read_text()
    uid = int(next(ln for ln in status.splitlines() if ln.startswith("Uid:")).split()[1])
    assert uid != 0
    assert postgres_cluster.socket_dir.name.startswith("nsai-pg-")


def test_durability_is_stock_by_default(postgres_cluster: PostgresCluster) -> None:
    with psycopg.connect(postgres_cluster.url) as conn:
        row = conn.execute(
            "SELECT current_setting('fsync'), current_setting('synchronous_commit'), "
            "current_setting('full_page_writes')"
        ).fetchone()
    assert row == ("on", "on", "on")


def test_a_cluster_of_its_own_without_durability_is_deleted_when_stopped() -> None:
    with PostgresCluster(durable=False, settings={"max_connections": 20}) as cluster:
        base, port = cluster.base, cluster.port
        assert base is not None
        assert base.is_dir()
        with psycopg.connect(cluster.url) as conn:
            row = conn.execute(
                "SELECT current_setting('fsync'), current_setting('synchronous_commit'), "
                "current_setting('max_connections')"
            ).fetchone()
        assert row == ("off", "off", "20")
        assert {"initdb_s", "start_s"} <= cluster.timings.keys()
    assert not base.exists()
    assert not cluster.running
    with pytest.raises(ConnectionRefusedError), socket.create_connection((HOST, port), timeout=5):
        pass
    cluster.stop()  # idempotent


def test_missing_binaries_are_reported_as_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NSAI_PG_BINDIR", str(tmp_path))
    with pytest.raises(PostgresUnavailableError, match=r"initdb, pg_ctl, postgres.*not found"):
        PostgresCluster()


@pytest.mark.skipif(os.geteuid() != 0, reason="the postgres user is needed only as root")
def test_a_missing_postgres_user_is_reported_as_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NSAI_PG_USER", "no-such-user-nsai")
    with pytest.raises(PostgresUnavailableError, match="no 'no-such-user-nsai' user"):
        PostgresCluster()

"""The SQLite store beyond the contract: its URLs and options, the errors a bad file, a
read-only file or directory and a full disk give, fencing, quarantine, migrations, the query
plans behind list(), and the loop staying free while SQLite works."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

import nsai_work as work
from nsai_work.stores import ListQuery, WriteBatch, store_from_url
from nsai_work.stores._sqlite_db import _LIST_SQL
from nsai_work.stores._sqlite_schema import migrations, split_statements
from nsai_work.stores.sqlite import SqliteStore

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]
ROOT = Path(__file__).resolve().parents[2]


def job(tenant: str = "t", **fields: Any) -> work.Job:
    return work.Job(kind="k", tenant_id=tenant, **fields)


def child(*args: str, prefix: tuple[str, ...] = (), timeout: float = 60) -> dict[str, Any]:
    """Run ``_sqlite_child`` (behind ``prefix``, e.g. unshare) and parse its JSON line."""
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "tests.integration._sqlite_child", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def needs(capability: str, probe: list[str]) -> None:
    """Skip (fail under CI=true) when this machine cannot ``probe``."""
    try:
        ok = subprocess.run(probe, capture_output=True, timeout=30, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{capability} is needed in CI: {' '.join(probe)} failed")
        pytest.skip(f"{capability} is not available here ({' '.join(probe)} failed)")


# ---- URLs and options ---------------------------------------------------------------------------


def test_urls_name_absolute_paths(tmp_path: Path) -> None:
    store = store_from_url(f"sqlite://{tmp_path}/work.db")
    assert isinstance(store, SqliteStore)
    assert store.path == f"{tmp_path}/work.db"
    assert store.durable is True
    assert SqliteStore(f"sqlite:///{tmp_path}/work.db").path == store.path  # four slashes
    assert SqliteStore("sqlite:///var/a%20b/w.db").path == "/var/a b/w.db"
    assert SqliteStore("sqlite://localhost/var/w.db").path == "/var/w.db"
    tuned = SqliteStore("sqlite:///var/w.db?synchronous=normal&busy_timeout_s=0.5&max_size_mb=3")
    assert (tuned.synchronous, tuned.busy_timeout_s, tuned.max_size_mb) == ("NORMAL", 0.5, 3)
    assert store_from_url("sqlite:///var/w.db", synchronous="EXTRA").synchronous == "EXTRA"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("sqlite://", {}, "names no file"),
        ("sqlite:///", {}, "names no file"),
        ("sqlite://:memory:", {}, "in-memory"),
        ("sqlite:///:memory:", {}, "in-memory"),
        ("sqlite:///x.db?mode=memory", {}, "in-memory"),
        ("sqlite://work.db", {}, "relative path"),
        ("sqlite://db.example.com/var/work.db", {}, "names a host"),
        ("sqlite:///var/work.db#x", {}, "fragment"),
        ("sqlite:///var/work.db?cache=shared", {}, "unknown SQLite store option 'cache'"),
        ("sqlite:///var/work.db?synchronous=OFF", {}, "OFF is not offered"),
        ("sqlite:///var/work.db?busy_timeout_s=soon", {}, "busy_timeout_s must be a number"),
        ("sqlite:///var/work.db?busy_timeout_s=-1", {}, "busy_timeout_s must be seconds"),
        ("sqlite:///var/work.db?max_size_mb=0", {}, "max_size_mb must be an int >= 1"),
        ("sqlite:///var/work.db?synchronous=FULL", {"synchronous": "FULL"}, "set twice"),
        ("sqlite:///var/work.db", {"journal": "wal"}, "unknown SQLite store option(s) journal"),
        ("sqlite:///var/work.db", {"poll_interval_s": 0}, "poll_interval_s must be seconds"),
    ],
)
def test_malformed_urls_and_options_are_configuration_errors(
    url: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(work.ConfigurationError) as caught:
        store_from_url(url, **options)
    assert message in str(caught)


def test_the_pragmas_are_set(tmp_path: Path, arun: Run[Any]) -> None:
    async def pragmas(url: str) -> tuple[Any, ...]:
        store = SqliteStore(url)
        await store.open("client")
        conn = store._db._conn
        assert conn is not None
        found = await store._call(
            lambda: tuple(
                conn.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous", "busy_timeout")
            )
        )
        await store.close()
        return found

    assert arun(pragmas(f"sqlite://{tmp_path}/a.db")) == ("wal", 2, 5000)  # 2: FULL
    assert arun(pragmas(f"sqlite://{tmp_path}/b.db?synchronous=NORMAL&busy_timeout_s=1")) == (
        "wal",
        1,
        1000,
    )


# ---- opening files that are not right ----------------------------------------------------------


def open_error(url: str, role: str = "scheduler") -> str:
    async def attempt() -> str:
        store = SqliteStore(url)
        try:
            await store.open(role)  # type: ignore[arg-type]
        except work.StoreError as exc:
            await store.close()
            return str(exc)
        await store.close()
        raise AssertionError(f"open({role!r}) of {url} should fail")

    return asyncio.run(attempt())


def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    message = open_error(f"sqlite://{tmp_path}/absent/work.db")
    assert f"the directory {tmp_path}/absent does not exist" in message


def test_a_directory_is_not_a_database(tmp_path: Path) -> None:
    assert "it is a directory" in open_error(f"sqlite://{tmp_path}")


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "work.db"
    path.write_bytes(b"this is not a SQLite database, just some text\n" * 100)
    message = open_error(f"sqlite://{path}", "client")
    assert f"{path} is not a SQLite database" in message


def test_a_database_of_something_else(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.close()
    assert "a SQLite database of something else (it has tables invoices" in open_error(
        f"sqlite://{path}"
    )


def test_a_newer_schema_is_refused(tmp_path: Path, arun: Run[Any]) -> None:
    path = tmp_path / "work.db"
    arun(_open_and_close(f"sqlite://{path}"))
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (999, '0999_future.sql', 'x')")
    conn.close()
    assert "schema version 999, made by a newer nsai-work" in open_error(f"sqlite://{path}")


async def _open_and_close(url: str, role: str = "scheduler") -> None:
    store = SqliteStore(url)
    await store.open(role)  # type: ignore[arg-type]
    await store.close()


def _read_only_prefix() -> tuple[str, ...]:
    """What makes a child process unable to write files it does not own: nothing for a user,
    a user namespace for root (root keeps its uid but loses CAP_DAC_OVERRIDE there)."""
    if os.geteuid() != 0:
        return ()
    needs("a user namespace (unshare --user)", ["unshare", "--user", "true"])
    return ("unshare", "--user", "--")


def test_a_read_only_file(tmp_path: Path, arun: Run[Any]) -> None:
    path = tmp_path / "work.db"
    arun(_open_and_close(f"sqlite://{path}"))
    path.chmod(0o444)
    try:
        for role in ("scheduler", "client"):
            found = child("open", f"sqlite://{path}", role, prefix=_read_only_prefix())
            assert found["error"] == "StoreError", found
            assert f"cannot write the SQLite database {path}" in found["message"]
            assert "read-only to this process" in found["message"]
            assert f"may not write {path} (its permissions)" in found["message"]
    finally:
        path.chmod(0o644)
    arun(_open_and_close(f"sqlite://{path}"))  # nothing was damaged


def test_a_read_only_directory(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        found = child("open", f"sqlite://{folder}/work.db", "client", prefix=_read_only_prefix())
    finally:
        folder.chmod(0o755)
    assert found["error"] == "StoreError", found
    assert f"cannot open the SQLite database {folder}/work.db" in found["message"]
    assert f"may not create files in {folder}" in found["message"]


def test_a_read_only_file_system(tmp_path: Path, arun: Run[Any]) -> None:
    needs("a private mount namespace (unshare --mount)", ["unshare", "--mount", "true"])
    folder = tmp_path / "ro"
    folder.mkdir()
    arun(_open_and_close(f"sqlite://{folder}/work.db"))
    mount = f'mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && exec "$@"'
    prefix = ("unshare", "--mount", "--", "sh", "-c", mount, "sh")
    found = child("open", f"sqlite://{folder}/work.db", "client", prefix=prefix)
    assert found["error"] == "StoreError", found
    assert f"{folder}/work.db" in found["message"]
    assert f"{folder} is on a read-only file system" in found["message"]


def test_a_full_disk(tmp_path: Path) -> None:
    needs("tmpfs in a private mount namespace", ["unshare", "--mount", "true"])
    folder = tmp_path / "small"
    folder.mkdir()
    mount = f'mount -t tmpfs -o size=1m tmpfs {folder} && exec "$@"'
    prefix = ("unshare", "--mount", "--", "sh", "-c", mount, "sh")
    found = child("fill", f"sqlite://{folder}/work.db", prefix=prefix)
    assert f"the SQLite database {folder}/work.db is full" in found["message"], found
    assert "nothing of it was written" in found["message"]
    assert found["loaded"] == found["written"] > 0  # every acknowledged job is there


def test_a_database_at_its_max_size(tmp_path: Path, arun: Run[Any]) -> None:
    url = f"sqlite://{tmp_path}/work.db?max_size_mb=1"

    async def scenario() -> None:
        store = SqliteStore(url)
        await store.open()
        kept: list[work.Job] = []
        caught: work.StoreError | None = None
        for _ in range(100):
            batch = [job(payload={"blob": "x" * 20_000}) for _ in range(5)]
            try:
                await store.write(WriteBatch(inserts=batch))
            except work.StoreError as exc:
                caught = exc
                break
            kept += batch
        assert caught is not None, "a 1 MB database took 10 MB"
        assert f"the SQLite database {tmp_path}/work.db is full" in str(caught)
        assert "max_size_mb" in str(caught)
        assert kept
        assert await store.get_many([("t", j.id) for j in kept]) == kept
        await store.write(WriteBatch(deletes=[("t", j.id) for j in kept[:10]]))
        await store.write(WriteBatch(inserts=[job()]))  # room again
        await store.close()

    arun(scenario())


# ---- fencing, quarantine, roles -----------------------------------------------------------------


def test_a_write_under_an_old_fence_is_refused(tmp_path: Path, arun: Run[Any]) -> None:
    path = tmp_path / "work.db"

    async def scenario() -> None:
        store = SqliteStore(f"sqlite://{path}")
        await store.open()
        lease = await store.lease()
        assert lease is not None
        kept = job()
        await store.write(WriteBatch(inserts=[kept]))
        takeover = sqlite3.connect(path)  # what a successor's open does to the row
        with takeover:
            takeover.execute("UPDATE lease SET fence = fence + 1, pid = 4242, host = 'other'")
        takeover.close()
        late = job()
        with pytest.raises(work.StoreError, match="was taken over by pid 4242 on host other"):
            await store.write(WriteBatch(inserts=[late], updates=[kept], state=b"late"))
        with pytest.raises(work.StoreError, match="taken over"):
            await store.prune(work.Job(kind="k", tenant_id="t").created_at, 0)
        assert await store.get_many([("t", late.id)]) == [None]
        await store.close()

    arun(scenario())


def test_unreadable_rows_are_set_aside(tmp_path: Path, arun: Run[Any]) -> None:
    path = tmp_path / "work.db"

    async def scenario() -> None:
        store = SqliteStore(f"sqlite://{path}")
        await store.open()
        client = SqliteStore(f"sqlite://{path}")
        await client.open("client")
        good, bad, submitted = job(), job(), job()
        await store.write(WriteBatch(inserts=[good, bad]))
        await client.submit([submitted])
        spoil = sqlite3.connect(path)
        with spoil:
            spoil.execute("UPDATE jobs SET job = X'00ff' WHERE id = ?", (bad.id,))
            spoil.execute("UPDATE jobs SET job = '{}' WHERE id = ?", (submitted.id,))
        spoil.close()
        with pytest.raises(
            work.StoreError, match=f"job '{bad.id}' of tenant 't' .* cannot be read"
        ):
            await store.get_many([("t", bad.id)])
        recovered = await store.load()
        assert recovered.jobs == [good]
        assert [(q.tenant_id, q.job_id) for q in recovered.quarantined] == [("t", bad.id)]
        assert (await store.inbox()).jobs == []  # the submitted row is set aside too
        assert await store.get_many([("t", bad.id), ("t", submitted.id)]) == [None, None]
        await client.close()
        await store.close()
        with sqlite3.connect(path) as conn:
            rows = conn.execute(
                "SELECT job_id, reason, job FROM quarantine ORDER BY seq"
            ).fetchall()
        conn.close()
        assert [row[0] for row in rows] == [bad.id, submitted.id]
        assert rows[0][2] == b"\x00\xff"  # kept as it was, for a human
        assert "Object missing required field `kind`" in rows[1][1]

    arun(scenario())


def test_roles(tmp_path: Path, arun: Run[Any]) -> None:
    async def scenario() -> None:
        store = SqliteStore(f"sqlite://{tmp_path}/work.db")
        await store.open("client")
        with pytest.raises(work.StoreError, match="already open as client"):
            await store.open("scheduler")
        for call in (
            store.load(),
            store.inbox(),
            store.prune(work.Job(kind="k", tenant_id="t").created_at, 1),
        ):
            with pytest.raises(work.StoreError, match="open as a client"):
                await call
        with pytest.raises(work.ValidationError, match=r"\$\.role"):
            await store.open("admin")  # type: ignore[arg-type]
        assert await store.lease() is None
        await store.close()

    arun(scenario())


# ---- schema, plans, threads ---------------------------------------------------------------------


def test_migrations_split_into_statements() -> None:
    script = """-- a comment
CREATE TABLE a (x TEXT DEFAULT 'a;b');
CREATE TRIGGER t AFTER INSERT ON a BEGIN
    UPDATE a SET x = 'c;d';
END;
-- trailing comment
"""
    first, second = split_statements(script)
    assert first.endswith("CREATE TABLE a (x TEXT DEFAULT 'a;b');")
    assert second.startswith("CREATE TRIGGER")
    assert second.endswith("END;")
    with pytest.raises(work.StoreError, match="incomplete statement"):
        split_statements("CREATE TABLE a (x")
    assert [version for version, _, _ in migrations()] == list(range(1, len(migrations()) + 1))


def test_reopening_applies_no_migration_twice(tmp_path: Path, arun: Run[Any]) -> None:
    path = tmp_path / "work.db"
    for _ in range(3):
        arun(_open_and_close(f"sqlite://{path}"))
    with sqlite3.connect(path) as conn:
        versions = conn.execute("SELECT version FROM schema_version").fetchall()
    conn.close()
    assert versions == [(v,) for v, _, _ in migrations()]


def test_every_listing_reads_an_index_in_order(tmp_path: Path, arun: Run[Any]) -> None:
    path = tmp_path / "work.db"
    arun(_open_and_close(f"sqlite://{path}"))
    conn = sqlite3.connect(path)
    for (namespace, status, kind, _after), sql in _LIST_SQL.items():
        plan = " / ".join(
            row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", [1] * sql.count("?"))
        )
        assert "TEMP B-TREE" not in plan, (sql, plan)  # no sort: rows come in seq order
        assert "SCAN" not in plan, (sql, plan)
        if namespace + status + kind <= 1:  # one filter or none: its own index
            name = (
                "namespace" if namespace else "status" if status else "kind" if kind else "tenant"
            )
            assert f"USING INDEX jobs_by_{name} " in plan, (sql, plan)
    conn.close()


def test_the_loop_runs_while_sqlite_works(tmp_path: Path, arun: Run[Any]) -> None:
    async def scenario() -> int:
        store = SqliteStore(f"sqlite://{tmp_path}/work.db")
        await store.open()
        ticks = 0
        batch = WriteBatch(inserts=[job(payload={"x": "y" * 10_000}) for _ in range(3000)])
        writing = asyncio.ensure_future(store.write(batch))
        while not writing.done():
            await asyncio.sleep(0.001)
            ticks += 1
        await writing
        page, _ = await store.list(ListQuery(tenant_id="t", limit=1))
        assert len(page) == 1
        await store.close()
        return ticks

    assert arun(scenario()) >= 5

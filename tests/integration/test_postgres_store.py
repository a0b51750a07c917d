"""PostgresStore against a real server (tests/_postgres.py): errors at open that name the URL
without its password, migrations (concurrent opens, a newer schema), the scheduler lease
(a second scheduler in another process, a crashed holder, fencing), clients and their
wake-ups, and the plans of the indexed queries. Outages are in test_postgres_outages.py."""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import psycopg
import pytest

import nsai_work as work
from nsai_work.stores import ListQuery, WriteBatch, store_from_url
from nsai_work.stores._pg._migrate import migrations
from nsai_work.stores.postgres import PostgresStore
from tests._postgres import HOST, SUPERUSER, PostgresCluster, free_port

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]
ROOT = Path(__file__).resolve().parents[2]


def job(tenant: str = "acme", **fields: Any) -> work.Job:
    fields.setdefault("kind", "pg.test")
    return work.Job(tenant_id=tenant, **fields)


async def opened(url: str, role: str = "scheduler", **options: Any) -> PostgresStore:
    store = PostgresStore(url, **options)
    await store.open(role)  # type: ignore[arg-type]
    return store


# ---- URLs and errors at open ----------------------------------------------------------------


def test_store_from_url_makes_a_postgres_store_for_both_schemes() -> None:
    for scheme in ("postgresql", "postgres"):
        store = store_from_url(f"{scheme}://u:secret@localhost/db", connect_timeout=2.0)
        assert isinstance(store, PostgresStore)
        assert store.url == f"{scheme}://u:***@localhost/db"
        assert store.durable is True


def test_bad_options_are_configuration_errors() -> None:
    with pytest.raises(work.ConfigurationError, match="max_connections"):
        PostgresStore("postgresql://localhost/db", min_connections=3, max_connections=2)
    with pytest.raises(work.ConfigurationError, match="connect_timeout"):
        PostgresStore("postgresql://localhost/db", connect_timeout=0)


def test_a_refused_connection_names_the_url_without_password_and_the_cause(arun: Run[Any]) -> None:
    url = f"postgresql://someone:s3cret@{HOST}:{free_port()}/db"
    store = PostgresStore(url, connect_timeout=2)
    with pytest.raises(work.StoreError) as caught:
        arun(store.open())
    message = str(caught.value)
    assert "s3cret" not in message
    assert f"postgresql://someone:***@{HOST}" in message
    assert "refused" in message.lower()


def test_an_unknown_database_names_the_cause(
    postgres_cluster: PostgresCluster, arun: Run[Any]
) -> None:
    store = PostgresStore(postgres_cluster.url_for("no_such_database"))
    with pytest.raises(work.StoreError, match=r'database "no_such_database" does not exist'):
        arun(store.open("client"))


def test_bad_credentials_name_the_url_without_password(arun: Run[Any]) -> None:
    """A cluster of its own that asks TCP clients for a password (scram-sha-256)."""
    with PostgresCluster(durable=False) as cluster:
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            conn.execute("CREATE ROLE worker LOGIN PASSWORD 'right-password'")
        hba = cluster.datadir / "pg_hba.conf"
        hba.write_text(
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
            "host all all ::1/128 scram-sha-256\n"
        )
        cluster.restart()
        local = f"postgresql://{SUPERUSER}@/postgres?host={cluster.socket_dir}&port={cluster.port}"
        good = f"postgresql://worker:right-password@{HOST}:{cluster.port}/postgres"
        bad = f"postgresql://worker:wrong-password@{HOST}:{cluster.port}/postgres"
        with pytest.raises(work.StoreError) as caught:
            arun(PostgresStore(bad).open("client"))
        message = str(caught.value)
        assert "wrong-password" not in message
        assert "postgresql://worker:***@" in message
        assert "password authentication failed" in message

        async def good_open() -> None:  # the right password opens (and the role may migrate)
            with psycopg.connect(local, autocommit=True) as conn:
                conn.execute("GRANT CREATE ON SCHEMA public TO worker")
            store = await opened(good)
            assert (await store.lease()) is not None
            await store.close()

        arun(good_open())


# ---- migrations -------------------------------------------------------------------------------


def test_concurrent_opens_apply_each_migration_once(postgres_url: str, arun: Run[Any]) -> None:
    async def race() -> None:
        stores = [PostgresStore(postgres_url) for _ in range(6)]
        await asyncio.gather(*(s.open("client") for s in stores))
        for store in stores:
            await store.close()

    arun(race())
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(
            "SELECT version, count(*) FROM schema_version GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert sorted(rows) == [(m.version, 1) for m in migrations()]


def test_concurrent_opens_from_two_processes(postgres_url: str) -> None:
    """Two processes open a new database at the same moment (released by one file's mtime)."""
    code = textwrap.dedent(
        f"""
        import asyncio, sys, time
        sys.path.insert(0, {str(ROOT / "src")!r})
        from nsai_work.stores.postgres import PostgresStore
        async def main():
            store = PostgresStore(sys.argv[1])
            while time.time() < float(sys.argv[2]):
                await asyncio.sleep(0.001)
            await store.open("client")
            await store.close()
        asyncio.run(main())
        """
    )
    start = time.time() + 1.5
    children = [
        subprocess.Popen([sys.executable, "-c", code, postgres_url, str(start)]) for _ in range(2)
    ]
    assert [child.wait(60) for child in children] == [0, 0]
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(
            "SELECT version, count(*) FROM schema_version GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert rows == [(m.version, 1) for m in migrations()]


def test_a_newer_schema_is_refused(postgres_url: str, arun: Run[Any]) -> None:
    async def open_then_close() -> None:
        await (await opened(postgres_url, "client")).close()

    arun(open_then_close())
    with psycopg.connect(postgres_url) as conn:
        conn.execute("INSERT INTO schema_version (version, name) VALUES (9999, 'future')")
    with pytest.raises(work.StoreError, match="schema version 9999, newer"):
        arun(PostgresStore(postgres_url).open("client"))


# ---- the lease ---------------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, sys.argv[2])
    from nsai_work.stores.postgres import PostgresStore
    async def main():
        store = PostgresStore(sys.argv[1])
        await store.open("scheduler")
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await store.close()
    asyncio.run(main())
    """
)


def test_a_second_scheduler_in_another_process_is_refused_naming_the_holder(
    postgres_url: str, arun: Run[Any]
) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, postgres_url, str(ROOT / "src")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"

            async def second() -> tuple[str, work.stores.Lease | None]:
                client = await opened(postgres_url, "client")
                lease = await client.lease()
                with pytest.raises(work.StoreError) as caught:
                    await opened(postgres_url)
                await client.close()
                return str(caught.value), lease

            message, lease = arun(second())
            assert lease is not None
            assert lease.pid == child.pid
            assert f"pid {child.pid}" in message
            assert socket.gethostname() in message
            assert lease.since.strftime("%Y-%m-%d %H:%M:%S") in message
            assert "open this store as a client" in message
        finally:
            child.kill()  # a crash: the server drops its session, and the lock with it

    async def after_the_crash() -> None:
        client = await opened(postgres_url, "client")
        deadline = time.monotonic() + 10
        while await client.lease() is not None:  # the server notices the closed socket
            assert time.monotonic() < deadline, "the dead holder's lock was never released"
            await asyncio.sleep(0.01)
        await client.close()
        store = await opened(postgres_url)
        lease = await store.lease()
        assert lease is not None
        assert lease.pid == os.getpid()
        assert lease.fence == 2  # bumped at every acquisition
        await store.close()

    arun(after_the_crash())


def test_a_scheduler_whose_lease_was_taken_over_is_fenced_out(
    postgres_url: str, arun: Run[Any]
) -> None:
    async def scenario() -> None:
        old = await opened(postgres_url)
        first = job()
        await old.write(WriteBatch(inserts=[first]))
        with psycopg.connect(postgres_url, autocommit=True) as conn:  # its session dies
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'nsai-work scheduler' AND datname = current_database()"
            )
        new = await opened(postgres_url)  # the lock was free: a takeover
        assert (await new.lease()).fence == 2  # type: ignore[union-attr]
        late = job()
        with pytest.raises(work.StoreError, match="terminating connection"):
            await old.write(WriteBatch(inserts=[late], updates=[first]))
        for _ in range(3):  # then every attempt is refused: the lease is another's
            with pytest.raises(work.StoreError, match="fenced out") as caught:
                await old.write(WriteBatch(inserts=[late], updates=[first]))
            assert f"pid {os.getpid()}" in str(caught.value)
        assert await new.get_many([("acme", late.id)]) == [None]
        await new.close()
        with pytest.raises(work.StoreError, match="fenced out"):  # the fence moved on
            await old.write(WriteBatch(inserts=[late]))
        await old.close()

    arun(scenario())


def test_a_scheduler_resumes_after_losing_its_connection_when_nobody_took_over(
    postgres_url: str, arun: Run[Any]
) -> None:
    async def scenario() -> None:
        store = await opened(postgres_url)
        fence = (await store.lease()).fence  # type: ignore[union-attr]
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'nsai-work scheduler' AND datname = current_database()"
            )
        one = job()
        with pytest.raises(work.StoreError, match="terminating connection"):
            await store.write(WriteBatch(inserts=[one]))
        await store.write(WriteBatch(inserts=[one]))  # reconnected, the lease taken again
        lease = await store.lease()
        assert lease is not None
        assert lease.fence == fence
        assert await store.get_many([("acme", one.id)]) == [one]
        await store.close()

    arun(scenario())


# ---- clients and wake-ups --------------------------------------------------------------------


def test_client_submits_wake_the_scheduler_quickly(postgres_url: str, arun: Run[Any]) -> None:
    """The scheduler's wait_for_change returns soon after a client's submit commits; prints
    the wake-up latency (from the submit call to the wake-up)."""

    async def scenario() -> list[float]:
        scheduler = await opened(postgres_url)
        client = await opened(postgres_url, "client")
        latencies = []
        for _ in range(100):
            await scheduler.inbox()
            waiter = asyncio.ensure_future(scheduler.wait_for_change(5.0))
            await asyncio.sleep(0.002)
            start = time.perf_counter()
            await client.submit([job()])
            assert await waiter
            latencies.append(time.perf_counter() - start)
        assert len((await scheduler.inbox(limit=1000)).jobs) == 100
        await client.close()
        await scheduler.close()
        return latencies

    latencies = sorted(arun(scenario()))
    p50, p99 = statistics.median(latencies), latencies[98]
    print(f"submit-to-wake-up: p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms")
    assert p50 < 0.1


def test_a_client_wakes_on_the_scheduler_commits(postgres_url: str, arun: Run[Any]) -> None:
    async def scenario() -> None:
        scheduler = await opened(postgres_url)
        client = await opened(postgres_url, "client")
        assert not await client.wait_for_change(0.05)
        one = job()
        waiter = asyncio.ensure_future(client.wait_for_change(5.0))
        await scheduler.write(WriteBatch(inserts=[one]))
        assert await waiter
        quiet = await opened(postgres_url.replace("postgresql", "postgres"), "client")
        await scheduler.close()
        silent = await opened(postgres_url, notify_clients=False)
        await silent.write(WriteBatch(updates=[one]))
        assert not await quiet.wait_for_change(0.1)
        for store in (silent, quiet, client):
            await store.close()

    arun(scenario())


def test_a_client_submit_of_many_jobs_and_a_duplicate(postgres_url: str, arun: Run[Any]) -> None:
    async def scenario() -> None:
        scheduler = await opened(postgres_url)
        client = await opened(postgres_url, "client")
        jobs = [job(payload={"i": i}) for i in range(3000)]
        await client.submit(jobs)
        inbox = await scheduler.inbox(limit=5000)
        assert inbox.jobs == jobs
        with pytest.raises(work.ConflictError, match=jobs[1234].id):
            await client.submit([job(), jobs[1234]])
        assert len((await scheduler.inbox(limit=5000)).jobs) == 3000
        await client.close()
        await scheduler.close()

    arun(scenario())


def test_store_roles_and_odd_text(postgres_url: str, arun: Run[Any]) -> None:
    """Ids and reasons with NUL and backslashes go through their text columns and back."""

    async def scenario() -> None:
        scheduler = await opened(postgres_url)
        client = await opened(postgres_url, "client")
        odd = [job(id=text) for text in ("a\x00b", "a\\0b", "a\\\\0b", "\\", "x\\")]
        await scheduler.write(WriteBatch(inserts=odd))
        assert await client.get_many([("acme", j.id) for j in odd]) == odd
        for one in odd:
            assert await client.owners(one.id) == ["acme"]
        assert await client.request_cancel(("acme", "a\x00b"), "why\\\x00")
        assert (await scheduler.inbox()).cancels == [(("acme", "a\x00b"), "why\\\x00")]
        with pytest.raises(work.StoreError, match="is for the store's scheduler"):
            await client.inbox()
        with pytest.raises(work.StoreError, match="is for the store's scheduler"):
            await client.load()
        with pytest.raises(work.ConfigurationError, match="open as 'scheduler'"):
            await scheduler.open("client")
        await client.close()
        await scheduler.close()

    arun(scenario())


# ---- the plans: O(page + log n) from an index ---------------------------------------------------


def test_queries_use_their_indexes(postgres_url: str, arun: Run[Any]) -> None:
    async def fill() -> None:
        store = await opened(postgres_url)
        jobs = [
            job(
                f"t{i % 5}",
                namespace=f"ns{i % 7}",
                kind=f"k.{i % 5}",
                status=work.Status.QUEUED,
            )
            for i in range(20_000)
        ]
        await store.write(WriteBatch(inserts=jobs))
        done = [
            msgspec.structs.replace(j, status=work.Status.SUCCEEDED, finished_at=j.created_at)
            for j in jobs[:19_000]
        ]
        await store.write(WriteBatch(updates=done))
        await store.close()

    arun(fill())
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("ANALYZE jobs")

        def plan(sql: str, *params: Any) -> str:
            rows = conn.execute(f"EXPLAIN {sql}", params).fetchall()
            return "\n".join(row[0] for row in rows)

        from nsai_work.stores._pg import _sql

        for filters, index in (
            ({}, "jobs_by_tenant"),
            ({"status": work.Status.QUEUED}, "jobs_by_status"),
            ({"namespace": "ns3"}, "jobs_by_namespace"),
            ({"kind": "k.2"}, "jobs_by_kind"),
        ):
            sql, params = _sql.list_statement(ListQuery(tenant_id="t3", limit=20, **filters), 10**6)
            explained = plan(sql, *params)
            assert f"Index Scan Backward using {index}" in explained, explained
            assert "Sort" not in explained, explained
        assert "jobs_live" in plan(_sql.LOAD_JOBS)
        assert "jobs_inbox" in plan(_sql.INBOX_JOBS, 100)
        assert "jobs_cancel_requested" in plan(_sql.INBOX_CANCELS)
        assert "jobs_pkey" in plan(_sql.OWNERS, "x")

    async def pages() -> None:
        store = await opened(postgres_url)
        want = [j for j in (await store.load()).jobs if j.tenant_id == "t3"][::-1]
        got: list[work.Job] = []
        cursor = None
        while True:
            page, cursor = await store.list(
                ListQuery(tenant_id="t3", status=work.Status.QUEUED, limit=7, cursor=cursor)
            )
            got += page
            if cursor is None:
                break
        assert got == want
        await store.close()

    arun(pages())

"""``python -m bench.pg_store [--url URL] [--quick]``: PostgresStore.write() throughput against
the floor of notes/postgres.md, measured in the same run on the same server.

Batches of 1, 50, 500 and 2,000 jobs; for each:

- ``inserts``: ``write(inserts=B)`` (binary COPY, fenced, one transaction);
- ``end to end``: the floor's three steps per job, each one ``write`` of the batch: the insert,
  an update to running (with its attempt), an update to succeeded (with a small result);
- ``mixed``: a scheduler's steady state, one ``write`` per batch holding B new jobs, the
  previous batch's jobs going to running and the batch before's to succeeded;
- ``floor``: the bare psycopg pipeline of notes/postgres.md (COPY in, then an UPDATE over
  ``unnest`` to running and one to succeeded, each a pipelined transaction; the floor's table
  and indexes).

The four are measured interleaved, one batch of each in a rotating order, so that the load of
the machine weighs on them alike.

Without ``--url`` a throwaway cluster is started (tests/_postgres.py, stock durability): run it
through ``scripts/in-netns.sh`` like the other benchmarks. Prints a table; writes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from msgspec.structs import replace

import nsai_work as work
from nsai_work._ir import Attempt
from nsai_work.stores import WriteBatch
from nsai_work.stores.postgres import PostgresStore

SIZES = (1, 50, 500, 2000)
FLOOR_TABLE = """
CREATE TABLE floor_jobs (
    tenant text NOT NULL, id uuid NOT NULL, status text NOT NULL, payload jsonb NOT NULL,
    result jsonb, PRIMARY KEY (tenant, id));
CREATE INDEX ON floor_jobs (tenant, status);
CREATE INDEX ON floor_jobs (id) WHERE status = 'queued';
"""
FLOOR_UPDATE = """
UPDATE floor_jobs AS f SET status = %s, result = %s::jsonb
FROM unnest(%s::text[], %s::uuid[]) AS u(tenant, id)
WHERE f.tenant = u.tenant AND f.id = u.id
"""


def jobs(n: int) -> list[work.Job]:
    now = dt.datetime.now(dt.UTC)
    return [
        work.Job(
            kind="bench.noop",
            tenant_id=("acme", "globex", "initech", "umbrella")[i % 4],
            payload={"n": i, "text": "hello"},
            status=work.Status.QUEUED,
            submitted_at=now,
            queued_at=now,
        )
        for i in range(n)
    ]


def running(batch: Sequence[work.Job]) -> list[work.Job]:
    now = dt.datetime.now(dt.UTC)
    return [
        replace(
            j,
            status=work.Status.RUNNING,
            attempt=1,
            started_at=now,
            backend="local",
            pool="local:async",
            attempts=(Attempt(number=1, backend="local", pool="local:async", started_at=now),),
        )
        for j in batch
    ]


def succeeded(batch: Sequence[work.Job]) -> list[work.Job]:
    now = dt.datetime.now(dt.UTC)
    return [
        replace(j, status=work.Status.SUCCEEDED, finished_at=now, result={"ok": True})
        for j in batch
    ]


class Scenarios:
    """One step of each figure (a batch of ``size`` jobs), so that the figures can be measured
    interleaved, step by step: the load of the machine (fsync times vary tenfold on a busy
    disk) then weighs on all of them alike."""

    def __init__(self, store: PostgresStore, conn: psycopg.AsyncConnection[Any], size: int):
        self.store, self.conn, self.size = store, conn, size
        self.previous: list[work.Job] = []
        self.before: list[work.Job] = []

    async def inserts(self) -> float:
        new = jobs(self.size)
        start = time.perf_counter()
        await self.store.write(WriteBatch(inserts=new))
        return time.perf_counter() - start

    async def end_to_end(self) -> float:
        new = jobs(self.size)
        run = running(new)
        done = succeeded(run)
        start = time.perf_counter()
        await self.store.write(WriteBatch(inserts=new))
        await self.store.write(WriteBatch(updates=run))
        await self.store.write(WriteBatch(updates=done))
        return time.perf_counter() - start

    async def mixed(self) -> float:
        new = jobs(self.size)
        run, done = running(self.previous), succeeded(self.before)
        start = time.perf_counter()
        await self.store.write(WriteBatch(inserts=new, updates=[*run, *done], state=b"x" * 200))
        spent = time.perf_counter() - start
        self.previous, self.before = new, run
        return spent

    async def floor(self) -> float:
        """notes/postgres.md's pipeline: COPY in; each UPDATE with its BEGIN and COMMIT in one
        pipeline round trip."""
        conn, batch = self.conn, jobs(self.size)
        rows = [(j.tenant_id, j.id, "queued", psycopg.types.json.Jsonb(j.payload)) for j in batch]
        tenants, ids = [j.tenant_id for j in batch], [j.id for j in batch]
        start = time.perf_counter()
        async with (
            conn.transaction(),
            conn.cursor().copy("COPY floor_jobs (tenant, id, status, payload) FROM STDIN") as copy,
        ):
            for row in rows:
                await copy.write_row(row)
        for status, result in (("running", None), ("succeeded", '{"ok": true}')):
            async with conn.pipeline(), conn.transaction():
                await conn.execute(FLOOR_UPDATE, (status, result, tenants, ids))
        return time.perf_counter() - start


NAMES = ("inserts", "end to end", "mixed", "floor end to end")


async def run(url: str, quick: bool, repeats: int) -> dict[tuple[str, int], list[float]]:
    """jobs/s of each figure and batch size, one value per repeat."""
    store = PostgresStore(url)
    await store.open()
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await conn.execute(FLOOR_TABLE)
    results: dict[tuple[str, int], list[float]] = {}
    for _ in range(repeats):
        for size in SIZES:
            steps = max(5, min(300, (1_000 if quick else 10_000) // size))
            scenarios = Scenarios(store, conn, size)
            figures = (scenarios.inserts, scenarios.end_to_end, scenarios.mixed, scenarios.floor)
            spent = [0.0] * len(figures)
            for step in range(steps):
                for index in range(len(figures)):  # a rotating order
                    which = (index + step) % len(figures)
                    spent[which] += await figures[which]()
            for name, seconds in zip(NAMES, spent, strict=True):
                results.setdefault((name, size), []).append(size * steps / seconds)
    await conn.close()
    await store.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pg_store", description=__doc__)
    parser.add_argument("--url", help="a PostgreSQL URL (default: a throwaway cluster)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median kept)")
    args = parser.parse_args()
    if args.url:
        results = asyncio.run(run(args.url, args.quick, args.repeats))
    else:
        from tests._postgres import PostgresCluster

        with PostgresCluster() as cluster:
            results = asyncio.run(run(cluster.create_database(), args.quick, args.repeats))
    print(f"{'batch':>6}  " + "  ".join(f"{n:>17}" for n in NAMES) + "   (jobs/s, median)")
    for size in SIZES:
        cells = [f"{statistics.median(results[(n, size)]):17,.0f}" for n in NAMES]
        print(f"{size:>6}  " + "  ".join(cells))


if __name__ == "__main__":
    main()

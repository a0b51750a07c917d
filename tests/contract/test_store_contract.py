"""``work.testing.check_store`` over the memory store, the SQLite store (durable, and as a store
that keeps its data in its object, the way the memory store runs it), and its verdict on broken
stores."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from nsai_work import Job
from nsai_work.stores import Inbox, ListQuery, MemoryStore, WriteBatch
from nsai_work.stores.sqlite import SqliteStore
from nsai_work.testing import check_store


def damage(path: Path) -> Any:
    """``check_store``'s damage hook for a SQLite file: the row's JSON is no longer a job."""

    def spoil(tenant_id: str, job_id: str) -> None:
        conn = sqlite3.connect(path)
        with conn:
            changed = conn.execute(
                "UPDATE jobs SET job = ? WHERE tenant_id = ? AND id = ?",
                ('{"kind": "x", "tenant_id": 7}', tenant_id, job_id),
            ).rowcount
        conn.close()
        assert changed == 1

    return spoil


def test_memory_store() -> None:
    check_store(MemoryStore)


def test_sqlite_store(tmp_path: Path) -> None:
    path = tmp_path / "work.db"
    check_store(lambda: SqliteStore(f"sqlite://{path}"), damage=damage(path))


def test_sqlite_store_with_synchronous_normal(tmp_path: Path) -> None:
    path = tmp_path / "work.db"
    check_store(lambda: SqliteStore(f"sqlite://{path}?synchronous=NORMAL"))


class Ephemeral(SqliteStore):
    """A SQLite store over a new file at each object: what check_store sees of a store whose
    data lives in its object (the memory store)."""

    durable = False


def test_a_store_that_is_not_durable(tmp_path: Path) -> None:
    numbers = itertools.count()
    check_store(lambda: Ephemeral(f"sqlite://{tmp_path}/{next(numbers)}.db"))


# ---- verdicts on broken stores ------------------------------------------------------------------


class OldestFirst(SqliteStore):
    async def list(self, query: ListQuery) -> tuple[list[Job], str | None]:
        page, cursor = await super().list(query)
        return page[::-1], cursor


class NotAtomic(SqliteStore):
    async def write(self, batch: WriteBatch) -> None:
        for job in batch.inserts:
            await super().write(WriteBatch(inserts=[job]))
        await super().write(replace(batch, inserts=[]))


class ForgetsCancels(SqliteStore):
    async def inbox(self, limit: int = 1000) -> Inbox:
        return replace(await super().inbox(limit), cancels=[])


class NeverWakes(SqliteStore):
    async def wait_for_change(self, timeout: float) -> bool:
        return False


class LosesState(SqliteStore):
    async def write(self, batch: WriteBatch) -> None:
        await super().write(replace(batch, state=None))


class ClientsMayWrite(SqliteStore):
    async def write(self, batch: WriteBatch) -> None:
        if self._role == "client":
            return
        await super().write(batch)


@pytest.mark.parametrize(
    ("store", "verdict"),
    [
        (OldestFirst, "list"),
        (NotAtomic, "write"),
        (ForgetsCancels, "inbox() after two cancel requests"),
        (NeverWakes, "wait_for_change"),
        (LosesState, "state"),
        (ClientsMayWrite, "write() by a client"),
    ],
)
def test_check_store_names_what_breaks(
    tmp_path: Path, store: type[SqliteStore], verdict: str
) -> None:
    path = tmp_path / "work.db"
    with pytest.raises(AssertionError, match=r"check_store: ") as caught:
        check_store(lambda: store(f"sqlite://{path}"), timeout_s=20)
    assert verdict in str(caught.value)


def test_check_store_wants_empty_data(tmp_path: Path, arun: Any) -> None:
    path = tmp_path / "work.db"

    async def fill() -> None:
        store = SqliteStore(f"sqlite://{path}")
        await store.open()
        await store.write(WriteBatch(inserts=[Job(kind="k", tenant_id="t")]))
        await store.close()

    arun(fill())
    with pytest.raises(AssertionError, match="empty data"):
        check_store(lambda: SqliteStore(f"sqlite://{path}"))


def test_check_store_wants_a_store() -> None:
    with pytest.raises(AssertionError, match="must return a Store"):
        check_store(lambda: object())  # type: ignore[arg-type, return-value]

"""``work.testing.check_store`` over the PostgreSQL store, against a real server (a fresh
database of the session's throwaway cluster), with rows spoiled through SQL to prove the
quarantine."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from nsai_work.stores._pg._sql import to_column
from nsai_work.stores.postgres import PostgresStore
from nsai_work.testing import check_store


def damage(url: str) -> Callable[[str, str], None]:
    """``check_store``'s damage hook: the row's body is JSON that is not a job."""

    def spoil(tenant_id: str, job_id: str) -> None:
        with psycopg.connect(url) as conn:
            changed = conn.execute(
                "UPDATE jobs SET body = %s WHERE tenant_id = %s AND id = %s",
                (b'{"kind": "x", "tenant_id": 7}', tenant_id, to_column(job_id)),
            ).rowcount
        assert changed == 1

    return spoil


def test_postgres_store(postgres_url: str) -> None:
    check_store(lambda: PostgresStore(postgres_url), damage=damage(postgres_url))


def test_postgres_store_with_one_pooled_connection(postgres_url: str) -> None:
    check_store(
        lambda: PostgresStore(postgres_url, min_connections=0, max_connections=1),
        damage=damage(postgres_url),
    )

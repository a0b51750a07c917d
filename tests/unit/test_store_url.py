"""Store URLs: ``redact`` hides passwords wherever libpq takes them and keeps the rest as
written; ``store_from_url`` makes a PostgreSQL store (not opened) and refuses unknown options."""

from __future__ import annotations

import pytest

import nsai_work as work
from nsai_work.stores import redact, store_from_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:secret@db.example:5432/jobs", "postgresql://u:***@db.example:5432/jobs"),
        ("postgresql://u:secret@[::1]:5432/jobs", "postgresql://u:***@[::1]:5432/jobs"),
        ("postgresql://u:s@h1:5432,h2:5433/jobs", "postgresql://u:***@h1:5432,h2:5433/jobs"),
        ("postgresql://u:secret@h:notaport/jobs", "postgresql://u:***@h:notaport/jobs"),
        ("postgresql://u:pa:ss@h/jobs", "postgresql://u:***@h/jobs"),
        (
            "postgres://u@h/jobs?sslmode=require&password=x",
            "postgres://u@h/jobs?sslmode=require&password=***",
        ),
        (
            "postgresql:///jobs?host=/run/pg&password=x",
            "postgresql:///jobs?host=/run/pg&password=***",
        ),
        ("postgresql://u@h/jobs", "postgresql://u@h/jobs"),
        ("sqlite:///var/lib/work.db", "sqlite:///var/lib/work.db"),
        ("memory://", "memory://"),
        ("postgresql://u:secret@[::1/jobs", "<unparseable store URL>"),
    ],
)
def test_redact(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_store_from_url_refuses_unknown_postgres_options() -> None:
    with pytest.raises(work.ConfigurationError, match=r"unknown PostgreSQL store option.*pool"):
        store_from_url("postgresql://u:secret@h/db", pool=3)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:secret@h:0/db",
        "postgresql://u:secret@h1:5432,h2:x/db",
        "postgresql://u:secret@h/db?no_such_option=1",
        "postgresql://u:secret@[::1/db",
    ],
)
def test_malformed_postgres_urls_fail_without_the_password(url: str) -> None:
    with pytest.raises(work.ConfigurationError) as caught:
        store_from_url(url)
    assert "secret" not in str(caught.value)

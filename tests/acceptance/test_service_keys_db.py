"""API keys kept in the store's database (``KeyRing(store_url)``): several servers on one
store share them, a revocation reaches each within ``RELOAD_S``, only hashes are stored; on
SQLite and PostgreSQL, through the API and the CLI."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from nsai_work.cli import main
from nsai_work.server import KeyRing, Server, create_app


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'work.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def test_two_rings_on_one_database_share_keys_and_revocations(
    store_url: str, monkeypatch: Any
) -> None:
    one, other = KeyRing(store_url), KeyRing(store_url)  # two servers' rings
    key, token = one.create(tenant_id="acme", name="billing")
    _, admin_token = other.create(admin=True)
    assert other.authenticate(token) == key
    assert one.authenticate(admin_token) is None  # one read the table less than 1 s ago
    monkeypatch.setattr("nsai_work.server._keys.RELOAD_S", 0.0)  # (as 1 s later)
    assert one.authenticate(admin_token) is not None
    assert [k.id for k in one.list()] == [k.id for k in other.list()]
    assert other.where == one.where
    assert "password" not in repr(one)

    one.revoke(key.id)
    assert one.authenticate(token) is None  # at once where it was revoked
    assert other.authenticate(token) is None  # (the other: within 1 s)
    assert other.authenticate(admin_token) is not None


def test_only_the_hash_is_stored(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'work.db'}"
    _, token = KeyRing(url).create(tenant_id="acme")
    secret = token.split("_", 2)[2]
    with sqlite3.connect(tmp_path / "work.db") as db:
        rows = db.execute("SELECT id, doc FROM nsai_work_api_keys").fetchall()
    assert len(rows) == 1
    assert secret not in rows[0][1]
    assert json.loads(rows[0][1])["tenant_id"] == "acme"


def test_servers_on_one_store_take_each_others_keys(tmp_path: Path, capsys: Any) -> None:
    url = f"sqlite:///{tmp_path / 'work.db'}"
    assert main(["keys", "create", "--keys", url, "--tenant", "acme", "--json"]) == 0
    token = json.loads(capsys.readouterr().out)["token"]
    with (
        Server(create_app(url, keys=url, scheduler=True)) as first,
        Server(create_app(url, keys=url, scheduler=False)) as second,
    ):
        for server in (first, second):
            answer = httpx.get(f"{server.url}/v1/auth", headers={"X-API-Key": token})
            assert answer.status_code == 200, answer.text
            assert answer.json()["tenant_id"] == "acme"
    assert main(["keys", "list", "--keys", url, "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [k["tenant_id"] for k in listed] == ["acme"]

"""``nsai-work top --once``: one frame of the live view, against a real server (admin and
tenant keys) and against a SQLite store, in-process through ``nsai_work.cli.main``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nsai_work as work
from nsai_work.cli import main
from tests._service import running_server


async def _slow(job: work.Job) -> None:
    await asyncio.sleep(60)


def test_one_frame_against_a_server(
    capsys: Any, handlers: Callable[..., str], monkeypatch: Any
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # (rich: wide enough for whole job ids)
    kind = handlers(_slow)
    with running_server() as api, work.connect(api.url, api_key=api.admin) as client:
        running = client.submit(work.Job(kind=kind, tenant_id="acme", priority="interactive"))
        client.submit_many(work.Job(kind=kind, tenant_id="globex") for _ in range(2))
        client.request("POST", "/ops/pause", body={"tenant_id": "initech"})
        client.submit(work.Job(kind=kind, tenant_id="initech"))
        base = ["top", "--once", "--url", api.url]
        assert main([*base, "--api-key", api.admin, "--json"]) == 0
        frame = json.loads(capsys.readouterr().out)
        assert frame["by_priority"]["interactive"]["running"] == 1
        assert frame["tenants"]["globex"]["running"] == 2
        assert frame["tenants"]["initech"]["queued"] == 1
        assert sorted(j["tenant_id"] for j in frame["running"]) == ["acme", "globex", "globex"]

        assert main([*base, "--api-key", api.admin]) == 0
        shown = capsys.readouterr().out
        for text in ("nsai-work top", "interactive", "globex", "initech", running.id, kind):
            assert text in shown

        assert main([*base, "--api-key", api.acme, "--json"]) == 0
        mine = json.loads(capsys.readouterr().out)
        assert list(mine["tenants"]) == ["acme"]
        assert [j["id"] for j in mine["running"]] == [running.id]
        client.cancel_where("acme")
        client.cancel_where("globex")
        client.cancel_where("initech")


def test_one_frame_against_a_store(
    tmp_path: Path, capsys: Any, handlers: Callable[..., str]
) -> None:
    kind = handlers(_slow)
    url = f"sqlite:///{tmp_path / 'w.db'}"
    with work.SyncScheduler(store=url) as scheduler:
        job = scheduler.submit(work.Job(kind=kind, tenant_id="acme"))
        scheduler.submit(work.Job(kind="tool_call", tenant_id="acme", payload={"tool": "echo"}))
        done = scheduler.submit(
            work.Job(kind="tool_call", tenant_id="acme", payload={"tool": "echo"})
        )
        scheduler.wait(done.id, timeout=10)
        assert main(["top", "--once", "--store", url, "--tenant", "acme", "--json"]) == 0
        frame = json.loads(capsys.readouterr().out)
        acme = frame["tenants"]["acme"]
        assert acme["running"] == 1
        assert acme["succeeded"] >= 1
        assert [j["id"] for j in frame["running"]] == [job.id]
        assert main(["top", "--once", "--store", url]) == 1
        assert "--tenant" in capsys.readouterr().err
        scheduler.cancel(job.id)

"""Cron schedules over HTTP: a tenant key lists, pauses, resumes and removes its tenant's
schedules (declared in the server's scheduler process); another tenant's are unknown to it; an
admin key names the tenant; the HTTP client's verbs are the same."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import nsai_work as work
from tests._service import running_server


def declare(app: Any, name: str, tenant_id: str, cron: str = "0 3 * * *") -> work.Schedule:
    engine = app.state.service.engine
    template = work.Job(kind="tool_call", tenant_id=tenant_id, payload={"tool": "echo"})
    future = asyncio.run_coroutine_threadsafe(engine.cron(name, cron, template), engine._loop)
    return future.result(10)  # type: ignore[no-any-return]


def test_schedules_over_http() -> None:
    with running_server() as server:
        declare(server.app, "nightly", "acme")
        declare(server.app, "nightly", "globex", "0 4 * * *")
        listed = server.call("GET", "/v1/schedules", server.acme)
        assert listed.status_code == 200
        (only,) = listed.json()["schedules"]
        assert (only["name"], only["tenant_id"], only["cron"]) == ("nightly", "acme", "0 3 * * *")
        assert only["paused"] is False
        assert only["template"]["tenant_id"] == "acme"
        every = server.call("GET", "/v1/schedules", server.admin).json()["schedules"]
        assert [(s["tenant_id"], s["name"]) for s in every] == [
            ("acme", "nightly"),
            ("globex", "nightly"),
        ]
        paused = server.call("POST", "/v1/schedules/nightly/pause", server.acme)
        assert paused.status_code == 200
        assert paused.json()["paused"] is True
        assert paused.json()["next_fire"] is None
        ambiguous = server.call("POST", "/v1/schedules/nightly/pause", server.admin)
        assert ambiguous.status_code == 422
        assert ambiguous.json()["path"] == "$.tenant_id"
        resumed = server.call(
            "POST", "/v1/schedules/nightly/resume", server.admin, params={"tenant_id": "acme"}
        )
        assert resumed.json()["paused"] is False
        removed = server.call("DELETE", "/v1/schedules/nightly", server.globex)
        assert removed.status_code == 200
        assert removed.json()["cron"] == "0 4 * * *"
        gone = server.call("DELETE", "/v1/schedules/nightly", server.globex)
        assert gone.status_code == 404
        assert gone.json()["error"] == "NotFoundError"

        with work.connect(server.url, api_key=server.acme) as client:
            assert [s.name for s in client.schedules()] == ["nightly"]
            assert client.pause_schedule("nightly").paused
            assert not client.resume_schedule("nightly").paused
            assert client.remove_schedule("nightly").tenant_id == "acme"
            assert client.schedules() == []
            with pytest.raises(work.NotFoundError):
                client.pause_schedule("nightly")
            with pytest.raises(work.ConfigurationError, match="scheduler's process"):
                client.cron("x", "* * * * *", work.Job(kind="tool_call", tenant_id="acme"))


def test_the_schedules_command(capsys: pytest.CaptureFixture[str]) -> None:
    from nsai_work.cli import main

    with running_server() as server:
        declare(server.app, "nightly", "acme")
        base = ["--url", server.url, "--api-key", server.acme]
        assert main(["schedules", *base, "--json"]) == 0
        (listed,) = json.loads(capsys.readouterr().out)
        assert (listed["name"], listed["cron"], listed["paused"]) == ("nightly", "0 3 * * *", False)
        assert main(["schedules", "pause", "nightly", *base, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["paused"] is True
        assert main(["schedules", *base]) == 0
        table = capsys.readouterr().out
        assert "nightly" in table  # (a table for people: wrapped to the terminal's width)
        assert "acme" in table
        assert main(["schedules", "resume", "nightly", *base, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["paused"] is False
        assert main(["schedules", "remove", "nightly", *base, "--json"]) == 0
        capsys.readouterr()
        assert main(["schedules", "remove", "nightly", *base]) == 1
        assert "NotFoundError: no schedule named 'nightly'" in capsys.readouterr().err
        assert main(["schedules", "pause", *base]) == 1
        assert "which schedule" in capsys.readouterr().err

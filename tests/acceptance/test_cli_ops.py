"""The operators' CLI commands against a real server (uvicorn on loopback), run in-process
through ``nsai_work.cli.main``: ``cancel-where`` and ``retry-where``, and the audit records
``get`` shows."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import nsai_work as work
from nsai_work.cli import main
from tests._service import Running, running_server


@pytest.fixture(scope="module")
def api() -> Iterator[Running]:
    with running_server() as running:
        yield running


def _run(capsys: Any, *argv: str) -> Any:
    status = main(list(argv))
    out, err = capsys.readouterr()
    assert status == 0, err
    return json.loads(out)


def test_cancel_where_and_retry_where(
    api: Running, capsys: Any, handlers: Callable[..., str]
) -> None:
    async def slow(job: work.Job) -> None:
        await asyncio.sleep(60)

    kind = handlers(slow)
    tenant = f"cli{uuid.uuid4().hex[:8]}"
    with work.connect(api.url, api_key=api.admin) as client:
        jobs = client.submit_many(work.Job(kind=kind, tenant_id=tenant) for _ in range(3))
        where = ["--url", api.url, "--api-key", api.admin, "--tenant", tenant, "--json"]
        canceled = _run(capsys, "cancel-where", *where, "--kind", kind, "--reason", "ops")
        assert canceled["count"] == 3
        assert sorted(canceled["job_ids"]) == sorted(j.id for j in jobs)
        client.wait_many([j.id for j in jobs], timeout=10, tenant_id=tenant)
        args = ["get", jobs[0].id, "--url", api.url, "--api-key", api.admin, "--tenant", tenant]
        assert main(args) == 0
        shown = capsys.readouterr().out
        admin_id = api.admin.split("_")[1]
        assert f"{jobs[0].id} canceled by key:{admin_id} (ops) at " in shown
        assert shown.rstrip().endswith(": ops")  # the reason
        retried = _run(capsys, "retry-where", *where, "--status", "canceled", "--limit", "2")
        assert retried["count"] == 2
        assert retried["next_cursor"] is not None
        rest = _run(capsys, "cancel-where", *where, "--created-after", "2020-01-01T00:00:00Z")
        assert sorted(rest["job_ids"]) == sorted(retried["new_job_ids"])
        client.wait_many(rest["job_ids"], timeout=10, tenant_id=tenant)
    assert main(["cancel-where", "--url", api.url, "--api-key", api.acme]) == 1
    assert "admin" in capsys.readouterr().err

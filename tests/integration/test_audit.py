"""Audit records on jobs: who canceled or retried a job (``"local"`` in the process, the API
key's id and name through the HTTP API, never its secret) and when, kept with the job by
durable stores (across a restart, and through a store's cancel requests)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nsai_work as work
from tests._service import running_server


def _key_id(token: str) -> str:
    return token.split("_")[1]


async def _slow(job: work.Job) -> None:
    await asyncio.sleep(60)


def test_local_cancels_and_retries_record_local_and_survive_a_restart(
    tmp_path: Path, handlers: Callable[..., str], arun: Any
) -> None:
    kind = handlers(_slow)
    url = f"sqlite:///{tmp_path / 'w.db'}"

    async def first() -> tuple[str, str]:
        async with work.Scheduler(store=url) as scheduler:
            before = dt.datetime.now(dt.UTC)
            job = await scheduler.submit(work.Job(kind=kind, tenant_id="acme"))
            await scheduler.cancel(job.id, "not needed")
            done = await scheduler.wait(job.id, timeout=10)
            (record,) = done.audit
            assert (record.action, record.by, record.reason, record.key_name) == (
                "cancel",
                "local",
                "not needed",
                None,
            )
            assert before <= record.at <= dt.datetime.now(dt.UTC)
            copy = await scheduler.retry(job.id)
            assert [(a.action, a.by) for a in copy.audit] == [("retry", "local")]
            await scheduler.cancel(copy.id)
            await scheduler.wait(copy.id, timeout=10)
            return job.id, copy.id

    job_id, copy_id = arun(first())

    async def again() -> None:
        async with work.Scheduler(store=url) as scheduler:
            job = await scheduler.get(job_id)
            assert [(a.action, a.by, a.reason) for a in job.audit] == [
                ("cancel", "local", "not needed")
            ]
            copy = await scheduler.get(copy_id)
            assert [a.action for a in copy.audit] == ["retry", "cancel"]
            assert copy.retry_of == job_id

    arun(again())


def test_a_store_clients_cancel_is_recorded_by_the_scheduler(
    tmp_path: Path, handlers: Callable[..., str], arun: Any
) -> None:
    kind = handlers(_slow)
    url = f"sqlite:///{tmp_path / 'w.db'}"

    async def scenario() -> None:
        async with work.Scheduler(store=url), work.Client(store=url) as client:
            job = await client.submit(work.Job(kind=kind, tenant_id="acme"))
            await client.cancel(job.id, "from a client")
            done = await client.wait(job.id, timeout=10)
            assert done.cancel_reason == "from a client"
            assert [(a.action, a.by, a.reason) for a in done.audit] == [
                ("cancel", "local", "from a client")
            ]

    arun(scenario())


def test_the_api_records_the_key_id_and_name_never_the_secret(
    handlers: Callable[..., str],
) -> None:
    kind = handlers(_slow)
    with running_server() as api:
        mine = api.call("POST", "/v1/jobs", api.acme, json={"kind": kind, "tenant_id": "acme"})
        job_id = mine.json()["id"]
        api.call("POST", f"/v1/jobs/{job_id}/cancel", api.acme, json={"reason": "mine"})
        done = api.call("GET", f"/v1/jobs/{job_id}/wait", api.acme, params={"timeout": 10})
        (record,) = done.json()["audit"]
        assert record["action"] == "cancel"
        assert record["by"] == f"key:{_key_id(api.acme)}"
        assert record["reason"] == "mine"
        assert "key_name" not in record  # acme's key has no name
        assert api.acme.split("_", 2)[2] not in done.text

        copy = api.call("POST", f"/v1/jobs/{job_id}/retry", api.admin).json()
        assert copy["audit"][0]["by"] == f"key:{_key_id(api.admin)}"
        assert copy["audit"][0]["key_name"] == "ops"
        assert copy["audit"][0]["action"] == "retry"
        bulk = api.call("POST", "/v1/ops/cancel", api.admin, json={"tenant_id": "acme"}).json()
        assert bulk["job_ids"] == [copy["id"]]
        again = api.call("GET", f"/v1/jobs/{copy['id']}/wait", api.acme, params={"timeout": 10})
        assert [(a["action"], a.get("key_name")) for a in again.json()["audit"]] == [
            ("retry", "ops"),
            ("cancel", "ops"),
        ]


def test_a_server_that_is_a_store_client_records_the_key(
    tmp_path: Path, handlers: Callable[..., str]
) -> None:
    kind = handlers(_slow)
    url = f"sqlite:///{tmp_path / 'w.db'}"
    with work.SyncScheduler(store=url), running_server(store=url, scheduler=False) as api:
        job = api.call("POST", "/v1/jobs", api.acme, json={"kind": kind, "tenant_id": "acme"})
        job_id = job.json()["id"]
        api.call("POST", f"/v1/jobs/{job_id}/cancel", api.acme, json={})
        done = api.call("GET", f"/v1/jobs/{job_id}/wait", api.acme, params={"timeout": 10})
        assert done.json()["status"] == "canceled"
        assert [(a["by"], a["reason"]) for a in done.json()["audit"]] == [
            (f"key:{_key_id(api.acme)}", "requested")
        ]

"""Watching the service: a Prometheus scrape (parsed with prometheus_client's parser) whose
counters add up to ``stats()``, bounded tenant labels, and the server-sent-events stream of
job events (tenant isolation, job filters, keys a browser can send, slow consumers told of a
gap, thousands of events through a real server)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import nsai_work as work
from nsai_work.server._stream import EventHub
from nsai_work.telemetry import Telemetry
from nsai_work.telemetry.events import JOB_COMPLETED, JOB_SUBMITTED
from tests._service import Running, running_server

ECHO = {"tool": "echo", "args": {}}


def _job(tenant_id: str, **fields: Any) -> dict[str, Any]:
    return {"kind": "tool_call", "tenant_id": tenant_id, "payload": ECHO, **fields}


def _scrape(api: Running) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    answer = api.call("GET", "/metrics", api.admin)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def _sum(samples: dict[tuple[tuple[str, str], ...], float], **match: str) -> float:
    return sum(
        value
        for labels, value in samples.items()
        if all(dict(labels).get(k) == v for k, v in match.items())
    )


def _settle(api: Running, ids: list[str]) -> None:
    done = api.call("POST", "/v1/jobs/wait", api.admin, json={"job_ids": ids, "timeout": 30})
    assert done.json()["done"] is True


# ---- metrics ------------------------------------------------------------------------------------


def test_a_scrape_parses_and_its_counters_add_up_to_stats(handlers: Callable[..., str]) -> None:
    def fail(job: work.Job) -> None:
        raise work.NonRetryableError("no")

    async def slow(job: work.Job) -> None:
        await asyncio.sleep(10)

    failing = handlers(fail)
    slow_kind = handlers(slow)
    tenants = [f"t{i}" for i in range(5)]
    with running_server(metrics_top_tenants=3) as api:
        ids = []
        for index, tenant_id in enumerate(tenants):
            batch = [_job(tenant_id) for _ in range(index + 1)]
            batch.append({"kind": failing, "tenant_id": tenant_id})
            made = api.call("POST", "/v1/jobs/batch", api.admin, json={"jobs": batch})
            ids += [job["id"] for job in made.json()["jobs"]]
        held = api.call("POST", "/v1/jobs", api.admin, json={"kind": slow_kind, "tenant_id": "t0"})
        canceled = api.call(
            "POST", "/v1/jobs", api.admin, json={"kind": slow_kind, "tenant_id": "t4"}
        )
        api.call("POST", f"/v1/jobs/{canceled.json()['id']}/cancel", api.admin, json={})
        bad = api.call("POST", "/v1/jobs", api.admin, json=_job("t1", resources={"gpu_count": 64}))
        assert bad.status_code == 422
        assert api.call("POST", "/v1/jobs", api.admin, json=_job("bad id")).status_code == 422
        _settle(api, ids)

        samples = _scrape(api)
        stats = api.call("GET", "/v1/stats", api.admin).json()
        totals = stats["totals"]
        completed = samples["nsai_work_jobs_completed_total"]
        for status in ("succeeded", "failed", "timeout", "canceled"):
            assert _sum(completed, status=status) == totals.get(status, 0), status
        assert _sum(completed, status="succeeded") == 15
        assert _sum(completed, status="failed") == 5
        assert _sum(completed, status="canceled") == 1
        assert _sum(samples["nsai_work_jobs_submitted_total"]) == totals["submitted"] == 22
        assert _sum(samples["nsai_work_jobs_rejected_total"]) == totals["rejected"] == 2
        assert _sum(samples["nsai_work_jobs_rejected_total"], reason="unschedulable") == 1
        assert _sum(samples["nsai_work_jobs_running"]) == totals["running"] == 1
        assert _sum(samples["nsai_work_tenant_jobs_running"], tenant="t0") == 1
        running = samples["nsai_work_jobs_running"]
        assert running[(("backend", "local"), ("pool", "local:async"))] == 1
        used = samples["nsai_work_pool_used"]
        assert used[(("backend", "local"), ("pool", "local:async"), ("resource", "slots"))] == 1
        assert _sum(samples["nsai_work_jobs_waiting"]) == totals.get("queued", 0) + totals.get(
            "pending", 0
        )
        # bounded labels: the 3 busiest tenants (t0 runs a job; then most submitted), the rest
        # summed as _other (t1, and the job without a valid tenant)
        labels = {dict(k)["tenant"] for k in completed}
        assert labels == {"t0", "t4", "t3", "_other"}
        assert _sum(completed, tenant="_other", status="succeeded") == 2 + 3
        assert _sum(samples["nsai_work_attempt_run_seconds_count"], outcome="succeeded") == 15
        assert _sum(samples["nsai_work_attempt_run_seconds_count"], outcome="failed") == 5
        assert _sum(samples["nsai_work_job_start_delay_seconds_count"]) == 22
        api.call("POST", f"/v1/jobs/{held.json()['id']}/cancel", api.admin, json={})


def test_an_allow_list_names_the_tenants_and_the_key_rules() -> None:
    with running_server(metrics_tenants=["acme"]) as api:
        ids = [
            api.call("POST", "/v1/jobs", key, json=_job(tenant)).json()["id"]
            for key, tenant in ((api.acme, "acme"), (api.globex, "globex"))
        ]
        _settle(api, ids)
        completed = _scrape(api)["nsai_work_jobs_completed_total"]
        assert completed[(("status", "succeeded"), ("tenant", "acme"))] == 1
        assert completed[(("status", "succeeded"), ("tenant", "_other"))] == 1
        assert "globex" not in json.dumps(list(completed))
        assert api.call("GET", "/metrics", api.acme).status_code == 403
        assert api.call("GET", "/metrics", None).status_code == 401
    with running_server(public_metrics=True) as api:
        assert api.call("GET", "/metrics", None).status_code == 200


def test_metrics_on_a_server_that_is_a_client_of_the_store_answer_503(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'work.db'}"
    with work.SyncScheduler(store=url), running_server(store=url, scheduler=False) as api:
        answer = api.call("GET", "/metrics", api.admin)
        assert answer.status_code == 503
        assert "scheduler" in answer.json()["detail"]
        assert api.call("GET", "/v1/events", api.admin).status_code == 503


# ---- the event stream ---------------------------------------------------------------------------


class Reader:
    """Reads a stream on a thread of its own: its events as (name, data) pairs."""

    def __init__(
        self,
        api: Running,
        key: str | None,
        *,
        until: Callable[[str, dict[str, Any]], bool] = lambda name, data: False,
        **request: Any,
    ) -> None:
        self.until = until
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.status = 0
        self._ready = threading.Event()
        self._http = httpx.Client(base_url=api.url, timeout=30)
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        self._request = {"headers": headers, **request}
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _read(self) -> None:
        try:
            with self._http.stream("GET", "/v1/events", **self._request) as answer:
                self.status = answer.status_code
                name = ""
                for line in answer.iter_lines():
                    if line.startswith(":"):
                        self._ready.set()  # subscribed
                    elif line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        self.events.append((name, json.loads(line[6:])))
                        if self.until(*self.events[-1]):
                            break
        finally:
            self._ready.set()
            self._http.close()

    def join(self) -> list[tuple[str, dict[str, Any]]]:
        self._thread.join(30)
        assert not self._thread.is_alive()
        return self.events


@pytest.fixture(scope="module")
def api() -> Iterator[Running]:
    with running_server() as running:
        yield running


def test_a_tenant_key_streams_its_own_tenants_events_only(api: Running) -> None:
    reader = Reader(api, api.acme, params={"timeout": 3})
    mine = api.call("POST", "/v1/jobs", api.acme, json=_job("acme")).json()["id"]
    theirs = api.call("POST", "/v1/jobs", api.globex, json=_job("globex")).json()["id"]
    _settle(api, [mine, theirs])
    events = reader.join()
    assert reader.status == 200
    assert {data["tenant_id"] for _, data in events} == {"acme"}
    names = [name for name, data in events if data["job_id"] == mine]
    assert names == [
        "work.job.submitted",
        "work.job.queued",
        "work.job.started",
        "work.job.completed",
    ]
    completed = next(data for name, data in events if name == "work.job.completed")
    assert completed["status"] == "succeeded"
    assert completed["measurements"]["run_time_ms"] >= 0
    assert "payload" not in completed
    assert "result" not in completed
    seqs = [data["seq"] for _, data in events]
    assert seqs == sorted(seqs)
    refused = api.call("GET", "/v1/events", api.acme, params={"tenant_id": "globex"})
    assert refused.status_code == 422


def test_a_stream_of_some_jobs_and_an_admins_stream_of_a_tenant(api: Running) -> None:
    first, second = (
        api.call("POST", "/v1/jobs", api.acme, json=_job("acme", priority="offline")).json()["id"]
        for _ in range(2)
    )
    _settle(api, [first, second])
    only = Reader(api, api.acme, params={"job_id": [first], "timeout": 2})
    admin = Reader(api, api.admin, params={"tenant_id": "globex", "timeout": 2})
    retried = api.call("POST", f"/v1/jobs/{first}/retry", api.acme).json()["id"]
    api.call("POST", f"/v1/jobs/{second}/retry", api.acme)
    theirs = api.call("POST", "/v1/jobs", api.globex, json=_job("globex")).json()["id"]
    _settle(api, [retried, theirs])
    assert only.join() == []  # the retry is a new job: the stream follows `first` only
    assert {data["job_id"] for _, data in admin.join()} == {theirs}


def test_a_browser_sends_the_key_as_a_cookie_or_access_token(api: Running) -> None:
    by_cookie = Reader(api, None, params={"timeout": 2}, cookies={"nsai_work_key": api.acme})
    by_query = Reader(api, None, params={"timeout": 2, "access_token": api.acme})
    job = api.call("POST", "/v1/jobs", api.acme, json=_job("acme")).json()["id"]
    _settle(api, [job])
    for reader in (by_cookie, by_query):
        assert reader.status == 200
        assert job in {data["job_id"] for _, data in reader.join()}
    refused = api.http.get("/v1/events", params={"access_token": "nsw_nope"})
    assert refused.status_code == 401


def test_thousands_of_events_reach_a_stream_each_once_or_counted_as_a_gap(api: Running) -> None:
    last = "01900000-0000-7000-8000-00000000ffff"
    reader = Reader(
        api,
        api.admin,
        params={"tenant_id": "acme", "timeout": 20},
        until=lambda name, data: data.get("job_id") == last and name == "work.job.completed",
    )
    jobs = [_job("acme", namespace="flood") for _ in range(1000)]
    made = api.call("POST", "/v1/jobs/batch", api.acme, json={"jobs": jobs}).json()["jobs"]
    ids = [job["id"] for job in made]
    _settle(api, ids)
    job = api.call("POST", "/v1/jobs", api.acme, json=_job("acme", id=last)).json()["id"]
    _settle(api, [job])
    events = reader.join()
    got = sum(1 for name, data in events if data.get("job_id") in set(ids))
    lost = sum(data["dropped"] for name, data in events if name == "gap")
    assert got + lost == 4 * len(ids)  # submitted, queued, started, completed
    seqs = [data["seq"] for name, data in events if name != "gap"]
    assert seqs == sorted(set(seqs))


def test_a_slow_consumer_loses_the_newest_events_and_is_told_so() -> None:
    bus = Telemetry()
    hub = EventHub(buffer=3)
    hub.bind(bus)
    sub = hub.subscribe("acme", None)
    assert bus.list_handlers()  # attached while a stream is open
    for number in range(10):
        meta = {"tenant_id": "acme", "job_id": f"j{number}", "status": "queued"}
        bus.execute(JOB_SUBMITTED, {}, meta)
        bus.execute(JOB_SUBMITTED, {}, {**meta, "tenant_id": "globex"})
    chunk = sub.take().decode()
    assert chunk.count("event: work.job.submitted") == 3
    assert '"job_id":"j2"' in chunk
    assert '"job_id":"j3"' not in chunk
    assert 'event: gap\ndata: {"dropped":7,"first_seq":4,"last_seq":10}' in chunk
    bus.execute(JOB_COMPLETED, {"run_time_ms": 1.0}, {"tenant_id": "acme", "job_id": "j0"})
    assert sub.take().decode().startswith("id: 11\nevent: work.job.completed\n")
    hub.unsubscribe(sub)
    assert not bus.list_handlers()  # no stream, no handler: the engine pays nothing


def test_a_graceful_shutdown_ends_open_streams_at_once() -> None:
    with running_server() as api:
        reader = Reader(api, api.acme)  # no timeout: the stream lasts until the server stops
        started = time.monotonic()
    reader.join()
    assert reader.status == 200
    assert time.monotonic() - started < 5  # not uvicorn's 30 s graceful timeout


# ---- operations ---------------------------------------------------------------------------------


def test_pause_resume_and_drain_through_the_api(handlers: Callable[..., str]) -> None:
    async def slow(job: work.Job) -> None:
        await asyncio.sleep(0.3)

    kind = handlers(slow)
    with running_server() as api:
        paused = api.call("POST", "/v1/ops/pause", api.admin, json={"tenant_id": "acme"})
        assert paused.json()["tenants"] == ["acme"]
        mine = api.call("POST", "/v1/jobs", api.acme, json=_job("acme")).json()["id"]
        theirs = api.call("POST", "/v1/jobs", api.globex, json=_job("globex")).json()["id"]
        _settle(api, [theirs])
        held = api.call("GET", f"/v1/jobs/{mine}", api.acme).json()
        assert held["status"] == "queued"
        assert held["waiting_reason"] == "tenant_paused"
        resumed = api.call("POST", "/v1/ops/resume", api.admin, json={"tenant_id": "acme"})
        assert resumed.json()["tenants"] == []
        _settle(api, [mine])

        api.call("POST", "/v1/ops/pause", api.admin, json={"pool": "local:async"})
        state = api.call("GET", "/v1/ops", api.admin).json()
        assert state == {
            "draining": False,
            "running": 0,
            "tenants": [],
            "namespaces": [],
            "pools": ["local:async"],
        }
        api.call("POST", "/v1/ops/resume", api.admin, json={"pool": "local:async"})
        unknown = api.call("POST", "/v1/ops/pause", api.admin, json={"pool": "nope"})
        assert unknown.status_code == 422
        assert "local:async" in unknown.json()["detail"]

        running = api.call("POST", "/v1/jobs", api.acme, json={"kind": kind, "tenant_id": "acme"})
        drained = api.call("POST", "/v1/ops/drain", api.admin, json={"timeout": 10}).json()
        assert drained["draining"] is True
        assert drained["running"] == 0  # the run in flight ended: safe to stop
        assert api.call("GET", f"/v1/jobs/{running.json()['id']}", api.acme).json()["status"] == (
            "succeeded"
        )
        waiting = api.call("POST", "/v1/jobs", api.acme, json=_job("acme")).json()["id"]
        assert api.call("GET", f"/v1/jobs/{waiting}", api.acme).json()["status"] == "queued"
        assert api.call("POST", "/v1/ops/resume", api.admin, json={}).json()["draining"] is False
        _settle(api, [waiting])
        assert api.call("POST", "/v1/ops/pause", api.acme, json={}).status_code == 403

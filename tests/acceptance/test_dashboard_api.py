"""The dashboard's server side, without a browser: the page and its assets (from the package,
with a Content-Security-Policy), sessions (an API key traded for an HttpOnly cookie and a CSRF
token; the token needed to change anything; a revoked key ends its sessions), and the
dashboard's reads (charts' history, waiting reasons per tenant, workflows, tools), each scoped
to the key's tenant."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import nsai_work as work
from nsai_work.server._history import History
from nsai_work.telemetry import Telemetry
from nsai_work.telemetry.events import JOB_COMPLETED, JOB_STARTED
from tests._service import Running, running_server

ECHO = {"tool": "echo"}


@pytest.fixture
def api() -> Iterator[Running]:
    with running_server() as running:
        yield running


_open: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_sessions() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def _session(api: Running, key: str) -> tuple[httpx.Client, str]:
    """A client logged in with ``key`` (as a browser: the cookie), and its CSRF token."""
    browser = httpx.Client(base_url=api.url, timeout=30)
    _open.append(browser)
    answer = browser.post("/ui/login", json={"key": key})
    assert answer.status_code == 200, answer.text
    return browser, answer.json()["csrf"]


def _wait_done(api: Running, job_ids: list[str]) -> None:
    answer = api.call("POST", "/v1/jobs/wait", api.admin, json={"job_ids": job_ids, "timeout": 10})
    assert answer.json()["done"], answer.text


def test_the_page_and_its_assets_come_from_the_package(api: Running) -> None:
    page = api.http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "<script" in page.text
    assert "cdn" not in page.text.lower()
    for asset, kind in [
        ("app.js", "text/javascript"),
        ("app.css", "text/css"),
        ("vendor/uPlot.iife.min.js", "text/javascript"),
        ("vendor/uPlot.min.css", "text/css"),
    ]:
        answer = api.http.get(f"/ui/static/{asset}")
        assert answer.status_code == 200, asset
        assert answer.headers["content-type"].startswith(kind)
    assert "uPlot (v1.6.32)" in api.http.get("/ui/static/vendor/uPlot.iife.min.js").text[:200]
    for bad in ["../_app.py", "nothing.js", "vendor/.hidden.js", "app.py"]:
        assert api.http.get(f"/ui/static/{bad}").status_code == 404, bad


def test_login_trades_a_key_for_an_http_only_cookie_and_a_csrf_token(api: Running) -> None:
    assert api.http.get("/ui/session").json() == {"logged_in": False}
    refused = api.http.post("/ui/login", json={"key": "nsw_0000000000000000_" + "x" * 43})
    assert refused.status_code == 401
    form = api.http.post("/ui/login", data={"key": api.acme})  # a cross-site form cannot
    assert form.status_code == 422
    answer = api.http.post("/ui/login", json={"key": api.acme})
    cookie = answer.headers["set-cookie"]
    assert "nsai_work_session=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/" in cookie
    assert api.acme not in cookie
    info = answer.json()
    assert info["tenant_id"] == "acme"
    assert info["admin"] is False
    assert len(info["csrf"]) > 30
    api.http.cookies.clear()


def test_a_session_reads_as_its_key_and_changes_only_with_its_csrf_token(api: Running) -> None:
    browser, csrf = _session(api, api.acme)
    assert browser.get("/v1/auth").json()["tenant_id"] == "acme"
    assert browser.get("/ui/session").json()["csrf"] == csrf
    job = {"kind": "tool_call", "tenant_id": "acme", "payload": {"tool": "echo"}}
    no_token = browser.post("/v1/jobs", json=job)
    assert no_token.status_code == 403
    assert "CSRF" in no_token.json()["detail"]
    wrong = browser.post("/v1/jobs", json=job, headers={"X-CSRF-Token": "x" + csrf[1:]})
    assert wrong.status_code == 403
    made = browser.post("/v1/jobs", json=job, headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201
    other = {**job, "tenant_id": "globex"}
    assert browser.post("/v1/jobs", json=other, headers={"X-CSRF-Token": csrf}).status_code == 422
    assert browser.get("/v1/tenants").status_code == 403  # an admin route
    # the stream takes the session too
    with browser.stream("GET", "/v1/events", params={"timeout": 0.2}) as stream:
        assert stream.status_code == 200
    # a header key wins over the cookie, and needs no CSRF token
    assert (
        browser.post(
            "/v1/jobs", json=job, headers={"Authorization": f"Bearer {api.acme}"}
        ).status_code
        == 201
    )
    # logout needs the token, then ends the session
    assert browser.post("/ui/logout").status_code == 403
    assert browser.post("/ui/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert browser.get("/v1/auth").status_code == 401


def test_a_revoked_key_ends_its_sessions(api: Running) -> None:
    key, token = api.keys.create(tenant_id="initech")
    browser, _ = _session(api, token)
    assert browser.get("/v1/auth").status_code == 200
    api.keys.revoke(key.id)
    assert browser.get("/v1/auth").status_code == 401
    assert browser.get("/ui/session").json() == {"logged_in": False}


def test_history_counts_per_tenant_and_is_scoped(api: Running) -> None:
    acme, _ = _session(api, api.acme)
    admin, _ = _session(api, api.admin)
    assert acme.get("/ui/api/history").json()["buckets"] == []  # (binds it: counts from now)
    jobs = []
    for tenant, key, n in [("acme", api.acme, 3), ("globex", api.globex, 2)]:
        for _ in range(n):
            job = {"kind": "tool_call", "tenant_id": tenant, "payload": {"tool": "echo"}}
            jobs.append(api.call("POST", "/v1/jobs", key, json=job).json()["id"])
    _wait_done(api, jobs)

    def total(client: httpx.Client, name: str, **params: Any) -> float:
        buckets = client.get("/ui/api/history", params=params).json()["buckets"]
        return sum(b[name] for b in buckets)

    assert total(acme, "ended") == 3
    assert total(acme, "started") == 3
    assert total(admin, "ended") == 5
    assert total(admin, "ended", tenant_id="globex") == 2
    assert total(acme, "ended", tenant_id="globex") == 3  # a tenant key's own tenant only


def test_history_buckets_expire_and_ignore_other_threads() -> None:
    bus = Telemetry()
    recent = History(window_s=10, bucket_s=1)
    recent.bind(bus)
    bus.execute(JOB_STARTED, {"queue_time_ms": 40.0}, {"tenant_id": "acme"})
    bus.execute(JOB_STARTED, {"queue_time_ms": 10.0}, {"tenant_id": "acme"})
    bus.execute(JOB_COMPLETED, {}, {"tenant_id": "acme", "status": "failed"})
    (bucket,) = recent.series("acme")
    assert bucket["started"] == 2
    assert bucket["delay_sum_ms"] == 50
    assert bucket["delay_max_ms"] == 40
    assert bucket["ended"] == 1
    assert bucket["failed"] == 1
    assert recent.series("globex")[0]["started"] == 0
    recent.window_s = 0.0
    time.sleep(0.01)
    assert recent.series(None) == []
    recent.close()
    assert not recent.bound


def test_waiting_reasons_per_tenant_are_scoped(api: Running, handlers: Callable[..., str]) -> None:
    import asyncio

    async def sleep(job: Any) -> None:
        await asyncio.sleep(30)

    kind = handlers(sleep)
    api.call("PUT", "/v1/tenants/acme", api.admin, json={"quota": {"max_running": 1}})
    api.call("PUT", "/v1/tenants/globex", api.admin, json={"quota": {"max_running": 1}})
    ids = []
    for tenant, key in [("acme", api.acme)] * 3 + [("globex", api.globex)] * 2:
        ids.append(
            api.call("POST", "/v1/jobs", key, json={"kind": kind, "tenant_id": tenant}).json()["id"]
        )
    deadline = time.monotonic() + 10
    while True:
        seen = api.call("GET", "/ui/api/waiting", api.admin).json()["by_tenant"]
        if sum(seen.get("acme", {}).values()) == 2 and sum(seen.get("globex", {}).values()) == 1:
            break
        assert time.monotonic() < deadline, seen
        time.sleep(0.05)
    assert all("max_running" in reason for reason in seen["acme"])
    mine = api.call("GET", "/ui/api/waiting", api.acme).json()["by_tenant"]
    assert list(mine) == ["acme"]
    for job_id in ids:
        api.call("POST", f"/v1/jobs/{job_id}/cancel", api.admin, json={})


def test_workflows_show_each_steps_status_and_edges(
    api: Running, handlers: Callable[..., str]
) -> None:
    kind = handlers(lambda job: "ok")
    flow = work.Workflow("nightly", tenant_id="acme")
    flow.step("prepare", kind)
    flow.step("train", kind, after=["prepare"])
    flow.step("eval", kind, after=["train"])
    with work.connect(api.url, api_key=api.acme) as client:
        jobs = client.submit_many(flow.jobs())
        client.wait_many([j.id for j in jobs], timeout=10)
    found = api.call("GET", "/ui/api/workflows", api.acme).json()["workflows"]
    (one,) = found
    assert one["name"] == "nightly"
    assert one["status"] == "succeeded"
    steps = {s["step"]: s for s in one["steps"]}
    assert steps["train"]["after"] == ["prepare"]
    assert steps["eval"]["after"] == ["train"]
    assert {s["status"] for s in one["steps"]} == {"succeeded"}
    assert api.call("GET", "/ui/api/workflows", api.globex).json()["workflows"] == []
    admin = api.call("GET", "/ui/api/workflows", api.admin, params={"workflow_id": flow.id})
    assert [w["workflow_id"] for w in admin.json()["workflows"]] == [flow.id]


def test_tools_list_declarations_limits_and_recent_calls(api: Running) -> None:
    for key, tenant in [(api.acme, "acme"), (api.globex, "globex")]:
        job = {"kind": "tool_call", "tenant_id": tenant, "payload": {"tool": "echo"}}
        _wait_done(api, [api.call("POST", "/v1/jobs", key, json=job).json()["id"]])
    tools = {
        t["declaration"]["name"]: t
        for t in api.call("GET", "/ui/api/tools", api.acme).json()["tools"]
    }
    echo = tools["echo"]
    assert "max_concurrency" in echo["limits"]
    assert [c["tenant_id"] for c in echo["recent"]] == ["acme"]
    admin = api.call("GET", "/ui/api/tools", api.admin).json()["tools"]
    assert {c["tenant_id"] for t in admin for c in t["recent"]} == {"acme", "globex"}


def test_the_dashboard_routes_need_a_key(api: Running) -> None:
    for path in ["/ui/api/history", "/ui/api/waiting", "/ui/api/workflows", "/ui/api/tools"]:
        assert api.http.get(path).status_code == 401, path


def test_the_pages_lists_of_statuses_and_priorities_are_the_irs() -> None:
    import re
    from pathlib import Path

    import nsai_work.server

    script = (Path(nsai_work.server.__file__).parent / "static" / "app.js").read_text()

    def listed(name: str) -> list[str]:
        found = re.search(rf"const {name} = \[([^\]]*)\]", script)
        assert found is not None, name
        return re.findall(r'"([a-z_]+)"', found.group(1))

    assert listed("STATUSES") == [s.value for s in work.Status]
    assert listed("PRIORITIES") == [p.value for p in work.Priority]


def test_on_a_server_that_is_a_client_of_the_store_the_job_pages_work(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/work.db"
    with work.SyncScheduler(store=url) as scheduler:
        job = scheduler.submit(work.Job(kind="tool_call", tenant_id="acme", payload=ECHO))
        scheduler.wait(job.id, timeout=10)
        with running_server(store=url, scheduler=False) as api:
            browser, _ = _session(api, api.acme)
            for path in ["/", "/v1/jobs", f"/v1/jobs/{job.id}", "/ui/api/workflows"]:
                assert browser.get(path).status_code == 200, path
            for path in ["/v1/stats", "/ui/api/history", "/ui/api/waiting"]:  # need its memory
                answer = browser.get(path)
                assert answer.status_code == 503, path
                assert "client of the store" in answer.json()["detail"]

"""The web dashboard in a real browser: Debian's chromium, headless, driven by Playwright
(``executable_path=/usr/bin/chromium``; Playwright's own browsers are never downloaded), against
a real server on 127.0.0.1.

Loads with no console error; a submitted job moves to succeeded without a reload; the cancel
button cancels a running job; a job held by a quota says so; a tenant's key sees its tenant
only, in pages and in the live stream; the CSRF token is needed to change anything; the job
list's first page renders with 100,000 jobs stored (its time is ``make bench --only
dashboard``'s); axe-core finds no serious accessibility violation. Screenshots of the overview
and of a job page are written under ``$NSAI_WORK_ARTIFACTS/dashboard/`` (default
``build/test-artifacts/dashboard/``, docs/dashboard.md).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bench.dashboard import CHROMIUM, CHROMIUM_ARGS, stored_jobs

import nsai_work as work
from tests._service import Running, running_server

playwright_api = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("NSAI_WORK_ARTIFACTS", ROOT / "build" / "test-artifacts"))
AXE = Path(__file__).resolve().parent / "assets" / "axe.min.js"
PAGES = ["#/", "#/tenants", "#/jobs", "#/workflows", "#/tools"]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (scripts/setup.sh)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


class Tab:
    """A browser page with what it logged: console errors and uncaught exceptions."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("dialog", lambda d: d.accept())
        page.set_default_timeout(15_000)

    def login(self, url: str, key: str) -> Tab:
        self.page.goto(url + "/")
        self.page.fill("#key", key)
        self.page.click("form.login button[type=submit]")
        self.page.wait_for_selector("#live[data-state=open]")
        return self

    def go(self, hash_: str) -> None:
        """Navigate inside the page (no reload)."""
        self.page.evaluate("h => { location.hash = h }", hash_)


@pytest.fixture
def tab(browser: Any) -> Iterator[Callable[..., Tab]]:
    contexts: list[Any] = []

    def make(**options: Any) -> Tab:
        context = browser.new_context(viewport={"width": 1280, "height": 900}, **options)
        contexts.append(context)
        return Tab(context.new_page())

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def api(handlers: Callable[..., str]) -> Iterator[Running]:
    with running_server() as running:
        yield running


def _submit(api: Running, key: str, tenant: str, kind: str, **fields: Any) -> dict[str, Any]:
    job = {"kind": kind, "tenant_id": tenant, **fields}
    answer = api.call("POST", "/v1/jobs", key, json=job)
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _status(api: Running, job_id: str) -> str:
    job = api.call("GET", f"/v1/jobs/{job_id}", api.admin).json()
    return job.get("status", "pending")  # type: ignore[no-any-return]


def _sleeper(handlers: Callable[..., str]) -> str:
    async def sleep(job: Any) -> str:
        await asyncio.sleep(float(job.payload.get("s", 60)))
        return "slept"

    return handlers(sleep)


def test_it_loads_every_page_without_console_errors(
    api: Running, tab: Callable[..., Tab], handlers: Callable[..., str]
) -> None:
    kind = handlers(lambda job: {"ok": True})
    done = _submit(api, api.admin, "acme", kind)
    flow = work.Workflow("nightly", tenant_id="acme")
    flow.step("prepare", kind)
    flow.step("train-1", kind, after=["prepare"])
    flow.step("train-2", kind, after=["prepare"])
    flow.step("evaluate", kind, after=["train-1", "train-2"])
    with work.connect(api.url, api_key=api.acme) as client:
        steps = client.submit_many(flow.jobs())
        client.wait_many([j.id for j in steps], timeout=10)
    page = tab().login(api.url, api.admin)
    for hash_ in PAGES:
        page.go(hash_)
        page.page.wait_for_selector("main h1")
        page.page.wait_for_load_state("networkidle")
    page.go(f"#/jobs/{done['id']}")
    page.page.wait_for_selector("#job h1")
    # the workflow's DAG: one node per step, each with its status, edges between them
    page.go("#/workflows")
    page.page.click("text=nightly")
    page.page.wait_for_selector("svg.dag")
    nodes = page.page.eval_on_selector_all(
        "svg.dag a", "links => links.map(a => [a.dataset.step, a.dataset.status])"
    )
    assert sorted(nodes) == sorted([[s, "succeeded"] for s in flow.steps])
    assert len(page.page.query_selector_all("svg.dag path")) == 4
    assert page.errors == []
    assert page.page.evaluate("document.querySelector('#live').dataset.state") == "open"


def test_a_submitted_job_moves_to_succeeded_without_a_reload(
    api: Running, tab: Callable[..., Tab], handlers: Callable[..., str]
) -> None:
    kind = handlers(lambda job: time.sleep(0.5) or "done")
    page = tab().login(api.url, api.admin)
    page.go("#/jobs?tenant_id=acme")  # (an admin lists one tenant's jobs at a time)
    page.page.wait_for_selector("#jobs-status", state="attached")
    page.page.evaluate("window.__notReloaded = true")
    job = _submit(api, api.admin, "acme", kind)
    row = f"#jobs-table tr[data-job='{job['id']}']"
    page.page.wait_for_selector(row)  # it appears, from the stream
    page.page.wait_for_selector(f"{row}[data-status=succeeded]", timeout=10_000)
    assert page.page.evaluate("window.__notReloaded") is True
    # the job's page follows it too
    other = _submit(api, api.admin, "acme", kind)
    page.go(f"#/jobs/{other['id']}")
    page.page.wait_for_selector("#job .status.s-succeeded", timeout=10_000)
    assert page.page.evaluate("window.__notReloaded") is True
    assert page.errors == []


def test_the_cancel_button_cancels_a_running_job(
    api: Running, tab: Callable[..., Tab], handlers: Callable[..., str]
) -> None:
    kind = _sleeper(handlers)
    job = _submit(api, api.acme, "acme", kind)
    _until(lambda: _status(api, job["id"]) == "running")
    page = tab().login(api.url, api.acme)
    page.go(f"#/jobs/{job['id']}")
    page.page.wait_for_selector("#job .status.s-running")
    assert page.page.is_disabled("#retry")
    page.page.click("#cancel")  # (the confirmation dialog is accepted)
    page.page.wait_for_selector("#job .status.s-canceled", timeout=10_000)
    assert _status(api, job["id"]) == "canceled"
    # Retry makes a copy and opens it
    page.page.click("#retry")
    page.page.wait_for_selector(f"#job a[href='#/jobs/{job['id']}']")  # "retry of"
    copy = page.page.evaluate("location.hash").rsplit("/", 1)[1]
    assert copy != job["id"]
    assert api.call("GET", f"/v1/jobs/{copy}", api.acme).json()["retry_of"] == job["id"]
    api.call("POST", f"/v1/jobs/{copy}/cancel", api.acme, json={})
    assert page.errors == []


def test_a_job_waiting_on_a_quota_says_so(
    api: Running, tab: Callable[..., Tab], handlers: Callable[..., str]
) -> None:
    kind = _sleeper(handlers)
    answer = api.call("PUT", "/v1/tenants/acme", api.admin, json={"quota": {"max_running": 1}})
    assert answer.status_code == 200, answer.text
    first = _submit(api, api.acme, "acme", kind)
    second = _submit(api, api.acme, "acme", kind)
    _until(lambda: _status(api, first["id"]) == "running")
    reason = api.call("GET", f"/v1/jobs/{second['id']}", api.acme).json()["waiting_reason"]
    assert "max_running" in reason
    page = tab().login(api.url, api.acme)
    page.go(f"#/jobs/{second['id']}")
    page.page.wait_for_selector("#waiting-reason")
    assert reason in page.page.inner_text("#waiting-reason")
    page.go("#/tenants")
    page.page.wait_for_selector("tr[data-tenant=acme]")
    _until(lambda: reason in page.page.inner_text("tr[data-tenant=acme]"))
    assert page.errors == []
    for job in (first, second):
        api.call("POST", f"/v1/jobs/{job['id']}/cancel", api.admin, json={})


def test_a_tenant_key_sees_its_tenant_only_even_live(
    api: Running, tab: Callable[..., Tab], handlers: Callable[..., str]
) -> None:
    kind = handlers(lambda job: "ok")
    mine = _submit(api, api.acme, "acme", kind)
    theirs = _submit(api, api.globex, "globex", kind)
    page = tab().login(api.url, api.acme)
    assert "tenant acme" in page.page.inner_text("#who")
    page.go("#/jobs")
    page.page.wait_for_selector(f"tr[data-job='{mine['id']}']")
    shown = page.page.eval_on_selector_all(
        "#jobs-table tbody tr", "rows => rows.map(r => r.dataset.job)"
    )
    assert theirs["id"] not in shown
    # the numbers are acme's: its stats, not the whole scheduler's
    page.go("#/")
    page.page.wait_for_selector("#kpi-submitted")
    _until(lambda: page.page.inner_text("#kpi-submitted b") == "1")
    assert "globex" not in page.page.inner_text("main")
    page.go("#/tenants")
    page.page.wait_for_selector("tr[data-tenant=acme]")
    assert page.page.query_selector("tr[data-tenant=globex]") is None
    # another tenant's job is not found
    page.go(f"#/jobs/{theirs['id']}")
    page.page.wait_for_selector("main .error")
    # the live stream, opened by the page with its session cookie, carries acme's events only
    page.page.evaluate(
        """() => { window.__seen = []; const s = new EventSource('/v1/events');
        for (const n of ['submitted','queued','started','completed'])
          s.addEventListener('work.job.' + n, e => window.__seen.push(JSON.parse(e.data)));
        window.__stream = s; }"""
    )
    _until(lambda: page.page.evaluate("window.__stream.readyState") == 1)
    _submit(api, api.globex, "globex", kind)
    last = _submit(api, api.acme, "acme", kind)
    _until(
        lambda: any(
            e["job_id"] == last["id"] and e["event"] == "work.job.completed"
            for e in page.page.evaluate("window.__seen")
        )
    )
    assert {e["tenant_id"] for e in page.page.evaluate("window.__seen")} == {"acme"}
    # the session cookie alone changes nothing: the CSRF token is needed
    refused = page.page.evaluate(
        """async (kind) => (await fetch('/v1/jobs', {method: 'POST',
        headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({kind, tenant_id: 'acme'})})).status""",
        kind,
    )
    assert refused == 403
    assert not [e for e in page.errors if "403" not in e and "404" not in e]


def test_thousands_of_events_are_coalesced_not_applied_one_by_one(
    api: Running, tab: Callable[..., Tab]
) -> None:
    page = tab().login(api.url, api.acme)
    page.go("#/jobs")
    page.page.wait_for_selector("#jobs-body p, #jobs-table")
    reads: list[float] = []
    page.page.on("request", lambda r: "/v1/jobs?" in r.url and reads.append(time.monotonic()))
    started = time.monotonic()
    echo = {"kind": "tool_call", "tenant_id": "acme", "payload": {"tool": "echo"}}
    for _ in range(4):
        answer = api.call("POST", "/v1/jobs/batch", api.acme, json={"jobs": [echo] * 500})
        assert answer.status_code == 201, answer.text
    _until(lambda: api.call("GET", "/v1/stats", api.acme).json().get("succeeded", 0) == 2000)
    elapsed = time.monotonic() - started
    # 2,000 jobs, 8,000 events: the list read again at most once a second (plus its 5 s poll
    # and the last, trailing read), and it ends showing the last state
    page.page.wait_for_selector("#jobs-table tbody tr[data-status=succeeded]")
    _until(
        lambda: not page.page.query_selector("#jobs-table tbody tr:not([data-status=succeeded])"),
        timeout=8,
    )
    assert len([t for t in reads if t <= started + elapsed]) <= elapsed + 3, (len(reads), elapsed)
    assert page.errors == []


def test_keyboard_shortcuts_move_between_pages_and_rows(
    api: Running, tab: Callable[..., Tab], handlers: Callable[..., str]
) -> None:
    kind = handlers(lambda job: "ok")
    for _ in range(3):
        _submit(api, api.acme, "acme", kind)
    page = tab().login(api.url, api.acme)
    page.page.keyboard.press("g")
    page.page.keyboard.press("j")
    page.page.wait_for_selector("#jobs-table tbody tr")
    assert page.page.evaluate("location.hash").startswith("#/jobs")
    page.page.keyboard.press("j")
    page.page.keyboard.press("j")
    focused = page.page.evaluate("document.activeElement.closest('tr').dataset.job")
    second = page.page.eval_on_selector_all("#jobs-table tbody tr", "r => r[1].dataset.job")
    assert focused == second
    page.page.keyboard.press("Enter")
    page.page.wait_for_selector("#job h1")
    assert second in page.page.evaluate("location.hash")
    page.page.keyboard.press("g")
    page.page.keyboard.press("o")
    page.page.wait_for_selector("#kpi-waiting")
    assert page.errors == []


def test_the_session_cookie_is_http_only_and_logout_ends_it(
    api: Running, tab: Callable[..., Tab]
) -> None:
    page = tab().login(api.url, api.acme)
    (cookie,) = page.page.context.cookies()
    assert cookie["name"] == "nsai_work_session"
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert page.page.evaluate("document.cookie") == ""
    page.page.click("#logout")
    page.page.wait_for_selector("form.login")
    status = page.page.evaluate("async () => (await fetch('/v1/stats')).status")
    assert status == 401


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_job_list_renders_its_first_page_with_100000_jobs(tab: Callable[..., Tab]) -> None:
    store = stored_jobs(100_000)
    with running_server(store=store) as api:
        page = tab().login(api.url, api.admin)
        page.go("#/jobs?tenant_id=acme")
        page.page.wait_for_selector("#jobs-table tbody tr", timeout=60_000)
        assert len(page.page.query_selector_all("#jobs-table tbody tr")) == 50
        page.page.click("text=Older →")
        page.page.wait_for_selector("#jobs-status:has-text('Page 2')")
        assert page.errors == []


def _axe(page: Any) -> list[tuple[str, list[Any]]]:
    page.add_script_tag(path=str(AXE))
    found = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
    )
    return [
        (v["id"], [n["target"] for n in v["nodes"]][:3])
        for v in found
        if v["impact"] in ("serious", "critical")
    ]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_serious_violation_and_screenshots_are_saved(
    api: Running, tab: Callable[..., Tab], handlers: Callable[..., str], scheme: str
) -> None:
    kind = handlers(lambda job: {"rows": 42})
    failing = handlers(lambda job: 1 / 0)
    for i in range(3):
        _submit(api, api.admin, ("acme", "globex")[i % 2], kind, payload={"n": i})
    job = _submit(api, api.admin, "acme", failing, payload={"model": "m-7"})
    _until(lambda: _status(api, job["id"]) == "failed")
    page = tab(bypass_csp=True, color_scheme=scheme).login(api.url, api.admin)
    out = ARTIFACTS / "dashboard"
    out.mkdir(parents=True, exist_ok=True)
    for hash_, ready, shot in [
        ("#/", "#kpi-waiting", "overview"),
        ("#/jobs", "#jobs-table", None),
        (f"#/jobs/{job['id']}", "#h-attempts", "job"),
    ]:
        page.go(hash_)
        page.page.wait_for_selector(ready)
        page.page.wait_for_load_state("networkidle")
        assert _axe(page.page) == [], hash_
        if shot:
            page.page.screenshot(path=str(out / f"{shot}-{scheme}.png"), full_page=True)
    assert (out / f"overview-{scheme}.png").stat().st_size > 10_000
    assert page.errors == []

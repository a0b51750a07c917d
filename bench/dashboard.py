"""Dashboard: the time the job list's first page takes to render in a real browser (Debian's
chromium, headless, driven by Playwright) with 100,000 jobs stored, through the real server.

The store is a memory store given its jobs directly (``stored_jobs``: finished jobs of 3
tenants, 3 kinds and 3 namespaces; no engine, so 100,000 take seconds to set up); the server
runs the scheduler on it. The time is from the navigation to acme's ``#/jobs`` (a page
already logged in and live; an admin lists one tenant's jobs at a time) until the table of
the first page is in the document, the median of ``REPEAT`` navigations; the page's own
request time is reported beside it. Aim: under 1 s.
"""

from __future__ import annotations

import statistics
import time
from typing import Final

from msgspec.structs import replace

import nsai_work as work
from nsai_work.stores.memory import MemoryStore

from ._common import QUICK, Figure, Params, ScenarioResult

JOBS_FULL: Final = 100_000
JOBS_QUICK: Final = 5_000
REPEAT: Final = 7
AIM_S: Final = 1.0
CHROMIUM: Final = "/usr/bin/chromium"
CHROMIUM_ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
]
_STATUSES: Final = (work.Status.SUCCEEDED, work.Status.SUCCEEDED, work.Status.FAILED)


def stored_jobs(n: int) -> MemoryStore:
    """A memory store holding ``n`` finished jobs (kept, not expired, while the test runs)."""
    store = MemoryStore(finished_ttl_s=10 * 86_400.0, finished_max=max(n, 100_000))
    table = store.table
    now = time.monotonic()
    for i in range(n):
        job = work.Job(
            kind=("train", "eval", "tool")[i % 3],
            tenant_id=("acme", "globex", "initech")[i % 3],
            namespace=("default", "research", "prod")[(i // 3) % 3],
            payload={"i": i},
            status=work.Status.QUEUED,
        )
        table.insert(job)
        table.put(replace(job, status=_STATUSES[i % 3], backend="local", pool="default"), now)
    return store


def first_page_s(n: int, repeat: int) -> tuple[list[float], list[float]]:
    """Seconds to render the first page of the job list (``repeat`` times), and the page's own
    request times, with ``n`` jobs stored."""
    from playwright.sync_api import sync_playwright

    from nsai_work.server import KeyRing, Server, create_app

    keys = KeyRing()
    _, admin = keys.create(admin=True)
    app = create_app(stored_jobs(n), keys=keys)
    renders: list[float] = []
    requests: list[float] = []
    with Server(app) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.fill("#key", admin)
            page.click("form.login button[type=submit]")
            page.wait_for_selector("#live[data-state=open]")
            for _ in range(repeat):
                page.evaluate("location.hash = '#/'")
                page.wait_for_selector("#kpi-waiting")
                t0 = time.perf_counter()
                page.evaluate("location.hash = '#/jobs?tenant_id=acme'")
                page.wait_for_selector("#jobs-table tbody tr", timeout=30_000)
                renders.append(time.perf_counter() - t0)
                status = page.inner_text("#jobs-status")
                requests.append(float(status.rsplit("(", 1)[1].split(" ms")[0]) / 1000.0)
        finally:
            browser.close()
    return renders, requests


def run(params: Params, runs: int) -> ScenarioResult:
    n = JOBS_QUICK if params is QUICK else JOBS_FULL
    renders: list[float] = []
    requests: list[float] = []
    for _ in range(runs):
        r, q = first_page_s(n, REPEAT)
        renders.append(statistics.median(r) * 1000)
        requests.append(statistics.median(q) * 1000)
    figures = [
        Figure(
            id="dashboard.first_page_ms",
            label=f"job list: first page rendered in Chromium, {n:,} jobs stored",
            unit="ms",
            runs=renders,
            target=f"aim < {AIM_S * 1000:.0f}",
            check=lambda m: m < AIM_S * 1000,
            note=f"median of {REPEAT} navigations per run, through the real server",
            digits=0,
        ),
        Figure(
            id="dashboard.list_request_ms",
            label="its GET /v1/jobs?limit=50, as the page timed it",
            unit="ms",
            runs=requests,
            digits=0,
        ),
    ]
    return ScenarioResult(
        name="dashboard",
        description=(
            f"The dashboard's job list with {n:,} finished jobs stored (3 tenants), headless "
            f"Chromium driven by Playwright; {runs} run(s)."
        ),
        figures=figures,
        notes={"jobs": n, "repeat": REPEAT},
    )

"""Screenshots of the dashboard for docs/dashboard.md, taken while the demo runs.

``.venv/bin/python scripts/dashboard_screenshots.py [OUT_DIR]`` (default docs/images): starts
``python -m nsai_work.demo --duration 30 --plain --serve --port 0``, logs in with the admin key
it prints, and saves the overview, tenants, job list, a job page and a tenant's overview
(light and dark where it matters) with headless Debian chromium through Playwright.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.dashboard import CHROMIUM, CHROMIUM_ARGS

DEMO = [sys.executable, "-m", "nsai_work.demo"]


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images")
    out.mkdir(parents=True, exist_ok=True)
    demo = subprocess.Popen(
        [*DEMO, "--duration", "30", "--plain", "--serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert demo.stdout is not None
    url = demo.stdout.readline().split()[1]
    keys = dict(demo.stdout.readline().split() for _ in range(5))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for scheme in ("light", "dark"):
                page = browser.new_page(
                    viewport={"width": 1280, "height": 860}, color_scheme=scheme
                )
                page.goto(url)
                page.fill("#key", keys["admin"])
                page.click("form.login button[type=submit]")
                page.wait_for_selector("#kpi-waiting")
                if scheme == "light":
                    time.sleep(14)  # let the charts fill
                page.wait_for_timeout(1500)
                page.screenshot(path=str(out / f"dashboard-overview-{scheme}.png"), full_page=True)
                if scheme == "dark":
                    break
                page.evaluate("location.hash = '#/tenants'")
                page.wait_for_selector("tr[data-tenant]")
                page.wait_for_timeout(800)
                page.screenshot(path=str(out / "dashboard-tenants.png"))
                page.evaluate("location.hash = '#/jobs?tenant_id=acme'")
                page.wait_for_selector("#jobs-table tbody tr")
                page.wait_for_timeout(500)
                page.screenshot(path=str(out / "dashboard-jobs.png"))
                for query in ("kind=experiment_step&status=running", "status=running", ""):
                    page.evaluate(f"location.hash = '#/jobs?tenant_id=acme&{query}'")
                    page.wait_for_timeout(300)
                    page.wait_for_selector("#jobs-table tbody tr, #jobs-body p")
                    if page.query_selector("#jobs-table tbody tr"):
                        break
                job = page.eval_on_selector("#jobs-table tbody tr", "r => r.dataset.job")
                page.evaluate(f"location.hash = '#/jobs/{job}'")
                page.wait_for_selector("#h-attempts")
                page.wait_for_timeout(500)
                page.screenshot(path=str(out / "dashboard-job.png"), full_page=True)
                page.close()
            page = browser.new_page(viewport={"width": 390, "height": 844}, color_scheme="dark")
            page.goto(url)
            page.fill("#key", keys["globex"])
            page.click("form.login button[type=submit]")
            page.wait_for_selector("#kpi-waiting")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out / "dashboard-tenant-phone.png"))
            browser.close()
    finally:
        demo.send_signal(signal.SIGINT)  # the demo's clean stop (the server first)
        demo.wait(60)


if __name__ == "__main__":
    main()

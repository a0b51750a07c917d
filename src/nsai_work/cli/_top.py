"""``nsai-work top``: a live view of the queues by priority, the tenants and the running jobs.

Against a server (``--url``, ``NSAI_WORK_URL``): the counts are the server's ``stats`` (every
tenant with an admin key, the key's own tenant otherwise), and the running jobs are listed per
tenant (the busiest first). Against a store (``--store URL``), which keeps no counts a client
can read, it pages through the jobs of the tenants named with ``--tenant`` (at most
``--scan`` jobs each, newest first) and counts those. It redraws every ``--interval`` seconds
(rich's ``Live``) until Ctrl+C; ``--once`` prints one frame and exits (scripts, tests).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from typing import Any

from msgspec import Struct

from .._ir import Job, Priority, Status
from .._stats import Counts, Stats, TenantStats

__all__ = ["Frame", "add_command", "collect", "render"]

_WAITING = (Status.PENDING, Status.QUEUED, Status.RUNNING)


class Frame(Struct, kw_only=True):
    """What one redraw shows."""

    source: str
    at: dt.datetime
    by_priority: dict[str, Counts]
    tenants: dict[str, Counts]
    running: list[Job]
    note: str = ""


def _busy(counts: Counts) -> tuple[int, int]:
    """How busy a tenant is: waiting and running jobs, then jobs submitted."""
    return (counts.running + counts.queued + counts.pending, counts.submitted)


def collect(client: Any, *, tenants: list[str], running_max: int, scan: int) -> Frame:
    """One frame's data from a blocking client (``work.connect(...)``)."""
    now = dt.datetime.now(dt.UTC)
    if hasattr(client, "stats"):  # a server
        source = f"server {client.engine.url}"
        stats = client.stats()
        if isinstance(stats, Stats):
            by_priority = dict(stats.by_priority)
            counts: dict[str, Counts] = dict(stats.by_tenant)
        else:
            assert isinstance(stats, TenantStats)
            by_priority = dict(stats.by_priority)
            counts = {client.caller.tenant_id: stats}
        if tenants:
            counts = {t: c for t, c in counts.items() if t in tenants}
        running: list[Job] = []
        for tenant in sorted(counts, key=lambda t: _busy(counts[t]), reverse=True):
            if len(running) >= running_max:
                break
            if counts[tenant].running:
                page = client.list(
                    tenant, status="running", limit=min(running_max - len(running), 1000)
                )
                running.extend(page)
        return Frame(
            source=source, at=now, by_priority=by_priority, tenants=counts, running=running
        )
    # a store: count what the named tenants' newest jobs are
    if not tenants:
        raise _usage("with --store, name the tenants to show: --tenant acme [--tenant ...]")
    by_priority = {str(p): Counts() for p in Priority}
    counts = {}
    running = []
    for tenant in tenants:
        mine = counts[tenant] = Counts()
        cursor = None
        seen = 0
        while seen < scan:
            page = client.list(tenant, limit=min(1000, scan - seen), cursor=cursor)
            for job in page:
                _count(mine, job.status)
                _count(by_priority[str(job.priority)], job.status)
                if job.status is Status.RUNNING and len(running) < running_max:
                    running.append(job)
            seen += len(page)
            cursor = page.next_cursor
            if cursor is None:
                break
    note = f"the newest {scan:,} jobs of each tenant" if scan else ""
    return Frame(
        source=f"store {client.engine.url}",
        at=now,
        by_priority=by_priority,
        tenants=counts,
        running=running,
        note=note,
    )


def _count(counts: Counts, status: Status) -> None:
    name = str(status)
    setattr(counts, name, getattr(counts, name) + 1)
    counts.submitted += 1


def _usage(message: str) -> Exception:
    from .._errors import ConfigurationError

    return ConfigurationError(message)


def render(frame: Frame) -> Any:
    """The frame as rich renderables (a group of three tables)."""
    from rich.console import Group
    from rich.table import Table

    when = frame.at.astimezone().strftime("%H:%M:%S")
    title = f"nsai-work top · {frame.source} · {when}"
    if frame.note:
        title += f" · {frame.note}"
    queues = Table("priority", "pending", "queued", "running", "succeeded", "failed", title=title)
    for priority in Priority:
        c = frame.by_priority.get(str(priority), Counts())
        queues.add_row(
            str(priority), *(f"{n:,}" for n in (c.pending, c.queued, c.running)),
            f"{c.succeeded:,}", f"{c.failed + c.timeout:,}",
        )  # fmt: skip
    tenants = Table(
        "tenant", "pending", "queued", "running", "succeeded", "failed", "canceled", title="tenants"
    )
    for tenant in sorted(frame.tenants, key=lambda t: _busy(frame.tenants[t]), reverse=True):
        c = frame.tenants[tenant]
        tenants.add_row(
            tenant,
            *(f"{n:,}" for n in (c.pending, c.queued, c.running, c.succeeded)),
            f"{c.failed + c.timeout:,}",
            f"{c.canceled:,}",
        )
    running = Table(
        "job", "tenant", "kind", "priority", "pool", "attempt", "running for", title="running"
    )
    running.columns[0].no_wrap = True
    for job in frame.running:
        since = job.started_at or job.submitted_at or job.created_at
        seconds = max(0.0, (frame.at - since).total_seconds())
        running.add_row(
            job.id,
            job.tenant_id,
            job.kind,
            str(job.priority),
            job.pool or "",
            str(job.attempt),
            f"{seconds:,.1f} s",
        )
    return Group(queues, tenants, running)


def _top(args: argparse.Namespace) -> int:
    import msgspec
    from rich.console import Console
    from rich.live import Live

    import nsai_work as work

    from ._jobs import _connect

    tenants = list(args.tenant or [])
    console = Console()
    try:
        with _connect(args) as client:

            def frame() -> Frame:
                return collect(client, tenants=tenants, running_max=args.running, scan=args.scan)

            if args.once:
                shown = frame()
                if args.json:
                    print(msgspec.json.encode(shown).decode())
                else:
                    console.print(render(shown))
                return 0
            with Live(render(frame()), console=console, screen=False, auto_refresh=False) as live:
                while True:
                    time.sleep(args.interval)
                    live.update(render(frame()), refresh=True)
    except KeyboardInterrupt:
        return 0
    except work.WorkError as exc:
        print(f"nsai-work top: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def add_command(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``top`` to the command's subparsers (``common``: --url, --api-key, --store, --json)."""
    top = sub.add_parser(
        "top", parents=[common], help="a live view of queues, tenants and running jobs"
    )
    top.add_argument("--once", action="store_true", help="print one frame and exit")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between redraws")
    top.add_argument(
        "--tenant", action="append", help="show this tenant (repeatable; needed with --store)"
    )
    top.add_argument("--running", type=int, default=20, help="running jobs listed (20)")
    top.add_argument(
        "--scan", type=int, default=10_000, help="with --store: jobs read per tenant (10,000)"
    )
    top.set_defaults(run=_top)

"""What the demo shows while it runs: a live view on a terminal (rich), plain lines elsewhere.

Both read one ``Frame`` a few times a second. The live view has six panels (docs/demo.md says
what each means): queues by priority, pools, fair share, spend, latency and why jobs wait, with
the latest notable events beneath. Without a terminal, a line of the same figures is printed
every few seconds, with no control codes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

import nsai_work as work

from ._measure import PRIORITIES, percentile
from ._workload import CONTEST_POOL, CONTEST_TENANTS, TENANTS, WEIGHTS

__all__ = ["Frame", "LiveView", "PlainView", "render_frame"]

#: The pools the view lists, in this order (others, such as the unused local pools, are not).
POOLS: Final = (
    "l4-serving",
    CONTEST_POOL,
    "a100-spot",
    "a100-on-demand",
    "process",
    "altar:async",
    "altar:threads",
)
_BLOCKS: Final = " ▏▎▍▌▋▊▉█"


@dataclass
class Frame:
    """Everything one refresh shows."""

    position_s: float  # the workload's clock (a resumed run starts where the last stopped)
    duration_s: float
    end_s: float  # when arrivals stop
    stats: work.Stats
    admitted: int
    shares: Mapping[str, float]  # contest tenants' recent share of the shared pool, percent
    fair: Mapping[str, Any]  # the cumulative measure (Recorder.fair_share)
    latencies: Mapping[str, list[float]]
    notes: Sequence[str] = ()
    store: str = ""
    draining: bool = False
    max_depth: int = 1  # the deepest queue seen so far (the bars' scale)


def bar(fraction: float, width: int, marker: float | None = None) -> str:
    """A horizontal bar of ``width`` cells filled to ``fraction`` (0 to 1), with ``|`` at
    ``marker`` (0 to 1) when given."""
    fraction = min(1.0, max(0.0, fraction))
    eighths = round(fraction * width * 8)
    cells = [_BLOCKS[8]] * (eighths // 8)
    if eighths % 8 and len(cells) < width:
        cells.append(_BLOCKS[eighths % 8])
    cells += [" "] * (width - len(cells))
    if marker is not None:
        at = min(width - 1, max(0, round(marker * width)))
        cells[at] = "│"
    return "".join(cells)


def _depths(stats: work.Stats) -> dict[str, tuple[int, int]]:
    out = {}
    for priority in PRIORITIES:
        counts = stats.by_priority.get(priority, work.Counts())
        out[priority] = (counts.pending + counts.queued, counts.running)
    return out


def _queues(frame: Frame) -> Table:
    table = Table.grid(padding=(0, 1))
    for justify in ("left", "right", "left", "right"):
        table.add_column(justify=justify)
    table.add_row(Text("priority", style="dim"), Text("waiting", style="dim"), "", "running")
    for priority, (waiting, running) in _depths(frame.stats).items():
        table.add_row(
            priority, f"{waiting:,}", Text(bar(waiting / frame.max_depth, 20), "cyan"), str(running)
        )
    return table


def _pools(frame: Frame) -> Table:
    table = Table.grid(padding=(0, 1))
    for justify in ("left", "right", "left", "left"):
        table.add_column(justify=justify)
    for name in POOLS:
        pool = frame.stats.pools.get(name)
        if pool is None:
            continue
        capacity, used = pool.capacity, pool.used
        fraction = used.slots / capacity.slots if capacity.slots else 0.0
        gpus = ""
        for gpu_type, total in capacity.gpus.items():
            held = used.gpus.get(gpu_type, 0)
            gpus = f"{held}/{total} {gpu_type}"
            fraction = max(fraction, held / total if total else 0.0)
        table.add_row(
            name, f"{used.slots}/{capacity.slots}", Text(bar(fraction, 12), "green"), gpus
        )
    return table


def _fair(frame: Frame) -> Group:
    table = Table.grid(padding=(0, 1))
    for justify in ("left", "right", "left", "right", "right"):
        table.add_column(justify=justify)
    total = sum(WEIGHTS[t] for t in CONTEST_TENANTS)
    for tenant in CONTEST_TENANTS:
        weight_share = WEIGHTS[tenant] / total
        share = frame.shares.get(tenant, 0.0)
        table.add_row(
            tenant,
            f"w{WEIGHTS[tenant]:g}",
            Text(bar(share / 100.0, 20, marker=weight_share), "magenta"),
            f"{share:5.1f}%",
            Text(f"weight {100 * weight_share:.0f}%", style="dim"),
        )
    fair = frame.fair
    if fair.get("max_error_pp") is None:
        return Group(table)
    note = (
        f"while all were backlogged ({fair['backlogged_s']:.1f} s): furthest from its "
        f"weight {fair['max_error_pp']:.1f} pp"
    )
    return Group(table, Text(note, style="dim"))


def _spend(frame: Frame) -> Table:
    table = Table.grid(padding=(0, 1))
    for justify in ("left", "right", "left", "left"):
        table.add_column(justify=justify)
    for tenant in TENANTS:
        counts = frame.stats.by_tenant.get(tenant)
        if counts is None:
            continue
        spent, budget = counts.spend_total_usd, counts.budget_usd
        if budget:
            refused = counts.rejections.get("budget", 0)
            note = f"of ${budget:.2f}" + (f", {refused} refused" if refused else "")
            shown = bar(spent / budget, 12, marker=(spent + counts.committed_usd) / budget)
        else:
            note, shown = "no budget", " " * 12
        table.add_row(tenant, f"${spent:.4f}", Text(shown, "yellow"), note)
    return table


def _latency(frame: Frame) -> Table:
    table = Table.grid(padding=(0, 2))
    for justify in ("left", "right", "right", "right"):
        table.add_column(justify=justify)
    table.add_row(*(Text(h, style="dim") for h in ("priority", "jobs", "p50 ms", "p99 ms")))
    for priority in PRIORITIES:
        values = frame.latencies.get(priority, [])
        table.add_row(
            priority,
            f"{len(values):,}",
            f"{percentile(values, 0.5):.1f}",
            f"{percentile(values, 0.99):.1f}",
        )
    return table


def _reasons(frame: Frame) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column()
    table.add_column(justify="right")
    ranked = sorted(frame.stats.waiting_reasons.items(), key=lambda item: (-item[1], item[0]))
    for reason, count in ranked[:6]:
        table.add_row(reason, f"{count:,}")
    if not ranked:
        table.add_row(Text("nothing waits", style="dim"), "")
    return table


def render_frame(frame: Frame) -> RenderableType:
    """The live view of one frame."""
    totals = frame.stats.totals
    phase = (
        "draining the backlog"
        if frame.draining
        else f"arrivals until {frame.end_s:.0f} s of {frame.duration_s:g} s"
    )
    header = Text.assemble(
        ("nsai-work demo", "bold"),
        f"  {frame.position_s:5.1f} s, {phase}  |  {frame.admitted:,} admitted, "
        f"{totals.finished:,} finished, {totals.running:,} running",
    )
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(ratio=1)
    grid.add_column(ratio=1)
    grid.add_row(
        Panel(_queues(frame), title="queue depth by priority", title_align="left"),
        Panel(_pools(frame), title="pools (runs, GPUs in use)", title_align="left"),
    )
    grid.add_row(
        Panel(
            _fair(frame),
            title=f"fair share of {CONTEST_POOL}, last 3 s (| = weight)",
            title_align="left",
        ),
        Panel(_spend(frame), title="spend against budget (| = committed)", title_align="left"),
    )
    grid.add_row(
        Panel(_latency(frame), title="submit-to-start latency", title_align="left"),
        Panel(_reasons(frame), title="why jobs wait, now", title_align="left"),
    )
    notes = Text("\n".join(frame.notes[-4:]) or "-", style="dim")
    footer = Text(f"store {frame.store}  -  Ctrl-C stops; the store keeps every job", style="dim")
    return Group(header, grid, Panel(notes, title="events", title_align="left"), footer)


class LiveView:
    """The live view on a terminal (rich ``Live``, refreshed by ``update``)."""

    def __init__(self, stream: TextIO) -> None:
        self.console = Console(file=stream)
        self._live = Live(console=self.console, auto_refresh=False, transient=False)
        self._live.start()

    def update(self, frame: Frame) -> None:
        """Show ``frame``."""
        self._live.update(render_frame(frame), refresh=True)

    def note(self, text: str) -> None:
        """A message above the view."""
        self.console.print(text, markup=False, highlight=False)

    def close(self) -> None:
        """Stop refreshing; the last frame stays on the screen."""
        self._live.stop()


class PlainView:
    """A line of figures every ``every_s`` seconds of the workload's clock."""

    def __init__(self, stream: TextIO, every_s: float) -> None:
        self.stream = stream
        self.every_s = every_s
        self._next = 0.0

    def update(self, frame: Frame) -> None:
        """Print a line if it is time."""
        if frame.position_s < self._next:
            return
        self._next = frame.position_s + self.every_s
        self.stream.write(plain_line(frame) + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        """A message line."""
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Nothing to stop."""


def plain_line(frame: Frame) -> str:
    """One line of the figures that matter now."""
    totals = frame.stats.totals
    depths = _depths(frame.stats)
    waiting = " ".join(f"{p[:5]} {depths[p][0]}" for p in PRIORITIES)
    reasons = sorted(frame.stats.waiting_reasons.items(), key=lambda item: (-item[1], item[0]))
    top = f"{reasons[0][0]} {reasons[0][1]}" if reasons else "-"
    spend = sum(t.spend_total_usd for t in frame.stats.by_tenant.values())
    shares = "/".join(f"{frame.shares.get(t, 0.0):.0f}" for t in CONTEST_TENANTS)
    return (
        f"[{frame.position_s:5.1f} s] {frame.admitted:,} admitted, {totals.finished:,} finished,"
        f" {totals.running} running; waiting: {waiting}; top reason: {top}; "
        f"{CONTEST_POOL} shares {shares}%; spend ${spend:.4f}"
    )

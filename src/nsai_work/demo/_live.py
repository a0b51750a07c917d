"""What the demo shows while it runs: a live view on a terminal (rich), plain lines elsewhere.

Both read one ``Frame`` a few times a second. The live view has six panels (docs/demo.md says
what each means): queues by priority, pools, fair share, spend, latency and why jobs wait, with
the latest notable events beneath. Without a terminal, a line of the same figures is printed
every few seconds, with no control codes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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


def _grid(*justify: str) -> Table:
    table = Table.grid(padding=(0, 1))
    for how in justify:
        table.add_column(justify=how, no_wrap=True)  # type: ignore[arg-type]
    return table


def _queues(frame: Frame, wide: bool) -> Table:
    table = _grid("left", "right", "left", "right")
    table.add_row(*(Text(h, style="dim") for h in ("priority", "waiting", "", "running")))
    for priority, (waiting, running) in _depths(frame.stats).items():
        shown = bar(waiting / frame.max_depth, 20 if wide else 6)
        table.add_row(priority, f"{waiting:,}", Text(shown, "cyan"), str(running))
    return table


def _pools(frame: Frame, wide: bool) -> Table:
    table = _grid("left", "right", "left", "right")
    table.add_row(*(Text(h, style="dim") for h in ("pool", "runs", "", "GPUs")))
    for name in POOLS:
        pool = frame.stats.pools.get(name)
        if pool is None:
            continue
        capacity, used = pool.capacity, pool.used
        fraction = used.slots / capacity.slots if capacity.slots else 0.0
        gpus = ""
        for gpu_type, total in capacity.gpus.items():
            held = used.gpus.get(gpu_type, 0)
            gpus = f"{held}/{total}" + (f" {gpu_type}" if wide else "")
            fraction = max(fraction, held / total if total else 0.0)
        shown = Text(bar(fraction, 12 if wide else 6), "green")
        table.add_row(name, f"{used.slots}/{capacity.slots}", shown, gpus)
    return table


def _fair(frame: Frame, wide: bool) -> Group:
    table = _grid("left", "left", "right", "left")
    total = sum(WEIGHTS[t] for t in CONTEST_TENANTS)
    for tenant in CONTEST_TENANTS:
        weight_share = WEIGHTS[tenant] / total
        share = frame.shares.get(tenant, 0.0)
        table.add_row(
            tenant,
            Text(bar(share / 100.0, 20 if wide else 10, marker=weight_share), "magenta"),
            f"{share:4.1f}%",
            Text(f"w{WEIGHTS[tenant]:g}: {100 * weight_share:.0f}%", style="dim"),
        )
    fair = frame.fair
    if fair.get("max_error_pp") is None:
        return Group(table)
    note = (
        f"all backlogged {fair['backlogged_s']:.1f} s: furthest from its weight "
        f"{fair['max_error_pp']:.1f} pp"
    )
    return Group(table, Text(note, style="dim"))


def _spend(frame: Frame, wide: bool) -> Group:
    table = _grid("left", "right", "left", "left")
    refused = []
    for tenant in TENANTS:
        counts = frame.stats.by_tenant.get(tenant)
        if counts is None:
            continue
        spent, budget = counts.spend_total_usd, counts.budget_usd
        width = 12 if wide else 6
        if budget:
            if counts.rejections.get("budget"):
                refused.append(f"{tenant}: {counts.rejections['budget']} submits refused")
            note = f"of ${budget:.2f}"
            shown = bar(spent / budget, width, marker=(spent + counts.committed_usd) / budget)
        else:
            note, shown = "no budget", " " * width
        table.add_row(tenant, f"${spent:.4f}", Text(shown, "yellow"), Text(note, style="dim"))
    return Group(table, *(Text(line, style="dim") for line in refused))


def _latency(frame: Frame, wide: bool) -> Table:
    table = _grid("left", "right", "right", "right")
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


def _reasons(frame: Frame, wide: bool) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(overflow="ellipsis", no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    ranked = sorted(frame.stats.waiting_reasons.items(), key=lambda item: (-item[1], item[0]))
    for reason, count in ranked[:6]:
        table.add_row(reason, f"{count:,}")
    if not ranked:
        table.add_row(Text("nothing waits", style="dim"), "")
    return table


def render_frame(frame: Frame, width: int = 100) -> RenderableType:
    """The live view of one frame, for a terminal ``width`` columns wide (two columns of
    panels; longer bars from 110 columns on)."""
    wide = width >= 110
    totals = frame.stats.totals
    phase = "draining the backlog" if frame.draining else f"arrivals until {frame.end_s:.0f} s"
    header = Text.assemble(
        ("nsai-work demo", "bold"),
        f"  {frame.position_s:5.1f} s of {frame.duration_s:g} s, {phase}",
    )
    counts = Text(
        f"{frame.admitted:,} admitted, {totals.finished:,} finished, "
        f"{totals.running:,} running, {totals.pending + totals.queued:,} waiting"
    )
    panels: list[tuple[str, Callable[[Frame, bool], RenderableType]]] = [
        ("queue depth by priority", _queues),
        ("pools: runs and GPUs in use", _pools),
        (f"fair share of {CONTEST_POOL} (| weight)", _fair),
        ("spend (| with committed)", _spend),
        ("submit-to-start latency", _latency),
        ("why jobs wait, now", _reasons),
    ]
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(ratio=1)
    grid.add_column(ratio=1)
    for (left, draw_left), (right, draw_right) in zip(panels[::2], panels[1::2], strict=True):
        grid.add_row(
            Panel(draw_left(frame, wide), title=left, title_align="left"),
            Panel(draw_right(frame, wide), title=right, title_align="left"),
        )
    notes = Text("\n".join(frame.notes[-4:]) or "-", style="dim")
    footer = Text(f"{frame.store}  -  Ctrl-C stops, the store keeps every job", style="dim")
    return Group(header, counts, grid, Panel(notes, title="events", title_align="left"), footer)


class LiveView:
    """The live view on a terminal (rich ``Live``, refreshed by ``update``)."""

    def __init__(self, stream: TextIO) -> None:
        self.console = Console(file=stream)
        self._live = Live(console=self.console, auto_refresh=False, transient=False)
        self._live.start()

    def update(self, frame: Frame) -> None:
        """Show ``frame``."""
        self._live.update(render_frame(frame, self.console.width), refresh=True)

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

"""The summary at the end of a run: one dict (what ``--json`` writes) and its plain text.

The text is plain aligned columns with no control codes, so it reads the same on a terminal,
in a file and through a pipe; no line is wider than 100 characters but the one naming the
store (a path of the user's).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import nsai_work as work

from ._durable import Place, StoreCheck
from ._measure import PRIORITIES, Recorder, Sampler, percentile
from ._workload import CONTEST_POOL, TENANTS

__all__ = ["HINTS", "Outcome", "build", "hint", "render"]

#: What a waiting reason means for the reader, by its prefix.
HINTS: Final = {
    "fair_share": "turns by weight on a busy pool: add capacity",
    "higher_priority_backlog": "higher priorities go first",
    "tenant_quota": "the tenant's quota caps it: raise work.Quota",
    "tenant_max_running": "the tenant's max_running caps it",
    "namespace_max_running": "a namespace's max_running caps it",
    "namespace_quota": "a namespace's quota caps it",
    "tool_concurrency": "the tool's max_concurrency caps calls",
    "tool_rate": "the tool's rate limit spaces its calls",
    "backoff": "failed attempts wait to retry (RetryPolicy)",
    "no_capacity": "no pool it may use has room: add capacity",
    "capacity_held": "capacity is held for the first in line",
    "stopping_runs": "stopped runs still hold their capacity",
    "concurrency_group": "its concurrency group is at its limit",
    "priority_guard": "the starvation guard's turn for a lower level",
}


def hint(reason: str) -> str:
    """The hint for a waiting reason (``tenant_quota:gpu:A100`` -> the ``tenant_quota`` one)."""
    return HINTS.get(reason.split(":", 1)[0], "")


@dataclass
class Outcome:
    """How a run went, beside what the recorder and sampler measured."""

    place: Place
    duration_s: float
    elapsed_s: float
    admitted: int
    finished_before: int  # finished jobs the counters held when this run started (a resume)
    resubmits: dict[str, int]
    stats: work.Stats
    check: StoreCheck | None
    recovery: dict[str, Any] | None


def build(outcome: Outcome, recorder: Recorder, sampler: Sampler) -> dict[str, Any]:
    """The summary as plain data (numbers, strings, lists and dicts)."""
    stats = outcome.stats
    latencies = recorder.latencies()
    latency = {
        priority: {
            "jobs": len(values),
            "p50": round(percentile(values, 0.50), 2),
            "p90": round(percentile(values, 0.90), 2),
            "p99": round(percentile(values, 0.99), 2),
            "max": round(max(values, default=0.0), 2),
        }
        for priority, values in latencies.items()
    }
    by_tenant: dict[str, dict[str, Any]] = {}
    spend: dict[str, dict[str, Any]] = {}
    for tenant in TENANTS:
        counts = stats.by_tenant.get(tenant, work.TenantStats())
        by_tenant[tenant] = {
            "submitted": counts.submitted,
            "succeeded": counts.succeeded,
            "failed": counts.failed,
            "timeout": counts.timeout,
            "canceled": counts.canceled,
            "retries": recorder.retries.get(tenant, 0),
            "refused": dict(sorted(counts.rejections.items())),
            "resubmitted": outcome.resubmits.get(tenant, 0),
        }
        spend[tenant] = {
            "spend_usd": round(counts.spend_total_usd, 6),
            "budget_usd": counts.budget_usd,
            "committed_usd": round(counts.committed_usd, 6),
            "refused_budget": counts.rejections.get("budget", 0),
        }
    totals = stats.totals
    finished = totals.finished - outcome.finished_before
    elapsed = max(outcome.elapsed_s, 1e-9)
    check = outcome.check
    return {
        "version": 1,
        "duration_s": outcome.duration_s,
        "elapsed_s": round(outcome.elapsed_s, 2),
        "interrupted": False,
        "store": {
            "url": outcome.place.url,
            "kept": outcome.place.durable and not outcome.place.temporary,
        },
        "jobs": {"admitted": outcome.admitted, "finished": finished},
        "throughput": {
            "jobs_per_s": round(finished / elapsed, 1),
            "peak_jobs_per_s": round(sampler.peak_throughput, 1),
        },
        "latency_ms": latency,
        "fair_share": {"pool": CONTEST_POOL, "priority": "batch", **recorder.fair_share()},
        "outcomes": {
            "total": {
                "submitted": totals.submitted,
                "succeeded": totals.succeeded,
                "failed": totals.failed,
                "timeout": totals.timeout,
                "canceled": totals.canceled,
                "retries": sum(recorder.retries.values()),
            },
            "by_tenant": by_tenant,
        },
        "spend": {
            "total_usd": round(sum(s["spend_usd"] for s in spend.values()), 6),
            "by_tenant": spend,
        },
        "waiting_reasons": [
            {"reason": reason, "job_seconds": round(job_s, 1), "peak": peak, "hint": hint(reason)}
            for reason, job_s, peak in sampler.top_reasons()
        ],
        "durability": None
        if check is None
        else {
            "admitted": check.admitted,
            "in_store": check.found,
            "finished": check.finished,
            "lost": check.lost,
        },
        "recovery": outcome.recovery,
    }


# ---- text -----------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]], *, text_last: bool = False) -> list[str]:
    """Aligned columns: the first left, the others right (the last left with ``text_last``)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    last = len(header) - 1

    def row(cells: list[str]) -> str:
        out = []
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True)):
            left = i == 0 or (text_last and i == last)
            out.append(f"{cell:<{width}}" if left else f"{cell:>{width}}")
        return ("  " + "  ".join(out)).rstrip()

    return [row(header), *(row(r) for r in rows)]


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.4f}"


def render(summary: Mapping[str, Any]) -> list[str]:
    """The summary as lines of plain text."""
    store = summary["store"]
    lines = [
        f"nsai-work demo: summary (a workload of {summary['duration_s']:g} s, ran "
        f"{summary['elapsed_s']:.1f} s)",
        f"store: {store['url']} ({'kept' if store['kept'] else 'temporary, removed'})",
    ]
    if summary["recovery"] is not None:
        lines.append(
            "resumed: outcomes and spend count both runs (the scheduler's counters come back "
            "with the store);"
        )
        lines.append("latency, throughput and fair share are this run's")
    lines.append("")
    jobs, throughput = summary["jobs"], summary["throughput"]
    lines.append(
        f"throughput: {jobs['finished']:,} jobs finished in {summary['elapsed_s']:.1f} s, "
        f"{throughput['jobs_per_s']:.1f} jobs/s (peak {throughput['peak_jobs_per_s']:.1f} "
        f"jobs/s over 5 s)"
    )
    lines += ["", "latency, submit to start (first attempts, monotonic clock)"]
    rows = []
    for priority in PRIORITIES:
        figures = summary["latency_ms"][priority]
        rows.append(
            [priority, f"{figures['jobs']:,}"]
            + [f"{figures[q]:.2f}" for q in ("p50", "p90", "p99", "max")]
        )
    lines += _table(["priority", "jobs", "p50 ms", "p90 ms", "p99 ms", "max ms"], rows)
    lines += ["", *_fair_share(summary["fair_share"])]
    lines += ["", "outcomes (retries: attempts that failed and ran again; rate limited: jobs"]
    lines += ["refused by the submit rate and resubmitted after retry_after_s)"]
    columns = ("submitted", "succeeded", "failed", "timeout", "canceled", "retries")
    rows = []
    for tenant, o in summary["outcomes"]["by_tenant"].items():
        rows.append([tenant, *(f"{o[k]:,}" for k in columns), f"{o['resubmitted']:,}"])
    total = summary["outcomes"]["total"]
    rows.append(["total", *(f"{total[k]:,}" for k in columns), ""])
    lines += _table(["tenant", *columns, "rate limited"], rows)
    lines += ["", "spend (what finished runs cost; a submit is refused when the spend plus the"]
    lines += ["estimates of unfinished jobs, timeout x price, would pass the budget)"]
    rows = []
    for tenant, s in summary["spend"]["by_tenant"].items():
        budget = s["budget_usd"]
        left = "" if budget is None else f"{100.0 * s['spend_usd'] / budget:.0f}% spent"
        refused = "-" if budget is None else f"{s['refused_budget']:,}"
        rows.append([tenant, _usd(s["spend_usd"]), _usd(budget), left, refused])
    rows.append(["total", _usd(summary["spend"]["total_usd"]), "", "", ""])
    lines += _table(["tenant", "spent", "budget", "", "refused (budget)"], rows)
    lines += ["", "top waiting reasons (job-seconds spent waiting; most jobs at once)"]
    rows = [
        [r["reason"], f"{r['job_seconds']:,.1f}", f"{r['peak']:,}", r["hint"]]
        for r in summary["waiting_reasons"]
    ]
    table = _table(["reason", "job-s", "peak", "what it means"], rows, text_last=True)
    lines += table if rows else ["  none"]
    lines += ["", *_durability(summary)]
    return lines


def _fair_share(fair: Mapping[str, Any]) -> list[str]:
    lines = [
        f"fair share of {fair['pool']} between {fair['priority']} evaluation sweeps, while all "
        f"were backlogged ({fair['backlogged_s']:.1f} s)"
    ]
    if fair["max_error_pp"] is None:
        return [*lines, "  not measured: they were never all backlogged at once"]
    rows = [
        [
            tenant,
            f"{t['weight']:g}",
            f"{t['weight_share_pct']:.1f}%",
            f"{t['share_pct']:.1f}%",
            f"{round(t['error_pp'], 1) or 0.0:+.1f} pp",  # (never "-0.0")
        ]
        for tenant, t in fair["tenants"].items()
    ]
    lines += _table(["tenant", "weight", "weight share", "got", "off by"], rows)
    lines.append(f"  the furthest from its weight was off by {fair['max_error_pp']:.1f} pp")
    return lines


def _durability(summary: Mapping[str, Any]) -> list[str]:
    lines = []
    recovery = summary["recovery"]
    if recovery is not None:
        lines.append(
            f"recovery: {recovery['admitted_before']:,} jobs admitted before the interrupt: "
            f"{recovery['finished_before']:,} had finished,"
        )
        lines.append(
            f"  {recovery['recovered']:,} were recovered and {recovery['recovered_finished']:,} "
            f"of those have finished now; {recovery['lost']:,} lost"
        )
    check = summary["durability"]
    if check is None:
        lines.append("durability: none (memory:// store): nothing would survive a crash")
    else:
        lost = "none lost" if check["lost"] == 0 else f"{check['lost']:,} LOST"
        lines.append(
            f"durability: {check['in_store']:,} of {check['admitted']:,} admitted jobs are in "
            f"the store, {check['finished']:,} finished; {lost}"
        )
    return lines

"""Listing: the time of one page of ``JobTable.list`` as one tenant's jobs grow, and of paging
through all of them.

For each size, a ``JobTable`` (the store the scheduler keeps its jobs in; no engine, so that
a million jobs take seconds to set up) gets that many jobs of one tenant, ``acme``, over 3
namespaces and 3 kinds, a little over half of them then moved on (queued, running, succeeded,
failed), with a job of another tenant after every 4th. Then, each timed as the
median of ``REPEAT`` calls: the first page (100 jobs, no filter); a page at the middle of the
listing (the cursor found by paging there); the same by namespace (a merge of that namespace's
3 (namespace, kind) leaves); the same by namespace, kind and status (one index); a page at a
random place (``REPEAT`` different cursors, so memory caches are cold as when a client pages);
and paging through all the tenant's jobs, 100 a page. A page's cost should not grow with the
number of jobs: the flatness figure divides the middle page's time at the largest size by the
smallest's. (Cold pages do cost more in a larger store: the jobs they read are less often in
the CPU's caches. That is memory, not the algorithm; see the random-page figures.)
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from msgspec.structs import replace

import nsai_work as work
from nsai_work.stores._memory_table import JobTable

from ._common import QUICK, Figure, Params, ScenarioResult, settle

SIZES_FULL = (10_000, 200_000, 1_000_000)
SIZES_QUICK = (2_000, 20_000)
PAGE = 100
REPEAT = 51  # calls per timed page: the median is kept
MAX_FLATNESS = 2.0
NAMESPACES = ("default", "research", "prod")
KINDS = ("train", "eval", "tool")
#: What the i-th job becomes after it is inserted (queued): ~45% stay queued.
_MOVES = (
    (),
    (work.Status.RUNNING,),
    (work.Status.RUNNING, work.Status.SUCCEEDED),
    (),
    (work.Status.RUNNING, work.Status.FAILED),
    (work.Status.RUNNING, work.Status.SUCCEEDED),
    (),
    (work.Status.RUNNING,),
    (),
    (work.Status.RUNNING, work.Status.SUCCEEDED),
    (),
)


def build(n: int) -> JobTable:
    """A store with ``n`` jobs of ``acme`` and ``n // 4`` of ``other``, interleaved."""
    store = JobTable(finished_max=2 * n)
    jobs = []
    for i in range(n):
        for tenant in ("acme", "other") if i % 4 == 3 else ("acme",):
            job = work.Job(
                kind=KINDS[i % 3],
                namespace=NAMESPACES[(i // 3) % 3],
                tenant_id=tenant,
                status=work.Status.QUEUED,
            )
            store.insert(job)
            jobs.append(job)
    for i, job in enumerate(jobs):
        for status in _MOVES[i % len(_MOVES)]:
            store.put(replace(job, status=status), 0.0)
    return store


def timed(call: Callable[[], Any]) -> float:
    """The median time of ``REPEAT`` calls, in microseconds."""
    times = []
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times)


def page_through(store: JobTable) -> tuple[float, list[str]]:
    """Page through all of ``acme``'s jobs: seconds, and the cursor of each page but the last."""
    cursor: str | None = None
    cursors: list[str] = []
    t0 = time.perf_counter()
    while True:
        _, cursor = store.list("acme", limit=PAGE, cursor=cursor)
        if cursor is None:
            return time.perf_counter() - t0, cursors
        cursors.append(cursor)


def measure(store: JobTable, seed: int) -> dict[str, float]:
    """One run's figures for one store."""
    through_s, cursors = page_through(store)
    middle = cursors[len(cursors) // 2]
    places = iter(random.Random(seed).choices(cursors, k=REPEAT))
    return {
        "first_page_us": timed(lambda: store.list("acme", limit=PAGE)),
        "middle_page_us": timed(lambda: store.list("acme", limit=PAGE, cursor=middle)),
        "namespace_page_us": timed(
            lambda: store.list("acme", namespace="research", limit=PAGE, cursor=middle)
        ),
        "narrow_page_us": timed(
            lambda: store.list(
                "acme",
                namespace="research",
                kind="eval",
                status=work.Status.QUEUED,
                limit=PAGE,
                cursor=middle,
            )
        ),
        "random_page_us": timed(lambda: store.list("acme", limit=PAGE, cursor=next(places))),
        "page_through_s": through_s,
        "pages": len(cursors) + 1,
    }


def run(params: Params, runs: int) -> ScenarioResult:
    sizes = SIZES_QUICK if params == QUICK else SIZES_FULL
    results: dict[int, list[dict[str, float]]] = {}
    build_s: dict[int, float] = {}
    for n in sizes:
        settle()
        t0 = time.perf_counter()
        store = build(n)
        build_s[n] = round(time.perf_counter() - t0, 1)
        results[n] = [measure(store, seed) for seed in range(runs)]
        del store
    figures: list[Figure] = []
    labels = {
        "first_page_us": "first page",
        "middle_page_us": "a page at the middle",
        "namespace_page_us": "a page at the middle, by namespace",
        "narrow_page_us": "a page at the middle, by namespace + kind + status",
        "random_page_us": "a page at a random place (cold caches)",
    }
    for n in sizes:
        for key, label in labels.items():
            figures.append(
                Figure(
                    id=f"list.{key.removesuffix('_us')}_us.{n}",
                    label=f"list: {label} (limit {PAGE}), one tenant's {n:,} jobs",
                    unit="us",
                    runs=[r[key] for r in results[n]],
                    digits=1,
                )
            )
        figures.append(
            Figure(
                id=f"list.page_through_s.{n}",
                label=f"list: paging through all of one tenant's {n:,} jobs, {PAGE} a page",
                unit="s",
                runs=[r["page_through_s"] for r in results[n]],
                digits=3,
            )
        )
    small, large = sizes[0], sizes[-1]
    figures.append(
        Figure(
            id="list.flatness",
            label=f"list: a page at the middle, {large:,} jobs / {small:,} jobs",
            unit="x",
            runs=[
                big["middle_page_us"] / little["middle_page_us"]
                for big, little in zip(results[large], results[small], strict=True)
            ],
            target=f"<= {MAX_FLATNESS:g}x (flat in the number of jobs)",
            check=lambda m: m <= MAX_FLATNESS,
            digits=2,
        )
    )
    counts = ", ".join(f"{n:,}" for n in sizes)
    return ScenarioResult(
        name="list",
        description=(
            f"JobTable.list pages of {PAGE} over one tenant's jobs ({counts}; "
            f"3 namespaces x 3 kinds, ~45% queued, the rest running, succeeded or failed; a job "
            f"of another tenant after every 4th), each page the median of {REPEAT} calls; "
            f"{runs} run(s) on one store per size."
        ),
        figures=figures,
        notes={
            "seconds to build each store": build_s,
            "pages to page through, per size": {n: results[n][0]["pages"] for n in sizes},
        },
    )

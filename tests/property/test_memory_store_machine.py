"""The memory store's listings against a brute-force oracle: a plain dict of jobs, filtered and
sorted on every page.

A hypothesis state machine submits jobs (3 tenants, 2 namespaces, 2 kinds, ids sometimes shared
with another tenant), moves live jobs to other statuses, lets time pass so that finished jobs
are pruned (by count and by age), and pages through listings with every combination of the
filters, while the jobs change between pages. Each page must equal the oracle's: the jobs that
match the filters now and were submitted before the last job of the previous page, newest
first, ``limit`` of them, with a next cursor exactly when more match. A listing that ends must
have listed no job twice, and every job that matched at each of its pages.

The chunks of the ordered indexes are made tiny (``LOAD = 4``: 2 to 8 seqs) so that a few
dozen jobs split and merge them, and listings merge at most 1 or 2 leaves (``_FANOUT``), so
that coarse cells are built, shared and dropped; one machine leaves the indexing of moves to the
readers, the other also indexes them whenever more than 2 wait (``UNINDEXED_MAX``). Another test
checks the index functions alone against a sorted list.
"""

from __future__ import annotations

import copy
import os
from collections import deque
from dataclasses import dataclass, field
from itertools import chain, pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from msgspec.structs import replace

import nsai_work as work
from nsai_work.stores import _memory_table as memory
from nsai_work.stores import _ordered_index as ordered_index
from nsai_work.stores._memory_table import JobTable

from ._machines import phases

S = work.Status
LIVE = (S.PENDING, S.QUEUED, S.RUNNING)
TERMINAL = (S.SUCCEEDED, S.FAILED, S.TIMEOUT, S.CANCELED)
TENANTS = ("t1", "t2", "t3")
NAMESPACES = ("a", "b")
KINDS = ("x", "y", "z")
TTL_S = 50.0
FINISHED_MAX = 12
Key = tuple[str, str]


@pytest.fixture(autouse=True)
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ordered_index, "LOAD", 4)
    monkeypatch.setattr(memory, "_FANOUT", memory._FANOUT)  # a machine sets its own
    monkeypatch.setattr(memory, "_SCAN", memory._SCAN)
    monkeypatch.setattr(memory, "UNINDEXED_MAX", memory.UNINDEXED_MAX)


@dataclass
class Listing:
    """One listing being paged through: its filters, where it is, what it has shown."""

    tenant: str
    filters: dict[str, Any]
    limit: int
    cursor: str | None = None
    last: int | None = None  # oracle position of the last job listed
    seen: set[Key] = field(default_factory=set)
    always: set[tuple[Key, int]] | None = None  # (key, position) of the jobs that matched at
    # every page so far


def matches(job: work.Job, tenant: str, filters: dict[str, Any]) -> bool:
    return (
        job.tenant_id == tenant
        and filters.get("namespace") in (None, job.namespace)
        and filters.get("kind") in (None, job.kind)
        and filters.get("status") in (None, job.status)
    )


def filters_strategy() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "namespace": st.sampled_from(NAMESPACES),
            "kind": st.sampled_from(KINDS),
            "status": st.sampled_from(S),
        },
    )


class StoreMachine(RuleBasedStateMachine):
    fanout = 1  # _FANOUT: coarse cells past 1 leaf
    scan = 0  # _SCAN: which kinds each namespace has (and the converse) always kept
    unindexed_max = memory.UNINDEXED_MAX  # moves are indexed when a listing reads

    def __init__(self) -> None:
        super().__init__()
        memory._FANOUT, memory._SCAN = self.fanout, self.scan
        memory.UNINDEXED_MAX = self.unindexed_max
        self.store = JobTable(finished_ttl_s=TTL_S, finished_max=FINISHED_MAX)
        self.jobs: dict[Key, tuple[int, work.Job]] = {}  # the oracle: key -> (position, job)
        self.position = 0
        self.finished: deque[tuple[float, Key]] = deque()
        self.now = 0.0
        self.listings: list[Listing] = []

    # ---- the oracle ----------------------------------------------------------------------

    def expected(self, tenant: str, filters: dict[str, Any], below: int | None) -> list[Key]:
        found = [
            (position, key)
            for key, (position, job) in self.jobs.items()
            if matches(job, tenant, filters) and (below is None or position < below)
        ]
        return [key for _, key in sorted(found, reverse=True)]

    def prune(self) -> None:
        """The retention rule: the oldest finished go while over the cap or past the TTL."""
        while self.finished and (
            len(self.finished) > FINISHED_MAX or self.finished[0][0] < self.now - TTL_S
        ):
            _, key = self.finished.popleft()
            del self.jobs[key]

    # ---- rules ---------------------------------------------------------------------------

    @rule(
        batch=st.lists(
            st.tuples(
                st.sampled_from(("t1", "t1", "t2", "t3")),  # t1 gets enough jobs to split chunks
                st.sampled_from(("a", "a", "a", "b")),  # "a" often has every kind before "b" comes
                st.sampled_from(KINDS),
                st.sampled_from((S.QUEUED, S.QUEUED, S.PENDING, S.RUNNING)),
                st.booleans(),
            ),
            min_size=1,
            max_size=8,
        ),
        data=st.data(),
    )
    def submit(self, batch: list[tuple[str, str, str, S, bool]], data: Any) -> None:
        for tenant, namespace, kind, status, share in batch:
            fields: dict[str, Any] = {}
            others = sorted(job_id for (owner, job_id) in self.jobs if owner != tenant)
            if share and others:  # the id of another tenant's job
                job_id = data.draw(st.sampled_from(others))
                if (tenant, job_id) not in self.jobs:
                    fields["id"] = job_id
            job = work.Job(
                kind=kind, tenant_id=tenant, namespace=namespace, status=status, **fields
            )
            self.store.insert(job)
            self.position += 1
            self.jobs[(tenant, job.id)] = (self.position, job)

    @precondition(lambda self: any(job.status in LIVE for _, job in self.jobs.values()))
    @rule(data=st.data(), status=st.sampled_from(S), elapsed=st.sampled_from([0.0, 1.0, 30.0]))
    def move(self, data: Any, status: S, elapsed: float) -> None:
        live = sorted(key for key, (_, job) in self.jobs.items() if job.status in LIVE)
        key = data.draw(st.sampled_from(live))
        position, job = self.jobs[key]
        if status is job.status:
            return
        self.now += elapsed
        moved = replace(job, status=status, attempt=job.attempt + 1)
        self.store.put(moved, self.now)
        self.jobs[key] = (position, moved)
        if status in TERMINAL:
            self.finished.append((self.now, key))
            self.prune()

    @rule(tenant=st.sampled_from(TENANTS), namespace=st.none() | st.sampled_from(NAMESPACES))
    def finish_all(self, tenant: str, namespace: str | None) -> None:
        """Every live job of a tenant (or of one of its namespaces) ends: once pruned, its
        leaves and coarse cells go."""
        for key, (position, job) in sorted(self.jobs.items()):
            mine = job.tenant_id == tenant and namespace in (None, job.namespace)
            if mine and job.status in LIVE:
                self.now += 1.0
                done = replace(job, status=S.CANCELED)
                self.store.put(done, self.now)
                self.jobs[key] = (position, done)
                self.finished.append((self.now, key))
                self.prune()

    @rule(elapsed=st.sampled_from([1.0, 20.0, 60.0]))
    def wait(self, elapsed: float) -> None:
        self.now += elapsed
        before = len(self.jobs)
        self.prune()
        assert self.store.prune(self.now) == before - len(self.jobs)

    @rule(
        tenant=st.sampled_from(TENANTS),
        filters=filters_strategy(),
        limit=st.integers(1, 6),
    )
    def open_listing(self, tenant: str, filters: dict[str, Any], limit: int) -> None:
        if len(self.listings) < 4:
            self.listings.append(Listing(tenant, filters, limit))

    @precondition(lambda self: bool(self.listings))
    @rule(data=st.data())
    def next_page(self, data: Any) -> None:
        listing = data.draw(st.sampled_from(self.listings))
        now_matching = {
            (key, self.jobs[key][0]) for key in self.expected(listing.tenant, listing.filters, None)
        }
        if listing.always is None:
            listing.always = now_matching
        else:
            listing.always &= now_matching
        expected = self.expected(listing.tenant, listing.filters, listing.last)
        jobs, cursor = self.store.list(
            listing.tenant, **listing.filters, limit=listing.limit, cursor=listing.cursor
        )
        keys = [(job.tenant_id, job.id) for job in jobs]
        assert keys == expected[: listing.limit]
        assert all(job is self.jobs[key][1] for key, job in zip(keys, jobs, strict=True))
        assert (cursor is None) == (len(expected) <= listing.limit)
        assert not listing.seen & set(keys), "a job listed twice"
        listing.seen.update(keys)
        if cursor is None:
            missed = {key for key, _ in listing.always} - listing.seen
            assert not missed, f"jobs that matched at every page were not listed: {missed}"
            self.listings.remove(listing)
        else:
            listing.cursor = cursor
            listing.last = self.jobs[keys[-1]][0]

    @rule(tenant=st.sampled_from(TENANTS), limit=st.integers(1, 7))
    def page_through_every_combination(self, tenant: str, limit: int) -> None:
        for namespace in (None, *NAMESPACES, "other"):
            for kind in (None, *KINDS, "other"):
                for status in (None, *S):
                    filters = {"namespace": namespace, "kind": kind, "status": status}
                    listed: list[Key] = []
                    cursor = None
                    while True:
                        jobs, cursor = self.store.list(
                            tenant, **filters, limit=limit, cursor=cursor
                        )
                        listed += [(job.tenant_id, job.id) for job in jobs]
                        if cursor is None:
                            break
                        assert len(jobs) == limit
                    assert listed == self.expected(tenant, filters, None), filters

    # ---- invariants ----------------------------------------------------------------------

    @rule()
    def read_status_keys(self) -> None:  # (which indexes the moves that wait, like a listing)
        self.check_status_keys(self.store)
        assert self.store._unindexed == {}

    @rule(count=st.integers(0, 3))
    def index_some_notes(self, count: int) -> None:  # (a slice of the memory store's reader)
        before = self.store.noted
        self.store.index_noted(count)
        assert self.store.noted == max(0, before - count)

    def check_status_keys(self, store: JobTable) -> None:
        for status in S:
            expected = {key for key, (_, job) in self.jobs.items() if job.status is status}
            assert sorted(store.keys_with_status(status)) == sorted(expected)

    # ---- invariants ----------------------------------------------------------------------

    @invariant()
    def lookups_agree(self) -> None:
        store = self.store
        assert len(store) == len(self.jobs)
        for (tenant, job_id), (_, job) in self.jobs.items():
            assert store.get(tenant, job_id) is job
            assert sorted(store.owners(job_id)) == sorted(
                owner for (owner, other) in self.jobs if other == job_id
            )
        notes, unindexed = self.store._notes, self.store._unindexed
        assert len(notes) <= memory.UNINDEXED_MAX
        assert set(unindexed) <= set(notes) & set(self.store._slot_at)

    @invariant()
    def nothing_is_kept_for_what_is_gone(self) -> None:
        # (checked on a copy with every move indexed: the store's own moves may wait)
        store = copy.deepcopy(self.store)
        self.check_status_keys(store)
        assert set(store._tenants) == {tenant for tenant, _ in self.jobs}
        assert len(store._place) == len(store._slot_at) == len(self.jobs)
        for tenant_id, tenant in store._tenants.items():
            assert tenant.leaves, "a tenant without jobs is kept"
            sizes: dict[tuple[str, str], int] = {}
            for (owner, _), (_, job) in self.jobs.items():
                if owner == tenant_id:
                    sizes[(job.namespace, job.kind)] = sizes.get((job.namespace, job.kind), 0) + 1
            assert {pair: leaf.size for pair, leaf in tenant.leaves.items()} == sizes
            for cell in chain(
                (leaf.cells[0] for leaf in tenant.leaves.values()), tenant.coarse.values()
            ):
                assert any(cell), "an empty cell is kept"
                for index in cell:
                    assert index is None or (index and all(index)), "an empty index is kept"
                    check_chunks(index or [])
            assert len(tenant.leaves) <= memory._FANOUT or (None, None) in tenant.coarse
            if tenant.kinds is not None:
                assert tenant.namespaces is not None
                assert all(tenant.kinds.values())
                assert all(tenant.namespaces.values())
                pairs = {(n, k) for n, kinds in tenant.kinds.items() for k in kinds}
                assert pairs == set(tenant.leaves)
                pairs = {(n, k) for k, namespaces in tenant.namespaces.items() for n in namespaces}
                assert pairs == set(tenant.leaves)
            else:
                assert len(tenant.leaves) <= memory._SCAN


StoreMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("STORE_MACHINE_EXAMPLES", "80")),
    stateful_step_count=60,
    report_multiple_bugs=False,
    phases=phases("STORE_MACHINE_SHRINK"),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
TestStoreMachine = StoreMachine.TestCase


class WiderStoreMachine(StoreMachine):
    fanout = 2
    scan = 3  # found by a scan of the leaves up to 3, kept past it
    unindexed_max = 2  # moves are indexed past 2 waiting too, between listings


WiderStoreMachine.TestCase.settings = StoreMachine.TestCase.settings
TestWiderStoreMachine = WiderStoreMachine.TestCase


# ---- the ordered index alone --------------------------------------------------------------------


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # the same LOAD for all
)
@given(
    ops=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 400)), min_size=20, max_size=400),
    pages=st.lists(st.tuples(st.none() | st.integers(0, 410), st.integers(1, 40)), max_size=8),
)
def test_the_index_is_a_sorted_set(
    ops: list[tuple[int, int]], pages: list[tuple[int | None, int]]
) -> None:
    """Random adds and removes (of present seqs) against a set: the chunks stay sorted and
    within their sizes, and a page is the largest ``count`` seqs below ``before``."""
    index: ordered_index.Index = []
    model: set[int] = set()
    for op, seq in ops:
        if op < 3:  # three adds for one removal: the index grows and shrinks
            if seq not in model:
                ordered_index.index_add(index, seq)
                model.add(seq)
        elif model:
            seq = sorted(model)[seq % len(model)]
            ordered_index.index_remove(index, seq)
            model.discard(seq)
        assert list(chain.from_iterable(index)) == sorted(model)
        check_chunks(index)
    for before, count in pages:
        expected = sorted((s for s in model if before is None or s < before), reverse=True)
        assert ordered_index.index_page(index, before, count) == expected[:count]


def check_chunks(index: ordered_index.Index) -> None:
    """An index's chunks are non-empty, sorted, in order, and within their sizes."""
    load = ordered_index.LOAD
    assert all(index), "an empty chunk"
    assert all(chunk == sorted(chunk) for chunk in index)
    assert all(a[-1] < b[0] for a, b in pairwise(index))
    assert all(len(chunk) <= 2 * load for chunk in index), "a chunk past 2 * LOAD"
    if len(index) > 1:
        assert all(len(chunk) >= load // 2 for chunk in index), "a chunk below LOAD // 2"


def test_a_merge_past_the_largest_chunk_splits_again() -> None:
    """A chunk left below ``LOAD // 2`` next to a full one: merged, then split in two."""
    index = [list(range(1, 9)), [9, 10]]  # LOAD = 4: a full chunk of 8 and one of 2
    ordered_index.index_remove(index, 10)
    assert index == [[1, 2, 3, 4], [5, 6, 7, 8, 9]]
    ordered_index.index_remove(index, 1)
    ordered_index.index_remove(index, 2)
    ordered_index.index_remove(index, 3)  # [4] and [5..9]: merged, 6 fit in one chunk
    assert index == [[4, 5, 6, 7, 8, 9]]

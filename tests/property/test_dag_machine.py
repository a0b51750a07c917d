"""Dependencies in the core, on random DAGs of up to 1,000 nodes (issue 15's acceptance).

Each example builds a DAG (each node depends on a few earlier ones), picks the nodes whose run
fails and what each node lets fail (``allow_failure``: none, all, or some of its
dependencies), submits it in batches in topological order (shuffled within a batch: a job may
come before its dependency in the batch), and drives a ``SchedulingCore`` with a few slots,
ending runs in a random order. At random points the core is rebuilt by ``Restore`` from its
live jobs, its exported state and how the ended dependencies of pending jobs ended (some left
out, as a store that pruned them would), and the restored core goes on.

What must hold, against a model computed from the DAG alone:

- every node that should run runs exactly once, after all its dependencies ended (those it does
  not allow to fail: succeeded); no other node runs;
- a failure cancels exactly the descendants that do not allow it, each with
  ``dependency_failed: <id> (<status>)`` naming one of its dependencies that ended that way;
- every job ends, and the core keeps nothing about dependencies afterwards.
"""

from __future__ import annotations

import os
import random
from typing import Any

import msgspec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nsai_work._ir import TERMINAL_STATUSES, Constraints, Job, JobError, Pool, RetryPolicy, Status
from nsai_work.core import (
    CoreState,
    Decision,
    Dispatch,
    Failed,
    Record,
    Restore,
    RunEnded,
    SchedulingCore,
    Submit,
    Succeeded,
)

ROUTE = (("b", ("p",)),)
ONCE = RetryPolicy(max_attempts=1)
WALL = 1_700_000_000.0


class Dag:
    """A random DAG and what each node does (see the module docstring)."""

    def __init__(self, size: int, seed: int, fan_in: int, fail_rate: float) -> None:
        rng = random.Random(seed)
        self.rng = rng
        self.ids = [f"n{i}" for i in range(size)]
        self.deps: list[tuple[str, ...]] = []
        self.allow: list[bool | tuple[str, ...]] = []
        for i in range(size):
            count = rng.randint(0, min(i, fan_in))
            deps = tuple(self.ids[j] for j in sorted(rng.sample(range(i), count)))
            self.deps.append(deps)
            roll = rng.random()
            if not deps or roll < 0.7:
                allow: bool | tuple[str, ...] = False
            elif roll < 0.8:
                allow = True
            else:
                allow = tuple(d for d in deps if rng.random() < 0.5)
            self.allow.append(allow)
        self.fails = {node for node in self.ids if rng.random() < fail_rate}
        self.index = {node: i for i, node in enumerate(self.ids)}

    def job(self, i: int) -> Job:
        constraints = Constraints(
            retry_policy=ONCE, depends_on=self.deps[i], allow_failure=self.allow[i]
        )
        return Job(kind="k", tenant_id="t", id=self.ids[i], constraints=constraints)

    def allows(self, i: int, dep: str) -> bool:
        allow = self.allow[i]
        return allow is True or (isinstance(allow, tuple) and dep in allow)

    def expected(self) -> dict[str, Status]:
        """Each node's end: canceled if a dependency it does not allow to fail did not
        succeed; else failed or succeeded as it runs."""
        ends: dict[str, Status] = {}
        for i, node in enumerate(self.ids):
            blocked = any(
                ends[d] is not Status.SUCCEEDED and not self.allows(i, d) for d in self.deps[i]
            )
            if blocked:
                ends[node] = Status.CANCELED
            else:
                ends[node] = Status.FAILED if node in self.fails else Status.SUCCEEDED
        return ends


class Driver:
    """Feeds a core the DAG and the ends of its runs; records what happened."""

    def __init__(self, dag: Dag, slots: int) -> None:
        self.dag = dag
        self.slots = slots
        self.core = self.new_core()
        self.now = 0.0
        self.running: list[tuple[str, int]] = []
        self.runs: dict[str, int] = {}
        self.ends: dict[str, Job] = {}
        self.restores = 0

    def new_core(self) -> SchedulingCore:
        return SchedulingCore(
            pools={"b": [Pool(name="p", slots=self.slots)]},
            rand=lambda: 0.5,
            tenant_idle_ttl_s=None,
        )

    def feed(self, event: Any) -> list[Decision]:
        self.now += 0.25
        decisions = self.core.handle(event, self.now, WALL + self.now)
        self.take(decisions)
        return decisions

    def take(self, decisions: list[Decision]) -> None:
        for d in decisions:
            if isinstance(d, Dispatch):
                job = d.job
                for dep in job.constraints.depends_on:  # its dependencies have ended
                    assert dep in self.ends, f"{job.id} started before {dep} ended"
                    i = self.dag.index[job.id]
                    if not self.dag.allows(i, dep):
                        assert self.ends[dep].status is Status.SUCCEEDED, (job.id, dep)
                self.runs[job.id] = self.runs.get(job.id, 0) + 1
                self.running.append((job.id, job.attempt))
            elif isinstance(d, Record) and d.job.status in TERMINAL_STATUSES:
                assert d.job.id not in self.ends, f"{d.job.id} ended twice"
                self.ends[d.job.id] = d.job

    def end_one(self, pick: int) -> None:
        job_id, attempt = self.running.pop(pick % len(self.running))
        if job_id in self.dag.fails:
            error = JobError(type="Boom", message="failed on purpose", attempt=attempt)
            outcome: Any = Failed(error, retryable=False)
        else:
            outcome = Succeeded({"from": job_id})
        self.feed(RunEnded("t", job_id, attempt, outcome))

    def restore(self, prune: random.Random) -> None:
        """Rebuild the core from what a store would keep (through JSON, as a store would)."""
        old = self.core
        state = msgspec.json.decode(
            msgspec.json.encode(old.export_state(self.now, WALL + self.now)), type=CoreState
        )
        jobs = tuple(
            msgspec.json.decode(msgspec.json.encode(job), type=Job)
            for job in old.live_jobs_in_order()
        )
        live = {job.id for job in jobs}
        finished = []
        for job in jobs:
            if job.status is Status.PENDING:
                for dep in job.constraints.depends_on:
                    if dep not in live and dep in self.ends:
                        ended = self.ends[dep].status
                        # a store may have pruned a dependency that released its dependents
                        if ended is Status.SUCCEEDED and prune.random() < 0.3:
                            continue
                        finished.append(("t", dep, ended))
        self.core = self.new_core()
        restore = Restore(
            jobs, (ROUTE,) * len(jobs), (), state, None, tuple(dict.fromkeys(finished))
        )
        self.take(self.core.handle(restore, self.now, WALL + self.now))
        self.restores += 1


def run_dag(dag: Dag, slots: int, batches: int, restores: int) -> Driver:
    rng = dag.rng
    driver = Driver(dag, slots)
    size = len(dag.ids)
    cuts = sorted(rng.sample(range(1, size), min(batches - 1, size - 1))) if size > 1 else []
    bounds = list(zip([0, *cuts], [*cuts, size], strict=True))
    restore_at = set(rng.sample(range(size), min(restores, size)))
    step = 0
    for low, high in bounds:
        batch = [dag.job(i) for i in range(low, high)]
        rng.shuffle(batch)
        # (the engine tells how dependencies that left the core ended, as its store says)
        ended = {
            ("t", dep, driver.ends[dep].status)
            for job in batch
            for dep in job.constraints.depends_on
            if dep in driver.ends
        }
        submit = Submit(tuple(batch), (ROUTE,) * len(batch), (), tuple(sorted(ended)))
        decisions = driver.feed(submit)
        assert not any(type(d).__name__ == "Reject" for d in decisions), decisions
        for _ in range(rng.randint(0, 3)):
            if driver.running:
                driver.end_one(rng.randrange(1 << 30))
    while driver.running:
        if step in restore_at:
            driver.restore(rng)
        step += 1
        driver.end_one(rng.randrange(1 << 30))
    return driver


def check(dag: Dag, driver: Driver) -> None:
    expected = dag.expected()
    core = driver.core
    assert core.live_jobs == 0, [e.job for e in core.live_entries()]
    assert core._waits.waiters == {}
    assert core._waits.dependents == {}
    assert {node: job.status for node, job in driver.ends.items()} == expected
    for i, node in enumerate(dag.ids):
        ran = driver.runs.get(node, 0)
        assert ran == (0 if expected[node] is Status.CANCELED else 1), (node, ran)
        if expected[node] is Status.CANCELED:
            reason = driver.ends[node].cancel_reason or ""
            assert reason.startswith("dependency_failed: "), reason
            dep, _, status = reason.removeprefix("dependency_failed: ").partition(" ")
            assert dep in dag.deps[i], (node, reason)
            assert not dag.allows(i, dep), (node, reason)
            assert status == f"({expected[dep].value})", (node, reason)
            assert expected[dep] is not Status.SUCCEEDED


EXAMPLES = int(os.environ.get("DAG_EXAMPLES", "150"))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@example(size=1000, seed=1, fan_in=4, fail_rate=0.02, slots=8, batches=3, restores=3)
@example(size=1000, seed=2, fan_in=2, fail_rate=0.1, slots=1, batches=1, restores=1)
@given(
    size=st.one_of(st.integers(1, 60), st.integers(200, 1000)),
    seed=st.integers(0, 2**32),
    fan_in=st.integers(1, 4),
    fail_rate=st.sampled_from([0.0, 0.02, 0.1, 0.3]),
    slots=st.integers(1, 16),
    batches=st.integers(1, 5),
    restores=st.integers(0, 3),
)
def test_random_dags_run_each_node_once_in_order_and_cancel_exactly_the_descendants(
    size: int, seed: int, fan_in: int, fail_rate: float, slots: int, batches: int, restores: int
) -> None:
    dag = Dag(size, seed, fan_in, fail_rate)
    driver = run_dag(dag, slots, batches, restores)
    check(dag, driver)

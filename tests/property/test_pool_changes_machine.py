"""A hypothesis state machine over pools that come and go while jobs wait and run.

Random submits, run ends, cancels, pool removals and returns (with and without a grace period),
and a backend going away and coming back. After every step: each pool (removed ones too) holds
exactly what the runs the engine has not reported ended hold on it (capacity given back exactly
once), nothing is dispatched to a removed or offline pool, a removed pool's run was failed with
``BackendLostError`` in the same step, the waiting reasons say why, and every job has at most
one terminal Record. At the end (pools back, runs ended, timers fired) every job is terminal
exactly once and every pool is empty.
"""

from __future__ import annotations

import os
import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from nsai_work._ir import TERMINAL_STATUSES, JobError, Pool, RetryPolicy, Status
from nsai_work.core import (
    ArmTimer,
    BackendAvailability,
    Cancel,
    Decision,
    Dispatch,
    Event,
    Failed,
    PoolsChanged,
    Record,
    RunEnded,
    SchedulingCore,
    StopRun,
    Submit,
    Succeeded,
    TimerFired,
)
from tests._core_builders import make_job, route
from tests.property._machines import milli, phases, step

BACKEND = "ray"
SPECS = {
    "n1": Pool(name="n1", slots=2, cpu=2.0),
    "n2": Pool(name="n2", slots=2, cpu=4.0, gpus={"A100": 1}),
    "n3": Pool(name="n3", slots=1, cpu=1.0),
}
RETRY = RetryPolicy(max_attempts=2, base_delay_ms=0, jitter=False)


class PoolChangesMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.core = SchedulingCore(
            pools={BACKEND: list(SPECS.values())}, rand=random.Random(1).random
        )
        self.now = 0.0
        self.present = set(SPECS)  # pools the backend offers now
        self.available = True
        self.runs: dict[tuple[str, int], tuple[str, float]] = {}  # (job, attempt) -> pool, cpu
        self.stopping: set[tuple[str, int]] = set()  # runs told to stop, not ended yet
        self.status: dict[str, Status] = {}
        self.terminal: dict[str, int] = {}
        self.timers: list[tuple[float, tuple[str, str, str, int]]] = []
        self.next_id = 0
        self.clean = True

    # -- feeding the core ----------------------------------------------------------------

    def feed(self, event: Event) -> list[Decision]:
        before = {key for key in self.runs if key not in self.stopping}
        decisions = self.core.handle(event, self.now, self.now)
        stopped: set[tuple[str, int]] = set()
        for d in decisions:
            if isinstance(d, Dispatch):
                job = d.job
                assert d.pool in self.present, f"{job.id} to {d.pool}, not {sorted(self.present)}"
                assert self.available, f"{job.id} dispatched while the backend is unavailable"
                self.runs[(job.id, job.attempt)] = (d.pool, job.resources.cpu or 0.0)
                self.status[job.id] = Status.RUNNING
            elif isinstance(d, Record):
                job = d.job
                self.status[job.id] = job.status
                if job.status in TERMINAL_STATUSES:
                    self.terminal[job.id] = self.terminal.get(job.id, 0) + 1
                    assert self.terminal[job.id] == 1, f"{job.id}: a second terminal Record"
            elif isinstance(d, ArmTimer):
                self.timers.append((d.at, d.key))
            elif isinstance(d, StopRun):
                stopped.add((d.job_id, d.attempt))
                self.stopping.add((d.job_id, d.attempt))
        if type(event) is PoolsChanged or type(event) is BackendAvailability:
            lost = {
                key for key in before if self.runs[key][0] not in self.present or not self.available
            }
            for key in lost:  # the connection-loss rule, in the same step
                assert key in stopped, f"run {key} on a lost pool was not told to stop"
                attempts = [
                    d.job.attempts[-2 if d.job.status is Status.RUNNING else -1]
                    for d in decisions
                    if isinstance(d, Record | Dispatch) and d.job.id == key[0]
                ]
                assert any(
                    a.error is not None and a.error.type == "BackendLostError" for a in attempts
                ), f"run {key} lost without BackendLostError"
        return decisions

    def end(self, key: tuple[str, int], ok: bool) -> None:
        del self.runs[key]
        self.stopping.discard(key)
        outcome = Succeeded(None) if ok else Failed(_error(key[1]))
        self.feed(RunEnded("acme", key[0], key[1], outcome))

    # -- rules -----------------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        self.clean = True

    @rule(
        cpu=st.sampled_from([None, 1.0, 2.0, 4.0]),
        gpu=st.booleans(),
        timeout=st.sampled_from([None, 500]),
    )
    @step
    def submit(self, cpu: float | None, gpu: bool, timeout: int | None) -> None:
        self.next_id += 1
        job = make_job(
            f"j{self.next_id}",
            cpu=cpu,
            gpu="A100" if gpu else None,
            gpu_count=1 if gpu else 0,
            timeout_ms=timeout,
            policy=RETRY,
        )
        names = tuple(name for name in SPECS if name in self.present)
        decisions = self.feed(Submit((job,), (route(BACKEND, *names),)))
        if any(isinstance(d, Record) and d.previous is None for d in decisions):
            self.status.setdefault(job.id, Status.QUEUED)

    @precondition(lambda self: bool(self.runs))
    @rule(pick=st.integers(0, 1000), ok=st.booleans())
    @step
    def end_run(self, pick: int, ok: bool) -> None:
        keys = sorted(self.runs)
        self.end(keys[pick % len(keys)], ok)

    @precondition(lambda self: bool(self.status))
    @rule(pick=st.integers(0, 1000))
    @step
    def cancel(self, pick: int) -> None:
        ids = sorted(self.status)
        self.feed(Cancel("acme", ids[pick % len(ids)]))

    @precondition(lambda self: bool(self.present))
    @rule(pick=st.integers(0, 10), grace=st.sampled_from([None, 0.0, 1.0]))
    @step
    def remove_pool(self, pick: int, grace: float | None) -> None:
        names = sorted(self.present)
        name = names[pick % len(names)]
        self.present.discard(name)
        self.feed(PoolsChanged(BACKEND, (), (name,), grace))

    @precondition(lambda self: len(self.present) < len(SPECS))
    @rule(pick=st.integers(0, 10))
    @step
    def add_pool(self, pick: int) -> None:
        names = sorted(set(SPECS) - self.present)
        name = names[pick % len(names)]
        self.present.add(name)
        self.feed(PoolsChanged(BACKEND, (SPECS[name],)))

    @rule(available=st.booleans())
    @step
    def availability(self, available: bool) -> None:
        self.available = available
        self.feed(BackendAvailability(BACKEND, available, "test"))

    @precondition(lambda self: bool(self.timers))
    @rule()
    @step
    def fire_timer(self) -> None:
        self.timers.sort()
        at, key = self.timers.pop(0)
        self.now = max(self.now, at)
        self.feed(TimerFired(key))

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def capacity_matches_runs(self) -> None:
        """Each pool, removed ones too, holds exactly what its unreported runs hold."""
        pools = {**self.core._gone, **self.core.pool_states()}
        for name, pool in pools.items():
            held = [cpu for (pool_name, cpu) in self.runs.values() if pool_name == name]
            assert pool.used_slots == len(held), f"{name}: {pool.used_slots} slots, runs {held}"
            assert pool.used_cpu == sum(milli(c) for c in held), f"{name}: cpu {pool.used_cpu}"
            if name in self.present:
                assert pool.within_capacity(), f"{name} over capacity"
        assert self.core.active_runs == len(self.runs)

    @invariant()
    def reasons_say_why(self) -> None:
        for entry in self.core.live_entries():
            if entry.status is not Status.QUEUED:
                continue
            reason = self.core.waiting_reason(entry.tenant, entry.job.id)
            assert reason is not None
            if not entry.group:
                assert reason.startswith(("pool_removed:", "no_pool")), reason
            elif not self.available:
                assert reason == "backend_unavailable", reason
            for _, pool in entry.placement:
                assert pool.name in self.present, f"{entry.job.id} placed on gone {pool.name}"

    def teardown(self) -> None:
        if not self.clean:
            return
        if not self.available:
            self.available = True
            self.feed(BackendAvailability(BACKEND, True))
        missing = tuple(SPECS[name] for name in SPECS if name not in self.present)
        self.present = set(SPECS)
        if missing:
            self.feed(PoolsChanged(BACKEND, missing))
        for _ in range(10_000):
            if self.runs:
                self.end(sorted(self.runs)[0], True)
            elif self.timers:
                self.fire_timer.__wrapped__(self)  # type: ignore[attr-defined]
            else:
                break
        for job_id, status in self.status.items():
            if status not in TERMINAL_STATUSES:  # only stranded jobs without a grace remain
                self.feed(Cancel("acme", job_id))
        for job_id, status in self.status.items():
            assert status in TERMINAL_STATUSES, f"{job_id} never ended: {status}"
            assert self.terminal.get(job_id) == 1, f"{job_id}: {self.terminal.get(job_id)}"
        for name, pool in {**self.core._gone, **self.core.pool_states()}.items():
            assert pool.used_slots == 0, f"{name} still holds slots"
            assert pool.used_cpu == 0, f"{name} still holds cpu"
        assert self.core.live_jobs == 0


def _error(attempt: int) -> JobError:
    return JobError(type="RuntimeError", message="boom", attempt=attempt)


PoolChangesMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("POOL_MACHINE_EXAMPLES", "150")),
    stateful_step_count=40,
    deadline=None,
    phases=phases("POOL_MACHINE_SHRINK"),
)
TestPoolChangesMachine = PoolChangesMachine.TestCase

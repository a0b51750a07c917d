"""Waits before a job's first run, in the pure core: dependencies (``depends_on``,
``allow_failure``), ``run_at``/``schedule_in_s`` and deadlines, at submit, on events and
through a ``Restore``. The random-DAG properties are in tests/property/test_dag_machine.py."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import pytest

from nsai_work import Constraints, Job, Pool, RetryPolicy, ValidationError
from nsai_work._ir import JobError, Status
from nsai_work.core import (
    ArmTimer,
    Cancel,
    CoreState,
    Decision,
    DisarmTimer,
    Dispatch,
    Failed,
    Record,
    Reject,
    Restore,
    RunEnded,
    SchedulingCore,
    Submit,
    Succeeded,
    TimerFired,
)

W = 1_700_000_000.0  # the wall clock runs this far ahead of the monotonic one
ROUTE = (("b", ("p",)),)
ONCE = RetryPolicy(max_attempts=1)


def core(slots: int = 4) -> SchedulingCore:
    return SchedulingCore(pools={"b": [Pool(name="p", slots=slots)]}, rand=lambda: 0.5)


def job(job_id: str, *deps: str, tenant: str = "t", **constraints: Any) -> Job:
    return Job(
        kind="k",
        tenant_id=tenant,
        id=job_id,
        constraints=Constraints(retry_policy=ONCE, depends_on=deps, **constraints),
    )


def submit(c: SchedulingCore, now: float, *jobs: Job, finished: Any = ()) -> list[Decision]:
    return c.handle(Submit(jobs, (ROUTE,) * len(jobs), (), tuple(finished)), now, W + now)


def end(c: SchedulingCore, now: float, job_id: str, ok: bool = True) -> list[Decision]:
    outcome: Any = (
        Succeeded(job_id)
        if ok
        else Failed(JobError(type="E", message="no", attempt=1), retryable=False)
    )
    return c.handle(RunEnded("t", job_id, 1, outcome), now, W + now)


def dispatched(decisions: list[Decision]) -> list[str]:
    return [d.job.id for d in decisions if isinstance(d, Dispatch)]


def ended(decisions: list[Decision]) -> dict[str, tuple[Status, str | None]]:
    return {
        d.job.id: (d.job.status, d.job.cancel_reason)
        for d in decisions
        if isinstance(d, Record) and d.job.is_terminal
    }


def at(seconds: float) -> dt.datetime:
    """The wall-clock datetime of monotonic instant ``seconds``."""
    return dt.datetime.fromtimestamp(W + seconds, dt.UTC)


# ---- dependencies ----------------------------------------------------------------------------


def test_a_diamond_runs_its_join_once_after_both_branches() -> None:
    c = core()
    first = submit(c, 0, job("d", "b", "c"), job("b", "a"), job("c", "a"), job("a"))
    assert dispatched(first) == ["a"]
    assert c.get("t", "d").status is Status.PENDING  # type: ignore[union-attr]
    assert c.waiting_reason("t", "d") == "dependencies: b, c"
    assert c.stats().waiting_reasons == {"dependencies": 3}
    assert sorted(dispatched(end(c, 1, "a"))) == ["b", "c"]
    assert dispatched(end(c, 2, "b")) == []
    assert c.waiting_reason("t", "d") == "dependencies: c"
    assert dispatched(end(c, 3, "c")) == ["d"]
    end(c, 4, "d")
    assert c.live_jobs == 0
    assert not c._waits.dependents
    assert not c._waits.waiters


def test_a_failure_cancels_the_descendants_transitively_with_the_reason() -> None:
    c = core()
    submit(c, 0, job("a"), job("b", "a"), job("c", "b"), job("d", "c"), job("x"))
    ends = ended(end(c, 1, "a", ok=False))
    assert ends == {
        "a": (Status.FAILED, None),
        "b": (Status.CANCELED, "dependency_failed: a (failed)"),
        "c": (Status.CANCELED, "dependency_failed: b (canceled)"),
        "d": (Status.CANCELED, "dependency_failed: c (canceled)"),
    }
    assert c.get("t", "x").status is Status.RUNNING  # type: ignore[union-attr]


def test_allow_failure_lets_a_step_run_after_a_failed_dependency() -> None:
    c = core()
    submit(
        c,
        0,
        job("a"),
        job("b"),
        job("all", "a", "b", allow_failure=True),
        job("some", "a", "b", allow_failure=("a",)),
        job("none", "a", "b"),
    )
    decisions = end(c, 1, "a", ok=False)
    assert ended(decisions)["none"] == (Status.CANCELED, "dependency_failed: a (failed)")
    assert "some" not in ended(decisions)
    assert sorted(dispatched(end(c, 2, "b"))) == ["all", "some"]


def test_a_long_chain_cancels_without_recursion() -> None:
    c = core()
    chain = [job("n0")] + [job(f"n{i}", f"n{i - 1}") for i in range(1, 5000)]
    submit(c, 0, *chain)
    ends = ended(end(c, 1, "n0", ok=False))
    assert len(ends) == 5000
    assert ends["n4999"] == (Status.CANCELED, "dependency_failed: n4998 (canceled)")


def test_depending_on_an_ended_job_uses_how_it_ended() -> None:
    c = core()
    decisions = submit(
        c,
        0,
        job("ok", "old-ok"),
        job("dead", "old-bad"),
        job("brave", "old-bad", allow_failure=True),
        finished=[("t", "old-ok", Status.SUCCEEDED), ("t", "old-bad", Status.TIMEOUT)],
    )
    assert sorted(dispatched(decisions)) == ["brave", "ok"]
    assert ended(decisions) == {"dead": (Status.CANCELED, "dependency_failed: old-bad (timeout)")}


def test_unknown_and_other_tenants_dependencies_get_the_same_answer() -> None:
    c = core()
    submit(c, 0, job("mine", tenant="other"))
    answers = []
    for dep in ("mine", "never"):
        decisions = submit(c, 1, job("x"), job("y", dep))
        assert len(decisions) == 1
        assert isinstance(decisions[0], Reject)
        error = decisions[0].error
        assert isinstance(error, ValidationError)
        assert decisions[0].index == 1
        assert error.path == "$.constraints.depends_on[0]"
        answers.append(str(error).replace(repr(dep), "<id>"))
    assert answers[0] == answers[1]
    assert c.get("t", "x") is None  # all or nothing


def test_a_cycle_in_a_batch_is_refused_naming_it() -> None:
    c = core()
    decisions = submit(c, 0, job("ok"), job("a", "c"), job("b", "a"), job("c", "b"))
    reject = decisions[0]
    assert isinstance(reject, Reject)
    assert reject.index == 1
    assert "dependency cycle: a -> c -> b -> a" in str(reject.error)
    assert c.live_jobs == 0


def test_canceling_a_waiting_job_cancels_its_dependents_and_releases_nothing() -> None:
    c = core(slots=1)
    submit(c, 0, job("a"), job("b", "a"), job("c", "b"))
    decisions = c.handle(Cancel("t", "b"), 1, W + 1)
    assert ended(decisions) == {
        "b": (Status.CANCELED, "requested"),
        "c": (Status.CANCELED, "dependency_failed: b (canceled)"),
    }
    end(c, 2, "a")
    assert c.live_jobs == 0
    assert not c._waits.dependents
    assert not c._waits.waiters


# ---- run_at, schedule_in_s, deadline ---------------------------------------------------------


def test_run_at_keeps_a_job_pending_until_its_timer() -> None:
    c = core()
    decisions = submit(c, 0, job("later", run_at=at(10)))
    assert dispatched(decisions) == []
    assert c.waiting_reason("t", "later") == "scheduled"
    timers = [d for d in decisions if isinstance(d, ArmTimer) and d.key[0] == "run_at"]
    assert timers == [ArmTimer(10.0, ("run_at", "t", "later", 0))]
    assert dispatched(c.handle(TimerFired(("run_at", "t", "later", 0)), 10, W + 10)) == ["later"]


def test_schedule_in_becomes_run_at_at_submit() -> None:
    c = core()
    submit(c, 5, job("soon", schedule_in_s=2.5))
    stored = c.get("t", "soon")
    assert stored is not None
    assert stored.constraints.run_at == at(7.5)
    assert stored.constraints.schedule_in_s is None


def test_a_run_at_in_the_past_queues_at_once() -> None:
    c = core()
    assert dispatched(submit(c, 5, job("past", run_at=at(1)))) == ["past"]


def test_dependencies_then_run_at() -> None:
    c = core()
    submit(c, 0, job("a"), job("b", "a", run_at=at(10)))
    decisions = end(c, 1, "a")
    assert dispatched(decisions) == []
    assert c.waiting_reason("t", "b") == "scheduled"
    assert dispatched(c.handle(TimerFired(("run_at", "t", "b", 0)), 10, W + 10)) == ["b"]


def test_a_deadline_cancels_a_job_that_has_not_started() -> None:
    c = core(slots=1)
    submit(c, 0, job("busy"), job("late", deadline=at(3)))
    decisions = c.handle(TimerFired(("deadline", "t", "late", 0)), 3, W + 3)
    assert ended(decisions) == {"late": (Status.CANCELED, "deadline_exceeded")}


def test_a_deadline_does_not_bound_a_running_job() -> None:
    c = core()
    decisions = submit(c, 0, job("runs", deadline=at(3)))
    assert dispatched(decisions) == ["runs"]
    assert DisarmTimer(("deadline", "t", "runs", 0)) in decisions
    assert c.handle(TimerFired(("deadline", "t", "runs", 0)), 3, W + 3) == []
    assert c.get("t", "runs").status is Status.RUNNING  # type: ignore[union-attr]


# ---- restore ---------------------------------------------------------------------------------


def restored(c: SchedulingCore, now: float, finished: Any = ()) -> tuple[SchedulingCore, Any]:
    state = msgspec.json.decode(msgspec.json.encode(c.export_state(now, W + now)), type=CoreState)
    jobs = tuple(
        msgspec.json.decode(msgspec.json.encode(j), type=Job) for j in c.live_jobs_in_order()
    )
    fresh = core()
    restore = Restore(jobs, (ROUTE,) * len(jobs), (), state, "engine_lost", tuple(finished))
    return fresh, fresh.handle(restore, now, W + now)


def test_restore_releases_a_job_whose_dependency_succeeded_while_down() -> None:
    c = core()
    submit(c, 0, job("a"), job("b", "a"), job("c", "b"))
    # the store has "a" succeeded, and "b" still pending (as if the two were not committed
    # together); the restored core releases "b" and keeps "c" waiting for it
    live = [j for j in c.live_jobs_in_order() if j.id != "a"]
    fresh = core()
    jobs = tuple(live)
    decisions = fresh.handle(
        Restore(jobs, (ROUTE,) * 2, (), None, "engine_lost", (("t", "a", Status.SUCCEEDED),)),
        1,
        W + 1,
    )
    assert dispatched(decisions) == ["b"]
    assert fresh.waiting_reason("t", "c") == "dependencies: b"


def test_restore_cancels_the_dependents_of_a_dependency_that_failed_while_down() -> None:
    c = core()
    submit(c, 0, job("a"), job("b", "a"), job("c", "b"))
    jobs = tuple(j for j in c.live_jobs_in_order() if j.id != "a")
    fresh = core()
    finished = (("t", "a", Status.FAILED),)
    decisions = fresh.handle(
        Restore(jobs, (ROUTE,) * 2, (), None, "engine_lost", finished), 1, W + 1
    )
    assert ended(decisions) == {
        "b": (Status.CANCELED, "dependency_failed: a (failed)"),
        "c": (Status.CANCELED, "dependency_failed: b (canceled)"),
    }


def test_restore_fails_a_lost_run_and_cancels_its_dependents() -> None:
    c = core()
    submit(c, 0, job("a"), job("b", "a"))
    _fresh, decisions = restored(c, 1)
    assert ended(decisions) == {
        "a": (Status.FAILED, None),
        "b": (Status.CANCELED, "dependency_failed: a (failed)"),
    }


def test_restore_counts_a_pruned_dependency_as_met() -> None:
    c = core()
    submit(c, 0, job("a"), job("z"), job("b", "a", "z"))
    end(c, 1, "a")
    jobs = tuple(j for j in c.live_jobs_in_order())
    assert [j.id for j in jobs] == ["z", "b"]
    fresh = core()
    decisions = fresh.handle(Restore(jobs, (ROUTE,) * 2, (), None, None), 2, W + 2)
    assert fresh.waiting_reason("t", "b") == "dependencies: z"
    assert dispatched(decisions) == []


@pytest.mark.parametrize("when", [5.0, 20.0])
def test_restore_keeps_run_at_and_deadline(when: float) -> None:
    c = core(slots=1)
    submit(c, 0, job("busy"), job("later", run_at=at(10)), job("bounded", deadline=at(15)))
    fresh, decisions = restored(c, when)
    timers = {d.key[0]: d.at for d in decisions if isinstance(d, ArmTimer) and d.key[2] != "busy"}
    if when < 10:
        assert timers["run_at"] == 10.0
        assert timers["deadline"] == 15.0
        assert fresh.waiting_reason("t", "later") == "scheduled"
    else:  # run_at passed while down: queued now; the deadline fires at once
        assert "run_at" not in timers
        assert timers["deadline"] == 15.0
        queued = [d.job.id for d in decisions if isinstance(d, Record)]
        assert "later" in queued

"""Admission, routing, strict priority, cancellation, waiting reasons and counters of the pure
core."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import pytest

from nsai_work._errors import ConflictError, QueueFullError, UnschedulableError
from nsai_work._ir import JobError, Pool, Priority, RetryPolicy, Status
from nsai_work._stats import Counts, Stats
from nsai_work.core import (
    ArmTimer,
    Cancel,
    DisarmTimer,
    Dispatch,
    Failed,
    Record,
    Reject,
    StopRun,
    Succeeded,
)
from tests._core_builders import (
    Driver,
    dispatched_ids,
    key_of,
    make_job,
    of_type,
    records_of,
    route,
)

GPU_POOLS = {
    "b1": [
        Pool(name="small", slots=4, cpu=4.0, memory_mb=8192),
        Pool(name="big", slots=2, cpu=8.0, memory_mb=32768, gpus={"A100": 2}),
    ]
}
BOTH = route("b1", "small", "big")
ONE_SLOT = {"b1": [Pool(name="p1", slots=1)]}
P1 = route("b1", "p1")


def only_reject(decisions: Sequence[object]) -> Reject:
    assert len(decisions) == 1, (
        f"a rejected submit decides one Reject and nothing else: {decisions}"
    )
    (reject,) = decisions
    assert isinstance(reject, Reject)
    return reject


# ---- can it ever run? ------------------------------------------------------------------------


def test_more_cpu_than_any_pool_is_unschedulable_naming_cpu_and_the_offer() -> None:
    d = Driver(GPU_POOLS)
    reject = only_reject(d.submit([make_job("j", cpu=16.0)], BOTH))
    assert isinstance(reject.error, UnschedulableError)
    assert reject.index == 0
    message = str(reject.error)
    assert "$.resources.cpu" in message
    assert "16" in message  # what was asked
    assert "the largest offer is 8.0 (pool big)" in message
    assert d.core.live_jobs == 0


def test_a_gpu_type_no_pool_has_is_unschedulable_naming_gpu_and_the_offer() -> None:
    d = Driver(GPU_POOLS)
    reject = only_reject(d.submit([make_job("j", gpu="H100")], BOTH))
    assert isinstance(reject.error, UnschedulableError)
    message = str(reject.error)
    assert "$.resources.gpu" in message
    assert "H100" in message
    assert "the largest offer is 2 x A100 (pool big)" in message


def test_more_memory_than_any_pool_names_memory() -> None:
    d = Driver(GPU_POOLS)
    reject = only_reject(d.submit([make_job("j", memory_mb=65536)], BOTH))
    assert isinstance(reject.error, UnschedulableError)
    assert "$.resources.memory_mb" in str(reject.error)
    assert "32768" in str(reject.error)


def test_a_job_fits_when_one_pool_of_the_route_could_hold_it() -> None:
    d = Driver(GPU_POOLS)
    out = d.submit([make_job("j", cpu=6.0, gpu="A100", gpu_count=2)], BOTH)
    (dispatch,) = of_type(out, Dispatch)
    assert dispatch.pool == "big"


# ---- all or nothing --------------------------------------------------------------------------


def counts(c: Counts) -> Counts:
    """The status counts of a Counts or of a TenantStats (which extends it)."""
    return Counts(**{name: getattr(c, name) for name in Counts.__struct_fields__})


def without_rejected(stats: Stats) -> dict[str, object]:
    """The stats with every rejected count zeroed, and tenants that only had rejects dropped."""

    def clean(c: Counts) -> Counts:
        return msgspec.structs.replace(counts(c), rejected=0)

    return {
        "totals": clean(stats.totals),
        "by_priority": {k: clean(v) for k, v in stats.by_priority.items()},
        "by_tenant": {k: clean(v) for k, v in stats.by_tenant.items() if clean(v) != Counts()},
        "by_backend": {k: clean(v) for k, v in stats.by_backend.items()},
        "pools": stats.pools,
        "waiting_reasons": stats.waiting_reasons,
    }


def test_one_bad_job_admits_none_of_the_batch() -> None:
    d = Driver(GPU_POOLS)
    d.submit([make_job("before", tenant="acme")], BOTH)
    before = d.core.stats()
    batch = [
        make_job("a", tenant="acme"),
        make_job("b", tenant="zeta", priority="realtime"),
        make_job("c", tenant="acme", cpu=64.0),
        make_job("d", tenant="acme"),
    ]
    reject = only_reject(d.submit(batch, BOTH))
    assert isinstance(reject.error, UnschedulableError)
    assert reject.index == 2
    for job in batch:
        assert d.core.get(job.tenant_id, job.id) is None
    assert d.core.live_jobs == 1
    after = d.core.stats()
    assert after.totals.rejected == 4
    assert after.by_tenant["acme"].rejected == 3  # the whole batch counts as rejected
    assert after.by_tenant["zeta"].rejected == 1
    assert after.by_priority["realtime"].rejected == 1
    assert without_rejected(after) == without_rejected(before)
    # Nothing of the batch stuck: the good jobs (same ids) are admitted afterwards.
    out = d.submit([batch[0], batch[1], batch[3]], BOTH)
    assert [r.job.id for r in of_type(out, Record) if r.previous is None] == ["a", "b", "d"]


def test_the_reject_index_names_the_first_bad_job() -> None:
    d = Driver(GPU_POOLS)
    batch = [make_job("a"), make_job("b", gpu="T4"), make_job("c", cpu=99.0)]
    reject = only_reject(d.submit(batch, BOTH))
    assert reject.index == 1


def test_queue_full_when_max_waiting_would_be_exceeded() -> None:
    d = Driver(ONE_SLOT, max_waiting=2)
    assert dispatched_ids(d.submit([make_job("run")], P1)) == ["run"]
    d.submit([make_job("q1"), make_job("q2")], P1)
    assert d.core.waiting == 2  # the running job does not count
    reject = only_reject(d.submit([make_job("q3")], P1))
    assert isinstance(reject.error, QueueFullError)
    assert reject.index is None
    assert "max_waiting" in str(reject.error)
    assert d.core.get("acme", "q3") is None
    assert d.core.stats().totals.rejected == 1
    # Once one waiting job starts, there is room for exactly one more.
    d.end("run", 1, Succeeded())
    assert isinstance(
        only_reject(d.submit([make_job("x"), make_job("y")], P1)).error, QueueFullError
    )
    out = d.submit([make_job("x")], P1)
    assert [r.job.id for r in of_type(out, Record)] == ["x"]


def test_a_duplicate_of_a_live_job_is_a_conflict() -> None:
    d = Driver(ONE_SLOT)
    d.submit([make_job("same")], P1)
    reject = only_reject(d.submit([make_job("other"), make_job("same")], P1))
    assert isinstance(reject.error, ConflictError)
    assert reject.index == 1
    assert "same" in str(reject.error)
    assert d.core.get("acme", "other") is None


def test_a_duplicate_inside_one_batch_is_a_conflict() -> None:
    d = Driver(ONE_SLOT)
    reject = only_reject(d.submit([make_job("a"), make_job("b"), make_job("a")], P1))
    assert isinstance(reject.error, ConflictError)
    assert reject.index == 2
    assert d.core.live_jobs == 0


# ---- routing ---------------------------------------------------------------------------------

TWO_BACKENDS = {
    "gpu": [Pool(name="g1", slots=1, cpu=2.0, gpus={"A100": 1})],
    "cpu": [Pool(name="c1", slots=4, cpu=16.0), Pool(name="c2", slots=4, cpu=4.0)],
}
GPU_THEN_CPU = (("gpu", ("g1",)), ("cpu", ("c1", "c2")))


def test_route_picks_the_first_backend_whose_pools_could_ever_hold_the_job() -> None:
    d = Driver(TWO_BACKENDS)
    out = d.submit_each(
        [make_job("small"), make_job("wide", cpu=8.0), make_job("again", cpu=1.0)],
        [GPU_THEN_CPU] * 3,
    )
    admitted = {r.job.id: r.job.backend for r in of_type(out, Record) if r.previous is None}
    assert admitted == {"small": "gpu", "wide": "cpu", "again": "gpu"}
    # "again" could ever run on g1, so it waits there even though g1 is busy now.
    assert d.status("again") is Status.QUEUED
    assert {x.job.id: x.pool for x in of_type(out, Dispatch)} == {"small": "g1", "wide": "c1"}


def test_only_pools_that_could_hold_the_job_are_used() -> None:
    d = Driver(TWO_BACKENDS)
    out = d.submit([make_job("wide", cpu=8.0)], route("cpu", "c2", "c1"))
    assert [x.pool for x in of_type(out, Dispatch)] == ["c1"]


def test_route_skips_a_pool_without_slots() -> None:
    """A pool with 0 slots can never run anything: a job is routed past it."""
    pools = {"b0": [Pool(name="closed", slots=0)], "b1": [Pool(name="open", slots=1)]}
    d = Driver(pools)
    two = (("b0", ("closed",)), ("b1", ("open",)))
    with_cpu = d.submit([make_job("with-cpu", cpu=0.5)], two)
    assert [r.job.backend for r in of_type(with_cpu, Record)] == ["b1"]
    plain = d.submit([make_job("plain")], two)
    assert [r.job.backend for r in of_type(plain, Record)] == ["b1"], (
        "a job with default Resources is routed to a 0-slot pool, where it can never run"
    )


def test_a_job_whose_only_pool_has_no_slots_is_unschedulable() -> None:
    d = Driver({"b0": [Pool(name="closed", slots=0)]})
    with_cpu = only_reject(d.submit([make_job("with-cpu", cpu=0.5)], route("b0", "closed")))
    assert isinstance(with_cpu.error, UnschedulableError)
    plain = d.submit([make_job("plain")], route("b0", "closed"))
    assert [type(x) for x in plain] == [Reject], (
        f"a job with default Resources is admitted to a 0-slot pool, where it can never run: "
        f"{plain}"
    )
    assert isinstance(only_reject(plain).error, UnschedulableError)


# ---- strict priority -------------------------------------------------------------------------


def test_a_realtime_job_goes_before_older_batch_jobs_when_a_slot_frees() -> None:
    d = Driver(ONE_SLOT)
    d.submit([make_job("b1"), make_job("b2"), make_job("b3")], P1)
    d.now += 1
    d.submit([make_job("rt", priority="realtime")], P1)
    assert dispatched_ids(d.end("b1", 1, Succeeded())) == ["rt"]
    assert dispatched_ids(d.end("rt", 1, Succeeded())) == ["b2"]


def test_levels_run_in_strict_order_whatever_the_submit_order() -> None:
    d = Driver(ONE_SLOT)
    d.submit([make_job("first")], P1)
    levels = ["offline", "batch", "interactive", "realtime"]
    d.submit([make_job(level, priority=level, tenant=level) for level in levels], P1)
    order = []
    running = "first"
    for _ in levels:
        (started,) = dispatched_ids(d.end(running, 1, Succeeded()))
        order.append(started)
        running = started
    assert order == ["realtime", "interactive", "batch", "offline"]


def test_a_lower_level_may_use_a_pool_the_higher_job_does_not_fit() -> None:
    pools = {"b1": [Pool(name="p1", slots=4, cpu=4.0)]}
    d = Driver(pools)
    d.submit([make_job("hog", cpu=3.0)], route("b1", "p1"))
    out = d.submit(
        [make_job("rt", priority="realtime", cpu=2.0), make_job("small", priority="offline")],
        route("b1", "p1"),
    )
    assert dispatched_ids(out) == ["small"], "rt needs 2 cpu and 1 is free: small may go"
    assert d.status("rt") is Status.QUEUED
    assert dispatched_ids(d.end("hog", 1, Succeeded())) == ["rt"]


def test_fifo_within_a_tenant_and_level() -> None:
    d = Driver(ONE_SLOT)
    d.submit([make_job(f"j{i}") for i in range(5)], P1)
    order = ["j0"]
    for _ in range(4):
        order += dispatched_ids(d.end(order[-1], 1, Succeeded()))
    assert order == ["j0", "j1", "j2", "j3", "j4"]


# ---- cancel ----------------------------------------------------------------------------------


def test_cancel_a_queued_job() -> None:
    d = Driver(ONE_SLOT)
    d.submit([make_job("run"), make_job("q")], P1)
    out = d.cancel("q", "no longer needed")
    assert len(out) == 1
    (record,) = out
    assert isinstance(record, Record)
    assert (record.previous, record.job.status) == (Status.QUEUED, Status.CANCELED)
    assert record.job.cancel_reason == "no longer needed"
    assert d.core.get("acme", "q") is None
    assert d.core.waiting == 0
    assert dispatched_ids(d.end("run", 1, Succeeded())) == [], "a canceled job never starts"


def test_cancel_a_running_job_stops_it_and_keeps_its_slot_until_it_ended() -> None:
    d = Driver(ONE_SLOT)
    d.submit([make_job("run"), make_job("next")], P1)
    out = d.cancel("run")
    assert out[0] == StopRun("acme", "run", 1, "b1", "requested")
    (record,) = records_of(out, "run")
    assert (record.previous, record.job.status) == (Status.RUNNING, Status.CANCELED)
    assert record.job.cancel_reason == "requested"
    assert record.job.attempts[-1].status is Status.CANCELED
    assert dispatched_ids(out) == []
    assert d.core.active_runs == 1
    out = d.end("run", 1, Succeeded("too late"))
    assert records_of(out, "run") == []
    assert dispatched_ids(out) == ["next"]


def test_cancel_a_pending_job_in_backoff() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay_ms=5000, jitter=False)
    d = Driver(ONE_SLOT)
    d.submit([make_job("j", policy=policy)], P1)
    out = d.end("j", 1, Failed(JobError(type="E", message="m")))
    (timer,) = of_type(out, ArmTimer)
    assert d.status("j") is Status.PENDING
    out = d.cancel("j", "deadline")
    disarm, record = out
    assert disarm == DisarmTimer(timer.key)  # its backoff timer is forgotten
    assert isinstance(record, Record)
    assert (record.previous, record.job.status) == (Status.PENDING, Status.CANCELED)
    assert record.job.cancel_reason == "deadline"
    assert record.job.error is not None  # the last attempt's error is kept
    assert d.fire(timer) == []
    assert d.core.live_jobs == 0


def test_cancel_of_an_unknown_or_terminal_job_decides_nothing() -> None:
    d = Driver(ONE_SLOT)
    d.submit([make_job("done")], P1)
    d.end("done", 1, Succeeded())
    before = d.core.stats()
    assert d.cancel("done") == []
    assert d.cancel("never-seen") == []
    assert d.core.stats() == before


# ---- waiting reasons -------------------------------------------------------------------------


def test_waiting_reasons() -> None:
    pools = {"b1": [Pool(name="p1", slots=1), Pool(name="p2", slots=1)]}
    d = Driver(pools)
    policy = RetryPolicy(max_attempts=2, base_delay_ms=1000, jitter=False)
    d.submit([make_job("r1"), make_job("retrying", policy=policy)], route("b1", "p1", "p2"))
    d.submit([make_job("waits", tenant="t2")], route("b1", "p1"))
    assert d.core.waiting_reason(*key_of(d.core, "waits")) == "no_capacity"
    d.submit([make_job("urgent", priority="realtime")], route("b1", "p1"))
    assert d.core.waiting_reason(*key_of(d.core, "urgent")) == "no_capacity"
    assert d.core.waiting_reason(*key_of(d.core, "waits")) == "higher_priority_backlog"
    d.end("retrying", 1, Failed(JobError(type="E", message="m")))
    assert d.core.waiting_reason(*key_of(d.core, "retrying")) == "backoff"
    job = d.core.get("acme", "retrying")
    assert job is not None
    assert job.waiting_reason == "backoff"
    assert d.core.waiting_reason(*key_of(d.core, "r1")) is None  # running
    assert d.core.waiting_reason(*key_of(d.core, "unknown")) is None
    # p2 freed: "urgent" may only use p1, so it still waits.
    assert d.core.stats().waiting_reasons == {
        "backoff": 1,
        "no_capacity": 1,
        "higher_priority_backlog": 1,
    }


def test_a_lower_level_on_other_pools_has_no_higher_priority_backlog() -> None:
    pools = {"b1": [Pool(name="p1", slots=1), Pool(name="p2", slots=1)]}
    d = Driver(pools)
    d.submit([make_job("a"), make_job("b")], route("b1", "p1"))  # b queued on p1
    d.submit([make_job("c"), make_job("d", priority="offline")], route("b1", "p2"))
    assert d.core.waiting_reason(*key_of(d.core, "d")) == "no_capacity"


# ---- counters --------------------------------------------------------------------------------


def test_stats_count_by_status_priority_tenant_backend_and_pool() -> None:
    pools = {
        "b1": [Pool(name="p1", slots=2, cpu=4.0)],
        "b2": [Pool(name="p2", slots=1, gpus={"A100": 1})],
    }
    d = Driver(pools)
    d.submit(
        [make_job("ok", tenant="acme", cpu=1.5), make_job("bad", tenant="acme", cpu=1.0)],
        route("b1", "p1"),
    )
    d.submit([make_job("q", tenant="zeta", priority="realtime", cpu=4.0)], route("b1", "p1"))
    assert d.status("q") is Status.QUEUED
    d.submit([make_job("g", tenant="zeta", gpu="A100")], route("b2", "p2"))
    d.submit([make_job("x", tenant="acme", cpu=99.0)], route("b1", "p1"))  # rejected
    d.end("ok", 1, Succeeded())
    d.end("bad", 1, Failed(JobError(type="E", message="m"), retryable=False))
    # "q" (4 cpu) starts once both left; "g" runs; then cancel "g".
    d.cancel("g")
    stats = d.core.stats()
    assert stats.totals == Counts(
        running=1, succeeded=1, failed=1, canceled=1, submitted=4, rejected=1
    )
    assert stats.by_priority["realtime"] == Counts(running=1, submitted=1)
    assert stats.by_priority["batch"] == Counts(
        succeeded=1, failed=1, canceled=1, submitted=3, rejected=1
    )
    assert counts(stats.by_tenant["acme"]) == Counts(succeeded=1, failed=1, submitted=2, rejected=1)
    assert counts(stats.by_tenant["zeta"]) == Counts(running=1, canceled=1, submitted=2)
    assert stats.by_backend["b1"] == Counts(running=1, succeeded=1, failed=1, submitted=3)
    assert stats.by_backend["b2"] == Counts(canceled=1, submitted=1)
    assert stats.pools["p1"].backend == "b1"
    assert (stats.pools["p1"].used.slots, stats.pools["p1"].used.cpu) == (1, 4.0)
    # the canceled run still holds its GPU until its RunEnded
    assert stats.pools["p2"].used.gpus == {"A100": 1}
    d.end("g", 1, Succeeded())
    assert d.core.stats().pools["p2"].used.gpus == {}
    assert stats.waiting_reasons == {}


@pytest.mark.parametrize("level", list(Priority))
def test_admitted_jobs_are_queued_with_backend_and_submit_time(level: Priority) -> None:
    d = Driver(ONE_SLOT, now=1_700_000_000.0)
    d.submit([make_job("busy")], P1)
    out = d.submit([make_job("j", priority=level)], P1)
    (record,) = out
    assert isinstance(record, Record)
    assert record.previous is None
    assert record.job.status is Status.QUEUED
    assert record.job.backend == "b1"
    assert record.job.submitted_at is not None
    assert record.job.submitted_at.timestamp() == 1_700_000_000.0


def test_two_tenants_may_have_live_jobs_with_the_same_id() -> None:
    """Jobs are keyed by (tenant_id, id): the same id is another job for another tenant, in a
    batch too; the same id twice for one tenant is a conflict."""
    d = Driver(ONE_SLOT)
    out = d.submit([make_job("same", tenant="a"), make_job("same", tenant="b")], P1)
    assert not [x for x in out if isinstance(x, Reject)]
    assert d.core.get("a", "same") is not None
    assert d.core.get("b", "same") is not None
    assert d.core.live_jobs == 2
    reject = only_reject(d.submit([make_job("same", tenant="b")], P1))
    assert isinstance(reject.error, ConflictError)
    assert "tenant 'b'" in str(reject.error)
    reject = only_reject(d.submit([make_job("x", tenant="c"), make_job("x", tenant="c")], P1))
    assert reject.index == 1
    # canceling one tenant's job leaves the other's alone, whichever was first
    d.handle(Cancel("b", "same"))
    assert d.core.get("b", "same") is None
    assert d.core.get("a", "same") is not None
    d.handle(Cancel("a", "same"))
    assert d.core.live_jobs == 0
    d.submit([make_job("same", tenant="b"), make_job("same", tenant="a")], P1)
    assert d.core.get("a", "same") is not None
    assert d.core.get("b", "same") is not None

"""Pools that come and go (``PoolsChanged`` with ``removed``) and backends that go away
(``BackendAvailability``), in the pure core."""

from __future__ import annotations

from nsai_work._ir import Pool, RetryPolicy, Status
from nsai_work.core import (
    ArmTimer,
    BackendAvailability,
    Dispatch,
    PoolsChanged,
    Record,
    StopRun,
    Succeeded,
)
from tests._core_builders import Driver, make_job, of_type, records_of, route

CPU = Pool(name="cpu-node", slots=2, cpu=2.0)
GPU = Pool(name="gpu-node", slots=1, cpu=2.0, gpus={"A100": 1})
ROUTE = route("ray", "cpu-node", "gpu-node")
RETRY = RetryPolicy(max_attempts=3, base_delay_ms=0, jitter=False)


def _driver() -> Driver:
    return Driver({"ray": [CPU, GPU]})


def test_a_queued_job_only_a_removed_pool_could_hold_waits_saying_why_then_is_canceled() -> None:
    d = _driver()
    d.submit([make_job("busy", gpu="A100", gpu_count=1)], ROUTE)
    d.submit([make_job("a100", gpu="A100", gpu_count=1)], ROUTE)
    assert d.core.waiting_reason("acme", "a100") in ("no_capacity", "capacity_held:gpu-node")

    out = d.handle(PoolsChanged("ray", (), ("gpu-node",), grace_s=60.0))

    assert "gpu-node" not in d.core.stats().pools
    assert d.core.waiting_reason("acme", "a100") == "pool_removed:gpu-node"
    assert d.core.stats().waiting_reasons == {"pool_removed:gpu-node": 1}
    # the run on the removed pool is lost: told to stop, its attempt failed and retried later
    assert [s.job_id for s in of_type(out, StopRun)] == ["busy"]
    (record,) = records_of(out, "busy")
    assert record.job.status is Status.FAILED  # (one attempt: make_job's policy)
    assert record.job.error is not None
    assert record.job.error.type == "BackendLostError"
    assert "backend_lost" in record.job.error.message
    timer = of_type(out, ArmTimer)[0]
    assert timer.at == d.now + 60.0

    # the lost run ends later: its capacity comes back once, a duplicate end changes nothing
    pool = d.core._gone["gpu-node"]
    assert pool.used_slots == 1
    d.end("busy", 1, Succeeded(None))
    d.end("busy", 1, Succeeded(None))
    assert pool.used_slots == 0

    out = d.fire(timer)
    (canceled,) = records_of(out, "a100")
    assert canceled.job.status is Status.CANCELED
    assert canceled.job.cancel_reason is not None
    assert canceled.job.cancel_reason.startswith("unschedulable: no pool of backend 'ray'")


def test_a_pool_back_within_the_grace_takes_its_stranded_job() -> None:
    d = _driver()
    d.handle(PoolsChanged("ray", (), ("gpu-node",), grace_s=60.0))
    # a new job that no pool left could hold is refused at submit ...
    refused = d.submit([make_job("late", gpu="A100", gpu_count=1)], ROUTE)
    assert type(refused[0]).__name__ == "Reject"
    # ... while one admitted before waits for its pool to come back
    d2 = _driver()
    only_gpu = route("ray", "gpu-node")
    d2.submit([make_job("a100", gpu="A100", gpu_count=1, policy=RETRY)], only_gpu)
    d2.submit([make_job("a100b", gpu="A100", gpu_count=1)], only_gpu)
    out = d2.handle(PoolsChanged("ray", (), ("gpu-node",), grace_s=60.0))
    assert d2.core.waiting_reason("acme", "a100b") == "pool_removed:gpu-node"
    assert d2.status("a100") is Status.QUEUED  # lost and retried: it waits too
    assert d2.core.waiting_reason("acme", "a100") == "pool_removed:gpu-node"
    timer = of_type(out, ArmTimer)[0]

    out = d2.handle(PoolsChanged("ray", (GPU,)))
    assert of_type(out, Dispatch) == []  # its lost run still holds the slot of gpu-node
    out = d2.end("a100", 1, Succeeded(None))  # (that attempt ended already: only the slot)
    # in queue order: a100's retry joined the queue after a100b
    assert [x.job.id for x in of_type(out, Dispatch)] == ["a100b"]
    assert d2.core.waiting_reason("acme", "a100") in ("no_capacity", "capacity_held:gpu-node")
    assert d2.fire(timer) == []  # the grace timer finds nothing stranded any more


def test_a_pool_added_is_used_by_jobs_waiting_already() -> None:
    d = Driver({"ray": [CPU]})
    d.submit([make_job(f"j{i}", cpu=2.0) for i in range(3)], route("ray", "cpu-node"))
    assert d.status("j1") is Status.QUEUED
    more = Pool(name="cpu-node-2", slots=2, cpu=2.0)
    out = d.handle(PoolsChanged("ray", (more,)))
    assert [(x.job.id, x.pool) for x in of_type(out, Dispatch)] == [("j1", "cpu-node-2")]
    assert d.status("j2") is Status.QUEUED


def test_an_unavailable_backend_starts_nothing_and_loses_its_runs() -> None:
    d = Driver({"ray": [CPU]})
    d.submit([make_job("run", cpu=2.0, policy=RETRY)], ROUTE)
    out = d.handle(BackendAvailability("ray", False, "cluster unreachable"))
    assert [s.job_id for s in of_type(out, StopRun)] == ["run"]
    (record,) = [r for r in records_of(out, "run") if r.previous is Status.RUNNING]
    assert record.job.status is Status.PENDING  # retried per policy ...
    assert record.job.error is not None
    assert "cluster unreachable" in record.job.error.message
    assert d.status("run") is Status.QUEUED  # ... and waits: nothing starts
    assert d.core.waiting_reason("acme", "run") == "backend_unavailable"
    assert d.core.stats().pools["cpu-node"].available is False
    d.submit([make_job("new")], ROUTE)  # admitted: the pools exist
    assert d.core.waiting_reason("acme", "new") == "backend_unavailable"

    out = d.handle(BackendAvailability("ray", True))
    # the lost run still holds its capacity until it really ends (and its next attempt, first
    # in line, has the rest held for it)
    assert of_type(out, Dispatch) == []
    out = d.end("run", 1, Succeeded(None))
    assert [x.job.id for x in of_type(out, Dispatch)] == ["run", "new"]
    assert all(isinstance(x, Record | Dispatch | ArmTimer) for x in out)

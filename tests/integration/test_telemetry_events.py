"""Telemetry: the exact event sequences of DESIGN.md's event table, their metadata, that the
library emits nothing outside its catalogue, and the bus API."""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import shlex
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import nsai_work as work
from nsai_work.telemetry import ALL_EVENTS, HandlerInfo, Telemetry
from nsai_work.telemetry.events import (
    JOB_CANCELED,
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_QUEUED,
    JOB_RETRY,
    JOB_STARTED,
    JOB_SUBMITTED,
    QUEUE_DEQUEUE,
    QUEUE_ENQUEUE,
    QUEUE_OVERFLOW,
    SCHEDULE_FIRED,
    SCHEDULE_MISSED,
    SCHEDULER_ADMIT,
    SCHEDULER_SELECT_BACKEND,
)
from nsai_work.testing import capture_events
from nsai_work.testing._events import CapturedEvent, EventLog

Register = Callable[..., str]
TENANT = "telemetry"


def unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


ACCEPTED = [SCHEDULER_ADMIT, JOB_SUBMITTED, JOB_QUEUED, QUEUE_ENQUEUE]
STARTS = [QUEUE_DEQUEUE, SCHEDULER_SELECT_BACKEND, JOB_STARTED]
JOB_METADATA = {
    "job_id",
    "tenant_id",
    "namespace",
    "kind",
    "priority",
    "backend",
    "status",
    "attempt",
    "error_type",
    "job",
}


def after(job_id: str) -> work.Constraints:
    return work.Constraints(depends_on=(job_id,))


def policy(attempts: int, base_delay_ms: int = 5) -> work.Constraints:
    return work.Constraints(
        retry_policy=work.RetryPolicy(
            max_attempts=attempts, base_delay_ms=base_delay_ms, jitter=False
        )
    )


def events_of(log: EventLog, job_id: str) -> list[CapturedEvent]:
    return [e for e in log if e.metadata.get("job_id") == job_id]


def check_job_metadata(events: list[CapturedEvent], job: work.Job) -> None:
    for event in events:
        meta = event.metadata
        missing = JOB_METADATA - set(meta)
        assert not missing, f"{event.event} lacks {missing}"
        assert isinstance(meta["job"], work.Job)
        assert meta["job"].id == meta["job_id"] == job.id
        assert (meta["tenant_id"], meta["namespace"], meta["kind"]) == (
            job.tenant_id,
            job.namespace,
            job.kind,
        )
        assert meta["priority"] == str(job.priority)
        assert meta["status"] == meta["job"].status
        assert meta["attempt"] == meta["job"].attempt
        for value in event.measurements.values():
            assert isinstance(value, int | float)
            assert value >= 0


@pytest.fixture
def bus() -> Telemetry:
    return Telemetry()


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


# ---- the sequences ------------------------------------------------------------------------------


def test_a_job_that_succeeds(bus: Telemetry, handlers: Register) -> None:
    kind = handlers(lambda job: {"ok": 1})
    with work.SyncScheduler(telemetry=bus) as s, capture_events(bus=bus) as log:
        job = s.submit(work.Job(kind=kind, tenant_id=TENANT, namespace="ns", priority="realtime"))
        done = s.wait(job.id, timeout=5)
    events = events_of(log, job.id)
    assert [e.event for e in events] == [*ACCEPTED, *STARTS, JOB_COMPLETED]
    admit, _, queued, _, dequeue, select, started, completed = events
    assert (admit.metadata["decision"], admit.metadata["reason"]) == ("accept", "accepted")
    assert queued.measurements == {"wait_ms": 0.0}
    assert set(dequeue.measurements) == {"queue_time_ms"}
    assert set(started.measurements) == {"queue_time_ms"}
    assert (select.metadata["backend"], select.metadata["pool"]) == ("local", "local:threads")
    assert completed.metadata["status"] == "succeeded"
    assert completed.metadata["error_type"] is None
    assert set(completed.measurements) == {"run_time_ms", "total_time_ms"}
    assert completed.measurements["total_time_ms"] >= completed.measurements["run_time_ms"]
    assert completed.metadata["job"] == done
    assert started.metadata["attempt"] == 1
    check_job_metadata(events, done)


def test_a_job_that_fails_once_then_succeeds(bus: Telemetry, handlers: Register) -> None:
    def flaky(job: work.Job, ctx: work.JobContext) -> str:
        if ctx.attempt == 1:
            raise RuntimeError("once")
        return "ok"

    kind = handlers(flaky)
    with work.SyncScheduler(telemetry=bus) as s, capture_events(bus=bus) as log:
        job = s.submit(work.Job(kind=kind, tenant_id=TENANT, constraints=policy(3)))
        done = s.wait(job.id, timeout=5)
    events = events_of(log, job.id)
    assert [e.event for e in events] == [
        *ACCEPTED,
        *STARTS,
        JOB_RETRY,
        JOB_QUEUED,
        QUEUE_ENQUEUE,
        *STARTS,
        JOB_COMPLETED,
    ]
    retry = events[7]
    assert set(retry.measurements) == {"run_time_ms", "backoff_ms"}
    assert retry.measurements["backoff_ms"] == 5  # base 5 ms, exponential, attempt 1, no jitter
    assert retry.metadata["status"] == "pending"
    assert retry.metadata["error_type"] == "RuntimeError"
    assert set(events[8].measurements) == {"wait_ms"}
    assert events[-1].metadata["status"] == "succeeded"
    assert events[-2].metadata["attempt"] == 2
    check_job_metadata(events, done)


def test_a_job_that_fails_for_good(bus: Telemetry, handlers: Register) -> None:
    kind = handlers(lambda job: 1 / 0)
    with work.SyncScheduler(telemetry=bus) as s, capture_events(bus=bus) as log:
        job = s.submit(work.Job(kind=kind, tenant_id=TENANT, constraints=policy(2)))
        done = s.wait(job.id, timeout=5)
    events = events_of(log, job.id)
    assert [e.event for e in events] == [
        *ACCEPTED,
        *STARTS,
        JOB_RETRY,
        JOB_QUEUED,
        QUEUE_ENQUEUE,
        *STARTS,
        JOB_COMPLETED,
        JOB_FAILED,
    ]
    completed, failed = events[-2:]
    for event in (completed, failed):
        assert event.metadata["status"] == "failed"
        assert event.metadata["error_type"] == "ZeroDivisionError"
        assert set(event.measurements) == {"run_time_ms", "total_time_ms"}
    check_job_metadata(events, done)


def test_a_job_that_times_out(bus: Telemetry, handlers: Register) -> None:
    async def forever(job: work.Job) -> None:
        await asyncio.Event().wait()

    kind = handlers(forever)
    with work.SyncScheduler(telemetry=bus) as s, capture_events(bus=bus) as log:
        job = s.submit(
            work.Job(
                kind=kind,
                tenant_id=TENANT,
                resources=work.Resources(timeout_ms=30),
                constraints=policy(1),
            )
        )
        done = s.wait(job.id, timeout=5)
        s.wait_idle(timeout=5)
    events = events_of(log, job.id)
    assert [e.event for e in events] == [*ACCEPTED, *STARTS, JOB_COMPLETED, JOB_FAILED]
    assert [e.metadata["status"] for e in events[-2:]] == ["timeout", "timeout"]
    assert events[-1].metadata["error_type"] == "TimeoutError"
    check_job_metadata(events, done)


def test_a_canceled_queued_job(bus: Telemetry, handlers: Register, gate: threading.Event) -> None:
    kind = handlers(lambda job: gate.wait(10))
    pools = {"local": [work.Pool(name="local:threads", slots=1)]}
    with work.SyncScheduler(telemetry=bus, pools=pools) as s, capture_events(bus=bus) as log:
        s.submit(work.Job(kind=kind, tenant_id=TENANT))
        queued = s.submit(work.Job(kind=kind, tenant_id=TENANT))
        done = s.cancel(queued.id, "not needed")
        gate.set()
    events = events_of(log, queued.id)
    assert [e.event for e in events] == [*ACCEPTED, JOB_CANCELED]
    assert events[-1].metadata["reason"] == "not needed"
    assert events[-1].metadata["status"] == "canceled"
    check_job_metadata(events, done)


def test_a_canceled_running_job(bus: Telemetry, handlers: Register) -> None:
    async def forever(job: work.Job) -> None:
        await asyncio.Event().wait()

    kind = handlers(forever)
    started = threading.Event()
    bus.attach("started", JOB_STARTED, lambda *args: started.set())
    with work.SyncScheduler(telemetry=bus) as s, capture_events(bus=bus) as log:
        job = s.submit(work.Job(kind=kind, tenant_id=TENANT))
        assert started.wait(5)
        s.cancel(job.id)
        s.wait_idle(timeout=5)
    assert [e.event for e in events_of(log, job.id)] == [*ACCEPTED, *STARTS, JOB_CANCELED]
    assert events_of(log, job.id)[-1].metadata["reason"] == "requested"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"resources": work.Resources(cpu=-1.0)}, "invalid"),
        ({"constraints": work.Constraints(backend="nope")}, "unschedulable"),
        ({"resources": work.Resources(gpu="H100")}, "unschedulable"),
    ],
)
def test_a_rejected_submit(
    bus: Telemetry, handlers: Register, fields: dict[str, Any], reason: str
) -> None:
    kind = handlers(lambda job: None)
    bad = work.Job(kind=kind, tenant_id=TENANT, **fields)
    with (
        work.SyncScheduler(telemetry=bus) as s,
        capture_events(bus=bus) as log,
        pytest.raises(work.WorkError) as info,
    ):
        s.submit(bad)
    assert [e.event for e in log] == [SCHEDULER_ADMIT]
    [admit] = log
    assert admit.metadata["decision"] == "reject"
    assert admit.metadata["reason"] == reason
    assert admit.metadata["job_id"] == bad.id
    assert str(info.value) in admit.metadata["error"]


def test_a_duplicate_id_is_rejected_with_its_reason(bus: Telemetry, handlers: Register) -> None:
    kind = handlers(lambda job: None)
    with work.SyncScheduler(telemetry=bus) as s:
        first = s.wait(s.submit(work.Job(kind=kind, tenant_id=TENANT)).id, timeout=5)
        s.wait_idle(timeout=5)
        with capture_events(bus=bus) as log, pytest.raises(work.ConflictError):
            s.submit(work.Job(kind=kind, tenant_id=TENANT, id=first.id))
    assert [(e.event, e.metadata["reason"]) for e in log] == [(SCHEDULER_ADMIT, "duplicate_id")]


def test_a_rejected_batch_emits_one_reject_per_job_and_nothing_else(
    bus: Telemetry, handlers: Register
) -> None:
    kind = handlers(lambda job: None)
    jobs = [work.Job(kind=kind, tenant_id=TENANT) for _ in range(3)]
    jobs.append(work.Job(kind=kind, tenant_id=TENANT, resources=work.Resources(cpu=-1.0)))
    with (
        work.SyncScheduler(telemetry=bus) as s,
        capture_events(bus=bus) as log,
        pytest.raises(work.ValidationError),
    ):
        s.submit_many(jobs)
    assert [e.event for e in log] == [SCHEDULER_ADMIT] * 4
    assert [e.metadata["job_id"] for e in log] == [j.id for j in jobs]
    assert {e.metadata["decision"] for e in log} == {"reject"}


def test_queue_full_emits_admit_reject_then_overflow(bus: Telemetry, handlers: Register) -> None:
    release = threading.Event()
    kind = handlers(lambda job: release.wait(10))
    started = threading.Event()
    bus.attach("started", JOB_STARTED, lambda *args: started.set())
    pools = {"local": [work.Pool(name="local:threads", slots=1)]}
    try:
        with work.SyncScheduler(telemetry=bus, pools=pools, max_waiting=1) as s:
            s.submit(work.Job(kind=kind, tenant_id=TENANT))  # running: not waiting
            assert started.wait(5)
            s.submit(work.Job(kind=kind, tenant_id=TENANT))  # queued: 1 waiting
            overflowing = work.Job(kind=kind, tenant_id=TENANT)
            with capture_events(bus=bus) as log, pytest.raises(work.QueueFullError) as info:
                s.submit(overflowing)
            release.set()
    finally:
        release.set()
    assert "max_waiting" in str(info.value)
    assert [e.event for e in log] == [SCHEDULER_ADMIT, QUEUE_OVERFLOW]
    admit, overflow = log
    assert (admit.metadata["decision"], admit.metadata["reason"]) == ("reject", "queue_full")
    assert overflow.metadata["job_id"] == overflowing.id
    assert overflow.metadata["reason"] == "queue_full"


def test_stop_cancels_waiting_jobs_with_reason_shutdown(
    bus: Telemetry, handlers: Register, gate: threading.Event
) -> None:
    kind = handlers(lambda job: gate.wait(10))
    started = threading.Event()
    bus.attach("started", JOB_STARTED, lambda *args: started.set())
    pools = {"local": [work.Pool(name="local:threads", slots=1)]}
    s = work.SyncScheduler(telemetry=bus, pools=pools).start()
    with capture_events(bus=bus) as log:
        running = s.submit(work.Job(kind=kind, tenant_id=TENANT))
        assert started.wait(5)
        waiting = s.submit(work.Job(kind=kind, tenant_id=TENANT))
        gate.set()
        s.stop()
    assert events_of(log, waiting.id)[-1].event == JOB_CANCELED
    assert events_of(log, waiting.id)[-1].metadata["reason"] == "shutdown"
    assert events_of(log, running.id)[-1].event == JOB_COMPLETED


def test_dependencies_and_time_emit_waiting_released_and_why_canceled(
    bus: Telemetry, handlers: Register
) -> None:
    ok = handlers(lambda job: "ok")
    failing = handlers(lambda job: 1 / 0)
    soon = _dt.datetime.now(_dt.UTC) + _dt.timedelta(milliseconds=50)
    with capture_events(bus=bus) as log, work.SyncScheduler(telemetry=bus) as s:
        # (one batch: a dependency cannot end before its dependent is admitted)
        first = work.Job(kind=ok, tenant_id=TENANT)
        bad = work.Job(kind=failing, tenant_id=TENANT, constraints=policy(1))
        then = work.Job(kind=ok, tenant_id=TENANT, constraints=after(first.id))
        doomed = work.Job(kind=ok, tenant_id=TENANT, constraints=after(bad.id))
        s.submit_many([first, bad, then, doomed])
        later = s.submit(
            work.Job(kind=ok, tenant_id=TENANT, constraints=work.Constraints(schedule_in_s=0.02))
        )
        late = s.submit(
            work.Job(
                kind=ok,
                tenant_id=TENANT,
                constraints=work.Constraints(schedule_in_s=30, deadline=soon),
            )
        )
        s.wait_many([first.id, bad.id, then.id, doomed.id, later.id, late.id], timeout=10)

    def names(job: work.Job) -> list[str]:
        return [".".join(e.event[2:]) for e in events_of(log, job.id)]

    def one(job: work.Job, name: str) -> CapturedEvent:
        (found,) = [e for e in events_of(log, job.id) if e.event[2] == name]
        return found

    assert names(then)[:5] == ["admit", "submitted", "waiting", "released", "queued"]
    assert one(then, "waiting").metadata["reason"] == "dependencies"
    assert one(then, "waiting").metadata["depends_on"] == [first.id]
    assert one(then, "released").metadata["reason"] == "dependencies"
    assert one(then, "released").measurements["wait_ms"] >= 0
    assert names(doomed) == ["admit", "submitted", "waiting", "canceled", "dependency_failed"]
    failed = one(doomed, "dependency_failed").metadata
    assert failed["dependency_id"] == bad.id
    assert failed["dependency_status"] == "failed"
    assert failed["reason"] == f"dependency_failed: {bad.id} (failed)"
    assert one(later, "waiting").metadata["reason"] == "scheduled"
    assert one(later, "released").measurements["wait_ms"] >= 15
    assert names(late) == ["admit", "submitted", "waiting", "canceled", "deadline_exceeded"]
    assert one(late, "deadline_exceeded").metadata["deadline"] == soon.isoformat()
    assert "waiting" not in names(first)
    assert "released" not in names(first)


def test_a_private_bus_keeps_the_default_bus_quiet(bus: Telemetry, handlers: Register) -> None:
    kind = handlers(lambda job: None)
    with capture_events() as on_default, work.SyncScheduler(telemetry=bus) as s:
        s.wait(s.submit(work.Job(kind=kind, tenant_id=TENANT)).id, timeout=5)
    assert on_default == []


def test_the_default_bus_is_used_when_none_is_given(handlers: Register) -> None:
    kind = handlers(lambda job: None)
    with capture_events() as log, work.SyncScheduler() as s:
        job = s.wait(s.submit(work.Job(kind=kind, tenant_id=TENANT)).id, timeout=5)
    assert log.for_job(job.id)[-1] == JOB_COMPLETED


# ---- the library emits no other events ----------------------------------------------------------


class _EveryName(dict[tuple[str, ...], Any]):
    """A handler table that claims a listener for every event name, so the engine emits every
    event it would ever emit (it skips events nobody listens to); that listener records the
    name."""

    def __init__(self, names: list[tuple[str, ...]], *args: Any) -> None:
        super().__init__(*args)
        self.names = names

    def _record(self, event: tuple[str, ...], *args: Any) -> None:
        self.names.append(tuple(event))

    def __contains__(self, key: object) -> bool:
        return True

    def __bool__(self) -> bool:
        return True

    def get(self, key: tuple[str, ...], default: Any = None) -> Any:
        return (HandlerInfo("recorder", key, self._record, None), *(super().get(key) or ()))


class RecordingBus(Telemetry):
    """Records the name of every event delivered on it."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[tuple[str, ...]] = []
        self._by_event = _EveryName(self.names)

    def _rebuild(self) -> None:
        super()._rebuild()
        self._by_event = _EveryName(self.names, self._by_event)


def test_the_library_emits_only_catalogued_events(handlers: Register, tools: Register) -> None:
    bus = RecordingBus()
    release = threading.Event()

    def flaky(job: work.Job, ctx: work.JobContext) -> str:
        if ctx.attempt == 1:
            raise RuntimeError("flaky")
        return "ok"

    async def forever(job: work.Job) -> None:
        await asyncio.Event().wait()

    ok = handlers(lambda job: "ok")
    flaky_kind = handlers(flaky)
    failing = handlers(lambda job: 1 / 0)
    hanging = handlers(forever)
    blocking = handlers(lambda job: release.wait(10))
    tool = tools(lambda args: args)
    started = threading.Event()
    bus.attach("started", JOB_STARTED, lambda *args: started.set())
    pools = {"local": [work.Pool(name="local:threads", slots=1)]}
    try:
        with work.SyncScheduler(telemetry=bus, pools=pools, max_waiting=5) as s:
            done = [
                s.submit(work.Job(kind=ok, tenant_id=TENANT)),
                s.submit(work.Job(kind=flaky_kind, tenant_id=TENANT, constraints=policy(2, 1))),
                s.submit(work.Job(kind=failing, tenant_id=TENANT, constraints=policy(1))),
                s.submit(
                    work.Job(
                        kind=hanging,
                        tenant_id=TENANT,
                        resources=work.Resources(timeout_ms=20),
                        constraints=policy(1),
                    )
                ),
                s.submit(work.Job(kind="tool_call", tenant_id=TENANT, payload={"tool": tool})),
                s.submit(
                    work.Job(
                        kind="x", tenant_id=TENANT, constraints=work.Constraints(backend="mock")
                    )
                ),
            ]
            ended = s.wait_many([j.id for j in done], timeout=10)
            s.wait(s.retry(ended[2].id).id, timeout=5)
            # dependencies and time: waiting, released, dependency_failed, deadline_exceeded
            soon = _dt.datetime.now(_dt.UTC) + _dt.timedelta(milliseconds=50)
            waits = [
                s.submit(work.Job(kind=ok, tenant_id=TENANT, constraints=after(done[0].id))),
                s.submit(work.Job(kind=ok, tenant_id=TENANT, constraints=after(done[2].id))),
                s.submit(
                    work.Job(
                        kind=ok,
                        tenant_id=TENANT,
                        constraints=work.Constraints(schedule_in_s=0.02),
                    )
                ),
                s.submit(
                    work.Job(
                        kind=ok,
                        tenant_id=TENANT,
                        constraints=work.Constraints(schedule_in_s=30, deadline=soon),
                    )
                ),
            ]
            s.wait_many([j.id for j in waits], timeout=10)
            # schedules: paused, resumed, removed (fired and missed need a clock moved by
            # hand: tests/integration/test_cron.py)
            s.cron("nightly", "0 3 * * *", work.Job(kind=ok, tenant_id=TENANT))
            s.pause_schedule("nightly")
            s.resume_schedule("nightly")
            s.remove_schedule("nightly")
            started.clear()
            running = s.submit(work.Job(kind=hanging, tenant_id=TENANT))
            assert started.wait(5)
            s.cancel(running.id)
            started.clear()
            s.submit(work.Job(kind=blocking, tenant_id=TENANT))
            assert started.wait(5)
            queued = s.submit(work.Job(kind=blocking, tenant_id=TENANT))
            s.cancel(queued.id, "by hand")
            for bad in (
                work.Job(kind=ok, tenant_id=TENANT, resources=work.Resources(cpu=-1.0)),
                work.Job(kind="unhandled", tenant_id=TENANT),
            ):
                with pytest.raises(work.WorkError):
                    s.submit(bad)
            s.submit_many([work.Job(kind=blocking, tenant_id=TENANT) for _ in range(5)])
            with pytest.raises(work.QueueFullError):
                s.submit(work.Job(kind=blocking, tenant_id=TENANT))
            with bus.span(("user", "own", "span")):
                pass
            release.set()
    finally:
        release.set()
    library = [name for name in bus.names if name[:1] != ("user",)]
    outside = sorted(set(library) - set(ALL_EVENTS))
    assert not outside, f"events outside the catalogue: {outside}"
    elsewhere = {SCHEDULE_FIRED, SCHEDULE_MISSED}  # (tests/integration/test_cron.py)
    assert set(library) | elsewhere == set(ALL_EVENTS), (
        "the workload should exercise every catalogued event"
    )


def test_the_catalogue_is_the_design_table() -> None:
    assert ALL_EVENTS == (
        ("work", "scheduler", "admit"),
        ("work", "job", "submitted"),
        ("work", "job", "waiting"),
        ("work", "queue", "overflow"),
        ("work", "job", "released"),
        ("work", "job", "queued"),
        ("work", "queue", "enqueue"),
        ("work", "queue", "dequeue"),
        ("work", "scheduler", "select_backend"),
        ("work", "job", "started"),
        ("work", "job", "retry"),
        ("work", "job", "completed"),
        ("work", "job", "failed"),
        ("work", "job", "canceled"),
        ("work", "job", "dependency_failed"),
        ("work", "job", "deadline_exceeded"),
        ("work", "schedule", "fired"),
        ("work", "schedule", "missed"),
        ("work", "schedule", "paused"),
        ("work", "schedule", "resumed"),
        ("work", "schedule", "removed"),
    )


# ---- the bus API --------------------------------------------------------------------------------


class Calls(list[tuple[Any, ...]]):
    def __call__(self, event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        self.append((event, dict(measurements), dict(metadata), config))


def test_attach_execute_detach(bus: Telemetry) -> None:
    calls = Calls()
    bus.attach("h", ("a", "b"), calls, config={"cfg": 1})
    assert bus.listening(("a", "b"))
    assert not bus.listening(("a", "c"))
    bus.execute(("a", "b"), {"n_ms": 1.5}, {"k": "v"})
    bus.execute(("a", "c"), {}, {})  # nobody listens: nothing happens
    assert calls == [(("a", "b"), {"n_ms": 1.5}, {"k": "v"}, {"cfg": 1})]
    assert bus.detach("h") is True
    assert bus.detach("h") is False
    bus.execute(("a", "b"), {}, {})
    assert len(calls) == 1


def test_attach_to_a_list_of_events_and_attach_many(bus: Telemetry) -> None:
    first, second = Calls(), Calls()
    bus.attach("one", [("a",), ("b",)], first)
    bus.attach_many("two", [("b",), ("c",)], second)
    for name in (("a",), ("b",), ("c",)):
        bus.execute(name, {}, {})
    assert [c[0] for c in first] == [("a",), ("b",)]
    assert [c[0] for c in second] == [("b",), ("c",)]
    bus.detach("one")
    bus.execute(("b",), {}, {})
    assert len(first) == 2
    assert len(second) == 3


def test_list_handlers_by_prefix(bus: Telemetry) -> None:
    fn = Calls()
    bus.attach("job", ("work", "job", "completed"), fn)
    bus.attach_many("queue", [("work", "queue", "enqueue"), ("work", "queue", "dequeue")], fn)
    bus.attach("other", ("other", "thing"), fn, config=7)
    assert {(h.id, h.event) for h in bus.list_handlers(("work", "job"))} == {
        ("job", ("work", "job", "completed"))
    }
    assert {h.id for h in bus.list_handlers(("work",))} == {"job", "queue"}
    assert len(bus.list_handlers(("work", "queue"))) == 2
    assert len(bus.list_handlers()) == 4
    assert bus.list_handlers(("nothing",)) == []
    [other] = bus.list_handlers(("other",))
    assert (other.function, other.config) == (fn, 7)


def test_span_emits_start_and_stop(bus: Telemetry) -> None:
    calls = Calls()
    bus.attach_many("span", [("my", "op", "start"), ("my", "op", "stop")], calls)
    with bus.span(("my", "op"), {"who": "me"}):
        pass
    assert [c[0] for c in calls] == [("my", "op", "start"), ("my", "op", "stop")]
    start, stop = calls
    assert {"system_time_s", "monotonic_time_s"} <= set(start[1])
    assert set(stop[1]) == {"duration_ms"}
    assert stop[1]["duration_ms"] >= 0
    assert start[2] == stop[2] == {"who": "me"}


def test_span_emits_exception_and_reraises(bus: Telemetry) -> None:
    calls = Calls()
    names = [("my", "op", "start"), ("my", "op", "stop"), ("my", "op", "exception")]
    bus.attach_many("span", names, calls)
    with pytest.raises(ValueError, match="inside"), bus.span(("my", "op")):
        raise ValueError("inside")
    assert [c[0] for c in calls] == [("my", "op", "start"), ("my", "op", "exception")]
    _, measurements, metadata, _ = calls[1]
    assert measurements["duration_ms"] >= 0
    assert (metadata["kind"], metadata["reason"]) == ("ValueError", "inside")


def test_duplicate_handler_id_is_a_conflict(bus: Telemetry) -> None:
    bus.attach("h", ("a",), Calls())
    with pytest.raises(work.ConflictError, match="'h'"):
        bus.attach("h", ("b",), Calls())
    with pytest.raises(work.ConflictError):
        bus.attach_many("h", [("c",)], Calls())
    assert [h.event for h in bus.list_handlers()] == [("a",)]


@pytest.mark.parametrize(
    "event",
    ["work.job.completed", (), ("work", ""), ("work", 1), [("ok",), "bad"], [], None, [()]],
)
def test_a_bad_event_name_is_a_validation_error(bus: Telemetry, event: Any) -> None:
    with pytest.raises(work.ValidationError):
        bus.attach("h", event, Calls())
    assert bus.list_handlers() == []


def test_bad_handler_ids_functions_and_span_prefixes(bus: Telemetry) -> None:
    with pytest.raises(work.ValidationError):
        bus.attach("", ("a",), Calls())
    with pytest.raises(work.ValidationError):
        bus.attach("h", ("a",), "not callable")  # type: ignore[arg-type]
    with pytest.raises(work.ValidationError):
        bus.attach_many("h", [], Calls())
    with pytest.raises(work.ValidationError), bus.span("my.op"):  # type: ignore[arg-type]
        pass  # pragma: no cover


def test_a_raising_handler_is_detached_and_others_still_run(
    bus: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    good = Calls()

    def bad(*args: Any) -> None:
        raise RuntimeError("handler bug")

    bus.attach_many("bad", [("a",), ("b",)], bad)
    bus.attach("good", ("a",), good)
    with caplog.at_level(logging.ERROR, logger="nsai_work.telemetry"):
        bus.execute(("a",), {}, {})
    assert len(good) == 1
    assert [h.id for h in bus.list_handlers()] == ["good"]  # every event of its id is gone
    assert "'bad'" in caplog.text
    assert "detached" in caplog.text
    bus.execute(("a",), {}, {})
    assert len(good) == 2


def test_module_functions_use_the_default_bus() -> None:
    calls = Calls()
    handler_id = unique("module")
    name = ("test", handler_id)
    work.telemetry.attach(handler_id, name, calls)
    try:
        assert [h.id for h in work.telemetry.list_handlers(("test",))] == [handler_id]
        work.telemetry.execute(name, {"x": 1}, {})
        with work.telemetry.span(name):
            pass
        assert work.telemetry.default_bus().listening(name)
    finally:
        assert work.telemetry.detach(handler_id) is True
    assert calls == [(name, {"x": 1}, {}, None)]
    work.telemetry.attach_many(handler_id, [name], calls)
    work.telemetry.detach(handler_id)
    assert work.telemetry.list_handlers(("test",)) == []


def test_capture_events_records_and_detaches(bus: Telemetry) -> None:
    with capture_events([("a",)], bus=bus) as log:
        bus.execute(("a",), {"n": 1}, {"job_id": "j"})
        bus.execute(("b",), {}, {})
        assert len(bus.list_handlers()) == 1
    assert bus.list_handlers() == []
    assert log.named("a") == [CapturedEvent(("a",), {"n": 1}, {"job_id": "j"})]
    assert log.for_job("j") == [("a",)]


# ---- the console logger -------------------------------------------------------------------------


def test_console_logger_logs_ids_not_payloads_or_results(
    bus: Telemetry, handlers: Register, caplog: pytest.LogCaptureFixture
) -> None:
    def handler(job: work.Job) -> dict[str, str]:
        if job.payload.get("fail"):
            raise ValueError("error-text-with-SECRET-ERR")
        return {"answer": "SECRET-RESULT"}

    kind = handlers(handler)
    handler_id = work.telemetry.attach_console_logger(bus=bus)
    assert handler_id == work.telemetry.CONSOLE_LOGGER_ID
    assert {h.event for h in bus.list_handlers()} == set(ALL_EVENTS)
    with (
        caplog.at_level(logging.INFO, logger="nsai_work.telemetry"),
        work.SyncScheduler(telemetry=bus) as s,
    ):
        ok = s.submit(work.Job(kind=kind, tenant_id=TENANT, payload={"prompt": "SECRET-PAYLOAD"}))
        bad = s.submit(
            work.Job(
                kind=kind,
                tenant_id=TENANT,
                payload={"fail": True},
                metadata={"api_key": "SECRET-META"},
                constraints=policy(1),
            )
        )
        s.wait_many([ok.id, bad.id], timeout=5)
    bus.detach(handler_id)
    lines = [r.getMessage() for r in caplog.records if r.name == "nsai_work.telemetry"]
    assert any("[work.job.completed]" in line and ok.id in line for line in lines)
    assert any("[work.job.failed]" in line and "error_type=ValueError" in line for line in lines)
    assert any(f"tenant_id={TENANT}" in line for line in lines)
    assert any("run_time_ms=" in line for line in lines)
    assert "SECRET" not in caplog.text


FORGED = "\n2030-01-01 00:00:00,000 INFO [work.job.completed] tenant_id=admin status=succeeded"
HOSTILE = ("\n", "\r", "\x1b", "\u2028", "\u0085", "\u202e", "\ud800")


def _console_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "nsai_work.telemetry"]


def _labels(line: str) -> list[str]:
    """The ``key=value`` tokens of a console line, quotes and escapes respected."""
    return [token for token in shlex.split(line.partition("] ")[2]) if "=" in token]


def test_console_logger_escapes_hostile_metadata_measurements_and_event_names(
    bus: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    handler_id = work.telemetry.attach_console_logger(
        bus=bus, events=[("work", "job", "completed"), ("evil\x1b[2J", "x\ny")]
    )
    metadata = {
        "job_id": "j1",
        "tenant_id": "acme" + FORGED,
        "namespace": "ns\u2028next",
        "kind": "\x1b[31mred\x1b[0m",
        "reason": "user said: stop=now",
        "error_type": "Bad\ud800Name",
        "status": 'quoted"value\\',
        "backend": "\u202elacol",
        "pool": "p\u0085q",
    }
    with caplog.at_level(logging.INFO, logger="nsai_work.telemetry"):
        bus.execute(("work", "job", "completed"), {"run_time_ms": 1.5, "x\ny": 2}, metadata)
        bus.execute(("evil\x1b[2J", "x\ny"), {"n": "not a number"}, {"job_id": "j2"})
    assert [h.id for h in bus.list_handlers()] == [handler_id, handler_id]  # never raised
    bus.detach(handler_id)
    first, second = _console_lines(caplog)
    for line in (first, second):
        for char in HOSTILE:
            assert char not in line, f"{char!r} printed raw in {line!r}"
    assert first.startswith("[work.job.completed] job_id=j1 ")
    labels = _labels(first)
    assert [label.partition("=")[0] for label in labels] == [
        "job_id",
        "tenant_id",
        "namespace",
        "kind",
        "backend",
        "pool",
        "status",
        "error_type",
        "reason",
        "run_time_ms",
        "x\\ny",
    ]
    assert labels[1] == "tenant_id=acme\\n2030-01-01 00:00:00,000 INFO [work.job.completed] " + (
        "tenant_id=admin status=succeeded"
    )
    assert 'kind="\\x1b[31mred\\x1b[0m"' in first
    assert 'error_type="Bad\\ud800Name"' in first
    assert 'status="quoted\\"value\\\\"' in first
    assert 'reason="user said: stop=now"' in first
    assert second.startswith('["evil\\x1b[2J.x\\ny"] job_id=j2 n="not a number"')


def test_console_logger_escapes_what_a_real_scheduler_emits(
    bus: Telemetry, handlers: Register, caplog: pytest.LogCaptureFixture
) -> None:
    hostile_error = type("Evil" + FORGED, (Exception,), {})
    gate = threading.Event()

    def handler(job: work.Job) -> None:
        if job.payload.get("fail"):
            raise hostile_error("boom")
        gate.wait(5)

    kind = handlers(handler)
    handler_id = work.telemetry.attach_console_logger(bus=bus)
    with (
        caplog.at_level(logging.INFO, logger="nsai_work.telemetry"),
        work.SyncScheduler(telemetry=bus) as s,
    ):
        failing = s.submit(
            work.Job(kind=kind, tenant_id=TENANT, payload={"fail": True}, constraints=policy(1))
        )
        waiting = s.submit(work.Job(kind=kind, tenant_id=TENANT))
        s.cancel(waiting.id, reason="operator\x1b[2J" + FORGED)
        gate.set()
        s.wait_many([failing.id, waiting.id], timeout=5)
    bus.detach(handler_id)
    lines = _console_lines(caplog)
    assert all("\n" not in line and "\x1b" not in line for line in lines)
    for line in lines:  # every label once: nothing forged a second tenant_id or status
        keys = [label.partition("=")[0] for label in _labels(line)]
        assert len(keys) == len(set(keys)), line
    failed = [line for line in lines if line.startswith("[work.job.failed]")]
    assert len(failed) == 1
    assert ".Evil\\n2030-01-01 00:00:00,000 INFO [work.job.completed] tenant_id=admin" in failed[0]
    assert _labels(failed[0])[1] == f"tenant_id={TENANT}"
    canceled = [line for line in lines if line.startswith("[work.job.canceled]")]
    assert len(canceled) == 1
    assert 'reason="operator\\x1b[2J\\n2030-01-01' in canceled[0]


def raising_handler(calls: list[str]) -> Callable[..., None]:
    """A telemetry handler that records the job id of each call, then raises."""

    def bad(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        calls.append(metadata["job_id"])
        raise RuntimeError("telemetry handler bug")

    return bad


def test_a_handler_raising_mid_decision_leaves_the_other_events_of_it_to_others(
    handlers: Register, caplog: pytest.LogCaptureFixture
) -> None:
    """A dispatch emits dequeue, select_backend and started: the handler that raises on the
    first is detached, and another handler still gets all three, in order."""
    kind = handlers(lambda job: None)
    bus = Telemetry()
    raised: list[str] = []
    bus.attach_many("bad", [QUEUE_DEQUEUE, JOB_STARTED], raising_handler(raised))
    with (
        caplog.at_level(logging.ERROR, logger="nsai_work.telemetry"),
        capture_events(bus=bus) as log,
        work.SyncScheduler(telemetry=bus) as s,
    ):
        job = s.wait(s.submit(work.Job(kind=kind, tenant_id=TENANT)).id, timeout=5)
    assert job.status == "succeeded"
    assert raised == [job.id]  # detached at once: not called again for started
    assert log.for_job(job.id)[-4:] == [
        QUEUE_DEQUEUE,
        SCHEDULER_SELECT_BACKEND,
        JOB_STARTED,
        JOB_COMPLETED,
    ]
    assert "'bad'" in caplog.text


def test_a_lone_handler_that_raises_is_detached_and_the_jobs_still_succeed(
    handlers: Register, caplog: pytest.LogCaptureFixture
) -> None:
    """One handler on one event (a one-call plan): its first exception detaches it; the later
    jobs run as usual and it is not called again."""
    kind = handlers(lambda job: None)
    bus = Telemetry()
    calls: list[str] = []
    bus.attach("bad-completed", JOB_COMPLETED, raising_handler(calls))
    with (
        caplog.at_level(logging.ERROR, logger="nsai_work.telemetry"),
        work.SyncScheduler(telemetry=bus) as s,
    ):
        first = s.wait(s.submit(work.Job(kind=kind, tenant_id=TENANT)).id, timeout=5)
        rest = s.submit_many([work.Job(kind=kind, tenant_id=TENANT) for _ in range(3)])
        done = s.wait_many([job.id for job in rest], timeout=5)
    assert first.status == "succeeded"
    assert [job.status for job in done] == ["succeeded"] * 3
    assert calls == [first.id]
    assert bus.list_handlers() == []
    assert "'bad-completed'" in caplog.text


def test_metadata_is_built_only_for_transitions_someone_listens_to(
    handlers: Register, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler on job.completed alone: the submit and dispatch transitions build nothing, the
    end builds one metadata dict per job."""
    from nsai_work.engine import _emit

    built: list[str] = []
    original = _emit._metadata

    def counting(job: work.Job) -> dict[str, Any]:
        built.append(job.id)
        return original(job)

    monkeypatch.setattr(_emit, "_metadata", counting)
    kind = handlers(lambda job: None)
    bus = Telemetry()
    seen: list[str] = []
    bus.attach("completed-only", JOB_COMPLETED, lambda e, m, meta, c: seen.append(meta["job_id"]))
    with work.SyncScheduler(telemetry=bus) as s:
        jobs = s.submit_many([work.Job(kind=kind, tenant_id=TENANT) for _ in range(3)])
        s.wait_many([job.id for job in jobs], timeout=5)
    ids = [job.id for job in jobs]
    assert sorted(seen) == sorted(ids)
    assert sorted(built) == sorted(ids)  # one per job: its completed event

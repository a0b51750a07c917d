"""Bad input through the real scheduler: each is refused with the right WorkError naming the
field, and nothing else changes."""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest

import nsai_work as work
from nsai_work.telemetry import Telemetry
from nsai_work.testing import capture_events

AWARE = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
ONE_TRY = work.Constraints(retry_policy=work.RetryPolicy(max_attempts=1))
TENANT = "bad-input"


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # never leave a handler thread blocked


@pytest.fixture
def scheduler(handlers: Callable[..., str]) -> Iterator[work.SyncScheduler]:
    with work.SyncScheduler() as s:
        yield s


BAD: list[tuple[str, dict[str, Any], type[work.WorkError], str]] = [
    ("unknown priority", {"priority": "urgent"}, work.ValidationError, "$.priority"),
    (
        "negative cpu",
        {"resources": work.Resources(cpu=-4.0)},
        work.ValidationError,
        "$.resources.cpu",
    ),
    ("empty tenant", {"tenant_id": ""}, work.ValidationError, "$.tenant_id"),
    ("tenant with a space", {"tenant_id": "ac me"}, work.ValidationError, "$.tenant_id"),
    ("tenant with a newline", {"tenant_id": "acme\nx"}, work.ValidationError, "$.tenant_id"),
    ("namespace with a slash", {"namespace": "prod/eu"}, work.ValidationError, "$.namespace"),
    (
        "unknown backend",
        {"constraints": work.Constraints(backend="nope")},
        work.UnschedulableError,
        "$.constraints.backend",
    ),
    ("payload set", {"payload": {"ids": {1, 2}}}, work.ValidationError, "$.payload.ids"),
    ("payload object", {"payload": {"o": object()}}, work.ValidationError, "$.payload.o"),
    ("payload nan", {"payload": {"x": [1.0, math.nan]}}, work.ValidationError, "$.payload.x[1]"),
    ("payload int key", {"payload": {"d": {1: "a"}}}, work.ValidationError, "$.payload.d[1]"),
    (
        "cpu wrong type",
        {"resources": work.Resources(cpu="four")},
        work.ValidationError,
        "$.resources.cpu",
    ),  # type: ignore[arg-type]
    ("kind wrong type", {"kind": 5}, work.ValidationError, "$.kind"),
    (
        "depends_on unknown",
        {"constraints": work.Constraints(depends_on=("x",))},
        work.ValidationError,
        "$.constraints.depends_on[0]",
    ),
    (
        "run_at and schedule_in_s",
        {"constraints": work.Constraints(run_at=AWARE, schedule_in_s=1.0)},
        work.ValidationError,
        "$.constraints.schedule_in_s",
    ),
    (
        "deadline before run_at",
        {"constraints": work.Constraints(run_at=AWARE, deadline=AWARE - dt.timedelta(1))},
        work.ValidationError,
        "$.constraints.deadline",
    ),
    (
        "unique_key",
        {"constraints": work.Constraints(unique_key="u")},
        work.ValidationError,
        "$.constraints.unique_key",
    ),
    (
        "max_cost_usd",
        {"resources": work.Resources(max_cost_usd=1.0)},
        work.ValidationError,
        "$.resources.max_cost_usd",
    ),
    (
        "nan cpu",
        {"resources": work.Resources(cpu=math.nan)},
        work.ValidationError,
        "$.resources.cpu",
    ),
    (
        "nan memory",
        {"resources": work.Resources(memory_mb=math.nan)},  # type: ignore[arg-type]
        work.ValidationError,
        "$.resources.memory_mb",
    ),
    (
        "infinite timeout",
        {"resources": work.Resources(timeout_ms=math.inf)},  # type: ignore[arg-type]
        work.ValidationError,
        "$.resources.timeout_ms",
    ),
    (
        "nan cost cap",
        {"resources": work.Resources(timeout_ms=1000, max_cost_usd=math.nan)},
        work.ValidationError,
        "$.resources.max_cost_usd",
    ),
    ("huge cpu", {"resources": work.Resources(cpu=1e308)}, work.ValidationError, "$.resources.cpu"),
    ("surrogate tenant", {"tenant_id": "\ud800"}, work.ValidationError, "$.tenant_id"),
    (
        "surrogate payload key",
        {"payload": {"n": 1, "\udc80": "x"}},
        work.ValidationError,
        "$.payload['\\udc80']",
    ),
    (
        "surrogate metadata",
        {"metadata": {"m": ["\ud800"]}},
        work.ValidationError,
        "$.metadata.m[0]",
    ),
    ("forged cost", {"cost_usd": -1e9}, work.ValidationError, "$.cost_usd"),
    ("forged retry_of", {"retry_of": "someone-elses-job"}, work.ValidationError, "$.retry_of"),
    ("forged result", {"result": {"paid": True}}, work.ValidationError, "$.result"),
    ("forged status", {"status": "succeeded"}, work.ValidationError, "$.status"),
    (
        "forged progress",
        {"progress": work.Progress(fraction=1.0)},
        work.ValidationError,
        "$.progress",
    ),
    ("forged submitted_at", {"submitted_at": AWARE}, work.ValidationError, "$.submitted_at"),
    ("forged estimate", {"estimated_cost_usd": 0.0}, work.ValidationError, "$.estimated_cost_usd"),
]


def _bad_job(kind: str, fields: dict[str, Any]) -> work.Job:
    base: dict[str, Any] = {"kind": kind, "tenant_id": TENANT}
    base.update(fields)
    return work.Job(**base)


@pytest.mark.parametrize(
    ("fields", "error", "where"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_input_is_refused_and_nothing_else_changes(
    scheduler: work.SyncScheduler,
    handlers: Callable[..., str],
    gate: threading.Event,
    fields: dict[str, Any],
    error: type[work.WorkError],
    where: str,
) -> None:
    kind = handlers(lambda job: gate.wait(10) and {"done": job.payload["n"]})
    before = scheduler.submit(work.Job(kind=kind, tenant_id=TENANT, payload={"n": 1}))
    submitted = scheduler.stats().totals.submitted
    listing = [j.id for j in scheduler.list(TENANT)]

    with pytest.raises(error) as info:
        scheduler.submit(_bad_job(kind, fields))
    assert where in str(info.value)
    if isinstance(info.value, work.ValidationError):
        assert info.value.path == where

    assert scheduler.stats().totals.submitted == submitted
    assert [j.id for j in scheduler.list(TENANT)] == listing
    gate.set()
    done = scheduler.wait(before.id, timeout=5)
    assert done.status == "succeeded"
    assert done.result == {"done": 1}


def test_unknown_backend_error_lists_the_known_ones(scheduler: work.SyncScheduler) -> None:
    with pytest.raises(work.UnschedulableError) as info:
        scheduler.submit(
            work.Job(kind="k", tenant_id=TENANT, constraints=work.Constraints(backend="nope"))
        )
    assert "'nope'" in str(info.value)
    for known in ("local", "altar", "mock"):
        assert known in str(info.value)


def test_unknown_kind_is_unschedulable_and_names_it(scheduler: work.SyncScheduler) -> None:
    with pytest.raises(work.UnschedulableError, match="no-such-kind") as info:
        scheduler.submit(work.Job(kind="no-such-kind", tenant_id=TENANT))
    assert "$.kind" in str(info.value)


def test_tool_call_naming_an_unregistered_tool_is_refused(scheduler: work.SyncScheduler) -> None:
    job = work.Job(kind="tool_call", tenant_id=TENANT, payload={"tool_name": "no_such_tool"})
    with pytest.raises(work.ValidationError) as info:
        scheduler.submit(job)
    assert "no_such_tool" in str(info.value)
    assert info.value.path == "$.payload.tool_name"
    assert scheduler.stats().totals.submitted == 0


def test_tool_call_missing_a_required_argument_is_refused(
    scheduler: work.SyncScheduler, tools: Callable[..., str]
) -> None:
    name = tools(
        lambda args: args["q"],
        parameters={"type": "OBJECT", "properties": {"q": {"type": "STRING"}}, "required": ["q"]},
    )
    with pytest.raises(work.ValidationError) as info:
        scheduler.submit(work.Job(kind="tool_call", tenant_id=TENANT, payload={"tool_name": name}))
    assert info.value.path == "$.payload.args.q"


def test_tool_call_naming_two_tools_is_refused(scheduler: work.SyncScheduler) -> None:
    payload = {"tool_name": "echo", "function_name": "other"}
    with pytest.raises(work.ValidationError, match="two different tools") as info:
        scheduler.submit(work.Job(kind="tool_call", tenant_id=TENANT, payload=payload))
    assert info.value.path == "$.payload.function_name"


@pytest.mark.parametrize("thing", [None, {"kind": "k", "tenant_id": "t"}])
def test_submitting_something_else_than_a_job(scheduler: work.SyncScheduler, thing: Any) -> None:
    with pytest.raises(work.ValidationError, match=r"work\.Job"):
        scheduler.submit(thing)


# ---- submit_many: all or nothing ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({"resources": work.Resources(cpu=-1.0)}, work.ValidationError),
        ({"constraints": work.Constraints(backend="nope")}, work.UnschedulableError),
        ({"payload": {"s": {1}}}, work.ValidationError),
        ({"resources": work.Resources(gpu="H100")}, work.UnschedulableError),
    ],
)
def test_submit_many_is_all_or_nothing(
    scheduler: work.SyncScheduler,
    handlers: Callable[..., str],
    bad: dict[str, Any],
    error: type[work.WorkError],
) -> None:
    kind = handlers(lambda job: "ok")
    jobs = [work.Job(kind=kind, tenant_id=TENANT) for _ in range(5)]
    jobs[3] = _bad_job(kind, bad)
    with pytest.raises(error) as info:
        scheduler.submit_many(jobs)
    assert "#3" in str(info.value)
    if isinstance(info.value, work.ValidationError):
        assert info.value.index == 3
    assert scheduler.stats().totals.submitted == 0
    assert len(scheduler.list(TENANT)) == 0
    for job in jobs:
        with pytest.raises(work.NotFoundError):
            scheduler.get(job.id)
    # the good ones can still be submitted afterwards
    good = scheduler.submit_many(jobs[:3])
    assert [j.id for j in good] == [j.id for j in jobs[:3]]
    assert all(j.status == "succeeded" for j in scheduler.wait_many([j.id for j in good], 5))


def test_submit_many_with_a_duplicate_id_inside_the_batch(
    scheduler: work.SyncScheduler, handlers: Callable[..., str]
) -> None:
    kind = handlers(lambda job: None)
    jobs = [work.Job(kind=kind, tenant_id=TENANT, id=f"dup-{i}") for i in range(3)]
    jobs.append(work.Job(kind=kind, tenant_id=TENANT, id="dup-1"))
    with pytest.raises(work.ConflictError, match="#3"):
        scheduler.submit_many(jobs)
    assert len(scheduler.list(TENANT)) == 0


def test_submit_many_of_nothing(scheduler: work.SyncScheduler) -> None:
    assert scheduler.submit_many([]) == []


# ---- duplicate ids ------------------------------------------------------------------------------


def test_duplicate_id_is_a_conflict(
    scheduler: work.SyncScheduler, handlers: Callable[..., str]
) -> None:
    kind = handlers(lambda job: "first")
    original = work.Job(kind=kind, tenant_id=TENANT)
    first = scheduler.submit(original)
    scheduler.wait(first.id, timeout=5)
    with pytest.raises(work.ConflictError, match=original.id):
        scheduler.submit(work.Job(kind=kind, tenant_id=TENANT, id=original.id))
    with pytest.raises(work.ConflictError):
        scheduler.submit(original)  # resubmitting the very same object
    assert scheduler.get(original.id).result == "first"
    assert scheduler.stats().totals.submitted == 1


# ---- what handlers return -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "path"),
    [
        ({1, 2}, "$.result"),
        ({"a": {1}}, "$.result.a"),
        ({"x": math.inf}, "$.result.x"),
        ({"x": ["\ud800"]}, "$.result.x[0]"),
        ("text \udfff", "$.result"),
    ],
)
def test_a_non_json_result_fails_the_job_without_retry(
    scheduler: work.SyncScheduler, handlers: Callable[..., str], result: Any, path: str
) -> None:
    calls: list[int] = []

    def handler(job: work.Job) -> Any:
        calls.append(1)
        return result

    kind = handlers(handler)
    retrying = work.Constraints(retry_policy=work.RetryPolicy(max_attempts=3, base_delay_ms=1))
    job = scheduler.submit(work.Job(kind=kind, tenant_id=TENANT, constraints=retrying))
    done = scheduler.wait(job.id, timeout=5)
    assert done.status == "failed"
    assert done.error is not None
    assert path in done.error.message
    assert len(done.attempts) == 1
    assert len(calls) == 1
    assert done.result is None


def test_a_result_over_max_result_bytes_fails_the_job(handlers: Callable[..., str]) -> None:
    kind = handlers(lambda job: {"blob": "x" * 500})
    small = handlers(lambda job: {"blob": "x" * 10})
    with work.SyncScheduler(max_result_bytes=200) as s:
        big = s.wait(s.submit(work.Job(kind=kind, tenant_id=TENANT)).id, timeout=5)
        ok = s.wait(s.submit(work.Job(kind=small, tenant_id=TENANT)).id, timeout=5)
    assert big.status == "failed"
    assert big.error is not None
    assert "$.result" in big.error.message
    assert "max_result_bytes" in big.error.message
    assert len(big.attempts) == 1
    assert ok.status == "succeeded"


# ---- bad arguments to the other verbs -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"status": "nope"}, "$.status"),
        ({"limit": 0}, "$.limit"),
        ({"limit": -1}, "$.limit"),
        ({"limit": "10"}, "$.limit"),
        ({"namespace": ""}, "$.namespace"),
        ({"cursor": 5}, "$.cursor"),
    ],
)
def test_list_with_bad_arguments(
    scheduler: work.SyncScheduler, kwargs: dict[str, Any], path: str
) -> None:
    with pytest.raises(work.ValidationError) as info:
        scheduler.list(TENANT, **kwargs)
    assert info.value.path == path


def test_list_with_an_empty_tenant(scheduler: work.SyncScheduler) -> None:
    with pytest.raises(work.ValidationError) as info:
        scheduler.list("")
    assert info.value.path == "$.tenant_id"


@pytest.mark.parametrize("timeout", [-1, "5", True, math.nan, math.inf, -math.inf, 1e300, 10**400])
def test_wait_with_a_bad_timeout(
    scheduler: work.SyncScheduler, handlers: Callable[..., str], gate: threading.Event, timeout: Any
) -> None:
    kind = handlers(lambda job: gate.wait(10))
    job = scheduler.submit(work.Job(kind=kind, tenant_id=TENANT))
    with pytest.raises(work.ValidationError) as info:
        scheduler.wait(job.id, timeout=timeout)
    assert info.value.path == "$.timeout"


def test_retry_of_another_tenants_job_cannot_be_forged_but_retry_sets_it(
    scheduler: work.SyncScheduler, handlers: Callable[..., str]
) -> None:
    kind = handlers(lambda job: job.payload["n"])
    theirs = scheduler.submit(work.Job(kind=kind, tenant_id="other-tenant", payload={"n": 1}))
    scheduler.wait(theirs.id, timeout=5)
    forged = work.Job(kind=kind, tenant_id=TENANT, payload={"n": 2}, retry_of=theirs.id)
    with pytest.raises(work.ValidationError, match="retry") as info:
        scheduler.submit(forged)
    assert info.value.path == "$.retry_of"
    again = scheduler.retry(theirs.id)
    assert (again.retry_of, again.tenant_id, again.cost_usd) == (theirs.id, "other-tenant", 0.0)
    assert scheduler.wait(again.id, timeout=5).result == 1
    mine = scheduler.as_tenant(TENANT)
    with pytest.raises(work.NotFoundError):
        mine.retry(theirs.id)


def test_get_and_cancel_of_unknown_ids(scheduler: work.SyncScheduler) -> None:
    with pytest.raises(work.NotFoundError):
        scheduler.get("no-such-job")
    with pytest.raises(work.NotFoundError):
        scheduler.cancel("no-such-job")
    with pytest.raises(work.NotFoundError):
        scheduler.retry("no-such-job")
    with pytest.raises(work.NotFoundError):
        scheduler.wait("no-such-job", timeout=1)
    with pytest.raises(work.ValidationError):
        scheduler.get(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {"max_waiting": -1},
        {"finished_max": -1},
        {"backends": []},
        {"backends": ["nope"]},
        {"default_backend": "nope"},
        {"pools": {"nope": [work.Pool(name="x")]}},
        {"no_such_option": 1},
        {"fair_share_resolution_s": 0},
        {"fair_share_resolution_s": float("inf")},
        {"fair_share_resolution_s": float("nan")},
    ],
)
def test_bad_configuration(options: dict[str, Any]) -> None:
    with pytest.raises(work.ConfigurationError):  # noqa: PT012 - either step may refuse it
        s = work.SyncScheduler(**options)
        s.start()
        s.stop()


@pytest.mark.parametrize(
    ("options", "where"),
    [
        ({"pools": {"local": [work.Pool(name="gpu a100", slots=1)]}}, "pools['local'][0]"),
        ({"pools": {"local": [{"name": "-gpu", "slots": 1}]}}, "pools['local'][0]"),
        ({"tenants": [work.Tenant("acme\x1b[2J")]}, "tenants[0]"),
        ({"tenants": [work.Tenant("t", namespaces={"a b": work.Quota()})]}, "tenants[0]"),
        ({"config": work.Config(tenants=(work.Tenant("ac me"),))}, "tenants[0]"),
        ({"config": work.Config(pools={"local": (work.Pool(name="p q"),)})}, "pools['local'][0]"),
    ],
)
def test_bad_identifiers_in_the_configuration_are_refused(
    options: dict[str, Any], where: str
) -> None:
    with pytest.raises(work.ConfigurationError, match="is an identifier") as info:
        work.SyncScheduler(**options)
    assert str(info.value).startswith(where)


def test_the_default_tenant_id_is_a_placeholder_and_is_not_checked() -> None:
    with work.SyncScheduler(default_tenant=work.Tenant("*", weight=2.0)) as s:
        assert s.stats().totals.submitted == 0


@pytest.mark.parametrize("kind", ["my kind", "kind\n", "", "-k", 7])
def test_register_handler_refuses_a_kind_that_is_not_an_identifier(kind: Any) -> None:
    with pytest.raises(work.ValidationError, match="a handler's kind is an identifier") as info:
        work.register_handler(kind, lambda job: None)
    assert info.value.path == "$.kind"
    assert kind not in work.default_handlers().kinds()


def test_set_tenant_refuses_a_bad_id() -> None:
    with work.SyncScheduler() as s:
        with pytest.raises(work.ValidationError, match="a tenant id is an identifier") as info:
            s.set_tenant(work.Tenant("acme\n"))
        assert info.value.path == "$.tenant.id"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("finished_ttl_s", math.nan),
        ("finished_ttl_s", math.inf),
        ("finished_ttl_s", -1.0),
        ("exit_timeout_s", math.nan),
        ("exit_timeout_s", math.inf),
        ("finished_max", math.inf),
        ("finished_max", 1.5),
        ("max_result_bytes", math.nan),
    ],
)
def test_non_finite_options_are_refused_naming_the_option(option: str, value: float) -> None:
    with pytest.raises(work.ConfigurationError, match=f"^{option} must be") as info:
        work.SyncScheduler(**{option: value})
    assert repr(value) in str(info.value)


@pytest.mark.parametrize(
    ("options", "where", "words"),
    [
        ({"tenants": [work.Tenant("t", weight=math.nan)]}, "tenants[0]", "finite"),
        (
            {"tenants": [work.Tenant("t", quota=work.Quota(submit_rate=math.inf))]},
            "tenants[0]",
            "finite",
        ),
        (
            {"default_tenant": work.Tenant("*", quota=work.Quota(cpu=math.nan))},
            "default_tenant",
            "finite",
        ),
        ({"pools": {"local": [work.Pool(name="p", cpu=math.inf)]}}, "pools['local'][0]", "finite"),
        ({"pools": {"local": [work.Pool(name="p", cpu=1e308)]}}, "pools['local'][0]", "<= 1000000"),
        (
            {"config": work.Config(pools={"local": (work.Pool(name="p", memory_mb=math.nan),)})},  # type: ignore[arg-type]
            "pools['local'][0]",
            "finite",
        ),
        (
            {"priority_guard": work.PriorityGuard(min_share={work.Priority.BATCH: math.nan})},
            "priority_guard",
            "finite",
        ),
    ],
)
def test_non_finite_and_huge_numbers_in_configured_structs_are_refused(
    options: dict[str, Any], where: str, words: str
) -> None:
    with pytest.raises(work.ConfigurationError) as info:
        work.SyncScheduler(**options)
    assert str(info.value).startswith(where)
    assert words in str(info.value)


def test_an_infinite_submit_rate_is_refused_at_set_tenant_and_submits_go_on(
    handlers: Callable[..., str],
) -> None:
    kind = handlers(lambda job: "ok")
    with work.SyncScheduler() as s:
        with pytest.raises(work.ValidationError, match="finite") as info:
            s.set_tenant(work.Tenant(TENANT, quota=work.Quota(submit_rate=math.inf)))
        assert info.value.path == "$.tenant.quota.submit_rate"
        job = s.submit(work.Job(kind=kind, tenant_id=TENANT))
        assert s.wait(job.id, timeout=5).status == "succeeded"


def test_a_bad_fair_share_resolution_is_named_with_its_rule() -> None:
    with pytest.raises(work.ConfigurationError, match=r"fair_share_resolution_s .* > 0, got -1"):
        work.SyncScheduler(fair_share_resolution_s=-1)


# ---- telemetry listening must not change what a bad submit raises -------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"priority": "urgent"},
        {"priority": "realtime", "resources": work.Resources(cpu=-1.0)},
    ],
    ids=["unknown-priority", "string-priority-and-negative-cpu"],
)
def test_a_bad_submit_raises_validation_error_while_someone_listens(
    handlers: Callable[..., str], fields: dict[str, Any]
) -> None:
    kind = handlers(lambda job: None)
    bus = Telemetry()
    with work.SyncScheduler(telemetry=bus) as s, capture_events(bus=bus) as log:
        with pytest.raises(work.ValidationError):
            s.submit(_bad_job(kind, fields))
        assert [e.metadata["decision"] for e in log.named("work", "scheduler", "admit")] == [
            "reject"
        ]


# ---- stats count rejected submits ---------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"resources": work.Resources(cpu=-1.0)},
        {"constraints": work.Constraints(backend="nope")},
        {"resources": work.Resources(gpu="H100")},
    ],
    ids=["invalid", "unknown-backend", "never-fits"],
)
def test_every_rejected_submit_is_counted(
    scheduler: work.SyncScheduler, handlers: Callable[..., str], fields: dict[str, Any]
) -> None:
    kind = handlers(lambda job: None)
    with pytest.raises(work.WorkError):
        scheduler.submit(_bad_job(kind, fields))
    totals = scheduler.stats().totals
    assert (totals.submitted, totals.rejected) == (0, 1)


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), -1.0, None])
def test_stop_with_a_bad_timeout_is_refused_and_the_scheduler_still_stops(timeout: Any) -> None:
    s = work.SyncScheduler().start()
    try:
        with pytest.raises(work.ValidationError) as refused:
            s.stop(timeout)
        assert refused.value.path == "$.timeout"
        assert s.running
    finally:
        s.stop(timeout=1)
    assert not s.running


def test_a_tiny_tenant_weight_is_refused() -> None:
    """A weight of 1e-300 made a tenant's fair-share charges overflow to infinity."""
    with pytest.raises(work.ConfigurationError, match="weight"):
        work.SyncScheduler(tenants=[work.Tenant("t", weight=1e-300)])
    with work.SyncScheduler() as s, pytest.raises(work.ValidationError) as refused:
        s.set_tenant(work.Tenant("t", weight=1e-300))
    assert refused.value.path == "$.tenant.weight"


def test_user_text_a_store_cannot_encode_is_refused_or_replaced(
    handlers: Callable[..., str],
) -> None:
    def surrogate_error(job: work.Job) -> None:
        raise RuntimeError("bad \ud800 text")

    def surrogate_progress(job: work.Job, ctx: work.JobContext) -> str:
        try:
            ctx.progress(0.5, "half \ud800 way")
        except work.ValidationError as exc:
            return exc.path
        return "accepted"

    failing, progressing = handlers(surrogate_error), handlers(surrogate_progress)
    with work.SyncScheduler() as s:
        failed = s.wait(s.submit(work.Job(kind=failing, tenant_id="t")).id, timeout=10)
        progressed = s.wait(s.submit(work.Job(kind=progressing, tenant_id="t")).id, timeout=10)
    assert failed.error is not None
    assert failed.error.message == "bad ? text"
    msgspec.json.encode(failed)  # a stored job stays encodable
    assert progressed.result == "$.message"

"""Validation at the edge, without a scheduler: ``validate_new_job`` on jobs offered to submit,
``normalize_result`` on what handlers return."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import msgspec
import pytest

import nsai_work as work
from nsai_work._ir import IDENTIFIER_PATTERN, IDENTIFIER_RE, is_identifier, job_decoder
from nsai_work._job_rules import NOT_SUPPORTED_YET
from nsai_work._validate import (
    SCHEDULER_OWNED,
    check_identifier,
    check_json,
    find_non_json,
    from_msgspec_error,
    normalize_result,
    retry_copy,
    validate_new_job,
    validate_struct,
)

AWARE = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def job(**fields: Any) -> work.Job:
    base: dict[str, Any] = {"kind": "k", "tenant_id": "acme"}
    base.update(fields)
    return work.Job(**base)


# ---- find_non_json ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -5, 2**70, 1.5, "s", [], {}, [1, "a", None], {"a": {"b": [1.0, {"c": "d"}]}}],
)
def test_json_values_pass(value: Any) -> None:
    assert find_non_json(value) is None


@pytest.mark.parametrize(
    ("value", "path", "found"),
    [
        ({1, 2}, "$", "set"),
        ({"a": {1}}, "$.a", "set"),
        ({"a": [1, {"b": object()}]}, "$.a[1].b", "object"),
        ({"a": math.nan}, "$.a", "nan"),
        ({"a": [math.inf]}, "$.a[0]", "inf"),
        ({1: "x"}, "$[1]", "key of type int"),
        ({"a": {(1, 2): 3}}, "$.a[(1, 2)]", "key of type tuple"),
        ({"odd key": b"bytes"}, "$['odd key']", "bytes"),
        ({"when": AWARE}, "$.when", "datetime"),
    ],
)
def test_non_json_is_found_with_its_path(value: Any, path: str, found: str) -> None:
    result = find_non_json(value)
    assert result is not None
    assert result[0] == path
    assert found in result[1]


def test_too_deep_nesting_is_not_json() -> None:
    value: Any = "leaf"
    for _ in range(200):
        value = [value]
    result = find_non_json(value)
    assert result is not None
    assert "nesting deeper" in result[1]


def test_check_json_prefixes_the_path() -> None:
    with pytest.raises(work.ValidationError) as info:
        check_json({"a": {1}}, "$.payload", what="the payload", index=2)
    assert info.value.path == "$.payload.a"
    assert info.value.index == 2
    assert "the payload must be JSON-encodable" in str(info.value)


# ---- validate_new_job ---------------------------------------------------------------------------


def test_a_good_job_comes_back_as_a_private_equal_copy() -> None:
    payload = {"nested": {"n": [1, 2]}}
    original = job(payload=payload, priority="realtime")
    copy = validate_new_job(original)
    assert copy.id == original.id
    assert copy.priority is work.Priority.REALTIME  # a plain string becomes the enum
    payload["nested"]["n"].append(3)  # the caller mutates its dict after submit ...
    assert copy.payload == {"nested": {"n": [1, 2]}}  # ... the scheduler's copy is untouched


@pytest.mark.parametrize(
    ("fields", "path", "words"),
    [
        ({"priority": "urgent"}, "$.priority", "urgent"),
        ({"resources": work.Resources(cpu=-1.0)}, "$.resources.cpu", ">= 0"),
        ({"resources": work.Resources(cpu="four")}, "$.resources.cpu", "str"),  # type: ignore[arg-type]
        ({"resources": work.Resources(memory_mb=-1)}, "$.resources.memory_mb", ">= 0"),
        ({"resources": work.Resources(timeout_ms=0)}, "$.resources.timeout_ms", ">= 1"),
        ({"resources": work.Resources(gpu_count=-1)}, "$.resources.gpu_count", ">= 0"),
        ({"tenant_id": ""}, "$.tenant_id", "(empty)"),
        ({"kind": ""}, "$.kind", "(empty)"),
        ({"namespace": ""}, "$.namespace", "(empty)"),
        ({"tags": ("",)}, "$.tags[0]", "length >= 1"),
        ({"tenant_id": 7}, "$.tenant_id", "int"),
        (
            {"constraints": work.Constraints(retry_policy=work.RetryPolicy(max_attempts=0))},
            "$.constraints.retry_policy.max_attempts",
            ">= 1",
        ),
        ({"payload": {"s": {1}}}, "$.payload.s", "set"),
        ({"payload": {"o": object()}}, "$.payload.o", "object"),
        ({"payload": {"x": [0.5, math.nan]}}, "$.payload.x[1]", "nan"),
        ({"payload": {3: "three"}}, "$.payload[3]", "key of type int"),
        ({"metadata": {"m": {1}}}, "$.metadata.m", "set"),
        ({"status": work.Status.RUNNING}, "$.status", "retry(job_id)"),
        ({"attempt": 2}, "$.attempt", "set by the scheduler"),
    ],
)
def test_bad_fields_name_their_path(fields: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(work.ValidationError) as info:
        validate_new_job(job(**fields))
    assert info.value.path == path
    assert path in str(info.value)
    assert words in str(info.value)


def test_index_is_carried_into_the_error() -> None:
    with pytest.raises(work.ValidationError) as info:
        validate_new_job(job(resources=work.Resources(cpu=-1.0)), index=4)
    assert info.value.index == 4
    assert "job #4" in str(info.value)


@pytest.mark.parametrize("thing", [{"kind": "k", "tenant_id": "a"}, None, "job"])
def test_not_a_job_is_refused(thing: object) -> None:
    with pytest.raises(work.ValidationError, match=r"expected a work\.Job"):
        validate_new_job(thing)


WAIT_RULES: list[tuple[str, str, work.Constraints]] = [
    ("$.constraints.depends_on[1]", "listed twice", work.Constraints(depends_on=("a", "a"))),
    (
        "$.constraints.depends_on[0]",
        "cannot depend on itself",
        work.Constraints(depends_on=("me",)),
    ),
    (
        "$.constraints.allow_failure[0]",
        "not among depends_on",
        work.Constraints(depends_on=("a",), allow_failure=("b",)),
    ),
    (
        "$.constraints.schedule_in_s",
        "not both",
        work.Constraints(run_at=AWARE, schedule_in_s=1.0),
    ),
    (
        "$.constraints.deadline",
        "could never start",
        work.Constraints(run_at=AWARE, deadline=AWARE - dt.timedelta(seconds=1)),
    ),
    ("$.constraints.schedule_in_s", "Expected `float` >= 0", work.Constraints(schedule_in_s=-1.0)),
    (
        "$.constraints.unique_states",
        "unique_key, which is not set",
        work.Constraints(unique_states=(work.Status.SUCCEEDED,)),
    ),
    (
        "$.constraints.unique_period_s",
        "unique_key, which is not set",
        work.Constraints(unique_period_s=60.0),
    ),
    (
        "$.constraints.unique_states",
        "each once",
        work.Constraints(unique_key="u", unique_states=()),
    ),
    (
        "$.constraints.unique_states",
        "each once",
        work.Constraints(unique_key="u", unique_states=(work.Status.RUNNING, work.Status.RUNNING)),
    ),
    (
        "$.constraints.unique_period_s",
        "Expected `float` > 0",
        work.Constraints(unique_key="u", unique_period_s=0.0),
    ),
]


@pytest.mark.parametrize(
    ("path", "rule", "constraints"), WAIT_RULES, ids=[r for _, r, _ in WAIT_RULES]
)
def test_the_rules_of_dependencies_and_time_name_the_field(
    path: str, rule: str, constraints: work.Constraints
) -> None:
    with pytest.raises(work.ValidationError, match=rule) as info:
        validate_new_job(job(id="me", constraints=constraints))
    assert info.value.path == path


def test_dependencies_and_time_within_the_rules_pass() -> None:
    constraints = work.Constraints(
        depends_on=("a", "b"),
        allow_failure=("b",),
        run_at=AWARE,
        deadline=AWARE + dt.timedelta(hours=1),
    )
    checked = validate_new_job(job(constraints=constraints))
    assert checked.constraints == constraints
    assert validate_new_job(job(constraints=work.Constraints(allow_failure=True)))


def test_a_unique_key_with_its_states_and_period_passes() -> None:
    constraints = work.Constraints(
        unique_key="nightly", unique_states=(work.Status.SUCCEEDED,), unique_period_s=60.0
    )
    assert validate_new_job(job(constraints=constraints)).constraints == constraints


def test_a_cost_cap_needs_a_timeout_to_bound_the_estimate() -> None:
    with pytest.raises(work.ValidationError, match=r"needs resources\.timeout_ms") as info:
        validate_new_job(job(resources=work.Resources(max_cost_usd=1.0)))
    assert info.value.path == "$.resources.max_cost_usd"
    assert validate_new_job(job(resources=work.Resources(max_cost_usd=1.0, timeout_ms=1000)))


def test_every_field_of_the_ir_is_built() -> None:
    assert NOT_SUPPORTED_YET == ()


def test_a_naive_run_at_is_a_type_error_before_it_is_unsupported() -> None:
    naive = dt.datetime(2030, 1, 1)
    with pytest.raises(work.ValidationError) as info:
        validate_new_job(job(constraints=work.Constraints(run_at=naive)))
    assert info.value.path == "$.constraints.run_at"


# ---- invalid enum values list the allowed ones --------------------------------------------------

PRIORITIES = "'realtime', 'interactive', 'batch', 'offline'"


@pytest.mark.parametrize(
    ("fields", "path", "allowed"),
    [
        ({"priority": "urgent"}, "$.priority", PRIORITIES),
        ({"priority": "URGENT"}, "$.priority", PRIORITIES),
        (
            {"constraints": work.Constraints(retry_policy=work.RetryPolicy(backoff="fast"))},  # type: ignore[arg-type]
            "$.constraints.retry_policy.backoff",
            "'exponential', 'linear', 'constant'",
        ),
    ],
)
def test_an_invalid_enum_value_lists_the_allowed_ones(
    fields: dict[str, Any], path: str, allowed: str
) -> None:
    with pytest.raises(work.ValidationError) as info:
        validate_new_job(job(**fields))
    assert info.value.path == path
    assert f"expected one of {allowed}" in str(info.value)


def test_an_invalid_priority_key_of_the_guard_lists_the_levels() -> None:
    with pytest.raises(work.ValidationError, match=f"expected one of {PRIORITIES}") as info:
        validate_struct({"min_share": {"urgent": 0.1}}, work.PriorityGuard, "$.priority_guard")
    assert info.value.path == "$.priority_guard.min_share"


def test_an_invalid_status_in_a_decoded_job_lists_the_statuses() -> None:
    raw = b'{"kind": "k", "tenant_id": "a", "status": "done"}'
    with pytest.raises(msgspec.ValidationError) as info:
        job_decoder.decode(raw)
    error = from_msgspec_error(info.value)
    assert error.path == "$.status"
    assert "'pending', 'queued', 'running', 'succeeded', 'failed', 'timeout', 'canceled'" in str(
        error
    )


# ---- fields the scheduler owns -----------------------------------------------------------------

OWNED_VALUES: dict[str, Any] = {
    "status": work.Status.SUCCEEDED,
    "backend": "local",
    "pool": "local:async",
    "attempt": 1,
    "attempts": (work.Attempt(number=1, backend="local", pool="local:async", started_at=AWARE),),
    "result": {"answer": 42},
    "error": work.JobError(type="ValueError", message="forged"),
    "waiting_reason": "backoff",
    "cancel_reason": "user",
    "retry_of": "0190b7c0-0000-7000-8000-000000000000",
    "submitted_at": AWARE,
    "queued_at": AWARE,
    "started_at": AWARE,
    "finished_at": AWARE,
    "next_attempt_at": AWARE,
    "progress": work.Progress(fraction=0.5),
    "estimated_cost_usd": 0.0,
    "cost_usd": -1e9,
    "duplicate": True,
    "audit": (work.Audit(action="cancel", by="local", at=AWARE),),
}


def test_the_scheduler_owns_every_field_below_the_line() -> None:
    fields = work.Job.__struct_fields__
    assert fields[fields.index("status") :] == SCHEDULER_OWNED
    assert set(OWNED_VALUES) == set(SCHEDULER_OWNED)


@pytest.mark.parametrize(("field", "value"), OWNED_VALUES.items(), ids=list(OWNED_VALUES))
def test_a_new_job_setting_a_scheduler_owned_field_is_refused(field: str, value: Any) -> None:
    with pytest.raises(work.ValidationError, match="is set by the scheduler") as info:
        validate_new_job(job(**{field: value}), index=3)
    assert info.value.path == f"$.{field}"
    assert info.value.index == 3


@pytest.mark.parametrize(
    ("field", "value"),
    [("cost_usd", math.nan), ("estimated_cost_usd", math.inf), ("status", "bogus")],
)
def test_odd_values_of_owned_fields_are_refused_too(field: str, value: Any) -> None:
    with pytest.raises(work.ValidationError, match="is set by the scheduler") as info:
        validate_new_job(job(**{field: value}))
    assert info.value.path == f"$.{field}"


class _NoEquality:
    def __eq__(self, other: object) -> bool:
        raise ValueError("the truth value of an array is ambiguous")

    __hash__ = None  # type: ignore[assignment]


def test_an_owned_field_holding_an_object_whose_equality_raises_is_refused() -> None:
    with pytest.raises(work.ValidationError, match="is set by the scheduler") as info:
        validate_new_job(job(result=_NoEquality()))
    assert info.value.path == "$.result"


def test_owned_fields_at_their_defaults_spelled_out_are_accepted() -> None:
    spelled = job(status="pending", attempt=0, attempts=(), cost_usd=0, result=None)
    assert validate_new_job(spelled).status is work.Status.PENDING


def test_a_retry_copy_may_carry_retry_of_and_only_inside_its_block() -> None:
    finished = validate_new_job(job(payload={"n": 1}, tags=("t",)))
    with retry_copy(finished) as copy:
        assert copy.id != finished.id
        assert copy.retry_of == finished.id
        assert (copy.payload, copy.tags) == (finished.payload, finished.tags)
        checked = validate_new_job(copy)
        assert checked.retry_of == finished.id
        forged = msgspec.structs.replace(copy, id=work.new_job_id())  # same fields, other object
        with pytest.raises(work.ValidationError, match="retry_of is set by the scheduler"):
            validate_new_job(forged)
    with pytest.raises(work.ValidationError, match="retry_of is set by the scheduler"):
        validate_new_job(copy)


def test_a_retry_copy_gets_every_other_check() -> None:
    finished = job(resources=work.Resources(cpu=-1.0))  # as if stored before a rule changed
    with retry_copy(finished) as copy, pytest.raises(work.ValidationError) as info:
        validate_new_job(copy)
    assert info.value.path == "$.resources.cpu"


# ---- identifiers: tenant ids, namespaces, kinds ------------------------------------------------

GOOD_IDENTIFIERS = [
    "a",
    "acme",
    "Z9",
    "customer-123",
    "t.0a1b",
    "user@org",
    "local:async",
    "pkg.mod:func",
    "a_b",
    "x" * 128,
]
BAD_IDENTIFIERS = [
    ("ac me", "' ' at position 2", "ac-me"),
    ("acme\n", "'\\n' at position 4", "acme-"),
    ("acme\n[work.job.completed] forged", "'\\n' at position 4", None),
    ("\x1b[31macme", "'\\x1b' at position 0", "31macme"),
    ("-acme", "starts with '-'", "acme"),
    ("_acme", "starts with '_'", "acme"),
    ("x" * 129, "129 characters", None),
    ("café", "'é' at position 3", "caf-"),
    ("prod/eu", "'/' at position 4", "prod-eu"),
    ("a\u202eb", "at position 1", "a-b"),
]


@pytest.mark.parametrize("value", GOOD_IDENTIFIERS)
def test_identifiers_that_follow_the_rule_pass(value: str) -> None:
    assert is_identifier(value)
    copy = validate_new_job(job(kind=value, tenant_id=value, namespace=value))
    assert (copy.kind, copy.tenant_id, copy.namespace) == (value, value, value)


@pytest.mark.parametrize("field", ["tenant_id", "namespace", "kind"])
@pytest.mark.parametrize(("value", "problem", "suggestion"), BAD_IDENTIFIERS)
def test_a_bad_identifier_is_refused_naming_its_field(
    field: str, value: str, problem: str, suggestion: str | None
) -> None:
    with pytest.raises(work.ValidationError) as info:
        validate_new_job(job(**{field: value}), index=1)
    assert info.value.path == f"$.{field}"
    assert info.value.index == 1
    message = str(info.value)
    assert "ASCII letters, digits and . _ : @ -" in message
    assert problem in message
    assert "\n" not in message  # the value is shown escaped
    assert "\x1b" not in message
    if suggestion is not None:
        assert f"e.g. {suggestion!r}" in message


def test_an_identifier_with_a_trailing_newline_is_not_one() -> None:
    # ``$`` in a Python regex matches before a final newline: the rule must be matched in full.
    assert IDENTIFIER_RE.search("acme\n") is not None
    assert not is_identifier("acme\n")
    assert not is_identifier(7)


def test_the_identifier_rule_is_in_the_json_schema() -> None:
    schema = msgspec.json.schema(work.Job)["$defs"]["Job"]["properties"]
    for field in ("kind", "tenant_id", "namespace"):
        assert schema[field]["pattern"] == IDENTIFIER_PATTERN
        assert schema[field]["maxLength"] == 128


def test_check_identifier_names_what_it_checks() -> None:
    with pytest.raises(work.ValidationError, match=r"^a tool name is an identifier") as info:
        check_identifier("my tool", "$.name", what="a tool name")
    assert info.value.path == "$.name"
    with pytest.raises(work.ValidationError, match="not a str but int"):
        check_identifier(7, "$.name", what="a tool name")


# ---- non-finite numbers, huge values, lone surrogates -------------------------------------------

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize("value", [NAN, INF, -INF])
@pytest.mark.parametrize("field", ["cpu", "memory_mb", "timeout_ms", "max_cost_usd"])
def test_a_non_finite_resource_is_refused_not_turned_into_unset(field: str, value: float) -> None:
    # msgspec writes NaN and infinity as null, and null is "unset": no limit, no timeout, no cap.
    fields: dict[str, Any] = {"timeout_ms": 1000, field: value}  # a cost cap needs a timeout
    resources = work.Resources(**fields)
    with pytest.raises(work.ValidationError, match="expected a finite number") as info:
        validate_new_job(job(resources=resources), index=2)
    assert info.value.path == f"$.resources.{field}"
    assert info.value.index == 2


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"resources": work.Resources(custom={"license": NAN})}, "$.resources.custom.license"),
        ({"resources": work.Resources(cpu=1.0, custom={"x y": INF})}, "$.resources.custom['x y']"),
        (
            {"constraints": work.Constraints(retry_policy=work.RetryPolicy(base_delay_ms=NAN))},  # type: ignore[arg-type]
            "$.constraints.retry_policy.base_delay_ms",
        ),
        ({"priority": NAN}, "$.priority"),
    ],
)
def test_a_non_finite_number_anywhere_in_the_job_is_named(
    fields: dict[str, Any], path: str
) -> None:
    with pytest.raises(work.ValidationError, match="expected a finite number") as info:
        validate_new_job(job(**fields))
    assert info.value.path == path


@pytest.mark.parametrize(
    ("resources", "path", "bound"),
    [
        (work.Resources(cpu=1e308), "$.resources.cpu", "<= 1000000"),
        (work.Resources(cpu=1_000_001.0), "$.resources.cpu", "<= 1000000"),
        (work.Resources(memory_mb=10**30), "$.resources.memory_mb", "<= 1000000000000"),
        (work.Resources(timeout_ms=10**15), "$.resources.timeout_ms", "<= 31536000000"),
        (
            work.Resources(timeout_ms=1, max_cost_usd=1e300),
            "$.resources.max_cost_usd",
            "<= 1000000000",
        ),
        (work.Resources(custom={"tokens": 1e300}), "$.resources.custom[...]", "<= 1000000000000"),
    ],
)
def test_huge_values_are_refused_with_the_bound(
    resources: work.Resources, path: str, bound: str
) -> None:
    with pytest.raises(work.ValidationError) as info:
        validate_new_job(job(resources=resources))
    assert info.value.path == path
    assert bound in str(info.value)


def test_the_largest_values_within_the_bounds_pass() -> None:
    resources = work.Resources(
        cpu=1e6,
        memory_mb=10**12,
        timeout_ms=31_536_000_000,
        max_cost_usd=1e9,
        custom={"tokens": 1e12},
    )
    assert validate_new_job(job(resources=resources)).resources == resources


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"tenant_id": "\ud800"}, "$.tenant_id"),
        ({"kind": "k\udfff"}, "$.kind"),
        ({"payload": {"text": "ok \ud800"}}, "$.payload.text"),
        ({"payload": {"\udcff": 1}}, "$.payload['\\udcff']"),
        ({"payload": {"a": {"\ud800b": [1]}}}, "$.payload.a['\\ud800b']"),
        ({"metadata": {"a": ["fine", "\ud800"]}}, "$.metadata.a[1]"),
        ({"tags": ("x", "\ud800")}, "$.tags[1]"),
        (
            {"constraints": work.Constraints(pool_labels={"region": "\ud800"})},
            "$.constraints.pool_labels.region",
        ),
    ],
)
def test_a_lone_surrogate_is_a_validation_error_naming_the_string(
    fields: dict[str, Any], path: str
) -> None:
    with pytest.raises(work.ValidationError, match="lone surrogate") as info:
        validate_new_job(job(**fields), index=0)
    assert info.value.path == path
    assert "valid Unicode" in str(info.value)


@pytest.mark.parametrize(
    ("value", "kind", "path"),
    [
        ({"id": "t", "weight": NAN}, work.Tenant, "$.weight"),
        ({"id": "t", "quota": {"submit_rate": INF}}, work.Tenant, "$.quota.submit_rate"),
        ({"id": "t", "quota": {"cpu": NAN}}, work.Tenant, "$.quota.cpu"),
        ({"id": "t", "quota": {"budget_usd": -INF}}, work.Tenant, "$.quota.budget_usd"),
        ({"id": "t", "quota": {"budget_period_s": INF}}, work.Tenant, "$.quota.budget_period_s"),
        ({"id": "t", "namespaces": {"n": {"cpu": INF}}}, work.Tenant, "$.namespaces.n.cpu"),
        (work.Pool(name="p", cpu=NAN), work.Pool, "$.cpu"),
        (work.Pool(name="p", custom={"x": INF}), work.Pool, "$.custom.x"),
        (work.Pool(name="p", prices=work.Prices(cpu_hour=NAN)), work.Pool, "$.prices.cpu_hour"),
        (
            work.Pool(name="p", prices=work.Prices(gpu_hour={"A100": INF})),
            work.Pool,
            "$.prices.gpu_hour.A100",
        ),
        (
            work.PriorityGuard(min_share={work.Priority.OFFLINE: NAN}),
            work.PriorityGuard,
            "$.min_share.offline",
        ),
        (work.Progress(fraction=NAN), work.Progress, "$.fraction"),
    ],
)
def test_non_finite_numbers_in_other_ir_types_are_refused(
    value: Any, kind: type[Any], path: str
) -> None:
    with pytest.raises(work.ValidationError, match="expected a finite number") as info:
        validate_struct(value, kind)
    assert info.value.path == path


@pytest.mark.parametrize(
    ("value", "kind", "path", "bound"),
    [
        (
            {"id": "t", "quota": {"submit_rate": 1e7}},
            work.Tenant,
            "$.quota.submit_rate",
            "<= 1000000",
        ),
        (
            {"id": "t", "quota": {"submit_rate": 1e-9}},
            work.Tenant,
            "$.quota.submit_rate",
            ">= 1e-06",
        ),
        (
            {"id": "t", "quota": {"max_queued": 10**30}},
            work.Tenant,
            "$.quota.max_queued",
            "<= 1000000000",
        ),
        (
            {"id": "t", "quota": {"budget_usd": 1e300}},
            work.Tenant,
            "$.quota.budget_usd",
            "<= 1000000000",
        ),
        ({"id": "t", "weight": 1e300}, work.Tenant, "$.weight", "<= 1000000"),
        ({"name": "p", "slots": 10**9}, work.Pool, "$.slots", "<= 1000000"),
        ({"name": "p", "gpus": {"A100": 10**9}}, work.Pool, "$.gpus[...]", "<= 1000000"),
        ({"name": "p", "memory_mb": 10**30}, work.Pool, "$.memory_mb", "<= 1000000000000"),
        (
            {"name": "p", "prices": {"slot_hour": 1e300}},
            work.Pool,
            "$.prices.slot_hour",
            "<= 1000000",
        ),
    ],
)
def test_huge_values_in_other_ir_types_are_refused(
    value: Any, kind: type[Any], path: str, bound: str
) -> None:
    with pytest.raises(work.ValidationError) as info:
        validate_struct(value, kind)
    assert info.value.path == path
    assert bound in str(info.value)


def test_a_lone_surrogate_in_a_pool_label_is_refused() -> None:
    with pytest.raises(work.ValidationError, match="lone surrogate") as info:
        validate_struct(work.Pool(name="p", labels={"region": "eu\ud800"}), work.Pool, "$.pool")
    assert info.value.path == "$.pool.labels.region"


# ---- normalize_result ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (None, None),
        ("text", "text"),
        (3, 3),
        (2.5, 2.5),
        (True, True),
        ((1, 2), [1, 2]),
        ({"a": (1, {"b": None})}, {"a": [1, {"b": None}]}),
    ],
)
def test_results_become_json(result: Any, expected: Any) -> None:
    assert normalize_result(result, 1_000) == expected


@pytest.mark.parametrize(
    ("result", "path"),
    [
        ({1, 2}, "$.result"),
        ({"a": {1}}, "$.result.a"),
        (math.nan, "$.result"),
        (object(), "$.result"),
        ("\ud800", "$.result"),
        ({"a": ["\udfff"]}, "$.result.a[0]"),
        ({"\ud800": 1}, "$.result['\\ud800']"),
    ],
)
def test_a_non_json_result_is_refused(result: Any, path: str) -> None:
    with pytest.raises(work.ValidationError) as info:
        normalize_result(result, 1_000)
    assert info.value.path == path


def test_a_result_is_a_private_copy() -> None:
    inner = [1]
    result = {"inner": inner}
    normalized = normalize_result(result, 1_000)
    inner.append(2)
    assert normalized == {"inner": [1]}


@pytest.mark.parametrize("result", [{"blob": "x" * 200}, ["x" * 200], "x" * 200])
def test_a_result_over_max_bytes_is_refused(result: Any) -> None:
    with pytest.raises(work.ValidationError, match="max_result_bytes") as info:
        normalize_result(result, 100)
    assert info.value.path == "$.result"


def test_result_size_is_measured_in_encoded_bytes_for_strings() -> None:
    # 60 characters, 120 bytes of UTF-8 (122 bytes of JSON): over a 100-byte cap, like the same
    # text inside a list is.
    text = "é" * 60
    with pytest.raises(work.ValidationError, match="max_result_bytes"):
        normalize_result([text], 100)
    with pytest.raises(work.ValidationError, match="max_result_bytes"):
        normalize_result(text, 100)

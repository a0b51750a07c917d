"""The Job IR: ids, timestamps, the JSON round trip, the committed JSON Schemas, the public
names and the error tree."""

from __future__ import annotations

import datetime as dt
import importlib
import time
import uuid
from pathlib import Path

import msgspec
import pytest

import nsai_work as work
from nsai_work import _errors
from nsai_work._ir import job_decoder
from nsai_work.cli import REGENERATE, render_schemas, schemas

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "schema"


# ---- ids and timestamps -------------------------------------------------------------------------


def test_job_id_is_a_uuid7() -> None:
    job = work.Job(kind="k", tenant_id="acme")
    parsed = uuid.UUID(job.id)
    assert str(parsed) == job.id  # canonical lowercase text form
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def test_job_id_carries_the_creation_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    job_id = work.Job(kind="k", tenant_id="acme").id
    after = time.time_ns() // 1_000_000
    millis = int(job_id.replace("-", "")[:12], 16)
    # the generator may borrow a later millisecond after 4096 ids in one: allow a little slack
    assert before <= millis <= after + 1000


def test_job_ids_built_later_sort_later() -> None:
    ids = [work.Job(kind="k", tenant_id="acme").id for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert work.new_job_id() > ids[-1]


def test_a_caller_may_pass_its_own_id() -> None:
    assert work.Job(kind="k", tenant_id="acme", id="my-id").id == "my-id"


def test_created_at_is_timezone_aware_utc() -> None:
    job = work.Job(kind="k", tenant_id="acme")
    assert job.created_at.tzinfo is not None
    assert job.created_at.utcoffset() == dt.timedelta(0)
    assert abs(job.created_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)


def test_a_new_job_has_the_documented_defaults() -> None:
    job = work.Job(kind="k", tenant_id="acme")
    assert job.status is work.Status.PENDING
    assert job.priority is work.Priority.BATCH
    assert job.namespace == "default"
    policy = job.constraints.retry_policy
    assert policy.max_attempts == 3
    assert policy.backoff is work.Backoff.EXPONENTIAL
    assert (policy.base_delay_ms, policy.max_delay_ms, policy.jitter) == (1000, 60000, True)
    assert job.attempts == ()
    assert job.error is None
    assert not job.is_terminal


def test_priority_ranks_and_terminal_statuses() -> None:
    assert [p.rank for p in work.Priority] == [0, 1, 2, 3]
    assert [p.value for p in work.Priority] == ["realtime", "interactive", "batch", "offline"]
    assert {"succeeded", "failed", "timeout", "canceled"} == work.TERMINAL_STATUSES
    assert {s for s in work.Status if s.is_terminal} == work.TERMINAL_STATUSES


# ---- JSON round trip ----------------------------------------------------------------------------


def _every_field_set() -> work.Job:
    t0 = dt.datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
    later = t0 + dt.timedelta(seconds=3)
    error = work.JobError(type="ValueError", message="boom", traceback="Traceback...", attempt=1)
    return work.Job(
        kind="train",
        tenant_id="acme",
        namespace="research",
        priority=work.Priority.REALTIME,
        payload={"model": "llama", "lr": 0.001, "layers": [1, 2, {"deep": None}], "ok": True},
        resources=work.Resources(
            cpu=4.5,
            memory_mb=8192,
            gpu="A100",
            gpu_count=2,
            timeout_ms=300_000,
            max_cost_usd=1.25,
            custom={"license": 1.0},
        ),
        constraints=work.Constraints(
            retry_policy=work.RetryPolicy(
                max_attempts=5,
                backoff=work.Backoff.LINEAR,
                base_delay_ms=10,
                max_delay_ms=500,
                jitter=False,
                retry_on_timeout=False,
            ),
            concurrency_group="gpu-group",
            depends_on=("a", "b"),
            run_at=t0,
            deadline=t0 + dt.timedelta(hours=1),
            backend="local",
            unique_key="uniq",
            pool_labels={"region": "eu"},
            allow_failure=("a",),
            schedule_in_s=5.0,
            unique_states=(work.Status.SUCCEEDED,),
            unique_period_s=60.0,
        ),
        metadata={"owner": "ada", "trace": {"id": 7}},
        tags=("x", "y"),
        id="0190b7c0-0000-7000-8000-000000000001",
        created_at=t0,
        status=work.Status.FAILED,
        backend="local",
        pool="local:threads",
        attempt=2,
        attempts=(
            work.Attempt(
                number=1,
                backend="local",
                pool="local:threads",
                started_at=t0,
                finished_at=later,
                status=work.Status.FAILED,
                error=error,
                cost_usd=0.25,
                handle="4242",
            ),
            work.Attempt(
                number=2,
                backend="local",
                pool="local:threads",
                started_at=later,
                finished_at=later,
                status=work.Status.FAILED,
                error=error,
            ),
        ),
        result={"partial": [1.5, "two"]},
        error=error,
        waiting_reason="backoff",
        cancel_reason="user",
        retry_of="0190b7c0-0000-7000-8000-000000000000",
        submitted_at=t0,
        queued_at=t0,
        started_at=later,
        finished_at=later,
        next_attempt_at=later,
        progress=work.Progress(fraction=0.5, message="half"),
        estimated_cost_usd=1.2,
        cost_usd=0.5,
        duplicate=True,
        audit=(work.Audit(action="cancel", by="key:0123456789abcdef", at=later, reason="user"),),
    )


def test_every_field_of_the_sample_job_is_set() -> None:
    job = _every_field_set()
    fresh = work.Job(kind="k", tenant_id="t")
    for struct, default in (
        (job, fresh),
        (job.resources, work.Resources()),
        (job.constraints, work.Constraints()),
        (job.constraints.retry_policy, work.RetryPolicy()),
        (job.attempts[0], None),
        (job.error, None),
    ):
        for field in msgspec.structs.fields(type(struct)):
            value = getattr(struct, field.name)
            assert value is not None, f"{type(struct).__name__}.{field.name} is unset"
            if default is not None:
                assert value != getattr(default, field.name), f"{field.name} is left at default"


def test_json_round_trip_is_lossless() -> None:
    job = _every_field_set()
    encoded = msgspec.json.encode(job)
    decoded = job_decoder.decode(encoded)
    assert decoded == job
    assert msgspec.json.encode(decoded) == encoded
    assert decoded.created_at.tzinfo is not None


def test_json_round_trip_of_a_fresh_job() -> None:
    job = work.Job(kind="k", tenant_id="acme", payload={"n": [1, 2]})
    assert job_decoder.decode(msgspec.json.encode(job)) == job


def test_decoder_refuses_a_naive_datetime() -> None:
    raw = msgspec.json.encode(work.Job(kind="k", tenant_id="acme"))
    naive = raw.replace(b'Z"', b'"', 1)
    with pytest.raises(msgspec.ValidationError, match="created_at"):
        job_decoder.decode(naive)


# ---- the committed JSON Schemas -----------------------------------------------------------------


def stale_schema_message(directory: Path) -> str | None:
    """Why the schema files under ``directory`` differ from the IR types, or None."""
    problems = []
    for name, text in render_schemas().items():
        path = directory / name
        if not path.exists():
            problems.append(f"{path} is missing")
        elif path.read_text() != text:
            problems.append(f"{path} is stale")
    if not problems:
        return None
    return "; ".join(problems) + f" - the IR types changed: {REGENERATE}"


def test_the_cli_renders_these_two_schemas() -> None:
    assert sorted(schemas()) == ["job.schema.json", "pool.schema.json"]


def test_committed_schemas_match_the_ir_types() -> None:
    message = stale_schema_message(SCHEMA_DIR)
    assert message is None, message


def test_a_stale_schema_is_reported_with_the_fix(tmp_path: Path) -> None:
    for name, text in render_schemas().items():
        (tmp_path / name).write_text(text)
    assert stale_schema_message(tmp_path) is None
    (tmp_path / "pool.schema.json").write_text("{}\n")
    message = stale_schema_message(tmp_path)
    assert message is not None
    assert "pool.schema.json is stale" in message
    assert "make schema" in message


def test_cli_schema_write_produces_the_committed_files(tmp_path: Path) -> None:
    from nsai_work.cli import main

    assert main(["schema", "--write", str(tmp_path)]) == 0
    for name in schemas():
        assert (tmp_path / name).read_text() == (SCHEMA_DIR / name).read_text(), (
            f"schema/{name} is stale: {REGENERATE}"
        )


# ---- public names -------------------------------------------------------------------------------


def _isort_key(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: SCREAMING_CASE, then CamelCase, then the rest, each alphabetical."""
    if len(name) > 1 and name.isupper():
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


@pytest.mark.parametrize(
    "module",
    [
        "nsai_work",
        "nsai_work.telemetry",
        "nsai_work.telemetry.events",
        "nsai_work.backends",
        "nsai_work.testing",
        "nsai_work.altar",
        "nsai_work._errors",
        "nsai_work._ir",
    ],
)
def test_all_is_sorted_unique_and_exists(module: str) -> None:
    mod = importlib.import_module(module)
    names = list(mod.__all__)
    assert names == sorted(names, key=_isort_key), f"{module}.__all__ is not sorted"
    assert len(set(names)) == len(names), f"{module}.__all__ has duplicates"
    missing = [name for name in names if not hasattr(mod, name)]
    assert not missing, f"{module}.__all__ names what it lacks: {missing}"


def test_public_api_has_the_seed_verbs() -> None:
    for verb in (
        "start",
        "stop",
        "submit",
        "submit_many",
        "get",
        "list",
        "wait",
        "wait_many",
        "as_completed",
        "cancel",
        "retry",
        "stats",
        "handler",
        "register_handler",
        "unregister_handler",
    ):
        assert callable(getattr(work, verb)), verb
    assert work.backends.Mock is work.backends.MockBackend


# ---- the error tree -----------------------------------------------------------------------------

TREE = {
    work.ValidationError: work.WorkError,
    work.NotFoundError: work.WorkError,
    work.ConflictError: work.WorkError,
    work.NotStartedError: work.WorkError,
    work.WaitTimeoutError: work.WorkError,
    work.AdmissionError: work.WorkError,
    work.QuotaExceededError: work.AdmissionError,
    work.RateLimitedError: work.AdmissionError,
    work.QueueFullError: work.AdmissionError,
    work.UnschedulableError: work.AdmissionError,
    work.BackendError: work.WorkError,
    work.StoreError: work.WorkError,
    work.StoreUnavailableError: work.StoreError,
    work.ConfigurationError: work.WorkError,
}


@pytest.mark.parametrize(("error", "parent"), TREE.items(), ids=lambda c: c.__name__)
def test_error_tree(error: type[Exception], parent: type[Exception]) -> None:
    assert issubclass(error, parent)
    assert issubclass(error, work.WorkError)
    assert error.__name__ in (_errors.__doc__ or ""), "the module docstring draws the tree"
    # only the four admission errors sit under AdmissionError
    if error is not work.AdmissionError:
        assert issubclass(error, work.AdmissionError) == (parent is work.AdmissionError)


def test_every_exported_work_error_is_in_the_tree() -> None:
    exported = {
        value
        for value in vars(work).values()
        if isinstance(value, type) and issubclass(value, work.WorkError)
    }
    assert exported == {*TREE, work.WorkError}


def test_wait_timeout_is_also_a_builtin_timeout() -> None:
    assert issubclass(work.WaitTimeoutError, TimeoutError)
    with pytest.raises(TimeoutError):
        raise work.WaitTimeoutError("gave up")


def test_non_retryable_error_is_user_code_not_ours() -> None:
    assert issubclass(work.NonRetryableError, Exception)
    assert not issubclass(work.NonRetryableError, work.WorkError)


def test_validation_error_carries_path_rule_and_index() -> None:
    error = work.ValidationError("must be >= 0", path="$.resources.cpu", index=3)
    assert (error.path, error.rule, error.index) == ("$.resources.cpu", "must be >= 0", 3)
    assert "$.resources.cpu" in str(error)
    assert "#3" in str(error)
    assert work.ValidationError("bad").path == "$"


def test_rate_limited_error_has_retry_after() -> None:
    assert work.RateLimitedError("slow down", retry_after_s=2.5).retry_after_s == 2.5
    reasons = {
        work.QuotaExceededError.reason,
        work.RateLimitedError.reason,
        work.QueueFullError.reason,
        work.UnschedulableError.reason,
    }
    assert len(reasons) == 4

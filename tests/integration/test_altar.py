"""ALTAR through a real scheduler: validated tool calls run, bad calls are refused at submit with
every violation and nothing admitted, tool failures follow the job's retry policy, sync and async
tools, timeout and cancel, ``AltarBackend(enabled=False)``, and per-tool limits as the backend
reports them."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import nsai_work as work
from nsai_work.altar import ToolArgumentsError, ToolLimits, ToolRegistry
from nsai_work.backends import AltarBackend

Register = Callable[..., str]
TENANT = "altar-tests"
WAIT_S = 10

SEARCH: dict[str, Any] = {
    "type": "OBJECT",
    "properties": {
        "query": {"type": "STRING", "description": "Search query", "minLength": 1},
        "limit": {"type": "INTEGER", "minimum": 1, "maximum": 50},
        "filters": {
            "type": "OBJECT",
            "properties": {
                "category": {"type": "STRING", "enum": ["physics", "biology"]},
                "date_range": {
                    "type": "OBJECT",
                    "properties": {"start": {"type": "STRING"}, "end": {"type": "STRING"}},
                },
            },
        },
    },
    "required": ["query"],
}


def retries(attempts: int) -> work.Constraints:
    policy = work.RetryPolicy(max_attempts=attempts, base_delay_ms=1, jitter=False)
    return work.Constraints(retry_policy=policy)


def call(tool: str, args: Any = None, *, key: str = "args", **fields: Any) -> work.Job:
    payload: dict[str, Any] = {"tool_name": tool}
    if args is not None:
        payload[key] = args
    return work.Job(kind="tool_call", tenant_id=TENANT, payload=payload, **fields)


@pytest.fixture
def scheduler() -> Iterator[work.SyncScheduler]:
    with work.SyncScheduler() as s:
        yield s


@pytest.fixture
def search(tools: Register) -> str:
    def run(args: dict[str, Any]) -> dict[str, Any]:
        filters = args.get("filters", {})
        return {"query": args["query"], "category": filters.get("category"), "hits": 3}

    return tools(run, parameters=SEARCH)


# ---- valid calls run -----------------------------------------------------------------------------


def test_a_valid_nested_call_runs_and_returns_the_tools_result(
    scheduler: work.SyncScheduler, search: str
) -> None:
    args = {
        "query": "fusion",
        "limit": 5,
        "filters": {"category": "physics", "date_range": {"start": "2024-01", "end": "2024-12"}},
    }
    job = scheduler.wait(scheduler.submit(call(search, args)).id, timeout=WAIT_S)
    assert (job.status, job.backend, job.result) == (
        "succeeded",
        "altar",
        {"query": "fusion", "category": "physics", "hits": 3},
    )


@pytest.mark.parametrize("style", ["sync", "async"])
def test_sync_and_async_tools_run_in_their_pools(
    scheduler: work.SyncScheduler, tools: Register, style: str
) -> None:
    def sync_tool(args: dict[str, Any]) -> str:
        return threading.current_thread().name

    async def async_tool(args: dict[str, Any]) -> str:
        await asyncio.sleep(0)
        return threading.current_thread().name

    name = tools(sync_tool if style == "sync" else async_tool)
    job = scheduler.wait(scheduler.submit(call(name, {"x": 1})).id, timeout=WAIT_S)
    assert job.status == "succeeded"
    assert job.pool == ("altar:threads" if style == "sync" else "altar:async")
    assert job.result.startswith("nsai-altar") == (style == "sync")


def test_a_tool_without_a_declaration_takes_any_arguments(
    scheduler: work.SyncScheduler, tools: Register
) -> None:
    name = tools(lambda args: sorted(args))
    job = scheduler.wait(scheduler.submit(call(name, {"b": 1, "a": [2]})).id, timeout=WAIT_S)
    assert job.result == ["a", "b"]


# ---- bad calls are refused at submit, nothing admitted -------------------------------------------


BAD_CALLS: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "nested wrong type",
        {"query": "q", "filters": {"date_range": {"start": 20240101}}},
        ["$.payload.args.filters.date_range.start: expected STRING, got INTEGER (20240101)"],
    ),
    (
        "missing required",
        {"limit": 3},
        ["$.payload.args.query: missing required property 'query' (required: ['query'])"],
    ),
    (
        "unknown field",
        {"query": "q", "filters": {"categroy": "physics"}},
        [
            "$.payload.args.filters.categroy: unknown property 'categroy': undeclared properties "
            "are rejected (declared: ['category', 'date_range'])"
        ],
    ),
    (
        "every violation at once",
        {
            "query": "",
            "limit": 1.0,
            "filters": {"category": "chemistry", "date_range": {"start": None}},
            "sort": "asc",
        },
        [
            "$.payload.args.query: expected at least 1 character, got 0 ('')",
            "$.payload.args.limit: expected INTEGER, got NUMBER (1.0)",
            "$.payload.args.filters.category: expected one of ['physics', 'biology'], got "
            "'chemistry'",
            "$.payload.args.filters.date_range.start: expected STRING, got null",
            "$.payload.args.sort: unknown property 'sort': undeclared properties are rejected "
            "(declared: ['query', 'limit', 'filters'])",
        ],
    ),
    ("a bool is not an INTEGER", {"query": "q", "limit": True}, ["BOOLEAN (True)"]),
    ("limit past maximum", {"query": "q", "limit": 51}, ["expected a value <= 50, got 51"]),
]


@pytest.mark.parametrize(
    ("args", "expected"), [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS]
)
def test_a_bad_call_is_refused_with_every_violation_and_nothing_admitted(
    scheduler: work.SyncScheduler, search: str, args: dict[str, Any], expected: list[str]
) -> None:
    with pytest.raises(ToolArgumentsError) as info:
        scheduler.submit(call(search, args))
    error = info.value
    assert isinstance(error, work.ValidationError)
    found = [str(v) for v in error.violations]
    if len(expected) == 1 and not expected[0].startswith("$"):
        assert len(found) == 1, found
        assert expected[0] in found[0], found
    else:
        assert found == expected
    assert error.path == error.violations[0].path
    for violation in found:
        assert violation in str(error)
    stats = scheduler.stats()
    assert stats.totals.submitted == 0
    assert list(scheduler.list(TENANT)) == []


def test_paths_follow_the_arguments_key(scheduler: work.SyncScheduler, search: str) -> None:
    with pytest.raises(ToolArgumentsError) as info:
        scheduler.submit(call(search, {"query": 1}, key="arguments"))
    assert info.value.path == "$.payload.arguments.query"


def test_an_unknown_tool_is_refused(scheduler: work.SyncScheduler) -> None:
    with pytest.raises(work.ValidationError) as info:
        scheduler.submit(call("no_such_tool", {"a": 1}))
    assert info.value.path == "$.payload.tool_name"
    assert "unknown tool 'no_such_tool'" in str(info.value)
    assert scheduler.stats().totals.submitted == 0


# A hang guard: backtracking takes years here, RE2 microseconds. The async Scheduler checks the
# call on this (the main) thread, where pytest-timeout's signal can end a stall.
@pytest.mark.timeout(60)
def test_a_catastrophic_pattern_does_not_stall_the_scheduler(
    tools: Register, arun: Callable[..., Any]
) -> None:
    evil = tools(
        lambda args: args,
        parameters={"properties": {"s": {"type": "STRING", "pattern": "^(a+)+$"}}},
    )

    async def main() -> tuple[ToolArgumentsError, work.Job, work.Job]:
        async with work.Scheduler() as s:
            with pytest.raises(ToolArgumentsError) as info:
                await s.submit(call(evil, {"s": "a" * 10_000 + "b"}))
            echo = work.Job(kind="tool_call", tenant_id="other", payload={"tool": "echo"})
            other = await s.wait((await s.submit(echo)).id, timeout=WAIT_S)
            good = await s.wait((await s.submit(call(evil, {"s": "a" * 10_000}))).id, WAIT_S)
            return info.value, other, good

    error, other, good = arun(main())
    assert error.path == "$.payload.args.s"
    assert other.status == "succeeded"
    assert good.result == {"s": "a" * 10_000}


@pytest.mark.parametrize(
    "name", ["bad\nname", "x\x1b[31mred", "a" * 200, "café"], ids=["newline", "ansi", "long", "é"]
)
def test_a_call_naming_an_invalid_tool_name_is_refused_clearly(
    scheduler: work.SyncScheduler, name: str
) -> None:
    with pytest.raises(work.ValidationError) as info:
        scheduler.submit(work.Job(kind="tool_call", tenant_id=TENANT, payload={"tool": name}))
    assert info.value.path == "$.payload.tool"
    message = str(info.value)
    assert f"no tool can be named {name!r}"[:60] in message
    assert "(tool names match [A-Za-z0-9][A-Za-z0-9._:@-]{0,127})" in message
    assert message.isprintable(), message
    assert scheduler.stats().totals.submitted == 0


def test_arguments_that_are_not_an_object_are_refused(
    scheduler: work.SyncScheduler, search: str
) -> None:
    with pytest.raises(work.ValidationError) as info:
        scheduler.submit(call(search, ["fusion"]))  # type: ignore[arg-type]
    assert info.value.path == "$.payload.args"


def test_one_bad_call_in_a_batch_admits_none(scheduler: work.SyncScheduler, search: str) -> None:
    batch = [
        call(search, {"query": "a"}),
        call(search, {"query": "b", "filters": {"date_range": {"start": 1, "end": 2}}}),
        call(search, {"query": "c"}),
    ]
    with pytest.raises(work.ValidationError) as info:
        scheduler.submit_many(batch)
    error = info.value
    assert error.index == 1
    assert error.path == "$.payload.args.filters.date_range.start"
    assert "$.payload.args.filters.date_range.end: expected STRING" in str(error)
    assert scheduler.stats().totals.submitted == 0
    assert list(scheduler.list(TENANT)) == []


def test_the_async_api_refuses_bad_calls_too(search: str, arun: Callable[..., Any]) -> None:
    async def main() -> tuple[ToolArgumentsError, int]:
        async with work.Scheduler() as s:
            with pytest.raises(ToolArgumentsError) as info:
                await s.submit(call(search, {"query": 3}))
            return info.value, (await s.stats()).totals.submitted

    error, submitted = arun(main())
    assert error.path == "$.payload.args.query"
    assert submitted == 0


def test_a_backend_with_its_own_registry_validates_against_it() -> None:
    registry = ToolRegistry(builtins=False)
    registry.register(
        "private_add",
        "Add",
        {"properties": {"a": {"type": "NUMBER"}, "b": {"type": "NUMBER"}}, "required": ["a", "b"]},
        lambda args: args["a"] + args["b"],
    )
    with work.SyncScheduler(backends=("local", AltarBackend(tools=registry))) as s:
        done = s.wait(s.submit(call("private_add", {"a": 1, "b": 2.5})).id, timeout=WAIT_S)
        assert done.result == 3.5
        with pytest.raises(ToolArgumentsError, match=r"\$\.payload\.args\.b: expected NUMBER"):
            s.submit(call("private_add", {"a": 1, "b": "2"}))
        with pytest.raises(work.ValidationError, match="unknown tool 'echo'"):
            s.submit(call("echo", {}))


# ---- failures, retries, timeout and cancel -------------------------------------------------------


def test_a_tool_exception_is_retried_per_the_jobs_policy(
    scheduler: work.SyncScheduler, tools: Register
) -> None:
    calls: list[int] = []

    def flaky(args: dict[str, Any]) -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError(f"upstream API unavailable (call {len(calls)})")
        return "ok"

    name = tools(flaky)
    job = scheduler.submit(call(name, {}, constraints=retries(3)))
    job = scheduler.wait(job.id, timeout=WAIT_S)
    assert (job.status, job.result, job.attempt, len(calls)) == ("succeeded", "ok", 3, 3)
    assert [a.error.message for a in job.attempts if a.error] == [
        "upstream API unavailable (call 1)",
        "upstream API unavailable (call 2)",
    ]


def test_a_tool_that_keeps_failing_fails_the_job_with_its_error(
    scheduler: work.SyncScheduler, tools: Register
) -> None:
    def broken(args: dict[str, Any]) -> None:
        raise ValueError("bad upstream response")

    job = scheduler.wait(
        scheduler.submit(call(tools(broken), {}, constraints=retries(2))).id, timeout=WAIT_S
    )
    assert (job.status, job.attempt) == ("failed", 2)
    assert job.error is not None
    assert (job.error.type, job.error.message) == ("ValueError", "bad upstream response")


@pytest.mark.parametrize("style", ["sync", "async"])
def test_non_retryable_error_fails_the_tool_call_at_once(
    scheduler: work.SyncScheduler, tools: Register, style: str
) -> None:
    calls: list[int] = []

    def refuse(args: dict[str, Any]) -> None:
        calls.append(1)
        raise work.NonRetryableError("quota for this API key is exhausted")

    async def refuse_async(args: dict[str, Any]) -> None:
        refuse(args)

    name = tools(refuse if style == "sync" else refuse_async)
    job = scheduler.wait(
        scheduler.submit(call(name, {}, constraints=retries(5))).id, timeout=WAIT_S
    )
    assert (job.status, job.attempt, len(calls)) == ("failed", 1, 1)
    assert job.error is not None
    assert job.error.message == "quota for this API key is exhausted"


def test_a_hanging_tool_times_out(scheduler: work.SyncScheduler, tools: Register) -> None:
    async def hangs(args: dict[str, Any]) -> None:
        await asyncio.Event().wait()

    job = call(
        tools(hangs),
        {},
        resources=work.Resources(timeout_ms=50),
        constraints=retries(1),
    )
    done = scheduler.wait(scheduler.submit(job).id, timeout=WAIT_S)
    assert done.status == "timeout"


def test_a_running_tool_call_can_be_canceled(
    scheduler: work.SyncScheduler, tools: Register
) -> None:
    started = threading.Event()

    async def hangs(args: dict[str, Any]) -> None:
        started.set()
        await asyncio.Event().wait()

    job = scheduler.submit(call(tools(hangs), {}))
    assert started.wait(WAIT_S)
    scheduler.cancel(job.id, reason="user closed the chat")
    done = scheduler.wait(job.id, timeout=WAIT_S)
    assert (done.status, done.cancel_reason) == ("canceled", "user closed the chat")


# ---- enable_altar and per-tool limits ------------------------------------------------------------


def test_a_disabled_altar_backend_refuses_every_tool_call(search: str) -> None:
    backend = AltarBackend(enabled=False)
    assert backend.supports(call(search, {"query": "q"}))
    with work.SyncScheduler(backends=("local", backend)) as s:
        for job in (call(search, {"query": "q"}), call("echo", {"x": 1})):
            with pytest.raises(work.UnschedulableError) as info:
                s.submit(job)
            assert "ALTAR is disabled (enable_altar=False)" in str(info.value)
        assert s.stats().totals.submitted == 0


def test_enabled_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="enabled must be True or False"):
        AltarBackend(enabled="no")  # type: ignore[arg-type]


def test_the_backend_reports_the_limits_of_the_tool_a_job_calls(tools: Register) -> None:
    name = tools(lambda args: None)
    work.altar.register(
        name, "limited", None, lambda args: None, replace=True, max_concurrency=2, rate=10.0
    )
    backend = AltarBackend()
    assert backend.limits_for(call(name, {})) == ToolLimits(max_concurrency=2, rate=10.0, burst=1)
    assert backend.limits_for(call("echo", {})) == ToolLimits()


def test_per_tool_max_concurrency_is_enforced_across_tenants() -> None:
    name = f"limited-{uuid.uuid4().hex[:8]}"
    running = 0
    most = 0
    lock = threading.Lock()
    gate = threading.Event()

    def tool(args: dict) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        gate.wait(5)
        with lock:
            running -= 1
        return args["n"]

    work.altar.register(name, "a slow upstream API", None, tool, max_concurrency=2)
    try:
        with work.SyncScheduler() as s:
            jobs = [
                s.submit(
                    work.Job(
                        kind="tool_call",
                        tenant_id=f"tenant-{n % 3}",
                        payload={"tool_name": name, "args": {"n": n}},
                    )
                )
                for n in range(6)
            ]
            waiting = [s.get(j.id) for j in jobs if s.get(j.id).status == "queued"]
            assert len(waiting) == 4
            assert {j.waiting_reason for j in waiting} == {f"tool_concurrency:{name}"}
            gate.set()
            done = s.wait_many([j.id for j in jobs], timeout=10)
        assert [j.result for j in done] == list(range(6))
        assert most == 2
    finally:
        gate.set()
        work.altar.unregister(name)


def test_enable_altar_false_refuses_tool_calls() -> None:
    with (
        work.SyncScheduler(enable_altar=False) as s,
        pytest.raises(work.UnschedulableError, match="enable_altar=False"),
    ):
        s.submit(work.Job(kind="tool_call", tenant_id="t", payload={"tool": "echo"}))

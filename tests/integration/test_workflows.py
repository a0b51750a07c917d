"""``work.Workflow``: named steps, fan-out and fan-in, atomic submit, cycles refused by name,
one status, cancel, wait, and ``ctx.upstream`` by step name."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import nsai_work as work

Register = Callable[..., str]
Run = Callable[[Coroutine[Any, Any, Any]], Any]


def pipeline(kind: str, **evaluate: Any) -> work.Workflow:
    flow = work.Workflow("crucible", tenant_id="lab")
    flow.step("prepare", kind, payload={"name": "prepare"})
    for seed in (1, 2, 3):
        flow.step(f"train-{seed}", kind, payload={"name": "train", "seed": seed}, after="prepare")
    flow.step(
        "evaluate",
        kind,
        payload={"name": "evaluate"},
        after=["train-1", "train-2", "train-3"],
        **evaluate,
    )
    return flow


def test_a_pipeline_fans_out_and_in_and_hands_results_by_step_name(
    handlers: Register, arun: Run
) -> None:
    order: list[str] = []

    async def step(job: work.Job, ctx: work.JobContext) -> Any:
        name = job.payload["name"]
        order.append(name)
        if name == "prepare":
            return {"rows": 100}
        if name == "train":
            assert ctx.upstream["prepare"] == {"rows": 100}
            return {"loss": 1.0 / job.payload["seed"]}
        return {"best": min(ctx.upstream[f"train-{s}"]["loss"] for s in (1, 2, 3))}

    kind = handlers(step)

    async def main() -> work.WorkflowRun:
        async with work.Scheduler() as s:
            run = await s.submit_workflow(pipeline(kind))
            assert list(run.steps) == ["prepare", "train-1", "train-2", "train-3", "evaluate"]
            assert run.steps["evaluate"].status == "pending"
            assert run.status in ("pending", "running")
            return await s.wait_workflow(run, timeout=10)

    run = arun(main())
    assert run.status == "succeeded"
    assert run.is_finished
    assert order[0] == "prepare"
    assert order[-1] == "evaluate"
    assert order.count("train") == 3
    assert run.results["evaluate"] == {"best": 1.0 / 3}
    evaluate = run.steps["evaluate"]
    assert evaluate.metadata["workflow_id"] == run.id
    assert evaluate.metadata["workflow_step"] == "evaluate"
    assert set(evaluate.constraints.depends_on) == {run.job_ids[f"train-{s}"] for s in (1, 2, 3)}


@pytest.mark.parametrize("allow", [False, True])
def test_a_failed_step_cancels_what_comes_after_unless_allowed(
    handlers: Register, arun: Run, allow: bool
) -> None:
    async def step(job: work.Job, ctx: work.JobContext) -> Any:
        if job.payload.get("seed") == 2:
            raise work.NonRetryableError("diverged")
        return sorted(k for k, v in ctx.upstream.items() if v is None)

    kind = handlers(step)

    async def main() -> work.WorkflowRun:
        async with work.Scheduler() as s:
            run = await s.submit_workflow(pipeline(kind, allow_failure=allow))
            return await s.wait_workflow(run, timeout=10)

    run = arun(main())
    assert run.status == "failed"
    assert run.steps["train-2"].status == "failed"
    evaluate = run.steps["evaluate"]
    if allow:
        assert evaluate.status == "succeeded"
        assert evaluate.result == sorted([run.job_ids["train-2"], "train-2"])
    else:
        assert evaluate.status == "canceled"
        assert evaluate.cancel_reason == f"dependency_failed: {run.job_ids['train-2']} (failed)"


def test_a_cycle_is_refused_naming_it_and_nothing_is_admitted(
    handlers: Register, arun: Run
) -> None:
    kind = handlers(lambda job: None)
    flow = work.Workflow("loop", tenant_id="lab")
    flow.step("a", kind)
    flow.step("b", kind, after=["a", "d"])
    flow.step("c", kind, after="b")
    flow.step("d", kind, after="c")

    async def main() -> None:
        async with work.Scheduler() as s:
            with pytest.raises(work.ValidationError, match=r"cycle: b -> d -> c -> b") as info:
                await s.submit_workflow(flow)
            assert info.value.path == "$.steps.b.after"
            bad = work.Workflow("bad", tenant_id="lab")
            bad.step("ok", kind)
            bad.step("huge", kind, after="ok", resources=work.Resources(cpu=1e6))
            with pytest.raises(work.UnschedulableError, match="job #1"):
                await s.submit_workflow(bad)
            invalid = work.Workflow("invalid", tenant_id="lab")
            invalid.step("ok", kind)
            invalid.step("nan", kind, after="ok", payload={"x": float("nan")})
            with pytest.raises(work.ValidationError, match="step 'nan'") as info:
                await s.submit_workflow(invalid)
            assert info.value.path == "$.payload.x"
            assert (await s.list("lab")).jobs == []

    arun(main())


def test_unknown_after_and_duplicate_steps_are_refused() -> None:
    flow = work.Workflow("w", tenant_id="lab")
    flow.step("a", "k")
    with pytest.raises(work.ValidationError, match="declared twice"):
        flow.step("a", "k")
    flow.step("b", "k", after="nope")
    with pytest.raises(work.ValidationError, match="comes after 'nope'"):
        flow.jobs()
    with pytest.raises(work.ValidationError, match="not among its after"):
        flow.step("c", "k", after="a", allow_failure=["b"])


def test_cancel_and_wait_on_a_workflow(handlers: Register, arun: Run) -> None:
    started = asyncio.Event()

    async def step(job: work.Job, ctx: work.JobContext) -> None:
        started.set()
        await asyncio.sleep(60)

    kind = handlers(step)

    async def main() -> work.WorkflowRun:
        async with work.Scheduler() as s:
            run = await s.submit_workflow(pipeline(kind))
            await asyncio.wait_for(started.wait(), 5)
            assert (await s.get_workflow(run)).status == "running"
            with pytest.raises(work.WaitTimeoutError):
                await s.wait_workflow(run, timeout=0.05)
            await s.cancel_workflow(run)
            return await s.wait_workflow(run, timeout=5)

    run = arun(main())
    assert run.status == "canceled"
    assert {job.cancel_reason for job in run.steps.values()} == {"workflow_canceled"}


def test_the_blocking_face_runs_a_workflow(handlers: Register) -> None:
    kind = handlers(lambda job: job.payload.get("seed", 0))
    with work.SyncScheduler() as s:
        run = s.wait_workflow(s.submit_workflow(pipeline(kind)), timeout=10)
    assert run.status == "succeeded"
    assert [run.results[f"train-{seed}"] for seed in (1, 2, 3)] == [1, 2, 3]


def test_tool_call_steps_take_arguments_from_upstream_checked_when_ready(arun: Run) -> None:
    tools = work.altar.ToolRegistry()
    text = {"type": "OBJECT", "properties": {"text": {"type": "STRING"}}, "required": ["text"]}
    tools.register("propose", "Propose a claim", text, lambda a: {"text": f"claim: {a['text']}"})
    pair = {
        "type": "OBJECT",
        "properties": {"claim": {"type": "STRING"}, "strength": {"type": "INTEGER"}},
        "required": ["claim", "strength"],
    }
    tools.register("attack", "Attack a claim", pair, lambda a: {"text": f"not {a['claim']}"})

    def call(tool: str, args: dict[str, Any], args_from: dict[str, str]) -> dict[str, Any]:
        return {"tool_name": tool, "args": args, "args_from": args_from}

    async def main() -> tuple[work.WorkflowRun, work.WorkflowRun]:
        backends = [work.backends.AltarBackend(tools=tools)]
        async with work.Scheduler(backends=backends) as s:
            good = work.Workflow("cns", tenant_id="lab")
            good.step(
                "proposer", "tool_call", payload={"tool_name": "propose", "args": {"text": "x"}}
            )
            good.step(
                "antagonist",
                "tool_call",
                payload=call("attack", {"strength": 2}, {"claim": "proposer.result.text"}),
                after="proposer",
            )
            bad = work.Workflow("cns-bad", tenant_id="lab")
            bad.step(
                "proposer", "tool_call", payload={"tool_name": "propose", "args": {"text": "x"}}
            )
            bad.step(
                "antagonist",
                "tool_call",  # the claim is a string, and "strength" an INTEGER: a violation
                payload=call("attack", {"claim": "c"}, {"strength": "proposer.result.text"}),
                after="proposer",
            )
            runs = [await s.submit_workflow(flow) for flow in (good, bad)]
            return (
                await s.wait_workflow(runs[0], timeout=10),
                await s.wait_workflow(runs[1], timeout=10),
            )

    good, bad = arun(main())
    assert good.status == "succeeded"
    assert good.results["antagonist"] == {"text": "not claim: x"}
    failed = bad.steps["antagonist"]
    assert failed.status == "failed"
    assert failed.error is not None
    assert "$.payload.args.strength" in failed.error.message
    assert len(failed.attempts) == 1


def test_args_from_must_name_a_step_before() -> None:
    flow = work.Workflow("w", tenant_id="lab")
    flow.step("a", "tool_call", payload={"tool_name": "echo"})
    flow.step(
        "b", "tool_call", payload={"tool_name": "echo", "args_from": {"x": "c.result"}}, after="a"
    )
    with pytest.raises(work.ValidationError, match="does not come after 'c'") as info:
        flow.jobs()
    assert info.value.path == "$.steps.b.payload.args_from.x"

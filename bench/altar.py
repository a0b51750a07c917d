"""ALTAR: tool-call throughput with argument validation, and what one validation costs.

- Throughput: ``tool_call`` jobs through a fresh ``work.Scheduler`` (default backends, private
  telemetry bus), each calling an async no-op tool with a nested ``search_documents``-style
  declaration and valid nested arguments; timed from building the Job objects to ``wait_many``
  returning. The same pipeline with a tool declared without parameters (no argument checks
  beyond "is a dict") runs alongside, interleaved, so the ratio shows what validation costs end
  to end. 10,000 calls (1,000 with ``--quick``).
- Validation cost: microseconds per call of the compiled validator on the nested arguments
  (valid), of the whole submit-time check (``AltarBackend.validate(job)``: resolving the tool,
  then validating), of an invalid call (collecting four violations and building the
  ``ToolArgumentsError``), and of a flat call with three ``pattern`` strings (valid). Each is
  the median of 15 ``timeit`` repeats; for context, the jsonschema package's
  ``Draft202012Validator.is_valid`` on the nested schema (when installed).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import timeit
from typing import Any, Final

import nsai_work as work
from nsai_work.altar import (
    ArgumentsValidator,
    ToolArgumentsError,
    default_registry,
    to_json_schema,
)
from nsai_work.backends import AltarBackend
from nsai_work.telemetry import Telemetry

from ._common import QUICK, TENANTS, Figure, Params, ScenarioResult, settle

SEARCH_TOOL: Final = "bench.altar.search_documents"
FREE_TOOL: Final = "bench.altar.free"
TARGET_VALIDATION_US: Final = 10.0
MIN_RATIO: Final = 0.8
_REPEATS: Final = 15
_WAIT_S: Final = 120.0

SEARCH_SCHEMA: Final[dict[str, Any]] = {
    "type": "OBJECT",
    "properties": {
        "query": {"type": "STRING", "description": "Search query", "minLength": 1},
        "limit": {"type": "INTEGER", "minimum": 1, "maximum": 100},
        "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "maxItems": 10},
        "filters": {
            "type": "OBJECT",
            "properties": {
                "category": {"type": "STRING", "enum": ["physics", "biology", "chemistry"]},
                "min_score": {"type": "NUMBER", "minimum": 0, "maximum": 1},
                "date_range": {
                    "type": "OBJECT",
                    "properties": {
                        "start": {"type": "STRING", "format": "date-time"},
                        "end": {"type": "STRING", "format": "date-time"},
                    },
                    "required": ["start"],
                },
            },
        },
    },
    "required": ["query"],
}
VALID_ARGS: Final[dict[str, Any]] = {
    "query": "fusion confinement",
    "limit": 20,
    "tags": ["tokamak", "stellarator", "plasma"],
    "filters": {
        "category": "physics",
        "min_score": 0.5,
        "date_range": {"start": "2024-01-01T00:00:00Z", "end": "2024-12-31T23:59:59Z"},
    },
}
PATTERN_SCHEMA: Final[dict[str, Any]] = {
    "type": "OBJECT",
    "properties": {
        "order_id": {"type": "STRING", "pattern": "^C[0-9]{6}$"},
        "email": {"type": "STRING", "pattern": "^[^@ ]+@[^@ ]+[.][a-z]{2,}$"},
        "sku": {"type": "STRING", "pattern": "^[A-Z]{2}-[0-9]{4}$"},
    },
    "required": ["order_id", "email", "sku"],
}
PATTERN_ARGS: Final[dict[str, Any]] = {
    "order_id": "C123456",
    "email": "ada@example.org",
    "sku": "AB-1234",
}
INVALID_ARGS: Final[dict[str, Any]] = {
    "query": "",
    "limit": 1.0,
    "tags": ["tokamak", 3],
    "filters": {"category": "physics", "date_range": {"start": 20240101}},
}


async def _noop_tool(args: dict[str, Any]) -> None:
    return None


def register_tools() -> None:
    """The two bench tools, process-wide (``replace=True``)."""
    work.altar.register(SEARCH_TOOL, "bench: nested", SEARCH_SCHEMA, _noop_tool, replace=True)
    work.altar.register(FREE_TOOL, "bench: no declaration", None, _noop_tool, replace=True)


def _call(tool: str, i: int) -> work.Job:
    return work.Job(
        kind="tool_call",
        tenant_id=TENANTS[i % len(TENANTS)],
        payload={"tool_name": tool, "args": VALID_ARGS},
    )


async def pipeline(n: int, tool: str) -> float:
    """``n`` calls of ``tool`` through a fresh Scheduler: build, submit_many, wait_many; calls/s."""
    async with work.Scheduler(telemetry=Telemetry()) as s:
        settle()
        t0 = time.perf_counter()
        jobs = [_call(tool, i) for i in range(n)]
        accepted = await s.submit_many(jobs)
        done = await s.wait_many([job.id for job in accepted], _WAIT_S)
        elapsed = time.perf_counter() - t0
    bad = [job for job in done if job.status is not work.Status.SUCCEEDED]
    if bad:
        raise RuntimeError(f"{len(bad)} tool calls did not succeed, e.g. {bad[0].error}")
    return n / elapsed


def per_call_us(fn: Any, number: int) -> float:
    """Median over repeats of the time per call, in microseconds."""
    times = timeit.repeat(fn, number=number, repeat=_REPEATS)
    return statistics.median(times) / number * 1e6


def validation_costs(number: int) -> dict[str, float]:
    """Microseconds per validation: compiled valid, whole submit check, invalid, patterns,
    jsonschema."""
    registry = default_registry()
    validator = ArgumentsValidator(registry.describe(SEARCH_TOOL).parameters)
    assert validator.is_valid(VALID_ARGS)
    patterned = ArgumentsValidator(PATTERN_SCHEMA)
    assert patterned.is_valid(PATTERN_ARGS)
    backend = AltarBackend()
    job = _call(SEARCH_TOOL, 0)
    bad_args = INVALID_ARGS

    def invalid() -> None:
        try:
            registry.check_arguments(SEARCH_TOOL, bad_args)
        except ToolArgumentsError:
            pass
        else:  # pragma: no cover - the bench's own sanity check
            raise AssertionError("the invalid bench arguments were accepted")

    costs = {
        "valid": per_call_us(lambda: validator.is_valid(VALID_ARGS), number),
        "submit_check": per_call_us(lambda: backend.validate(job), number),
        "invalid": per_call_us(invalid, max(1, number // 10)),
        "pattern": per_call_us(lambda: patterned.is_valid(PATTERN_ARGS), number),
    }
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - a test dependency
        return costs
    reference = jsonschema.Draft202012Validator(to_json_schema(SEARCH_SCHEMA))
    assert reference.is_valid(VALID_ARGS)
    costs["jsonschema"] = per_call_us(lambda: reference.is_valid(VALID_ARGS), max(1, number // 10))
    return costs


def run(params: Params, runs: int) -> ScenarioResult:
    quick = params == QUICK
    n = 1_000 if quick else 10_000
    number = 2_000 if quick else 20_000
    register_tools()
    asyncio.run(pipeline(min(n, 500), SEARCH_TOOL))  # warm-up, not reported

    validated: list[float] = []
    free: list[float] = []
    costs: list[dict[str, float]] = []
    for _ in range(runs):
        settle()
        validated.append(asyncio.run(pipeline(n, SEARCH_TOOL)))
        settle()
        free.append(asyncio.run(pipeline(n, FREE_TOOL)))
        settle()
        costs.append(validation_costs(number))

    def us(id_: str, label: str, key: str, note: str, target: bool = False) -> Figure:
        return Figure(
            id=id_,
            label=label,
            unit="µs",
            runs=[c[key] for c in costs],
            target=f"<= {TARGET_VALIDATION_US:.0f} µs" if target else "-",
            check=(lambda m: m <= TARGET_VALIDATION_US) if target else None,
            note=note,
            digits=2,
        )

    figures = [
        Figure(
            id="altar.tool_calls_per_s",
            label="tool_call end to end, nested arguments validated",
            unit="calls/s",
            runs=validated,
            target=f">= {MIN_RATIO:.0%} of the undeclared tool's rate",
            check=lambda m: m >= MIN_RATIO * statistics.median(free),
            note=f"{n:,} calls of an async no-op tool with a nested search_documents-style "
            "declaration: build the Jobs, submit_many (arguments validated), wait_many.",
            digits=0,
        ),
        Figure(
            id="altar.tool_calls_per_s_free",
            label="tool_call end to end, tool without a declaration",
            unit="calls/s",
            runs=free,
            note="The same pipeline and arguments; the tool declares no parameters, so only "
            "'arguments are a dict' is checked.",
            digits=0,
        ),
        Figure(
            id="altar.validated_ratio",
            label="tool_call: validated / undeclared rate",
            unit="x",
            runs=[v / f for v, f in zip(validated, free, strict=True)],
            note="Per-run ratio (same process, back to back).",
            digits=3,
        ),
        us(
            "altar.validation_us",
            "validation of a nested call (valid)",
            "valid",
            "The compiled validator on the nested arguments (4 properties, 3 levels, an array "
            f"of 3, 2 date-times); median of {_REPEATS} timeit repeats.",
            target=True,
        ),
        us(
            "altar.submit_check_us",
            "submit-time check of a nested call",
            "submit_check",
            "AltarBackend.validate(job): resolve the tool from the payload, then validate.",
        ),
        us(
            "altar.pattern_validation_us",
            "validation of a call with 3 pattern strings (valid)",
            "pattern",
            "The compiled validator on a flat call whose three STRINGs each have a pattern "
            "(RE2, linear time): ^C[0-9]{6}$, an e-mail shape, ^[A-Z]{2}-[0-9]{4}$.",
            target=True,
        ),
        us(
            "altar.invalid_us",
            "validation of a nested call with 4 violations",
            "invalid",
            "check_arguments raising ToolArgumentsError: collect every violation with its path, "
            "build the message.",
        ),
    ]
    if all("jsonschema" in c for c in costs):
        figures.append(
            us(
                "altar.jsonschema_us",
                "for context: jsonschema is_valid, same call",
                "jsonschema",
                "jsonschema.Draft202012Validator(to_json_schema(schema)).is_valid on the same "
                "arguments (interprets the schema on every call).",
            )
        )
    return ScenarioResult(
        name="altar",
        description=(
            f"ALTAR tool calls: {n:,} calls per pipeline, {runs} run(s), each on a fresh event "
            f"loop and Scheduler (tools in altar:async, 256 slots), {len(TENANTS)} tenants "
            f"round-robin; validation timings are medians of {_REPEATS} timeit repeats of "
            f"{number:,} calls."
        ),
        figures=figures,
        notes={"calls per pipeline": n, "timeit number (valid calls)": number},
    )

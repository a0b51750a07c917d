"""The demo's platform: five tenants, their pools, handlers and tools, and when their jobs arrive.

Five teams share one small AI platform:

- ``umbrella`` serves a chat product: realtime ``inference`` on L4 GPUs, first on 4 GPUs kept for
  serving, then on the shared pool (ahead of every batch job there: priorities are strict).
- ``acme`` runs agents: interactive ``tool_call`` jobs through ALTAR (``search_documents`` allows
  4 calls at once across tenants and times out now and then), and batch evaluation sweeps
  (``experiment_step``) on the shared L4 pool. Its submit rate is capped: agent bursts are
  rate limited and resubmitted after ``retry_after_s``.
- ``globex`` and ``initech`` run evaluation sweeps on the shared L4 pool too. acme, globex and
  initech keep it backlogged with weights 3, 2 and 1: fair share gives them 50%, 33% and 17%.
  initech also runs offline ETL as command jobs on the process backend (a namespace limit lets
  one run at a time; one in five attempts fails and is retried) and a nightly report that
  always overruns its timeout and is killed.
- ``hooli`` fine-tunes models: batch ``train_step`` jobs of 4 A100 on a spot pool and an
  on-demand pool with prices; its GPU quota lets two run at once, its budget runs out about
  half way through (later submits are refused), and it cancels one run that diverged.

Every figure scales with the duration, so ``--quick`` shows the same things in a few seconds.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import nsai_work as work

__all__ = [
    "CONTEST_KIND",
    "CONTEST_POOL",
    "CONTEST_TENANTS",
    "POOL_CAPACITY",
    "TENANTS",
    "Arrivals",
    "Submission",
    "backends",
    "pools",
    "register",
    "tenants",
]

#: Tenants in the order every panel lists them.
TENANTS: Final = ("umbrella", "acme", "globex", "initech", "hooli")
#: The batch evaluation sweeps that share the L4 pool (fair share is measured on them).
CONTEST_KIND: Final = "experiment_step"
CONTEST_POOL: Final = "l4-shared"
CONTEST_TENANTS: Final = ("acme", "globex", "initech")
WEIGHTS: Final = {"umbrella": 2.0, "acme": 3.0, "globex": 2.0, "initech": 1.0, "hooli": 1.0}

_L4_SHARED_GPUS: Final = 12
_EVAL_S: Final = (0.25, 0.65)  # how long an evaluation step runs (uniform)
_EVAL_RATE: Final = _L4_SHARED_GPUS / sum(_EVAL_S) * 2  # steps the shared pool finishes per s

#: What each pool offers, by name: (slots, GPUs) for the panels.
POOL_CAPACITY: Final = {
    "l4-serving": 4,
    CONTEST_POOL: _L4_SHARED_GPUS,
    "a100-spot": 4,
    "a100-on-demand": 8,
}
_SPOT: Final = work.Prices(cpu_hour=0.012, memory_gb_hour=0.0015, gpu_hour={"A100": 1.20})


def pools() -> dict[str, list[work.Pool]]:
    """The declared pools of the local backend (GPUs by type, prices)."""
    return {
        "local": [
            work.Pool(
                name="l4-serving", slots=4, cpu=16, memory_mb=65_536, gpus={"L4": 4},
                labels={"use": "serving"},
            ),
            work.Pool(
                name=CONTEST_POOL, slots=_L4_SHARED_GPUS, cpu=48, memory_mb=196_608,
                gpus={"L4": _L4_SHARED_GPUS}, labels={"use": "shared"},
            ),
            work.Pool(
                name="a100-spot", slots=1, cpu=32, memory_mb=262_144, gpus={"A100": 4},
                prices=_SPOT,
            ),
            work.Pool(name="a100-on-demand", slots=2, cpu=64, memory_mb=524_288, gpus={"A100": 8}),
        ]
    }  # fmt: skip


def backends() -> list[Any]:
    """Local handlers, ALTAR tools, and two worker processes for command jobs."""
    return [
        "local",
        "altar",
        work.backends.ProcessBackend(workers=2, kinds=["command"], cpu=4, memory_mb=8192),
    ]


def budget_usd(tenant: str, duration_s: float) -> float | None:
    """A tenant's budget for a run of ``duration_s``: hooli's runs out (at about a third of a
    45 s run; at once in a short one, after two runs' estimates)."""
    if tenant == "hooli":
        return round(max(0.05, 0.0045 * duration_s), 4)
    if tenant == "umbrella":
        return 0.10  # plenty: realtime inference is never refused for money
    return None


def tenants(duration_s: float) -> list[work.Tenant]:
    """The five tenants with their weights and quotas."""
    quotas = {
        "umbrella": work.Quota(budget_usd=budget_usd("umbrella", duration_s)),
        "acme": work.Quota(submit_rate=50.0, burst=100),
        "globex": work.Quota(max_queued=5_000),
        "initech": work.Quota(),
        "hooli": work.Quota(gpus={"A100": 8}, budget_usd=budget_usd("hooli", duration_s)),
    }
    namespaces = {"initech": {"etl": work.Quota(max_running=1)}}
    return [
        work.Tenant(
            name, weight=WEIGHTS[name], quota=quotas[name], namespaces=namespaces.get(name, {})
        )
        for name in TENANTS
    ]


# ---- handlers and tools ------------------------------------------------------------------------


def register(seed: int) -> None:
    """Register the handlers and tools (process-wide, replacing the demo's earlier ones)."""
    rng = random.Random(seed)

    @work.handler("inference", replace=True)
    async def inference(job: work.Job) -> dict[str, Any]:
        await asyncio.sleep(rng.uniform(0.03, 0.12))
        return {"model": job.payload["model"], "tokens": rng.randint(20, 400)}

    @work.handler(CONTEST_KIND, replace=True)
    async def experiment_step(job: work.Job) -> dict[str, Any]:
        await asyncio.sleep(rng.uniform(*_EVAL_S))
        draw = rng.random()
        if draw < 0.003:
            raise work.NonRetryableError("eval config refers to a dataset that does not exist")
        if draw < 0.04:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return {"sweep": job.payload["sweep"], "accuracy": round(rng.uniform(0.6, 0.9), 4)}

    @work.handler("train_step", replace=True)
    async def train_step(job: work.Job, ctx: work.JobContext) -> dict[str, Any]:
        steps = 10
        for step in range(steps):
            await asyncio.sleep(rng.uniform(1.5, 3.0) / steps)
            ctx.progress((step + 1) / steps, f"step {step + 1}/{steps}")
        return {"model": job.payload["model"], "loss": round(rng.uniform(0.8, 2.0), 3)}

    async def search_documents(args: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(rng.uniform(0.02, 0.08))
        if rng.random() < 0.04:
            raise TimeoutError("search backend did not answer in 2 s")
        return {"query": args["query"], "hits": rng.randint(0, int(args.get("limit", 10)))}

    async def fetch_page(args: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(rng.uniform(0.01, 0.04))
        return {"url": args["url"], "bytes": rng.randint(2_000, 90_000)}

    def calculator(args: dict[str, Any]) -> float:
        return float(args["a"]) + float(args["b"])

    obj = "OBJECT"
    work.altar.register(
        "search_documents",
        "Search the document corpus",
        {
            "type": obj,
            "properties": {
                "query": {"type": "STRING", "description": "What to look for"},
                "limit": {"type": "NUMBER", "description": "Most hits to return"},
            },
            "required": ["query"],
        },
        search_documents,
        replace=True,
        max_concurrency=4,  # the upstream search API allows 4 calls at once, across tenants
    )
    work.altar.register(
        "fetch_page",
        "Fetch a web page",
        {"type": obj, "properties": {"url": {"type": "STRING"}}, "required": ["url"]},
        fetch_page,
        replace=True,
    )
    work.altar.register(
        "calculator",
        "Add two numbers",
        {
            "type": obj,
            "properties": {"a": {"type": "NUMBER"}, "b": {"type": "NUMBER"}},
            "required": ["a", "b"],
        },
        calculator,
        replace=True,
    )


# ---- arrivals ----------------------------------------------------------------------------------


@dataclass
class Submission:
    """Jobs one tenant submits in one call (all admitted or none)."""

    tenant: str  # "*" for several
    jobs: list[work.Job]
    stream: str  # which stream they come from (a deferred one holds its stream back)


@dataclass
class _Poisson:
    rate: float  # arrivals per second
    next_at: float = 0.0


_ETL_SCRIPT: Final = (
    'sleep "$1"; b=$(od -An -N1 -tu1 /dev/urandom); '
    'if [ $b -lt "$2" ]; then echo "warehouse connection reset by peer" >&2; exit 75; fi; '
    'echo "loaded $3 rows"'
)


@dataclass
class Arrivals:
    """When each tenant submits what, as a function of the run's clock (seconds since the
    workload began; a resumed run starts at the position where the interrupted one stopped).

    Arrivals stop at 80% of the duration; the rest is for the backlog to drain. The evaluation
    sweeps keep each contest tenant's queue on the shared pool between one and two sweeps deep
    (a sweep is about ``backlog_s`` seconds of that tenant's share of the pool), so all three
    stay backlogged until arrivals stop, whatever the machine's speed.
    """

    duration_s: float
    seed: int
    start_s: float = 0.0
    rng: random.Random = field(init=False)
    _streams: dict[str, _Poisson] = field(init=False)
    _next: dict[str, float] = field(init=False)
    _sweeps: int = 0
    _done: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.rng = random.Random(f"{self.seed}:{self.start_s:.3f}")
        self._streams = {"inference": _Poisson(8.0), "tools": _Poisson(10.0), "etl": _Poisson(0.6)}
        for stream in self._streams.values():
            stream.next_at = self.start_s + self.rng.expovariate(stream.rate)
        scale = self.duration_s / 45.0
        self._next = {
            "inference_burst": self.start_s + 2.0 * scale,
            "tools_burst": self.start_s + 3.0 * scale,
            "etl_burst": self.start_s + 1.0,
            "train": self.start_s + 0.2,
        }

    @property
    def end_s(self) -> float:
        """When arrivals stop."""
        return 0.8 * self.duration_s

    def sweep_size(self, tenant: str) -> int:
        """Steps in one evaluation sweep of ``tenant`` (also its low-water mark)."""
        backlog_s = min(4.0, max(1.0, 0.1 * self.duration_s))
        share = WEIGHTS[tenant] / sum(WEIGHTS[t] for t in CONTEST_TENANTS)
        return max(4, round(_EVAL_RATE * backlog_s * share))

    def once(self, name: str, at_fraction: float, now: float) -> bool:
        """True the first time ``now`` passes ``at_fraction`` of the duration (never in a
        resumed run that starts after that moment: the interrupted run had its turn)."""
        at = at_fraction * self.duration_s
        if name in self._done or now < at or at < self.start_s:
            return False
        self._done.add(name)
        return True

    def due(self, now: float, queued: Mapping[str, int], held: set[str]) -> Iterator[Submission]:
        """What arrives up to ``now``. ``queued`` is each contest tenant's evaluation steps queued
        on the shared pool; ``held`` the streams whose last submission waits to be resubmitted
        (rate limited), which submit nothing more meanwhile."""
        if now >= self.end_s:
            return
        rng = self.rng
        yield from self._poisson("inference", now, self._inference)
        yield from self._poisson("tools", now, lambda: [self._tool_call()])
        yield from self._poisson("etl", now, lambda: [self._etl()])
        if now >= self._next["inference_burst"]:
            self._next["inference_burst"] = now + rng.uniform(3.0, 6.0)
            yield Submission("umbrella", [self._inference_job() for _ in range(10)], "inference")
        if now >= self._next["tools_burst"] and "tools" not in held:
            self._next["tools_burst"] = now + rng.uniform(4.0, 8.0)
            for _ in range(4):  # an agent fans out 40 tool calls, 10 per submit
                yield Submission("acme", [self._tool_call() for _ in range(10)], "tools")
        if now >= self._next["etl_burst"]:
            self._next["etl_burst"] = now + rng.uniform(6.0, 10.0)
            yield Submission("initech", [self._etl() for _ in range(4)], "etl")
        if now >= self._next["train"]:
            self._next["train"] = now + rng.uniform(0.6, 1.0)
            yield Submission("hooli", [self._train()], "train")
        sweeps = []
        for tenant in CONTEST_TENANTS:
            stream = f"sweep:{tenant}"
            size = self.sweep_size(tenant)
            if queued.get(tenant, 0) < size and stream not in held:
                self._sweeps += 1
                sweeps.append(Submission(tenant, self._sweep(tenant, size), stream))
        if self._sweeps == len(CONTEST_TENANTS) and len(sweeps) > 1:
            # The first sweeps of every team go in one submit, as a nightly evaluation service
            # would send them: fair share splits the pool from the first dispatch on.
            yield Submission("*", [job for sub in sweeps for job in sub.jobs], "sweep:*")
        else:
            yield from sweeps
        if self.once("report", 0.25, now):
            yield Submission("initech", [self._report()], "report")

    def _poisson(
        self, name: str, now: float, make: Callable[[], list[work.Job]]
    ) -> Iterator[Submission]:
        stream = self._streams[name]
        jobs: list[work.Job] = []
        while stream.next_at <= now:
            jobs.extend(make())
            stream.next_at += self.rng.expovariate(stream.rate)
        if jobs:
            yield Submission(jobs[0].tenant_id, jobs, name)

    # ---- the jobs ------------------------------------------------------------------------------

    def _inference(self) -> list[work.Job]:
        return [self._inference_job()]

    def _inference_job(self) -> work.Job:
        return work.Job(
            kind="inference",
            tenant_id="umbrella",
            namespace="chat",
            priority=work.Priority.REALTIME,
            payload={"model": "llama-3.1-8b", "prompt_tokens": self.rng.randint(10, 900)},
            resources=work.Resources(cpu=2, memory_mb=8192, gpu="L4", timeout_ms=2_000),
            constraints=work.Constraints(
                retry_policy=work.RetryPolicy(max_attempts=2, base_delay_ms=50)
            ),
        )

    def _tool_call(self) -> work.Job:
        rng = self.rng
        draw = rng.random()
        if draw < 0.45:
            call = {"tool_name": "search_documents", "args": {"query": "fusion", "limit": 20}}
        elif draw < 0.8:
            call = {"tool_name": "fetch_page", "args": {"url": "https://example.org/paper"}}
        else:
            call = {"tool_name": "calculator", "args": {"a": rng.random(), "b": 2}}
        return work.Job(
            kind="tool_call",
            tenant_id="acme",
            namespace="agents",
            priority=work.Priority.INTERACTIVE,
            payload=call,
            constraints=work.Constraints(
                retry_policy=work.RetryPolicy(max_attempts=3, base_delay_ms=100)
            ),
        )

    def _sweep(self, tenant: str, size: int) -> list[work.Job]:
        sweep = f"{tenant}-sweep-{self._sweeps}"
        return [
            work.Job(
                kind=CONTEST_KIND,
                tenant_id=tenant,
                namespace="evals",
                priority=work.Priority.BATCH,
                payload={"sweep": sweep, "step": step, "lr": self.rng.choice([1e-4, 3e-4, 1e-3])},
                resources=work.Resources(cpu=4, memory_mb=16_384, gpu="L4", timeout_ms=5_000),
                constraints=work.Constraints(
                    pool_labels={"use": "shared"},
                    retry_policy=work.RetryPolicy(max_attempts=3, base_delay_ms=200),
                ),
            )
            for step in range(size)
        ]

    def _train(self) -> work.Job:
        return work.Job(
            kind="train_step",
            tenant_id="hooli",
            namespace="finetune",
            priority=work.Priority.BATCH,
            payload={"model": "llama-3.1-8b", "dataset": "support-tickets"},
            resources=work.Resources(
                cpu=16, memory_mb=65_536, gpu="A100", gpu_count=4, timeout_ms=6_000
            ),
            constraints=work.Constraints(
                retry_policy=work.RetryPolicy(max_attempts=2, base_delay_ms=200)
            ),
        )

    def _etl(self) -> work.Job:
        seconds = f"{self.rng.uniform(0.2, 0.5):.2f}"
        rows = str(self.rng.randint(1_000, 90_000))
        return work.Job(
            kind="command",
            tenant_id="initech",
            namespace="etl",
            priority=work.Priority.OFFLINE,
            payload={"argv": ["sh", "-c", _ETL_SCRIPT, "etl", seconds, "51", rows]},
            resources=work.Resources(cpu=1, memory_mb=256, timeout_ms=20_000),
            constraints=work.Constraints(
                retry_policy=work.RetryPolicy(max_attempts=3, base_delay_ms=100)
            ),
        )

    def _report(self) -> work.Job:
        return work.Job(
            kind="command",
            tenant_id="initech",
            namespace="reports",
            priority=work.Priority.OFFLINE,
            payload={"argv": ["sleep", "60"]},  # a report that hangs on a lock
            resources=work.Resources(cpu=1, memory_mb=256, timeout_ms=1_500),
            constraints=work.Constraints(
                retry_policy=work.RetryPolicy(max_attempts=1, retry_on_timeout=False)
            ),
        )

"""The soak test (acceptance of the hardening issue): for a minute, 8 threads submit, cancel,
wait on and retry jobs on every built-in backend (local async, local threads, altar, process,
mock), whose handlers succeed, fail, time out, raise ``BaseException`` or swallow their
cancellation. Then nothing is lost and nothing leaks: every pool's used capacity is 0,
``wait_idle`` returns, ``stop`` returns promptly, and every submitted job ended exactly once.

``NSAI_SOAK_S`` shortens it for a quick local run (CI runs the full minute).
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Callable

import pytest

import nsai_work as work
from nsai_work.backends import ProcessBackend

from . import _soak_handlers as h

SECONDS = float(os.environ.get("NSAI_SOAK_S", "60"))
THREADS = 8
TENANTS = ["acme", "globex", "initech", "umbrella"]
PRIORITIES = list(work.Priority)


def _job_maker(kinds: dict[str, str], tool: str, rng: random.Random) -> Callable[[], work.Job]:
    """A random job on a random backend, with a random fate."""

    def policy() -> work.Constraints:
        return work.Constraints(
            retry_policy=work.RetryPolicy(
                max_attempts=rng.choice([1, 2, 3]), base_delay_ms=rng.choice([0, 5, 50])
            ),
            backend=None,
        )

    def make() -> work.Job:
        tenant = rng.choice(TENANTS)
        priority = rng.choice(PRIORITIES)
        where = rng.choice(["async", "threads", "altar", "process", "mock"])
        timeout = rng.choice([None, None, 100, 1000])
        resources = work.Resources(timeout_ms=timeout, cpu=rng.choice([None, 0.5]))
        constraints = policy()
        if where == "async":
            act = rng.choice(["ok", "ok", "sleep", "fail", "fatal", "exit", "swallow", "interrupt"])
            seconds = rng.choice([0.01, 0.05, 0.5]) if act in ("sleep", "swallow") else 0
            return work.Job(
                kind=kinds["async"],
                tenant_id=tenant,
                priority=priority,
                payload={"act": act, "seconds": seconds},
                resources=resources,
                constraints=constraints,
            )
        if where == "threads":
            act = rng.choice(["ok", "ok", "slow", "fail", "exit", "interrupt"])
            return work.Job(
                kind=kinds["threads"],
                tenant_id=tenant,
                priority=priority,
                payload={"act": act, "seconds": rng.choice([0.01, 0.1])},
                resources=resources,
                constraints=constraints,
            )
        if where == "altar":
            act = rng.choice(["ok", "ok", "sleep", "fail", "exit"])
            return work.Job(
                kind="tool_call",
                tenant_id=tenant,
                priority=priority,
                payload={"tool": tool, "args": {"act": act, "seconds": 0.02}},
                resources=resources,
                constraints=constraints,
            )
        if where == "process":
            act = rng.choice(["ok", "ok", "sleep", "fail", "exit"])
            return work.Job(
                kind=kinds["process"],
                tenant_id=tenant,
                priority=priority,
                payload={"act": act, "seconds": rng.choice([0.005, 0.05])},
                resources=resources,
                constraints=work.Constraints(
                    retry_policy=constraints.retry_policy, backend="process"
                ),
            )
        return work.Job(
            kind="anything",
            tenant_id=tenant,
            priority=priority,
            resources=resources,
            constraints=work.Constraints(retry_policy=constraints.retry_policy, backend="mock"),
        )

    return make


@pytest.mark.slow
@pytest.mark.timeout(SECONDS + 240)
def test_soak_every_backend_under_churn(
    handlers: Callable[..., str], tools: Callable[..., str]
) -> None:
    kinds = {
        "async": handlers(h.async_handler),
        "threads": handlers(h.sync_handler),
        "process": handlers(h.process_handler),
    }
    tool = tools(h.tool)
    work.backends.Mock.configure(delay_ms=5)
    scheduler = work.SyncScheduler(
        backends=["local", "altar", "mock", ProcessBackend(workers=2)],
        pools={
            "local": [
                work.Pool(name="local:async", slots=32, cpu=4.0),
                work.Pool(name="local:threads", slots=8, cpu=4.0),
            ],
            "mock": [work.Pool(name="mock", slots=16)],
        },
        tenants=[
            work.Tenant("acme", weight=2.0),
            work.Tenant("globex", quota=work.Quota(max_running=6)),
        ],
        seed=7,
        finished_max=1_000_000,  # every job is waited for at the end: none may be pruned
    ).start()
    submitted: list[tuple[str, str]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    actions: dict[str, int] = {}
    deadline = time.monotonic() + SECONDS

    def churn(seed: int) -> None:
        rng = random.Random(seed)
        make = _job_maker(kinds, tool, rng)
        try:
            while time.monotonic() < deadline:
                action = rng.choices(
                    ["submit", "batch", "cancel", "wait", "retry", "get", "stats"],
                    [30, 5, 20, 15, 10, 10, 2],
                )[0]
                with lock:
                    actions[action] = actions.get(action, 0) + 1
                    known = submitted[-200:]
                pick = rng.choice(known) if known else None
                if action == "submit":
                    job = scheduler.submit(make())
                    with lock:
                        submitted.append((job.tenant_id, job.id))
                elif action == "batch":
                    jobs = scheduler.submit_many([make() for _ in range(rng.randint(2, 20))])
                    with lock:
                        submitted.extend((j.tenant_id, j.id) for j in jobs)
                elif pick is None:
                    continue
                elif action == "cancel":
                    scheduler.cancel(pick[1], "soak", tenant_id=pick[0])
                elif action == "wait":
                    with contextlib.suppress(work.WaitTimeoutError):
                        scheduler.wait(pick[1], timeout=0.05, tenant_id=pick[0])
                elif action == "retry":
                    try:
                        again = scheduler.retry(pick[1], tenant_id=pick[0])
                    except work.ConflictError:
                        continue  # not finished yet
                    with lock:
                        submitted.append((again.tenant_id, again.id))
                elif action == "get":
                    scheduler.as_tenant(pick[0]).get(pick[1])
                else:
                    scheduler.stats()
        except work.NotFoundError:
            pass  # a finished job pruned meanwhile cannot happen here (TTL 1 h, 1M kept)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(seed,)) for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=SECONDS + 120)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)
    try:
        # Every job ends: waiting ones start, retries run out, swallowed cancels return.
        by_tenant: dict[str, list[str]] = {}
        for tenant, job_id in submitted:
            by_tenant.setdefault(tenant, []).append(job_id)
        ended: list[work.Job] = []
        for tenant, ids in by_tenant.items():
            ended += scheduler.wait_many(ids, timeout=120, tenant_id=tenant)
        assert len(ended) == len(submitted) > 1000
        assert {job.status for job in ended} <= work.TERMINAL_STATUSES
        scheduler.wait_idle(timeout=30)
        stats = scheduler.stats()
        for name, pool in stats.pools.items():
            used = pool.used
            assert (used.slots, used.stopping, used.cpu) == (0, 0, 0.0), (name, used)
        totals = stats.totals
        assert totals.submitted == len(submitted)
        assert totals.waiting == 0
        assert totals.running == 0
        assert totals.submitted == totals.finished
        statuses = {job.status for job in ended}
        assert {"succeeded", "failed", "canceled", "timeout"} <= statuses, statuses
        assert sum(stats.waiting_reasons.values()) == 0
        # a BaseException fails its attempt and is not retried: the job ends there, failed
        exits = [j for j in ended if j.error is not None and j.error.type == "SystemExit"]
        assert exits
        assert {j.status for j in exits} == {"failed"}
        assert all(j.attempts[-1].error == j.error for j in exits)
    finally:
        started = time.monotonic()
        scheduler.stop(timeout=30)
        stopped_in = time.monotonic() - started
    assert stopped_in < 10, f"stop took {stopped_in:.1f} s (jobs {len(submitted)}, {actions})"

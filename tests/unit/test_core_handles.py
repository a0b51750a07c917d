"""``HandleReported``: the core records a backend handle on the running attempt it names, and
only there; the handle stays on the attempt when it ends and when the job is retried."""

from __future__ import annotations

from nsai_work._ir import JobError, Pool, RetryPolicy, Status
from nsai_work.core import Amend, Failed, HandleReported, Record
from tests._core_builders import Driver, make_job, of_type, route

POOLS = {"b": [Pool(name="p", slots=1)]}
R = route("b", "p")


def _running(driver: Driver, job_id: str, policy: RetryPolicy | None = None) -> None:
    job = make_job(job_id) if policy is None else make_job(job_id, policy=policy)
    driver.submit([job], R)
    assert driver.status(job_id) is Status.RUNNING


def test_a_handle_lands_on_the_running_attempt_and_is_amended() -> None:
    driver = Driver(POOLS)
    _running(driver, "j1")
    decisions = driver.handle(HandleReported("acme", "j1", 1, "ray-task-1"))
    (amend,) = of_type(decisions, Amend)
    assert [a.handle for a in amend.job.attempts] == ["ray-task-1"]
    assert driver.core.get("acme", "j1") == amend.job
    assert driver.handle(HandleReported("acme", "j1", 1, "ray-task-1")) == []  # no change: quiet
    (again,) = of_type(driver.handle(HandleReported("acme", "j1", 1, "ray-task-2")), Amend)
    assert again.job.attempts[-1].handle == "ray-task-2"  # a later one replaces it


def test_a_handle_for_another_attempt_tenant_or_an_ended_run_is_ignored() -> None:
    driver = Driver(POOLS)
    _running(driver, "j1")
    assert driver.handle(HandleReported("acme", "j1", 2, "h")) == []
    assert driver.handle(HandleReported("globex", "j1", 1, "h")) == []
    assert driver.handle(HandleReported("acme", "nope", 1, "h")) == []
    driver.submit([make_job("j2")], R)  # queued behind j1 (one slot)
    assert driver.handle(HandleReported("acme", "j2", 0, "h")) == []
    assert driver.handle(HandleReported("acme", "j2", 1, "h")) == []
    assert driver.core.get("acme", "j1").attempts[-1].handle is None  # type: ignore[union-attr]


def test_the_handle_stays_on_the_attempt_through_its_end_and_a_retry() -> None:
    driver = Driver(POOLS)
    _running(driver, "j1", RetryPolicy(max_attempts=2, jitter=False, base_delay_ms=0))
    driver.handle(HandleReported("acme", "j1", 1, "first"))
    error = JobError(type="RuntimeError", message="boom", attempt=1)
    decisions = driver.end("j1", 1, Failed(error))
    retry = next(r for r in of_type(decisions, Record) if r.job.id == "j1")
    assert retry.job.attempts[0].handle == "first"
    assert retry.job.attempts[0].status is Status.FAILED

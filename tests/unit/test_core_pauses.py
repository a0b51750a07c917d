"""Pauses in the pure core: a paused tenant, namespace or pool starts nothing new, what runs goes
on, submits still wait, resuming starts what waited (in order), and a pause survives an idle
tenant being forgotten and an export and restore of the core's state."""

from __future__ import annotations

from msgspec.structs import replace

from nsai_work import Pool, Tenant
from nsai_work.core import Pause, Restore, SchedulingCore, Succeeded, TenantChanged
from tests._core_builders import Driver, dispatched_ids, make_job, route

POOLS = {"b": [Pool(name="p", slots=2), Pool(name="q", slots=2)]}
BOTH = route("b", "p", "q")


def test_a_paused_tenant_starts_nothing_until_resumed() -> None:
    driver = Driver(POOLS)
    assert dispatched_ids(driver.submit([make_job("a1")], BOTH)) == ["a1"]
    driver.handle(Pause(True, tenant_id="acme"))
    out = driver.submit([make_job("a2"), make_job("a3"), make_job("g1", tenant="globex")], BOTH)
    assert dispatched_ids(out) == ["g1"]  # another tenant is not held back
    assert driver.core.waiting_reason("acme", "a2") == "tenant_paused"
    assert dispatched_ids(driver.end("a1", 1, Succeeded(None))) == []  # a run ending frees none
    assert dispatched_ids(driver.handle(Pause(False, tenant_id="acme"))) == ["a2", "a3"]


def test_a_paused_namespace_holds_back_its_jobs_only() -> None:
    driver = Driver(POOLS)
    driver.submit([make_job("w1")], BOTH)  # a namespace with live jobs gets its state now
    driver.handle(Pause(True, tenant_id="acme", namespace="etl"))
    etl = replace(make_job("e1"), namespace="etl")
    out = driver.submit([etl, make_job("w2")], BOTH)
    assert dispatched_ids(out) == ["w2"]
    assert driver.core.waiting_reason("acme", "e1") == "namespace_paused"
    assert dispatched_ids(driver.handle(Pause(False, tenant_id="acme", namespace="etl"))) == ["e1"]


def test_a_paused_pool_takes_no_new_run_and_its_runs_go_on() -> None:
    driver = Driver(POOLS)
    out = driver.submit([make_job("a1"), make_job("a2")], BOTH)
    assert sorted(d.pool for d in out if hasattr(d, "pool") and d.pool) == ["p", "q"]
    driver.handle(Pause(True, pool="p"))
    out = driver.submit([make_job(f"x{i}") for i in range(3)], BOTH)
    assert [d.pool for d in out if type(d).__name__ == "Dispatch"] == ["q"]
    stats = driver.core.stats()
    assert stats.pools["p"].used.slots == 1  # its run goes on
    driver.end("a1", 1, Succeeded(None))  # (ran on p or q: capacity comes back either way)
    driver.end("a2", 1, Succeeded(None))
    assert driver.core.stats().pools["p"].used.slots == 0
    out = driver.handle(Pause(False, pool="p"))
    assert {d.pool for d in out if type(d).__name__ == "Dispatch"} == {"p"}


def test_a_pause_holds_for_a_tenant_not_seen_yet_a_new_spec_and_a_restore() -> None:
    core = SchedulingCore(pools=POOLS, rand=lambda: 0.5, tenant_idle_ttl_s=None)
    driver = Driver(POOLS)
    driver.core = core
    driver.handle(Pause(True, tenant_id="newcomer"))  # not seen yet: recorded
    driver.handle(TenantChanged(Tenant("newcomer", weight=2.0)))
    out = driver.submit([make_job("n1", tenant="newcomer")], BOTH)
    assert dispatched_ids(out) == []
    driver.handle(Pause(True, pool="q"))
    state = core.export_state(driver.now, driver.now)
    assert state.paused == (("tenant", "newcomer", ""), ("pool", "q", ""))
    fresh = SchedulingCore(pools=POOLS, rand=lambda: 0.5, tenant_idle_ttl_s=None)
    job = core.get("newcomer", "n1")
    assert job is not None
    restored = Restore(jobs=(job,), routes=(BOTH,), limits=((),), state=state, lost_reason=None)
    out = fresh.handle(restored, driver.now)
    assert dispatched_ids(out) == []
    assert fresh.waiting_reason("newcomer", "n1") == "tenant_paused"
    out = fresh.handle(Pause(False, tenant_id="newcomer"), driver.now)
    assert [d.pool for d in out if type(d).__name__ == "Dispatch"] == ["p"]  # q: still paused


def test_a_pause_naming_nothing_drains_the_whole_scheduler() -> None:
    driver = Driver(POOLS)
    driver.submit([make_job("a1")], BOTH)
    driver.handle(Pause(True))
    assert (
        dispatched_ids(driver.submit([make_job("a2"), make_job("g1", tenant="globex")], BOTH)) == []
    )
    assert driver.core.export_state(driver.now, driver.now).paused == ()  # not kept: a drain
    # fair share: globex has nothing running, acme has a1
    assert dispatched_ids(driver.handle(Pause(False))) == ["g1", "a2"]

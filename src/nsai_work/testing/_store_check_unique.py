"""``check_store``'s section on unique keys: ``claim_unique`` claims a tenant's key for one job
at a time (in the statuses and period the job names), ``release_unique`` frees it, a client's
``submit`` claims in its own transaction, and claims racing from many store objects make one
winner (durable stores: a memory store's claim and its insert happen in one step of the
loop, so a claim whose job it does not hold holds nothing there)."""

from __future__ import annotations

import asyncio
import datetime as _dt
from typing import Any

from .._ir import Constraints, Job, Status
from ..stores._protocol import WriteBatch
from ._store_harness import T0, Check, fail, finished, plain_job

__all__ = ["check_unique_keys"]


def _unique(tenant_id: str, key: str, **constraints: Any) -> Job:
    job = plain_job(tenant_id)
    return Job(
        kind=job.kind,
        tenant_id=tenant_id,
        constraints=Constraints(unique_key=key, **constraints),
    )


def _expect(check: Check, got: object, want: object, what: str) -> None:
    if got != want:
        fail(f"{check.section}: {what}: got {got!r}, expected {want!r}")


async def check_unique_keys(check: Check) -> None:
    """Claims, duplicates, states, periods, release, clients and races."""
    store = await check.opened()
    tenant = check.tenant("unique")
    written: list[Job] = []

    a, a2, b = _unique(tenant, "k"), _unique(tenant, "k"), _unique(tenant, "other")
    _expect(check, await store.claim_unique([a, a2, b], T0), [None, a.id, None], "first claims")
    await store.write(WriteBatch(inserts=[a, b]))
    written += [a, b]
    c = _unique(tenant, "k")
    _expect(check, await store.claim_unique([c], T0), [a.id], "a claim of a held key")
    elsewhere = _unique(check.tenant("unique-other"), "k")
    _expect(check, await store.claim_unique([elsewhere], T0), [None], "another tenant's key")
    await store.release_unique([(elsewhere.tenant_id, elsewhere.id)])

    await store.write(WriteBatch(updates=[finished(a, Status.SUCCEEDED)]))
    _expect(check, await store.claim_unique([c], T0), [None], "the key of a finished job")
    await store.write(WriteBatch(inserts=[c]))
    written.append(c)

    period = _unique(tenant, "p", unique_states=(Status.SUCCEEDED,), unique_period_s=60.0)
    _expect(check, await store.claim_unique([period], T0), [None], "a claim with a period")
    await store.write(WriteBatch(inserts=[period]))
    written.append(period)
    pending = _unique(tenant, "p")
    _expect(
        check,
        await store.claim_unique([pending], T0),
        [None],
        "a key whose holder is pending, outside its unique_states (succeeded only)",
    )
    await store.release_unique([(tenant, pending.id)])
    period = _unique(tenant, "p", unique_states=(Status.SUCCEEDED,), unique_period_s=60.0)
    _expect(check, await store.claim_unique([period], T0), [None], "a released key")
    await store.write(WriteBatch(inserts=[finished(period, Status.SUCCEEDED)]))
    written.append(period)
    just_before = T0 + _dt.timedelta(seconds=60) - _dt.timedelta(microseconds=1)
    _expect(check, await store.claim_unique([pending], just_before), [period.id], "in the period")
    at_end = T0 + _dt.timedelta(seconds=60)
    _expect(check, await store.claim_unique([pending], at_end), [None], "at the period's end")
    await store.release_unique([(tenant, pending.id)])
    again = _unique(tenant, "p")
    _expect(check, await store.claim_unique([again], at_end), [None], "a released key")
    await store.release_unique([(tenant, again.id)])

    if check.durable:  # the scheduler claims before its group commit writes the job
        early, late = _unique(tenant, "early"), _unique(tenant, "early")
        await store.claim_unique([early], T0)
        _expect(check, await store.claim_unique([late], T0), [early.id], "an unwritten claim")
        await store.release_unique([(tenant, early.id)])

    client = await check.client_for(store)
    d, d2 = _unique(tenant, "client"), _unique(tenant, "client")
    _expect(check, await client.submit([d, d2]), [None, d.id], "a client's submit")
    _expect(check, await client.submit([_unique(tenant, "client")]), [d.id], "a duplicate")
    got = await store.get_many([(tenant, d.id), (tenant, d2.id)])
    _expect(check, [j.id if j else None for j in got], [d.id, None], "what the client stored")
    written.append(d)

    if check.durable:  # racing claims from many objects (processes) over the same data
        racers = [await check.client_for(store) for _ in range(4)]
        jobs = [_unique(tenant, "race") for _ in range(40)]
        results = await asyncio.gather(
            *(racers[n % len(racers)].claim_unique([job], T0) for n, job in enumerate(jobs))
        )
        winners = [job.id for job, (held,) in zip(jobs, results, strict=True) if held is None]
        if len(winners) != 1:
            fail(f"{check.section}: 40 racing claims of one key made {len(winners)} winners")
        losers = {held for (held,) in results if held is not None}
        _expect(check, losers, set(winners), "who the racing claims lost to")
        await store.release_unique([(tenant, winners[0])])
    await check.clean(store, written)
    after = _unique(tenant, "k")
    _expect(check, await store.claim_unique([after], T0), [None], "the key of a deleted job")
    await store.release_unique([(tenant, after.id)])

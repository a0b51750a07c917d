"""``JobLookups``: how an engine finds the jobs a caller names, written once for every engine.

A verb names jobs by id, with or without their tenant (jobs are keyed by (tenant_id, id)). The
scheduler and a client both resolve them here; each answers the questions these lookups ask in
its own way: who owns an id (``_owners``), every job with each of many ids (``_find_many``, one
store query), what each key holds now (``_read``), and what an unknown id is told
(``not_found``).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence

from .._errors import NotFoundError, ValidationError
from .._ir import Job
from ..stores import JobKey

__all__ = ["JobLookups"]


class JobLookups:
    """The lookups of job ids, over an engine's ``_owners``, ``_find_many``, ``_read`` and
    ``not_found``."""

    __slots__ = ()

    async def _owners(self, job_id: str) -> builtins.list[str]:
        """The tenants with a job with this id."""
        raise NotImplementedError

    async def _find_many(self, job_ids: Sequence[str]) -> dict[str, builtins.list[Job]]:
        """Every job with each of these ids, whatever its tenant, as it is now (one store
        query); ids no job has are left out."""
        raise NotImplementedError

    async def _read(self, keys: Sequence[JobKey]) -> builtins.list[Job | None]:
        """Each job's latest snapshot, None when there is none."""
        raise NotImplementedError

    def not_found(self, job_id: str) -> NotFoundError:
        """The one answer for an unknown id, another tenant's job, or a pruned one."""
        raise NotImplementedError

    async def _key(self, job_id: object, tenant_id: object = None) -> JobKey:
        """The (tenant id, job id) a caller means: the tenant is looked up when not given, and
        must be given when two tenants have a job with this id."""
        if not isinstance(job_id, str):
            raise ValidationError(
                f"a job id is a string, got {type(job_id).__name__}", path="$.job_id"
            )
        if tenant_id is not None:
            if not isinstance(tenant_id, str):
                raise ValidationError(
                    f"tenant_id is a string or None, got {type(tenant_id).__name__}",
                    path="$.tenant_id",
                )
            return (tenant_id, job_id)
        return self._only_owner(job_id, await self._owners(job_id))

    def _only_owner(self, job_id: str, owners: builtins.list[str]) -> JobKey:
        """The key of the one tenant with a job with this id (``NotFoundError`` for none,
        ``ValidationError`` asking for ``tenant_id`` for several)."""
        if len(owners) == 1:
            return (owners[0], job_id)
        if not owners:
            raise self.not_found(job_id)
        raise ValidationError(
            f"job id {job_id!r} exists under {len(owners)} tenants; say whose with "
            f"tenant_id=... (or use a tenant-scoped handle, as_tenant(...))",
            path="$.tenant_id",
        )

    async def _lookup(self, job_ids: object, tenant_id: object) -> builtins.list[Job]:
        """The current snapshot of each job id a caller passed, its tenant found as ``_key``
        finds it (all the ids' jobs in one store query)."""
        ids = _ids(job_ids)
        if tenant_id is not None or not ids:
            keys = [await self._key(job_id, tenant_id) for job_id in ids]
            jobs = await self._read(keys)
            for key, job in zip(keys, jobs, strict=True):
                if job is None:
                    raise self.not_found(key[1])
            return jobs  # type: ignore[return-value]
        found = await self._find_many([i for i in ids if isinstance(i, str)])
        picked: builtins.list[Job] = []
        for job_id in ids:
            matches = found.get(job_id) if isinstance(job_id, str) else None
            if matches is not None and len(matches) == 1:
                picked.append(matches[0])
            elif not isinstance(job_id, str):
                await self._key(job_id)  # (raises, saying what is wrong with it)
            else:  # none, or several tenants': raises, saying which
                self._only_owner(job_id, [job.tenant_id for job in matches or ()])
        return picked

    async def _one(self, job_id: object, tenant_id: object) -> Job:
        """The current snapshot of the job a caller names (one store query, with or without
        its tenant)."""
        return (await self._lookup([job_id], tenant_id))[0]

    async def _stored(self, key: JobKey) -> Job:
        """A job's latest snapshot (without the live overlay of ``get``)."""
        (job,) = await self._read([key])
        if job is None:
            raise self.not_found(key[1])
        return job


def _ids(job_ids: object) -> builtins.list[object]:
    """The job ids a ``wait_many``/``as_completed`` caller passed, as a list."""
    if isinstance(job_ids, str) or not isinstance(job_ids, Iterable):
        raise ValidationError(
            f"job_ids is a list (or other iterable) of job id strings, got "
            f"{type(job_ids).__name__}",
            path="$.job_ids",
        )
    return [*job_ids]

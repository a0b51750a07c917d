"""How the scheduler admits new jobs: ``Admission._admit``, what every face's ``submit``,
``submit_many``, ``submit_workflow`` and ``retry`` come to on the loop thread.

Each job is validated and routed (all or nothing: the first bad job refuses the batch, its
error naming its index); then, in the awaits before the core decides, the store is asked
whether an id is taken, how the dependencies the core does not hold ended, and who holds a
unique key. The core admits the rest in one ``Submit`` (or rejects them all), and the jobs are
returned once their admission is committed to the store. A job whose unique key is held is
answered with the job that holds it. A refused batch is counted (``Rejected``) and reported to
telemetry.
"""

from __future__ import annotations

import builtins
import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._errors import ConflictError, ValidationError, WorkError
from .._ir import Job
from .._validate import validate_new_job
from ..core import Event, JobKey, Limit, Reject, Rejected, Route, SchedulingCore, Submit
from ..stores import Store
from ._config import Config
from ._deps import dependency_keys, settled
from ._emit import Emitter, rejection_reason
from ._routing import Router
from ._unique import answer_duplicates, claim, has_unique, holders_of, kept
from ._writes import Writes

if TYPE_CHECKING:
    from ..telemetry.otel import Tracing

__all__ = ["Admission"]


class Admission:
    """The scheduler's admission of new jobs (mixed into ``Scheduler``, which sets these
    attributes at start)."""

    config: Config
    _tracing: Tracing | None
    _router: Router
    _core: SchedulingCore
    _store: Store
    _writes: Writes
    _emitter: Emitter
    _monotonic: Callable[[], float]
    _wall_time: Callable[[], float]

    def _require_running(self) -> None:
        raise NotImplementedError  # the Scheduler's

    def _feed(self, event: Event) -> None:
        raise NotImplementedError  # the Scheduler's

    def _apply(self, decisions: builtins.list[Any], now: float) -> None:
        raise NotImplementedError  # the Scheduler's

    async def _admit(self, jobs: Sequence[Job], *, batch: bool) -> builtins.list[Job]:
        """Validate, route and admit jobs (all or nothing); the admitted jobs, once they are
        committed to the store."""
        self._require_running()
        max_payload = self.config.max_payload_bytes
        validated: builtins.list[Job] = []
        routes: builtins.list[Route] = []
        limits: builtins.list[tuple[Limit, ...]] = []
        any_limits = False
        index = 0
        try:
            for index, job in enumerate(jobs):
                checked = validate_new_job(job, index if batch else None, max_payload)
                route, shared = self._router.route(checked)
                routes.append(route)
                limits.append(shared)
                any_limits = any_limits or bool(shared)
                validated.append(checked)
            if self._tracing is not None:  # (telemetry/otel.py: None unless instrumented)
                validated = self._tracing.submitting(validated)
            keys = [(job.tenant_id, job.id) for job in validated]
            deps = dependency_keys(validated)
            found = await self._store.get_many(keys + deps if deps else keys)
            for index, stored in enumerate(found[: len(keys)]):  # noqa: B007
                if stored is not None:  # (a live job's id is refused by the core)
                    raise ConflictError(
                        f"duplicate job id {stored.id!r}: tenant {stored.tenant_id!r} already "
                        f"has a job with this id; omit id to get a fresh one"
                    )
            finished = await settled(self, deps, found[len(keys) :]) if deps else ()
            # the last await before the core admits them (see engine/_unique.py)
            unique = has_unique(validated)
            duplicates = await claim(self._store, validated, self._wall_time()) if unique else {}
        except WorkError as exc:
            error = _with_index(exc, index) if batch else exc
            self._feed(Rejected(tuple(jobs), rejection_reason(error)))
            self._emitter.rejected([j for j in jobs if type(j) is Job], error)
            raise error from None
        if not validated:
            return []
        new = validated
        if duplicates:
            new, keys = kept(new, duplicates), kept(keys, duplicates)
            routes, limits = kept(routes, duplicates), kept(limits, duplicates)
        admitted: builtins.list[Job] = []
        if new:
            admitted = await self._admit_new(new, keys, routes, limits, any_limits, finished, batch)
        if not duplicates:
            return admitted
        holders = await holders_of(self._core.get, self._store, validated, duplicates)
        answer = answer_duplicates(validated, admitted, duplicates, holders)
        for n in duplicates:
            self._emitter.duplicate(validated[n], answer[n])
        return answer

    async def _admit_new(
        self,
        new: builtins.list[Job],
        keys: builtins.list[JobKey],
        routes: builtins.list[Route],
        limits: builtins.list[tuple[Limit, ...]],
        any_limits: bool,
        finished: Any,
        batch: bool,
    ) -> builtins.list[Job]:
        """Feed the core a Submit of validated new jobs; the admitted jobs once committed."""
        submit = Submit(tuple(new), tuple(routes), tuple(limits) if any_limits else (), finished)
        now = self._monotonic()
        decisions = self._core.handle(submit, now, self._wall_time())
        rejection = decisions[0] if decisions else None
        if type(rejection) is Reject:
            error = rejection.error
            if batch and rejection.index is not None:
                error = _with_index(error, rejection.index)
            self._emitter.rejected(new, error)
            if has_unique(new):  # their claims are void: free the keys
                await self._store.release_unique(keys)
            raise error
        self._apply(decisions, now)
        live = self._core.get
        admitted = [live(*key) or job for key, job in zip(keys, new, strict=True)]
        writes = self._writes
        await writes.wait_submitted(writes.submitted(keys))
        return admitted


def _with_index(error: WorkError, index: int) -> WorkError:
    """The same error, saying which job of a batch it is about."""
    if isinstance(error, ValidationError):
        if error.index == index:
            return error
        labelled_error = copy.copy(error)  # keeps the subclass and its attributes
        labelled_error.index = index
        labelled_error.args = (f"{error.rule} - at {error.path} of job #{index}",)
        return labelled_error
    labelled = copy.copy(error)
    labelled.args = (f"job #{index} of the batch: {error}",)
    return labelled

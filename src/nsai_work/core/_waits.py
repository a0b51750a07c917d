"""Waits before a job's first run: its dependencies, its ``run_at``, its deadline.

A job admitted with dependencies that have not all ended, or with a ``run_at`` still ahead,
is admitted ``pending`` (waiting reason ``dependencies``, then ``scheduled``) instead of
queued. ``Waits`` keeps:

- ``waiters``: each such job waiting for dependencies, with the ids it still waits for;
- ``dependents``: for each live job that others wait for, who waits (a job's id in its own
  tenant: a job depends only on its own tenant's jobs).

When a job ends, its dependents learn how (``settle``): a success, or a failure the dependent
allows (``allow_failure``), takes it off their list, and a job whose list empties goes on to
its ``run_at`` or is queued; any other end cancels the dependent with ``dependency_failed:
<id> (<status>)``, whose own end does the same to its dependents: transitively, in a loop (no
recursion, so a chain of any length settles). A job that ends while waiting (canceled) leaves
the tables (``leaving``).

Timers are the core's: ``("run_at", tenant, id, 0)`` at ``run_at`` and ``("deadline", tenant,
id, 0)`` at ``deadline`` (attempt 0: a job that has started no longer has either, so the key
is stale then). Nothing here is kept beyond the jobs: a restored core rebuilds it from the
pending jobs' ``depends_on`` and how their dependencies ended (``Restore.finished``).

``check`` refuses, before anything changes, a batch with a dependency that is unknown or
another tenant's (the same answer for both) or with a cycle (named).
"""

from __future__ import annotations

import datetime as _dt
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Final

from msgspec.structs import replace

from .._errors import ValidationError
from .._ir import DEFAULT_CONSTRAINTS, Constraints, Job, Status
from ._endings import cancel
from ._messages import Amend, ArmTimer, Cancel, Decision, DisarmTimer, Finished, Submit

if TYPE_CHECKING:
    from ._admission import Rejection
    from ._core import SchedulingCore
    from ._jobs import LiveJobs
    from ._queues import Entry

__all__ = ["DEPENDENCIES", "SCHEDULED", "Waits", "allows", "find_cycle"]

#: The waiting reasons of a pending job that has not run yet.
DEPENDENCIES: Final = "dependencies"
SCHEDULED: Final = "scheduled"
_RUN_AT_KEY: Final = "run_at"
_DEADLINE_KEY: Final = "deadline"
_PENDING, _QUEUED, _SUCCEEDED = Status.PENDING, Status.QUEUED, Status.SUCCEEDED
_CANCELED = Status.CANCELED
_UTC: Final = _dt.UTC
#: How many of the ids a job waits for its waiting reason names.
_NAMED: Final = 3

JobKey = tuple[str, str]


def allows(constraints: Constraints, dep: str) -> bool:
    """Whether a job may run although dependency ``dep`` did not succeed."""
    allow = constraints.allow_failure
    return allow is True or (type(allow) is tuple and dep in allow)


def find_cycle(edges: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle of ``edges`` (node -> the nodes it depends on) as its nodes, the first repeated
    at the end (``[a, b, a]``), or None. Iterative depth-first search: O(nodes + edges)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in edges:
        if root in state:
            continue
        path: list[str] = [root]
        stack = [iter(edges.get(root, ()))]
        state[root] = 1
        while stack:
            node = next(stack[-1], None)
            if node is None:
                stack.pop()
                state[path.pop()] = 2
                continue
            seen = state.get(node)
            if seen == 1:
                return [*path[path.index(node) :], node]
            if seen is None and node in edges:
                state[node] = 1
                path.append(node)
                stack.append(iter(edges[node]))
    return None


class _Waiter:
    """A pending job waiting for dependencies, and the ids it still waits for."""

    __slots__ = ("entry", "left")

    def __init__(self, entry: Entry, left: set[str]) -> None:
        self.entry = entry
        self.left = left


class _Batch:
    """One submitted batch being admitted (see ``Waits.batch``)."""

    __slots__ = ("ended", "event", "held", "in_batch", "live", "waits")

    def __init__(self, waits: Waits, event: Submit, live: LiveJobs) -> None:
        self.waits = waits
        self.event = event
        self.live = live
        self.in_batch = {(job.tenant_id, job.id) for job in event.jobs}
        self.ended = {(tenant, job_id): status for tenant, job_id, status in event.finished}
        self.held: list[tuple[Entry, set[str], tuple[str, Status] | None]] = []

    def check(self) -> Rejection | None:
        """``Waits.check`` of the batch."""
        return Waits.check(self.event.jobs, self.live, self.event.finished)

    def hold(self, entry: Entry) -> None:
        """``Waits.hold`` of an admitted job of the batch (before it is kept)."""
        if entry.job.constraints is not DEFAULT_CONSTRAINTS:
            left, doomed = self.waits.hold(entry, self.in_batch, self.ended, self.live)
            self.held.append((entry, left, doomed))

    def admitted(self, out: list[Decision]) -> None:
        """``Waits.admitted`` of the batch's jobs, once all are kept."""
        self.waits.admitted(self.held, out)


class Waits:
    """Dependencies, ``run_at`` and deadlines of a core's jobs (see the module docstring)."""

    __slots__ = ("_core", "_settling", "_todo", "dependents", "waiters")

    def __init__(self, core: SchedulingCore) -> None:
        self._core = core
        self.waiters: dict[JobKey, _Waiter] = {}
        self.dependents: dict[JobKey, list[JobKey]] = {}
        self._todo: deque[tuple[str, Status, list[JobKey]]] = deque()
        self._settling = False

    # ---- admission ---------------------------------------------------------------------------

    def batch(self, event: Submit, live: LiveJobs) -> _Batch | None:
        """The admission of a submitted batch with jobs that may wait (None: no job of it
        has dependencies, ``run_at`` or a deadline: it is queued at once)."""
        for job in event.jobs:
            if job.constraints is not DEFAULT_CONSTRAINTS:
                return _Batch(self, event, live)
        return None

    @staticmethod
    def check(
        jobs: Sequence[Job], live: LiveJobs, finished: Iterable[Finished]
    ) -> Rejection | None:
        """Every dependency of the batch is the same tenant's job, live, in the batch or
        ``finished``; and the batch's dependencies have no cycle."""
        in_batch = {(job.tenant_id, job.id) for job in jobs}
        ended = {(tenant, job_id) for tenant, job_id, _ in finished}
        earlier: set[JobKey] = set()
        forward = False  # does a job depend on one later in the batch? (only then a cycle can)
        for index, job in enumerate(jobs):
            tenant = job.tenant_id
            for position, dep in enumerate(job.constraints.depends_on):
                key = (tenant, dep)
                if key in earlier:
                    continue
                if key in in_batch:
                    forward = True
                elif key not in ended and live.get(tenant, dep) is None:
                    return (
                        ValidationError(
                            f"depends_on names {dep!r}, and tenant {tenant!r} has no job with "
                            f"that id here (unknown, another tenant's, or finished and pruned); "
                            f"a job depends on its own tenant's jobs, submitted before it or in "
                            f"the same batch",
                            path=f"$.constraints.depends_on[{position}]",
                        ),
                        index,
                        "invalid",
                    )
            earlier.add((tenant, job.id))
        if not forward:
            return None
        edges: dict[str, list[str]] = {}
        for job in jobs:
            tenant = job.tenant_id
            for dep in job.constraints.depends_on:
                if (tenant, dep) in in_batch:
                    edges.setdefault(f"{tenant}\n{job.id}", []).append(f"{tenant}\n{dep}")
        cycle = find_cycle(edges)
        if cycle is None:
            return None
        ids = [node.split("\n", 1)[1] for node in cycle]
        first = next(i for i, job in enumerate(jobs) if job.id == ids[0])
        return (
            ValidationError(
                f"dependency cycle: {' -> '.join(ids)} (each depends on the next); a job can "
                f"only wait for work that does not wait for it",
                path="$.constraints.depends_on",
            ),
            first,
            "invalid",
        )

    def hold(
        self,
        entry: Entry,
        in_batch: set[JobKey],
        ended: Mapping[JobKey, Status],
        live: LiveJobs,
    ) -> tuple[set[str], tuple[str, Status] | None]:
        """Decide how an admitted job starts: its ``schedule_in_s`` becomes ``run_at``; it is
        made pending (with its reason) when it waits for dependencies or its ``run_at``.
        Returns the dependencies it waits for and the first one that already failed it."""
        core = self._core
        job = entry.job
        constraints = job.constraints
        if constraints.schedule_in_s is not None:
            at = _dt.datetime.fromtimestamp(core._wall + constraints.schedule_in_s, _UTC)
            constraints = replace(constraints, run_at=at, schedule_in_s=None)
            job = replace(job, constraints=constraints)
        left: set[str] = set()
        doomed: tuple[str, Status] | None = None
        tenant = job.tenant_id
        for dep in constraints.depends_on:
            key = (tenant, dep)
            if key in in_batch or live.get(tenant, dep) is not None:
                left.add(dep)
                continue
            status = ended[key]
            if status is not _SUCCEEDED and not allows(constraints, dep) and doomed is None:
                doomed = (dep, status)
        run_at = constraints.run_at
        if left or doomed is not None:
            reason: str | None = DEPENDENCIES
        elif run_at is not None and run_at.timestamp() > core._wall:
            reason = SCHEDULED
        else:
            reason = None
        if reason is not None:
            entry.status = _PENDING
            job = replace(job, status=_PENDING, queued_at=None, waiting_reason=reason)
        entry.job = job
        return left, doomed

    def admitted(
        self,
        entries: Sequence[tuple[Entry, set[str], tuple[str, Status] | None]],
        out: list[Decision],
    ) -> None:
        """Link the admitted jobs to what they wait for, arm their timers, and cancel those a
        dependency already failed (after all are linked: their dependents in the batch follow
        them)."""
        for entry, left, doomed in entries:
            if left and doomed is None:  # (a doomed job waits for nothing: it is canceled)
                self._link(entry, left)
            self._arm(entry, out)
        for entry, _, doomed in entries:
            if doomed is not None and entry.status is _PENDING:
                dep, status = doomed
                self._fail(entry, dep, status, out)

    def _link(self, entry: Entry, left: set[str]) -> None:
        tenant, key = entry.tenant, (entry.tenant, entry.job.id)
        self.waiters[key] = _Waiter(entry, left)
        dependents = self.dependents
        for dep in left:
            waiting = dependents.get((tenant, dep))
            if waiting is None:
                dependents[(tenant, dep)] = [key]
            else:
                waiting.append(key)

    def _arm(self, entry: Entry, out: list[Decision]) -> None:
        core, job = self._core, entry.job
        constraints = job.constraints
        run_at, deadline = constraints.run_at, constraints.deadline
        if run_at is not None and run_at.timestamp() > core._wall:
            at = core._now + (run_at.timestamp() - core._wall)
            out.append(ArmTimer(at, (_RUN_AT_KEY, entry.tenant, job.id, 0)))
        if deadline is not None:
            at = core._now + (deadline.timestamp() - core._wall)
            out.append(ArmTimer(at, (_DEADLINE_KEY, entry.tenant, job.id, 0)))

    # ---- ends --------------------------------------------------------------------------------

    def leaving(self, entry: Entry, out: list[Decision]) -> None:
        """A job is about to end: it waits for nothing any more, and its timers are not
        needed (called only for a job with constraints)."""
        job = entry.job
        key = (entry.tenant, job.id)
        if self.waiters:
            self.waiters.pop(key, None)
        if job.attempt == 0:
            constraints = job.constraints
            if constraints.run_at is not None and entry.status is _PENDING:
                out.append(DisarmTimer((_RUN_AT_KEY, entry.tenant, job.id, 0)))
            if constraints.deadline is not None:
                out.append(DisarmTimer((_DEADLINE_KEY, entry.tenant, job.id, 0)))

    def started(self, entry: Entry, out: list[Decision]) -> None:
        """A job's first run starts: its deadline no longer applies."""
        job = entry.job
        if job.attempt == 1 and job.constraints.deadline is not None:
            out.append(DisarmTimer((_DEADLINE_KEY, entry.tenant, job.id, 0)))

    def settle(self, key: JobKey, status: Status, out: list[Decision]) -> None:
        """Job ``key`` ended with ``status``: tell the jobs that wait for it, and theirs in
        turn (see the module docstring)."""
        children = self.dependents.pop(key, None)
        if children is None:
            return
        todo = self._todo
        todo.append((key[1], status, children))
        if self._settling:
            return  # (the loop below, further up the stack, takes it)
        self._settling = True
        try:
            waiters = self.waiters
            while todo:
                dep, ended, children = todo.popleft()
                for child in children:
                    waiter = waiters.get(child)
                    if waiter is None:
                        continue  # it ended meanwhile
                    entry = waiter.entry
                    if ended is _SUCCEEDED or allows(entry.job.constraints, dep):
                        waiter.left.discard(dep)
                        if not waiter.left:
                            del waiters[child]
                            self._ready(entry, out)
                    else:
                        self._fail(entry, dep, ended, out)
        finally:
            self._settling = False

    def _fail(self, entry: Entry, dep: str, status: Status, out: list[Decision]) -> None:
        reason = f"dependency_failed: {dep} ({status.value})"
        cancel(self._core, Cancel(entry.tenant, entry.job.id, reason), out)

    def _ready(self, entry: Entry, out: list[Decision]) -> None:
        """A job's dependencies are met: it waits for its ``run_at``, or is queued."""
        core = self._core
        run_at = entry.job.constraints.run_at
        if run_at is not None and run_at.timestamp() > core._wall:
            entry.job = replace(entry.job, waiting_reason=SCHEDULED)
            out.append(Amend(entry.job))
        else:
            core._enqueue_pending(entry, out)

    # ---- timers ------------------------------------------------------------------------------

    def timer(self, what: str, entry: Entry, out: list[Decision]) -> bool:
        """A ``run_at`` or ``deadline`` timer of a job that has not started fired; False if
        ``what`` is neither."""
        if what == _RUN_AT_KEY:
            if entry.status is _PENDING and entry.job.waiting_reason == SCHEDULED:
                self._core._enqueue_pending(entry, out)
            return True
        if what == _DEADLINE_KEY:
            if entry.status is _PENDING or entry.status is _QUEUED:
                cancel(self._core, Cancel(entry.tenant, entry.job.id, "deadline_exceeded"), out)
            return True
        return False

    # ---- reads -------------------------------------------------------------------------------

    def describe(self, entry: Entry) -> str:
        """A pending job's waiting reason naming what it waits for: ``dependencies: a, b``
        (the first few ids, then how many more)."""
        reason = entry.job.waiting_reason or "pending"
        if reason != DEPENDENCIES:
            return reason
        waiter = self.waiters.get((entry.tenant, entry.job.id))
        if waiter is None:
            return reason
        ids = [dep for dep in entry.job.constraints.depends_on if dep in waiter.left]
        named = ", ".join(ids[:_NAMED])
        more = f" (+{len(ids) - _NAMED} more)" if len(ids) > _NAMED else ""
        return f"{DEPENDENCIES}: {named}{more}"

    # ---- restore -----------------------------------------------------------------------------

    def restore(
        self, entries: Sequence[Entry], finished: Iterable[Finished], out: list[Decision]
    ) -> list[tuple[Entry, tuple[str, Status] | None]]:
        """Rebuild the tables from restored jobs (``Restore``): arm the timers of those that
        have not started, link the pending ones that wait for dependencies. Returns the jobs
        whose wait has ended or that a dependency failed (None: ready), for the Restore's
        transitions (``restored``)."""
        core = self._core
        ended = {(tenant, job_id): status for tenant, job_id, status in finished}
        moves: list[tuple[Entry, tuple[str, Status] | None]] = []
        for entry in entries:
            job = entry.job
            if job.attempt != 0 or job.constraints is DEFAULT_CONSTRAINTS or not entry.group:
                continue
            if entry.status is _PENDING or entry.status is _QUEUED:
                self._arm(entry, out)
            if entry.status is not _PENDING:
                continue
            constraints = job.constraints
            if job.waiting_reason == DEPENDENCIES:
                left: set[str] = set()
                doomed: tuple[str, Status] | None = None
                for dep in constraints.depends_on:
                    if core._jobs.get(entry.tenant, dep) is not None:
                        left.add(dep)
                        continue
                    status = ended.get((entry.tenant, dep), _SUCCEEDED)  # (pruned: met)
                    if status is not _SUCCEEDED and not allows(constraints, dep):
                        doomed = doomed or (dep, status)
                if left and doomed is None:
                    self._link(entry, left)
                if doomed is not None:
                    moves.append((entry, doomed))
                elif not left:
                    moves.append((entry, None))
            elif job.waiting_reason == SCHEDULED:
                run_at = constraints.run_at
                if run_at is None or run_at.timestamp() <= core._wall:
                    moves.append((entry, None))
        return moves

    def restored(
        self, moves: Sequence[tuple[Entry, tuple[str, Status] | None]], out: list[Decision]
    ) -> None:
        """The transitions of ``restore``'s jobs: queued (or on to their ``run_at``), or
        canceled by a dependency's failure."""
        for entry, doomed in moves:
            if entry.status is not _PENDING:
                continue  # (canceled meanwhile, by another's failure)
            if doomed is None:
                self._ready(entry, out)
            else:
                self._fail(entry, doomed[0], doomed[1], out)

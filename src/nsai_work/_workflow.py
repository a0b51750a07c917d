"""``Workflow``: named steps with edges between them, submitted as one batch of jobs.

A workflow is plain jobs: each step is a Job whose ``constraints.depends_on`` holds the ids of
the steps it comes ``after``, and whose metadata names its workflow and step
(``workflow_id``, ``workflow_name``, ``workflow_step``). So everything a job has (priorities,
tenants, retries, resources, a durable store, telemetry) a step has, and the core's dependency
tracking runs it: a step waits for the steps before it, a failure cancels the steps after it
that do not allow it (``allow_failure``), and ``ctx.upstream`` hands a step the results of the
steps before it, by job id and by step name.

``submit_workflow`` admits every step or none (one ``submit_many``); a cycle is refused naming
its steps. ``WorkflowRun`` is what comes back: the steps' jobs as they are, and one status for
the whole (``workflow_status``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from msgspec import Struct
from msgspec.structs import replace

from ._errors import ValidationError
from ._ir import (
    DEFAULT_CONSTRAINTS,
    DEFAULT_RESOURCES,
    TERMINAL_STATUSES,
    Constraints,
    Job,
    Priority,
    Resources,
    Status,
    is_identifier,
    new_job_id,
)
from .core._waits import find_cycle

__all__ = [
    "WORKFLOW_STATUSES",
    "Workflow",
    "WorkflowRun",
    "last_first",
    "refreshed",
    "workflow_status",
]

#: The statuses of a whole workflow (``WorkflowRun.status``).
WORKFLOW_STATUSES: Final = ("pending", "running", "succeeded", "failed", "canceled")


class WorkflowRun(Struct, kw_only=True):
    """A submitted workflow: its id and name, its tenant, each step's job as it was read (in
    the order the steps were declared), and one status for the whole (``workflow_status``).
    Keep it (it encodes with msgspec) to look the workflow up again later."""

    id: str
    name: str
    tenant_id: str
    steps: dict[str, Job]
    status: str = "pending"

    @property
    def job_ids(self) -> dict[str, str]:
        """Each step's job id, by step name."""
        return {name: job.id for name, job in self.steps.items()}

    @property
    def results(self) -> dict[str, Any]:
        """Each step's result by step name (None for a step that has not succeeded)."""
        return {
            name: job.result if job.status is Status.SUCCEEDED else None
            for name, job in self.steps.items()
        }

    @property
    def is_finished(self) -> bool:
        """True once every step is terminal."""
        return all(job.status in TERMINAL_STATUSES for job in self.steps.values())


def workflow_status(jobs: Sequence[Job]) -> str:
    """One status for a workflow's steps: ``pending`` while none has started, ``running``
    until all are terminal, then ``succeeded`` if all succeeded, ``failed`` if one failed or
    timed out, else ``canceled``."""
    statuses = [job.status for job in jobs]
    if not all(status in TERMINAL_STATUSES for status in statuses):
        started = any(
            status is not Status.PENDING and status is not Status.QUEUED for status in statuses
        )
        return "running" if started else "pending"
    if all(status is Status.SUCCEEDED for status in statuses):
        return "succeeded"
    if any(status is Status.FAILED or status is Status.TIMEOUT for status in statuses):
        return "failed"
    return "canceled"


class _Step(Struct, kw_only=True):
    name: str
    job: Job
    after: tuple[str, ...]
    allow_failure: bool | tuple[str, ...]


class Workflow:
    """Named steps and the edges between them, for one tenant.

    ``step(name, kind, after=[...])`` adds a step; edges fan out (many steps after one) and fan
    in (one step after many). Submit it with ``submit_workflow``: every step is admitted or
    none, and a cycle is refused naming it::

        flow = work.Workflow("train", tenant_id="acme")
        flow.step("prepare", "prepare_data")
        for seed in (1, 2, 3):
            flow.step(f"train-{seed}", "train", payload={"seed": seed}, after=["prepare"])
        flow.step("evaluate", "evaluate", after=["train-1", "train-2", "train-3"])
        run = work.submit_workflow(flow)
    """

    def __init__(
        self,
        name: str,
        *,
        tenant_id: str,
        namespace: str = "default",
        priority: Priority | str = Priority.BATCH,
        id: str | None = None,
    ) -> None:
        if not is_identifier(name):
            raise ValidationError(
                f"a workflow's name is an identifier (letters, digits and . _ : @ -), got {name!r}",
                path="$.name",
            )
        self.name = name
        self.tenant_id = tenant_id
        self.namespace = namespace
        self.priority = priority
        self.id = new_job_id() if id is None else id
        self._steps: dict[str, _Step] = {}

    def step(
        self,
        name: str,
        kind: str,
        *,
        payload: Mapping[str, Any] | None = None,
        after: Sequence[str] = (),
        allow_failure: bool | Sequence[str] = False,
        resources: Resources = DEFAULT_RESOURCES,
        constraints: Constraints = DEFAULT_CONSTRAINTS,
        priority: Priority | str | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] = (),
    ) -> str:
        """Add a step (a job of ``kind``) that runs after the steps named in ``after``;
        ``allow_failure`` (True, or some of those names) lets it run although they did not
        succeed. ``constraints`` may set anything but ``depends_on`` (the edges do). Returns
        the step's name."""
        path = f"$.steps.{name}"
        if not is_identifier(name):
            raise ValidationError(
                f"a step's name is an identifier (letters, digits and . _ : @ -), got {name!r}",
                path="$.steps",
            )
        if name in self._steps:
            raise ValidationError(f"step {name!r} is declared twice", path=path)
        if isinstance(after, str):
            after = [after]
        if len(set(after)) != len(after):
            raise ValidationError(
                f"step {name!r} lists a step twice in after", path=f"{path}.after"
            )
        if constraints.depends_on:
            raise ValidationError(
                f"step {name!r}: its edges come from after=, not constraints.depends_on",
                path=f"{path}.constraints.depends_on",
            )
        allowed: bool | tuple[str, ...]
        if isinstance(allow_failure, bool):
            allowed = allow_failure
        else:
            allowed = tuple(allow_failure)
            for other in allowed:
                if other not in after:
                    raise ValidationError(
                        f"step {name!r} allows {other!r} to fail, which is not among its after "
                        f"steps {list(after)}",
                        path=f"{path}.allow_failure",
                    )
        job = Job(
            kind=kind,
            tenant_id=self.tenant_id,
            namespace=self.namespace,
            priority=Priority(self.priority if priority is None else priority),
            payload=dict(payload or {}),
            resources=resources,
            constraints=constraints,
            metadata={
                **(metadata or {}),
                "workflow_id": self.id,
                "workflow_name": self.name,
                "workflow_step": name,
            },
            tags=tuple(tags),
        )
        self._steps[name] = _Step(name=name, job=job, after=tuple(after), allow_failure=allowed)
        return name

    @property
    def steps(self) -> list[str]:
        """The step names, in the order they were declared."""
        return list(self._steps)

    def jobs(self) -> list[Job]:
        """The steps as jobs, in declaration order, their edges as ``depends_on``; a step
        after an unknown one, or a cycle, is refused (``ValidationError`` naming them)."""
        steps = self._steps
        if not steps:
            raise ValidationError(f"workflow {self.name!r} has no steps", path="$.steps")
        for step in steps.values():
            for other in step.after:
                if other not in steps:
                    raise ValidationError(
                        f"step {step.name!r} comes after {other!r}, which is not a step of "
                        f"workflow {self.name!r} (steps: {list(steps)})",
                        path=f"$.steps.{step.name}.after",
                    )
            refs = step.job.payload.get("args_from")
            if isinstance(refs, dict):
                for arg, reference in refs.items():
                    source = reference.split(".", 1)[0] if isinstance(reference, str) else None
                    if source not in step.after:
                        raise ValidationError(
                            f"step {step.name!r} takes {arg!r} from {reference!r}, but does not "
                            f"come after {source!r} (after: {list(step.after)})",
                            path=f"$.steps.{step.name}.payload.args_from.{arg}",
                        )
        cycle = find_cycle({name: step.after for name, step in steps.items()})
        if cycle is not None:
            raise ValidationError(
                f"workflow {self.name!r} has a cycle: {' -> '.join(cycle)} (each comes after "
                f"the next); a step can only come after steps that do not come after it",
                path=f"$.steps.{cycle[0]}.after",
            )
        ids = {name: step.job.id for name, step in steps.items()}
        jobs = []
        for step in steps.values():
            allowed = step.allow_failure
            constraints = replace(
                step.job.constraints,
                depends_on=tuple(ids[other] for other in step.after),
                allow_failure=allowed
                if isinstance(allowed, bool)
                else tuple(ids[other] for other in allowed),
            )
            jobs.append(replace(step.job, constraints=constraints))
        return jobs

    def run_of(self, jobs: Sequence[Job]) -> WorkflowRun:
        """The ``WorkflowRun`` of this workflow's submitted ``jobs`` (in declaration order)."""
        return WorkflowRun(
            id=self.id,
            name=self.name,
            tenant_id=self.tenant_id,
            steps=dict(zip(self._steps, jobs, strict=True)),
            status=workflow_status(jobs),
        )


def refreshed(run: WorkflowRun, jobs: Sequence[Job]) -> WorkflowRun:
    """``run`` with its steps' jobs replaced by ``jobs`` (in its order) and its status anew."""
    return WorkflowRun(
        id=run.id,
        name=run.name,
        tenant_id=run.tenant_id,
        steps=dict(zip(run.steps, jobs, strict=True)),
        status=workflow_status(jobs),
    )


def last_first(run: WorkflowRun) -> list[str]:
    """The job ids of a run's steps, each after every step that comes after it (so a cancel in
    this order reaches each step before a failure of a step before it does)."""
    jobs = {job.id: job for job in run.steps.values()}
    after: dict[str, int] = dict.fromkeys(jobs, 0)  # how many steps come after each one
    for job in jobs.values():
        for dep in job.constraints.depends_on:
            if dep in after:
                after[dep] += 1
    ready = [job_id for job_id, count in after.items() if count == 0]
    order: list[str] = []
    while ready:
        job_id = ready.pop()
        order.append(job_id)
        for dep in jobs[job_id].constraints.depends_on:
            if dep in after:
                after[dep] -= 1
                if after[dep] == 0:
                    ready.append(dep)
    return order

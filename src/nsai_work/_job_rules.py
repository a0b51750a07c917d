"""The rules of a new job that its fields' types do not say, checked once its copy is decoded:

- a cost cap (``resources.max_cost_usd``) needs ``resources.timeout_ms``;
- the waits: at most ``MAX_DEPENDENCIES`` in ``depends_on``, none twice nor the job itself,
  ``allow_failure`` names only dependencies, ``run_at`` or ``schedule_in_s`` but not both, and
  no ``deadline`` before ``run_at``;
- ``unique_states`` and ``unique_period_s`` only with a ``unique_key``, and its states each once;
- fields whose behaviour is not built yet (``NOT_SUPPORTED_YET``) are refused, never ignored.

A job with the default constraints pays one identity check for all but the first rule.
"""

from __future__ import annotations

from typing import Final

from ._errors import ValidationError
from ._ir import DEFAULT_CONSTRAINTS, MAX_DEPENDENCIES, Job

__all__ = ["NOT_SUPPORTED_YET", "check_rules"]

#: Fields whose behaviour a later issue builds: a job that sets one is rejected, never ignored.
NOT_SUPPORTED_YET: Final[tuple[tuple[str, str], ...]] = ()


def check_rules(job: Job, index: int | None) -> None:
    """Raise ``ValidationError`` at the first rule ``job`` breaks (see the module docstring)."""
    if job.resources.max_cost_usd is not None and job.resources.timeout_ms is None:
        raise ValidationError(
            "max_cost_usd needs resources.timeout_ms: the estimated maximum cost is price x "
            "resources x timeout",
            path="$.resources.max_cost_usd",
            index=index,
        )
    if job.constraints is DEFAULT_CONSTRAINTS:
        return
    _check_waits(job, index)
    _check_unique(job, index)
    for section, name in NOT_SUPPORTED_YET:
        value = getattr(getattr(job, section), name)
        if value is not None and value != ():
            raise ValidationError(
                f"not supported yet: {section}.{name} (a later release builds it; leave it unset "
                f"for now rather than have it silently ignored)",
                path=f"$.{section}.{name}",
                index=index,
            )


def _check_unique(job: Job, index: int | None) -> None:
    """``unique_states`` and ``unique_period_s`` qualify a ``unique_key``: not without one."""
    constraints = job.constraints
    if constraints.unique_key is None:
        for name in ("unique_states", "unique_period_s"):
            if getattr(constraints, name) is not None:
                raise ValidationError(
                    f"{name} qualifies constraints.unique_key, which is not set; set unique_key "
                    f"too, or leave {name} unset",
                    path=f"$.constraints.{name}",
                    index=index,
                )
        return
    states = constraints.unique_states
    if states is not None and (not states or len(set(states)) != len(states)):
        raise ValidationError(
            f"unique_states lists the statuses a job with the key counts in, each once; got "
            f"{[str(s) for s in states]} (None: pending, queued and running)",
            path="$.constraints.unique_states",
            index=index,
        )


def _check_waits(job: Job, index: int | None) -> None:
    """The rules of ``depends_on``, ``allow_failure``, ``run_at``, ``schedule_in_s`` and
    ``deadline`` that a field's type does not say."""
    constraints = job.constraints
    depends_on = constraints.depends_on
    if len(depends_on) > MAX_DEPENDENCIES:
        raise ValidationError(
            f"a job depends on at most {MAX_DEPENDENCIES} jobs, got {len(depends_on)}; chain "
            f"the work through fewer joins",
            path="$.constraints.depends_on",
            index=index,
        )
    seen: set[str] = set()
    for position, dep in enumerate(depends_on):
        if dep == job.id:
            raise ValidationError(
                f"a job cannot depend on itself ({dep!r})",
                path=f"$.constraints.depends_on[{position}]",
                index=index,
            )
        if dep in seen:
            raise ValidationError(
                f"{dep!r} is listed twice in depends_on; list each dependency once",
                path=f"$.constraints.depends_on[{position}]",
                index=index,
            )
        seen.add(dep)
    allow = constraints.allow_failure
    if isinstance(allow, tuple):
        for position, dep in enumerate(allow):
            if dep not in seen:
                raise ValidationError(
                    f"allow_failure names {dep!r}, which is not among depends_on; list only "
                    f"dependencies (or pass True for all of them)",
                    path=f"$.constraints.allow_failure[{position}]",
                    index=index,
                )
    if constraints.schedule_in_s is not None and constraints.run_at is not None:
        raise ValidationError(
            "set run_at or schedule_in_s, not both (schedule_in_s becomes run_at at submit)",
            path="$.constraints.schedule_in_s",
            index=index,
        )
    run_at, deadline = constraints.run_at, constraints.deadline
    if run_at is not None and deadline is not None and deadline < run_at:
        raise ValidationError(
            f"the deadline {deadline.isoformat()} is before run_at {run_at.isoformat()}: the "
            f"job could never start; move one of them",
            path="$.constraints.deadline",
            index=index,
        )

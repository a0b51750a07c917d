"""``args_from``: a tool-call step's arguments taken from the results of the steps before it.

``payload["args_from"]`` maps an argument name to a reference ``"<step>.result[.<key>...]"``:
the step's name in its workflow (or a dependency's job id), then ``result``, then keys (or list
indexes) into that result. ``"proposer.result.text"`` is the ``text`` of the result of the step
``proposer``. The step must come after that one (``depends_on``). At submit the references are
checked for shape and for naming a dependency; when the step runs they are resolved from
``ctx.upstream``, merged over ``args``, and the whole is checked against the tool's ADM
declaration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from .._errors import NonRetryableError, ValidationError

if TYPE_CHECKING:
    from .._ir import Job

__all__ = ["ARGS_FROM", "check_args_from", "resolve_args_from"]

#: The payload key of a tool call's upstream arguments.
ARGS_FROM: Final = "args_from"
_RESULT: Final = "result"


def _split(reference: object, path: str) -> list[str]:
    if not isinstance(reference, str) or reference.count(".") < 1:
        raise ValidationError(
            f"an args_from reference is '<step>.result' or '<step>.result.<key>...', got "
            f"{reference!r}",
            path=path,
        )
    parts = reference.split(".")
    if parts[1] != _RESULT or not parts[0] or not all(parts):
        raise ValidationError(
            f"an args_from reference is '<step>.result' or '<step>.result.<key>...', got "
            f"{reference!r}",
            path=path,
        )
    return parts


def check_args_from(job: Job) -> None:
    """At submit: ``args_from`` is an object of references, each naming a step (or job id) the
    job depends on."""
    refs = job.payload[ARGS_FROM]
    if not isinstance(refs, dict) or not refs:
        raise ValidationError(
            "args_from is a non-empty object: argument name -> '<step>.result.<key>...'",
            path=f"$.payload.{ARGS_FROM}",
        )
    if not job.constraints.depends_on:
        raise ValidationError(
            "args_from takes arguments from upstream steps, and this job depends on none "
            "(constraints.depends_on, or after= in a work.Workflow)",
            path=f"$.payload.{ARGS_FROM}",
        )
    step = job.metadata.get("workflow_step")
    for name, reference in refs.items():
        parts = _split(reference, f"$.payload.{ARGS_FROM}.{name}")
        if step is None and parts[0] not in job.constraints.depends_on:
            raise ValidationError(
                f"args_from.{name} reads {parts[0]!r}, which is not among this job's dependencies",
                path=f"$.payload.{ARGS_FROM}.{name}",
            )


def resolve_args_from(refs: Mapping[str, str], upstream: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments ``refs`` name, read from ``upstream`` (``ctx.upstream``); a reference
    that does not resolve fails the step (``NonRetryableError`` naming it)."""
    args: dict[str, Any] = {}
    for name, reference in refs.items():
        parts = _split(reference, f"$.payload.{ARGS_FROM}.{name}")
        if parts[0] not in upstream:
            raise NonRetryableError(
                f"args_from.{name}: no upstream step {parts[0]!r} (upstream: {sorted(upstream)})"
                f" - at $.payload.{ARGS_FROM}.{name}"
            )
        value: Any = upstream[parts[0]]
        walked = f"{parts[0]}.result"
        for key in parts[2:]:
            if isinstance(value, Mapping) and key in value:
                value = value[key]
            elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            else:
                raise NonRetryableError(
                    f"args_from.{name}: {walked} has no {key!r} (it is "
                    f"{type(value).__name__}) - at $.payload.{ARGS_FROM}.{name}"
                )
            walked = f"{walked}.{key}"
        args[name] = value
    return args

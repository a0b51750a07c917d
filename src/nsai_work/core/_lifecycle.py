"""The lifecycle graph of DESIGN.md: the only edges a job may take."""

from __future__ import annotations

from typing import Final

from .._errors import ConflictError
from .._ir import Status

__all__ = ["ALLOWED_TRANSITIONS", "WAITING", "check_transition"]

_P, _Q, _R = Status.PENDING, Status.QUEUED, Status.RUNNING
_S, _F, _T, _C = Status.SUCCEEDED, Status.FAILED, Status.TIMEOUT, Status.CANCELED

#: previous status (None: admission at submit) -> statuses it may move to.
ALLOWED_TRANSITIONS: Final[dict[Status | None, frozenset[Status]]] = {
    None: frozenset({_P, _Q}),
    _P: frozenset({_Q, _C}),
    _Q: frozenset({_R, _C}),
    _R: frozenset({_S, _P, _F, _T, _C}),
    _S: frozenset(),
    _F: frozenset(),
    _T: frozenset(),
    _C: frozenset(),
}


#: The statuses of a job that waits: for its time or backoff (pending), or for capacity (queued).
WAITING: Final = frozenset({_P, _Q})


def check_transition(job_id: str, previous: Status | None, new: Status) -> None:
    """Raise ``ConflictError`` unless ``previous -> new`` is an edge of the lifecycle table."""
    if new not in ALLOWED_TRANSITIONS[previous]:
        raise ConflictError(
            f"illegal transition {previous or '(submit)'} -> {new} for job {job_id}: "
            f"allowed from {previous or '(submit)'}: "
            f"{sorted(ALLOWED_TRANSITIONS[previous]) or 'nothing (terminal)'}"
        )

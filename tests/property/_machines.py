"""What the core's state machines share: units, comparable decisions, the clean-step marker,
hypothesis phases, and the I1 check at rest."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from hypothesis import Phase

from nsai_work._ir import TERMINAL_STATUSES, Job, Status
from nsai_work.core import Decision, Reject, SchedulingCore


class _Stepped(Protocol):
    clean: bool


class _Tracked(Protocol):
    status: Status
    job: Job


def milli(amount: float) -> int:
    """Cpu in thousandths, so sums are exact."""
    return round(amount * 1000)


def normalized(decisions: list[Decision]) -> list[object]:
    """Decisions as comparable values (an error inside a Reject compares by type and text)."""
    return [
        ("Reject", type(d.error), str(d.error), d.index) if isinstance(d, Reject) else d
        for d in decisions
    ]


def step(fn: Callable[..., None]) -> Callable[..., None]:
    """Mark the machine unclean while a rule or invariant runs, so that teardown (which drains
    and replays) only runs after steps that all passed."""

    @functools.wraps(fn)
    def wrapper(self: _Stepped, *args: Any, **kwargs: Any) -> None:
        self.clean = False
        fn(self, *args, **kwargs)
        self.clean = True

    return wrapper


def phases(*shrink_env: str) -> list[Phase]:
    """Hypothesis phases without shrinking (a shrink of these machines can take minutes; the
    failing run is still reported) unless one of ``shrink_env`` is set."""
    chosen = list(Phase)
    if not any(os.environ.get(name) for name in shrink_env):
        chosen.remove(Phase.shrink)
    return chosen


def check_live_jobs(
    core: SchedulingCore, admitted: Iterable[str], model: Mapping[str, _Tracked], runs: int
) -> None:
    """I1 at rest: every admitted job is live in the core with the model's status, or terminal
    and gone from it; the core holds as many runs as the engine has not reported ended."""
    live = 0
    for job_id in admitted:
        status = model[job_id].status
        snapshot = core.get(model[job_id].job.tenant_id, job_id)
        if status in TERMINAL_STATUSES:
            assert snapshot is None, f"{job_id} is terminal but still live in the core"
        else:
            live += 1
            assert snapshot is not None, f"{job_id} lost: not live, no terminal Record"
            assert snapshot.status is status, (
                f"{job_id} is {snapshot.status} in the core, {status} in the model"
            )
    assert core.live_jobs == live, f"{core.live_jobs} live jobs in the core, {live} expected"
    assert core.active_runs == runs, (
        f"the core has {core.active_runs} runs holding capacity; the engine has not yet "
        f"reported the end of {runs}"
    )

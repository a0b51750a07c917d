"""Limits at dispatch: what may hold a queue head back, and the starvation guard.

- A ``LimitState`` is a concurrency group, or a limit a backend puts on some of its jobs (an
  ALTAR tool's): how many of its runs hold a slot against ``max_running``, an optional token
  bucket of ``rate`` starts per second, and the FIFOs parked on it.
- ``Limits`` keeps them by key, with the configured limits of concurrency groups, and names the
  first limit that holds a head back now: its tenant's quota, its namespace's quota, or one of
  its own limits.
- ``StarvationGuard`` (opt-in) remembers the levels of the last dispatches, so that a guarded
  level that got less than its share of them is offered a job first.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .._errors import ConfigurationError
from .._ir import UNLIMITED, Job, PriorityGuard
from ._messages import Limit
from ._queues import LEVELS, LimitKey
from ._tenants import quota_gate

if TYPE_CHECKING:
    from ._parking import ParkedFifos
    from ._queues import Entry

__all__ = ["LimitState", "Limits", "StarvationGuard"]


class LimitState:
    """A concurrency group, or a limit a backend puts on some of its jobs (an ALTAR tool's):
    how many of its runs hold a slot against ``max_running``, an optional token bucket of
    ``rate`` starts per second, and the FIFOs parked on it (see ``_parking``)."""

    __slots__ = (
        "burst",
        "key",
        "last",
        "max_running",
        "parked",
        "rate",
        "running",
        "timer_armed",
        "timer_at",
        "tokens",
    )

    def __init__(self, key: LimitKey, max_running: int | None) -> None:
        self.key = key
        self.max_running = max_running
        self.running = 0
        self.rate: float | None = None
        self.burst = 1
        self.tokens = 0.0
        self.last = 0.0
        self.timer_armed = False
        self.timer_at = 0.0  # when the armed refill timer is due
        self.parked: ParkedFifos = []

    def set_rate(self, rate: float | None, burst: int | None, now: float) -> None:
        """Change the bucket (a new one starts full)."""
        if rate == self.rate and (burst or max(1, math.ceil(rate or 0))) == self.burst:
            return
        fresh = self.rate is None
        self.rate = rate
        self.burst = burst or max(1, math.ceil(rate or 0))
        if fresh:
            self.tokens, self.last = float(self.burst), now
        self.tokens = min(self.tokens, float(self.burst))

    def refill(self, now: float) -> None:
        """Add the tokens earned since the last refill."""
        if self.rate is not None and now > self.last:
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
            self.last = now

    def reason(self, now: float) -> str | None:
        """Why one more run cannot start now (and the waiting reason), or None."""
        kind, name = self.key
        if self.max_running is not None and self.running >= self.max_running:
            return f"concurrency_group:{name}" if kind == "group" else f"tool_concurrency:{name}"
        if self.rate is not None:
            self.refill(now)
            if self.tokens < 1.0 - 1e-9:
                return f"tool_rate:{name}"
        return None

    def next_token_at(self, now: float) -> float:
        """When the bucket has a whole token again."""
        assert self.rate is not None
        return now + (1.0 - self.tokens) / self.rate


#: What holds a head back: (scope, waiting reason, the limit when the scope is "limit"), with
#: scope "tenant", "namespace" or "limit".
Block = tuple[str, str, LimitState | None]


class Limits:
    """The state of every limit a job was subject to, by key, and the configured limits of
    concurrency groups (``default_group_limit`` for the others)."""

    __slots__ = ("_default_group_limit", "_group_limits", "changed", "states")

    def __init__(self, group_limits: Mapping[str, int] | None, default_group_limit: int) -> None:
        if default_group_limit < 1:
            raise ConfigurationError(
                f"default_concurrency_limit must be >= 1, got {default_group_limit}"
            )
        self.states: dict[LimitKey, LimitState] = {}
        self._group_limits = dict(group_limits or {})
        self._default_group_limit = default_group_limit
        self.changed: dict[str, int] = {}  # group limits set at run time

    def keys_for(self, job: Job, specs: Sequence[Limit], now: float) -> tuple[LimitKey, ...]:
        """The limits a job is subject to: its concurrency group and the backend limits
        ``specs`` that limit something (creating their state, or taking the latest spec)."""
        group = job.constraints.concurrency_group
        if group is None and not specs:
            return ()
        keys: list[LimitKey] = []
        if group is not None:
            key = ("group", group)
            if key not in self.states:
                limit = self._group_limits.get(group, self._default_group_limit)
                self.states[key] = LimitState(key, limit)
            keys.append(key)
        for spec in specs:
            if spec.max_concurrency is None and spec.rate is None:
                continue
            key = ("tool", spec.name)
            state = self.states.get(key)
            if state is None:
                state = self.states[key] = LimitState(key, spec.max_concurrency)
            else:
                state.max_running = spec.max_concurrency
            state.set_rate(spec.rate, spec.burst, now)
            keys.append(key)
        return tuple(keys)

    def holding_back(self, head: Entry, now: float) -> Block | None:
        """The first limit that holds a head back now: its tenant's quota, its namespace's,
        then its own limits in order; None if none does."""
        state = head.tenant_state
        if state.paused:
            return ("tenant", "tenant_paused", None)
        if state.quota is not UNLIMITED:
            reason = quota_gate(state.quota, state.running, state.usage, head.needs)
            if reason is not None:
                return ("tenant", f"tenant_{reason}", None)
        if state.namespaces:
            namespace = state.namespaces.get(head.namespace)
            if namespace is not None and namespace.paused:
                return ("namespace", "namespace_paused", None)
            if namespace is not None and namespace.quota is not UNLIMITED:
                reason = quota_gate(namespace.quota, namespace.running, namespace.usage, head.needs)
                if reason is not None:
                    return ("namespace", f"namespace_{reason}", None)
        for key in head.limits:
            limit = self.states[key]
            reason = limit.reason(now)
            if reason is not None:
                return ("limit", reason, limit)
        return None

    def start(self, keys: tuple[LimitKey, ...]) -> tuple[LimitState, ...]:
        """A run subject to these limits starts: each counts it, and each bucket gives a token.
        Returns their states (the run gives its slots back when it ends)."""
        limits = tuple(self.states[key] for key in keys)
        for limit in limits:
            limit.running += 1
            if limit.rate is not None:
                limit.tokens -= 1.0
        return limits

    def set_group_limit(self, group: str, limit: int) -> LimitState | None:
        """A concurrency group's limit is now ``limit``; returns its state, if it has one (its
        parked FIFOs may go)."""
        if limit < 1:
            raise ConfigurationError(f"a concurrency limit is >= 1, got {limit} for {group!r}")
        self._group_limits[group] = limit
        self.changed[group] = limit
        state = self.states.get(("group", group))
        if state is not None:
            state.max_running = limit
        return state

    def group_limit(self, group: str) -> int:
        """A concurrency group's limit (set at run time, configured, or the default)."""
        return self._group_limits.get(group, self._default_group_limit)

    def tool(self, name: str) -> LimitState | None:
        """The state of a backend limit (such as a tool's), if it has one."""
        return self.states.get(("tool", name))

    def group_usage(self, group: str) -> tuple[int, int]:
        """(runs holding a slot of the concurrency group, its limit)."""
        state = self.states.get(("group", group))
        if state is None or state.max_running is None:
            return (0, self._group_limits.get(group, self._default_group_limit))
        return (state.running, state.max_running)

    def tool_usage(self, tool: str) -> tuple[int, int | None, float | None]:
        """(runs of a backend limit such as a tool's, its max_concurrency, tokens left)."""
        state = self.tool(tool)
        if state is None:
            return (0, None, None)
        return (state.running, state.max_running, state.tokens if state.rate else None)


class StarvationGuard:
    """The starvation guard's memory: the levels of the last ``window`` dispatches."""

    __slots__ = ("counts", "min_share", "recent", "window")

    def __init__(self, spec: PriorityGuard) -> None:
        self.window = spec.window
        self.min_share = {p.rank: share for p, share in spec.min_share.items()}
        self.recent: deque[int] = deque()
        self.counts = [0] * LEVELS

    def record(self, rank: int) -> None:
        """A job of level ``rank`` was dispatched."""
        self.recent.append(rank)
        self.counts[rank] += 1
        if len(self.recent) > self.window:
            self.counts[self.recent.popleft()] -= 1

    def owed(self, backlog: list[int]) -> list[int]:
        """Guarded levels with queued jobs that got less than their share of recent dispatches,
        lowest level first."""
        total = len(self.recent) or 1
        return [
            rank
            for rank in sorted(self.min_share, reverse=True)
            if backlog[rank] and self.counts[rank] / total < self.min_share[rank]
        ]

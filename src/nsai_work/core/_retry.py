"""Retry timing: DESIGN.md's backoff formulas, with jitter drawn from an injected source."""

from __future__ import annotations

from collections.abc import Callable

from .._ir import Backoff, RetryPolicy

__all__ = ["backoff_delay_ms", "base_delay_ms"]


def base_delay_ms(policy: RetryPolicy, attempt: int) -> float:
    """The delay after attempt ``attempt`` (from 1) failed, before jitter, capped."""
    base = policy.base_delay_ms
    if policy.backoff is Backoff.EXPONENTIAL:
        # Cap the exponent first: 2**1000 is a very large int and the cap applies anyway.
        delay = float(base) * 2.0 ** min(attempt - 1, 64)
    elif policy.backoff is Backoff.LINEAR:
        delay = float(base * attempt)
    else:
        delay = float(base)
    return min(delay, float(policy.max_delay_ms))


def backoff_delay_ms(policy: RetryPolicy, attempt: int, rand: Callable[[], float]) -> float:
    """The wait before the next attempt; with jitter, uniform in [delay/2, delay].

    ``rand`` returns a float in [0, 1); the core never owns randomness.
    """
    delay = base_delay_ms(policy, attempt)
    if policy.jitter:
        return delay / 2.0 + rand() * (delay / 2.0)
    return delay

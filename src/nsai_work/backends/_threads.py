"""Running sync code in a thread from the engine's loop, honestly.

A thread cannot be killed. When the awaiting task is cancelled (cancel, timeout, shutdown) we
keep awaiting the thread and only then re-raise the cancellation, so the run ends, and its
reservation is released, when the thread has really returned (I2 stays true).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

__all__ = ["run_in_thread"]

T = TypeVar("T")


async def run_in_thread(executor: Executor | None, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in ``executor``; a cancellation waits for the thread before propagating."""
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(executor, fn, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            try:
                await asyncio.shield(future)
            except asyncio.CancelledError:
                continue
            except Exception:
                break
        raise

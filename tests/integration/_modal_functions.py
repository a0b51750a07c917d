"""The functions of the Modal test app: the fake serves them as they are, and
tests/modal_app/app.py deploys the same ones on a real Modal account (``make test-modal``).

Each takes the job's payload (without ``"function"``). They are async, so that a canceled call
ends at once in the fake (a thread cannot be interrupted) and in Modal alike.
"""

from __future__ import annotations

import asyncio
from typing import Any


class TrainingDivergedError(Exception):
    """A remote failure of the test app's own type."""


async def echo(payload: dict[str, Any]) -> dict[str, Any]:
    """Return the payload."""
    return {"echo": payload}


async def add(payload: dict[str, Any]) -> int:
    """Add ``a`` and ``b``."""
    return int(payload["a"]) + int(payload["b"])


async def fail(payload: dict[str, Any]) -> None:
    """Raise ValueError with the payload's message."""
    raise ValueError(f"bad input: {payload.get('why', 'none given')}")


async def diverge(payload: dict[str, Any]) -> None:
    """Raise the app's own exception type."""
    loss = float(payload.get("loss", 1e9))
    raise TrainingDivergedError(f"loss went to {loss:g}")


async def sleep(payload: dict[str, Any]) -> float:
    """Sleep ``s`` seconds, return them."""
    seconds = float(payload.get("s", 0.2))
    await asyncio.sleep(seconds)
    return seconds


async def hang(payload: dict[str, Any]) -> None:
    """Run until canceled (an hour at most)."""
    await asyncio.sleep(3600)


FUNCTIONS = {
    "echo": echo,
    "add": add,
    "fail": fail,
    "diverge": diverge,
    "sleep": sleep,
    "hang": hang,
}

"""Who asked for a cancel, carried through a store's cancel request.

A client's cancel is a request the store keeps with the job as a string (``request_cancel(key,
reason)``) until the scheduler carries it out. So that the scheduler can record who asked
(``Audit`` on the job) without a change to the Store protocol, the request's string carries the
caller too: ``pack`` makes it, ``unpack`` reads it back; a plain reason (an older client's) is
read as a reason with no caller.
"""

from __future__ import annotations

from typing import Final

import msgspec

from .._ir import Actor

__all__ = ["pack", "unpack"]

#: The first character of a packed request (a record separator: no reason starts with it).
_MARK: Final = "\x1e"
_decode = msgspec.json.Decoder(tuple[str, str, str | None]).decode


def pack(reason: str, actor: Actor | None) -> str:
    """The string a store keeps for a cancel request of ``actor`` with ``reason``."""
    if actor is None:
        return reason
    return _MARK + msgspec.json.encode((reason, actor[0], actor[1])).decode()


def unpack(request: str) -> tuple[str, Actor | None]:
    """The reason and the caller of a cancel request as ``pack`` made it."""
    if not request.startswith(_MARK):
        return request, None
    try:
        reason, by, name = _decode(request[1:])
    except msgspec.MsgspecError:
        return request, None
    return reason, (by, name)

"""How durable stores write a job down and read it back: msgspec JSON of the whole Job.

Decoding is strict (the Job type with its constraints), so a row that was damaged or written by
an incompatible version fails here, with a message, and is quarantined by the store instead of
being recovered wrong.
"""

from __future__ import annotations

from typing import Final

import msgspec

from .._ir import Job

__all__ = ["decode_job", "encode_job"]

_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(Job)


def encode_job(job: Job) -> bytes:
    """The job as JSON bytes."""
    return _ENCODER.encode(job)


def decode_job(data: bytes | str) -> Job:
    """A job from ``encode_job``'s bytes; ``msgspec.DecodeError`` or ``ValidationError`` (from
    msgspec) when they are not one."""
    return _DECODER.decode(data)

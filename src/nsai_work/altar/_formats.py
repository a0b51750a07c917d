"""The ``format`` values ADM checks: ``date-time`` (RFC 3339, as JSON Schema reads it) and the
integer ranges of ``int32``/``int64``.

``date-time`` follows RFC 3339 section 5.6 with the reading of JSON Schema's own test suite:

- ``YYYY-MM-DDThh:mm:ss[.frac](Z|+hh:mm|-hh:mm)``, ASCII digits, ``T`` and ``Z`` in either case,
  the offset required; the day must exist in its month (``2023-02-29`` does not);
- the year runs from 0001 (year 0000 is refused, as Python's ``datetime`` and jsonschema's
  checker refuse it);
- a leap second (``:60``) only where it can happen: at 23:59:60 in UTC, so
  ``1998-12-31T23:59:60Z`` and ``1998-12-31T15:59:60-08:00`` are valid and
  ``1998-12-31T23:58:60Z`` is not.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

__all__ = ["INT_SPANS", "is_date_time"]

#: ``int32``/``int64``: the integer lies in ``[-span, span - 1]``.
INT_SPANS: Final[dict[str, int]] = {"int32": 2**31, "int64": 2**63}

_DATE_TIME: Final = re.compile(
    r"([0-9]{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]"
    r"([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9]|60)(?:\.[0-9]+)?"
    r"(?:[Zz]|([+-])([01][0-9]|2[0-3]):([0-5][0-9]))"
).fullmatch
_LAST_MINUTE: Final = 23 * 60 + 59


def is_date_time(text: str) -> bool:
    """Whether ``text`` is an RFC 3339 date-time (``2024-01-31T12:00:00Z``), see above."""
    match = _DATE_TIME(text)
    if match is None:
        return False
    year, month, day, hour, minute, second, sign, off_hour, off_minute = match.groups()
    if year == "0000":
        return False
    if day > "28":
        try:
            dt.date(int(year), int(month), int(day))
        except ValueError:  # the 29th, 30th or 31st of a month that has none
            return False
    if second == "60":
        utc = int(hour) * 60 + int(minute)
        if sign is not None:
            offset = int(off_hour) * 60 + int(off_minute)
            utc -= offset if sign == "+" else -offset
        return utc % 1440 == _LAST_MINUTE
    return True

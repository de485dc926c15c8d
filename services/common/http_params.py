"""What the two HTTP APIs (the read API and the alerts API) share about query parameters.

Pure (no I/O). A bad parameter is a `BadParameter` naming it and saying what it must look
like; each API turns it into a 400 whose JSON carries `parameter` and `detail`, so a
client can fix its call.
"""

from __future__ import annotations

from datetime import UTC, datetime

from services.common.errors import CityWatchError

__all__ = ["BadParameter", "parse_time"]


class BadParameter(CityWatchError, ValueError):
    """A request parameter is missing, malformed or out of bounds (HTTP 400)."""

    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(f"{parameter}: {detail}")
        self.parameter = parameter
        self.detail = detail


def parse_time(parameter: str, raw: str) -> datetime:
    """An ISO 8601 time with a zone (`Z` or an offset), in UTC.

    Epoch seconds are refused (the stricter of the two APIs' former rules): one form for
    both. A space where the offset's `+` should be is read as that `+`, since an unescaped
    `+` in a query string decodes to a space (`...T10:00:00 07:00`).
    """
    try:
        at = datetime.fromisoformat(raw.replace(" ", "+"))
    except ValueError:
        msg = f"{raw!r} is not an ISO 8601 time such as 2026-11-24T10:00:00+07:00"
        raise BadParameter(parameter, msg) from None
    if at.utcoffset() is None:
        raise BadParameter(parameter, f"{raw!r} has no time zone (add Z or +07:00)")
    return at.astimezone(UTC)

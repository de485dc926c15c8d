"""What the two HTTP APIs (the read API and the alerts API) share about query parameters.

Pure (no I/O). A bad parameter is a `BadParameter` naming it and saying what it must look
like; each API turns it into a 400 whose JSON carries `parameter` and `detail`, so a
client can fix its call.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

from services.common.errors import CityWatchError

__all__ = [
    "MAX_TEXT",
    "TEXT_PATTERN",
    "BadParameter",
    "check_text",
    "first_bad_text",
    "parse_time",
    "text_schema",
]

MAX_TEXT = 200  # characters of one free-text parameter (an id, a name)
# The same rule as `_CONTROL`, as an OpenAPI (ECMA-262) pattern for the documents.
TEXT_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"

# C0 controls (NUL included), DEL and the C1 controls: never part of an id, a name or a
# time, and PostgreSQL refuses NUL in text outright (a 500 before this check).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


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
    try:
        return at.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:00:00-05:00 is past datetime's last year
        raise BadParameter(parameter, f"{raw!r} is outside the years 1 to 9999") from None


def text_schema(max_length: int = MAX_TEXT, **extra: object) -> dict[str, object]:
    """The OpenAPI schema of a free-text parameter, as `check_text` enforces it."""
    return {"type": "string", "pattern": TEXT_PATTERN, "maxLength": max_length, **extra}


def check_text(parameter: str, raw: str, max_length: int | None = None) -> str:
    """`raw` unchanged, or `BadParameter` when it holds a control character or is longer
    than `max_length`."""
    found = _CONTROL.search(raw)
    if found is not None:
        code = ord(found.group())
        raise BadParameter(parameter, f"holds the control character U+{code:04X}")
    if max_length is not None and len(raw) > max_length:
        raise BadParameter(parameter, f"is longer than {max_length} characters")
    return raw


def first_bad_text(items: Iterable[tuple[str, str]]) -> BadParameter | None:
    """The first (name, value) pair whose name or value holds a control character.

    One layer for both APIs: HttpServer runs it over the path and every query parameter
    before any handler, so no handler (or query) ever sees such a value.
    """
    for name, value in items:
        try:
            check_text(name, name)
            check_text(name, value)
        except BadParameter as exc:
            return exc
    return None

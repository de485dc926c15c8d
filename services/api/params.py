"""Query parameters of the read API: parsed, bounded, and refused with a readable reason.

Pure (no I/O). Every failure is a `BadParameter` naming the parameter and what it must
look like; the service turns it into a 400 with that text, so a client can fix its call.
`BadParameter` and the time parser are the alerts API's too (services/common/http_params.py).
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime, timedelta

from schemas.registry import KINDS
from services.common.http_params import BadParameter, parse_time

__all__ = [
    "BUCKETS",
    "STATUSES",
    "BadParameter",
    "decode_cursor",
    "encode_cursor",
    "parse_bucket",
    "parse_choice",
    "parse_int",
    "parse_kind",
    "parse_time",
    "parse_time_range",
]

# Bucket widths a client may ask for; each is a whole number of minutes or hours, so the
# minute and hour rollups can serve it.
BUCKETS: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "1d": timedelta(days=1),
}
STATUSES = ("online", "offline", "stuck")


def parse_time_range(
    raw_from: str | None,
    raw_to: str | None,
    *,
    default: timedelta,
    maximum: timedelta,
    now: datetime,
) -> tuple[datetime, datetime]:
    """[from, to): `to` defaults to now, `from` to `to - default`; longer than `maximum`
    or reversed is refused rather than silently cut, so a client never mistakes a partial
    answer for the whole."""
    end = parse_time("to", raw_to) if raw_to is not None else now
    try:
        start = parse_time("from", raw_from) if raw_from is not None else end - default
    except OverflowError:  # `to` in the year 1: nothing before it
        raise BadParameter("to", "is too early to have a range before it") from None
    if start >= end:
        raise BadParameter("from", "must be before to")
    if end - start > maximum:
        hours = maximum.total_seconds() / 3600
        raise BadParameter("from", f"the range may span at most {hours:g} hours here")
    return start, end


def parse_int(name: str, raw: str | None, *, default: int, lo: int, hi: int) -> int:
    if raw is None:
        return default
    # ASCII digits only: int() would also take " 5", "1_000" and other scripts' digits.
    if re.fullmatch(r"-?[0-9]{1,12}", raw) is None:
        raise BadParameter(name, f"{raw!r} is not an integer")
    value = int(raw)
    if not lo <= value <= hi:
        raise BadParameter(name, f"must be between {lo} and {hi}")
    return value


def parse_choice(name: str, raw: str | None, choices: tuple[str, ...]) -> str | None:
    """None when absent; an empty or unknown value is refused (the documents' enums)."""
    if raw is None:
        return None
    if raw not in choices:
        raise BadParameter(name, f"{raw!r} is not one of {', '.join(choices)}")
    return raw


def parse_kind(raw: str | None) -> str | None:
    return parse_choice("kind", raw, tuple(KINDS))


def parse_bucket(raw: str | None) -> timedelta | None:
    """None for raw readings (`bucket` absent or `raw`)."""
    if raw is None or raw == "raw":
        return None
    if raw not in BUCKETS:
        raise BadParameter("bucket", f"{raw!r} is not raw or one of {', '.join(BUCKETS)}")
    return BUCKETS[raw]


def encode_cursor(time: datetime, metric: str) -> str:
    """An opaque page token: the last row's (time, metric)."""
    return base64.urlsafe_b64encode(f"{time.isoformat()}|{metric}".encode()).decode()


def decode_cursor(raw: str | None) -> tuple[datetime, str] | None:
    if not raw:
        return None
    try:
        text = base64.urlsafe_b64decode(raw.encode()).decode()
        t, _, metric = text.partition("|")
        at = datetime.fromisoformat(t)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadParameter("cursor", "is not a cursor this API gave out") from None
    if at.tzinfo is None or not metric:
        raise BadParameter("cursor", "is not a cursor this API gave out")
    return at, metric

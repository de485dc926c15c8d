"""The one time parser both HTTP APIs use: ISO 8601 with a zone, nothing looser."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.common.http_params import BadParameter, parse_time

T = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "raw",
    [
        "2026-11-24T03:00:00Z",
        "2026-11-24T03:00:00+00:00",
        "2026-11-24T10:00:00+07:00",
        "2026-11-24T10:00:00 07:00",  # an unescaped `+` decoded to a space
    ],
)
def test_iso_8601_with_a_zone_is_read_in_utc(raw: str) -> None:
    at = parse_time("since", raw)
    assert at == T and at.tzinfo is UTC


@pytest.mark.parametrize(
    "raw",
    [
        "yesterday",
        "1795489200",  # epoch seconds: refused by both APIs
        "2026-11-24T10:00:00",  # no zone
        "",
    ],
)
def test_anything_else_is_a_bad_parameter_naming_it(raw: str) -> None:
    with pytest.raises(BadParameter) as info:
        parse_time("from", raw)
    assert info.value.parameter == "from" and info.value.detail

"""What both HTTP APIs share about parameters: the one time parser (ISO 8601 with a zone,
nothing looser) and the text rule (no control character, a length limit) that HttpServer
applies to the path and every query parameter before any handler (issue 10 point 6: a NUL
in `?device_id=` was a 500 from PostgreSQL)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from services.common.http_params import (
    MAX_TEXT,
    TEXT_PATTERN,
    BadParameter,
    check_text,
    first_bad_text,
    parse_time,
)

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


@pytest.mark.parametrize("raw", ["9999-12-31T23:00:00-05:00", "0001-01-01T01:00:00+02:00"])
def test_a_time_whose_utc_falls_outside_datetimes_years_is_a_bad_parameter(raw: str) -> None:
    """Valid ISO 8601, but in UTC it is past year 9999 or before year 1: OverflowError
    (a 500) before, a 400 naming the parameter now."""
    with pytest.raises(BadParameter) as info:
        parse_time("until", raw)
    assert info.value.parameter == "until" and "years 1 to 9999" in info.value.detail


@pytest.mark.parametrize("raw", ["a\x00b", "line\n", "\x1b[31m", "del\x7f", "c1\x85", "\x9f"])
def test_text_with_a_control_character_is_a_bad_parameter_naming_it(raw: str) -> None:
    with pytest.raises(BadParameter) as info:
        check_text("device_id", raw)
    bad = next(c for c in raw if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F)
    assert info.value.parameter == "device_id"
    assert f"U+{ord(bad):04X}" in info.value.detail


def test_text_up_to_the_limit_passes_unchanged_and_longer_is_refused() -> None:
    for ok in ("", "t1234-air-0001", "ស្ទឹងហាវ", "x" * MAX_TEXT, "a b\u00a0c"):
        assert check_text("device", ok, MAX_TEXT) == ok
    with pytest.raises(BadParameter, match=f"longer than {MAX_TEXT}"):
        check_text("device", "x" * (MAX_TEXT + 1), MAX_TEXT)
    assert check_text("device", "x" * 10_000) == "x" * 10_000  # no limit given


def test_the_documents_pattern_is_the_rule_check_text_enforces() -> None:
    """The OpenAPI documents state TEXT_PATTERN; schemathesis generates from it. Every
    character up to U+0200 is accepted by one exactly when by the other."""
    for code in range(0x200):
        text = f"a{chr(code)}b"
        try:
            check_text("p", text)
            accepted = True
        except BadParameter:
            accepted = False
        assert accepted == (re.fullmatch(TEXT_PATTERN, text) is not None), hex(code)


def test_first_bad_text_names_the_first_parameter_with_a_control_character() -> None:
    assert first_bad_text([]) is None
    assert first_bad_text([("path", "/alerts"), ("state", "firing"), ("q", "ស្ទឹង")]) is None
    bad = first_bad_text([("path", "/readings"), ("device", "a\x00b"), ("metric", "x\ny")])
    assert bad is not None and (bad.parameter, "U+0000" in bad.detail) == ("device", True)
    # A control character in a parameter's name is refused like one in its value.
    bad = first_bad_text([("ok", "1"), ("de\x00vice", "a")])
    assert bad is not None and bad.parameter == "de\x00vice" and "U+0000" in bad.detail
    assert first_bad_text([("path", "/devices/a\x01")]) is not None

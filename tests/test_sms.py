"""SMS splitting: limits in code units and septets, grapheme-safe for Khmer. Pure tests."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.alerts import sms
from services.alerts.model import AlertMessage, Area, Circle

# Real Khmer with coeng subscripts (ស្ទឹង, ព្រះ, ក្រុង, ខ្ពស់, ស្រុក) and no spaces for long runs,
# so that the splitter has to cut between syllables.
KHMER_WARNING = "ការព្រមានទឹកជំនន់នៅស្រុកស្ទឹងហាវ និងក្រុងព្រះសីហនុ។ សូមផ្លាស់ទីទៅកន្លែងខ្ពស់ឥឡូវនេះ ហើយកុំឆ្លងកាត់ទឹកជំនន់។ "
NO_SPACES = "ស្ទឹងព្រះ" * 30  # nothing but stacked syllables: every cut is mid-word
COENG = "\u17d2"


def cuts(split: sms.SmsSplit) -> list[tuple[str, str]]:
    """(end of a part, start of the next) around each cut."""
    return [(a, b) for a, b in zip(split.parts, split.parts[1:], strict=False)]


@pytest.mark.parametrize(
    "text", [KHMER_WARNING, KHMER_WARNING * 3, NO_SPACES, "ក" + NO_SPACES, "ខ្ញុំ" * 40]
)
def test_khmer_parts_fit_ucs2_limits_and_join_back(text: str) -> None:
    split = sms.split_sms(text)
    assert split.encoding == "UCS-2"
    assert split.text == text
    limit = sms.UCS2_SINGLE if len(split.parts) == 1 else sms.UCS2_PART
    assert all(0 < sms.ucs2_units(p) <= limit for p in split.parts), [
        sms.ucs2_units(p) for p in split.parts
    ]


@pytest.mark.parametrize("text", [KHMER_WARNING * 3, NO_SPACES, "ក" + NO_SPACES])
def test_no_cut_falls_inside_a_khmer_grapheme_cluster(text: str) -> None:
    split = sms.split_sms(text)
    assert len(split.parts) > 1
    clusters = sms.graphemes(text)
    boundaries = {sum(len(c) for c in clusters[:i]) for i in range(len(clusters) + 1)}
    offset = 0
    for part in split.parts[:-1]:
        offset += len(part)
        assert offset in boundaries
    for end, start in cuts(split):
        assert not end.endswith(COENG), (end[-3:], start[:3])
        assert not (start[0] == COENG or "\u17b6" <= start[0] <= "\u17d3"), start[:3]


def test_stacked_words_are_single_clusters() -> None:
    assert sms.graphemes("ស្ទឹង") == ["ស្ទឹ", "ង"]
    assert sms.graphemes("ព្រះ") == ["ព្រះ"]
    assert sms.graphemes("ស្ត្រី") == ["ស្ត្រី"]  # two subscripts under one base


def test_khmer_split_prefers_spaces() -> None:
    split = sms.split_sms(KHMER_WARNING * 2)
    assert len(split.parts) > 1
    assert all(p.endswith(" ") for p in split.parts[:-1])


def test_zero_width_space_is_a_preferred_break() -> None:
    words = ["ទឹកជំនន់", "ស្ទឹងហាវ", "ព្រះសីហនុ", "កន្លែងខ្ពស់"] * 6
    text = sms.ZWSP.join(words)
    split = sms.split_sms(text)
    assert split.text == text
    assert all(p.endswith(sms.ZWSP) for p in split.parts[:-1])


def test_a_khmer_text_of_exactly_70_units_is_one_message() -> None:
    text = "ក" * 70
    assert sms.split_sms(text).parts == (text,)
    assert [sms.ucs2_units(p) for p in sms.split_sms(text + "ក").parts] == [67, 4]


def test_astral_characters_count_two_units_and_are_not_split() -> None:
    text = "ទឹកជំនន់ 🌊" * 10
    split = sms.split_sms(text)
    assert sms.ucs2_units("🌊") == 2
    assert split.text == text
    assert all(sms.ucs2_units(p) <= sms.UCS2_PART for p in split.parts)


def test_gsm7_counts_extension_characters_as_two_septets() -> None:
    assert sms.gsm7_septets("Flood at 14:30") == 14
    assert sms.gsm7_septets("€[]{}^~|\\") == 18
    assert sms.is_gsm7("Prey Nob: 2.5 m @ 14:30 £ é")
    assert not sms.is_gsm7("µg/m³")
    assert not sms.is_gsm7("ស្ទឹង")


def test_gsm7_text_splits_at_160_then_153_septets() -> None:
    fits = "a" * 160
    assert sms.split_sms(fits) == sms.SmsSplit("GSM-7", (fits,))
    # 80 extension characters are 160 septets: one message; one more needs two parts.
    assert len(sms.split_sms("€" * 80).parts) == 1
    split = sms.split_sms("€" * 81)
    assert [sms.gsm7_septets(p) for p in split.parts] == [152, 10]
    words = "Flood warning for Stueng Hav: move to higher ground now. " * 6
    split = sms.split_sms(words)
    assert split.encoding == "GSM-7" and split.text == words
    assert all(sms.gsm7_septets(p) <= sms.GSM7_PART for p in split.parts)
    assert all(p.endswith(" ") for p in split.parts[:-1])


def test_alert_sms_has_khmer_parts_and_a_gsm7_english_fallback() -> None:
    t0 = datetime(2026, 11, 24, 7, 30, tzinfo=UTC)
    msg = AlertMessage(
        "a", "air-rule", "air", "pm25_ugm3", "danger", "firing", 260.0, "µg/m³", 225.5,
        "air-1", Area("Kampong Seila", circle=Circle(11.0, 103.9, 4)), t0, t0, aqi=320,
    )  # fmt: skip
    out = sms.sms_for(msg)
    assert out.khmer.encoding == "UCS-2" and "កំពង់សីលា" in out.khmer.text
    assert out.fallback.encoding == "GSM-7"
    assert "Kampong Seila" in out.fallback.text and "ug/m3" in out.fallback.text
    assert all(sms.ucs2_units(p) <= sms.UCS2_PART for p in out.khmer.parts)


def test_to_gsm7_spells_typography_and_replaces_the_rest() -> None:
    assert sms.to_gsm7("5 µg/m³ \u2013 30°C \u201cok\u201d") == '5 ug/m3 - 30C "ok"'
    assert sms.to_gsm7("ស") == "?"

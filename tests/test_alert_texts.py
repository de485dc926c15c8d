"""Alert texts: templates filled in English and Khmer, Khmer written properly. Pure tests."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime

import pytest

from services.alerts import texts
from services.alerts.model import AlertMessage, Area, Circle, MessageRef
from services.alerts.rules import Severity

T0 = datetime(2026, 11, 24, 7, 30, tzinfo=UTC)  # 14:30 in Sihanoukville (ICT)
KHMER = re.compile("[\u1780-\u17ff]")

CASES: list[tuple[str, str, Severity, float, str, float]] = [
    ("flood", "water_level_m", "watch", 2.35, "m", 2.2),
    ("flood", "water_level_m", "warning", 2.75, "m", 2.5),
    ("flood", "water_level_m", "danger", 3.4, "m", 3.2),
    ("flood", "rain_mm_h", "warning", 62.0, "mm/h", 50.0),
    ("air", "pm25_ugm3", "warning", 88.3, "µg/m³", 55.5),
    ("air", "pm10_ugm3", "watch", 180.0, "µg/m³", 155.0),
    ("water", "turbidity_ntu", "advisory", 120.0, "NTU", 50.0),
    ("water", "ph", "advisory", 5.1, "pH", 6.5),
    ("litter", "litter_items", "advisory", 912.0, "count", 800.0),
]


def alert(
    kind: str,
    metric: str,
    severity: Severity,
    value: float,
    unit: str,
    threshold: float,
    *,
    area: str = "Stueng Hav",
    resolved: bool = False,
    aqi: int | None = None,
) -> AlertMessage:
    refs = (MessageRef("s", "citywatch-a-0", T0),) if resolved else ()
    return AlertMessage(
        "a", "rule", kind, metric, severity, "resolved" if resolved else "firing",  # type: ignore[arg-type]
        value, unit, threshold, "dev-9", Area(area, circle=Circle(10.6, 103.6, 2)), T0, T0,
        seq=len(refs), msg_type="Update" if resolved else "Alert", references=refs, aqi=aqi,
    )  # fmt: skip


def all_texts(t: texts.AlertTexts) -> list[str]:
    return [t.event, t.headline, t.description, t.instruction, t.voice, t.sms]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[1]}-{c[2]}")
@pytest.mark.parametrize("resolved", [False, True], ids=["firing", "resolved"])
def test_templates_fill_value_unit_place_and_time_in_both_languages(
    case: tuple[str, str, Severity, float, str, float], resolved: bool
) -> None:
    msg = alert(*case, resolved=resolved)
    en = texts.render(msg, "en")
    km = texts.render(msg, "km")
    value, unit = case[3], case[4]
    assert texts.format_number(value, "en") in en.description
    assert "Stueng Hav" in en.headline and "14:30 on 24 November 2026" in en.description
    assert texts.unit_text(unit, "en") in en.description
    # Khmer: Khmer digits, Khmer unit, Khmer place name, Khmer date.
    assert texts.format_number(value, "km") in km.description
    assert texts.unit_text(unit, "km") in km.description
    assert "ស្ទឹងហាវ" in km.headline and "ស្ទឹងហាវ" in km.voice
    assert "ម៉ោង ១៤:៣០ ថ្ងៃទី២៤ ខែវិច្ឆិកា ឆ្នាំ២០២៦" in km.description
    assert (en.language, km.language) == ("en-US", "km-KH")


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[1]}-{c[2]}")
def test_khmer_texts_are_nfc_khmer_sentences_without_placeholders(
    case: tuple[str, str, Severity, float, str, float],
) -> None:
    for resolved in (False, True):
        km = texts.render(alert(*case, resolved=resolved), "km")
        for text in all_texts(km):
            assert unicodedata.is_normalized("NFC", text)
            assert "{" not in text and "}" not in text, text
            assert KHMER.search(text), text
            assert "  " not in text, text
        assert km.description.endswith("។") and km.instruction.endswith("។")
        assert "Stueng" not in km.description  # the place is in Khmer script


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[1]}-{c[2]}")
def test_voice_script_is_one_or_two_short_sentences_saying_where(
    case: tuple[str, str, Severity, float, str, float],
) -> None:
    msg = alert(*case)
    km = texts.render(msg, "km").voice
    en = texts.render(msg, "en").voice
    assert 1 <= km.count("។") <= 2 and km.endswith("។")
    assert len(km) <= 140, km  # about ten seconds of recorded speech
    assert len(en) <= 140 and en.count(". ") <= 1
    assert "ស្ទឹងហាវ" in km


def test_flood_stages_read_differently_in_khmer() -> None:
    events = {
        sev: texts.render(alert("flood", "water_level_m", sev, 3.0, "m", 2.5), "km").event
        for sev in ("watch", "warning", "danger")
    }
    assert events == {
        "watch": "ប្រុងប្រយ័ត្នទឹកជំនន់",
        "warning": "ការព្រមានទឹកជំនន់",
        "danger": "គ្រោះថ្នាក់ទឹកជំនន់",
    }


@pytest.mark.parametrize(
    ("aqi", "en", "km"),
    [
        (120, "unhealthy for sensitive groups", "មិនល្អសម្រាប់ក្រុមងាយរងផលប៉ះពាល់"),
        (170, "unhealthy", "មិនល្អសម្រាប់សុខភាព"),
        (250, "very unhealthy", "មិនល្អខ្លាំងសម្រាប់សុខភាព"),
        (350, "hazardous", "គ្រោះថ្នាក់"),
    ],
)
def test_air_texts_name_the_aqi_category(aqi: int, en: str, km: str) -> None:
    msg = alert("air", "pm25_ugm3", "warning", 88.3, "µg/m³", 55.5, aqi=aqi)
    en_texts, km_texts = texts.render(msg, "en"), texts.render(msg, "km")
    assert f"rates as {en}." in en_texts.description and f"(AQI {aqi})" in en_texts.description
    assert f"«{km}»" in km_texts.description
    assert texts.khmer_digits(str(aqi)) in km_texts.description


def test_air_category_without_aqi_follows_the_2024_pm25_breakpoints() -> None:
    cases = {30.0: "moderate", 40.0: "sensitive", 60.0: "unhealthy", 130.0: "very_unhealthy"}
    for value, category in cases.items():
        msg = alert("air", "pm25_ugm3", "warning", value, "µg/m³", 35.5)
        expected = texts._AQI_NAMES[category][0]  # type: ignore[index]
        assert f"rates as {expected}." in texts.render(msg, "en").description


def test_sihanoukville_place_names_are_spelled_in_khmer_script() -> None:
    expected = {
        "Sihanoukville": "ក្រុងព្រះសីហនុ",
        "Mittapheap": "មិត្តភាព",
        "Prey Nob": "ព្រៃនប់",
        "Stueng Hav": "ស្ទឹងហាវ",
        "Kampong Seila": "កំពង់សីលា",
    }
    for name, khmer in expected.items():
        assert texts.place_name(name, "km") == khmer
        assert texts.place_name(name, "en") == name
    # Code points, so a look-alike spelling cannot pass: ស ្ ទ ឹ ង ហ ា វ.
    assert [hex(ord(c)) for c in texts.place_name("Stueng Hav", "km")] == [
        "0x179f", "0x17d2", "0x1791", "0x17b9", "0x1784", "0x17a0", "0x17b6", "0x179c",
    ]  # fmt: skip
    assert texts.place_name("Otres", "km", name_km="អូរត្រេះ") == "អូរត្រេះ"
    assert texts.place_name("Mittapheap (town centre)", "km") == "មិត្តភាព"


def test_khmer_numbers_use_khmer_digits_and_the_decimal_comma() -> None:
    assert texts.khmer_digits("2026-11-24 14:30") == "២០២៦-១១-២៤ ១៤:៣០"
    assert texts.format_number(2.5, "km") == "២,៥"
    assert texts.format_number(12500, "km") == "១២.៥០០"
    assert texts.format_number(12500, "en") == "12,500"
    assert texts.format_number(2.75, "en") == "2.75"
    assert texts.format_number(3.0, "en") == "3"


def test_rule_titles_become_the_headline_nfc_normalised() -> None:
    decomposed = unicodedata.normalize("NFD", "Crue à Prey Nob")
    msg = alert("flood", "water_level_m", "warning", 2.7, "m", 2.5)
    msg = AlertMessage(**{**_fields(msg), "title_en": decomposed})
    assert texts.render(msg, "en").headline == unicodedata.normalize("NFC", decomposed)


def test_test_status_prefixes_headline_voice_and_sms() -> None:
    msg = AlertMessage(**{**_fields(alert(*CASES[1])), "status": "Test"})
    km = texts.render(msg, "km")
    assert km.headline.startswith("សារសាកល្បង៖ ")
    assert km.voice.startswith("សារសាកល្បង៖ ") and km.sms.startswith("សារសាកល្បង៖ ")
    assert texts.render(msg, "en").sms.startswith("TEST: ")


def test_unknown_template_is_refused_naming_the_known_ones() -> None:
    msg = AlertMessage(**{**_fields(alert(*CASES[0])), "template": "tsunami"})
    with pytest.raises(ValueError, match="flood-level"):
        texts.render(msg, "en")


def _fields(msg: AlertMessage) -> dict[str, object]:
    return {name: getattr(msg, name) for name in AlertMessage.__dataclass_fields__}


def test_boil_water_advice_only_for_a_registered_drinking_water_point() -> None:
    """Sea, estuary and river sensors are not drinking water (issue 14): a turbidity alert
    there advises against contact; only a drinking-water point's tells people to boil."""
    import dataclasses

    surface = alert("water", "turbidity_ntu", "advisory", 120.0, "NTU", 50.0)
    drinking = dataclasses.replace(surface, drinking_water=True)
    for language, boil, contact in (
        ("en", "boil", "swimming"),
        ("km", "ដាំទឹកឱ្យពុះ", "ហែលទឹក"),
    ):
        s = " ".join(all_texts(texts.render(surface, language)))  # type: ignore[arg-type]
        d = " ".join(all_texts(texts.render(drinking, language)))  # type: ignore[arg-type]
        assert boil not in s.lower() and contact in s
        assert boil in d.lower() and contact not in d

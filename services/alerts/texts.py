"""Alert texts in English and Khmer, from templates per rule and language. Pure: no I/O.

Every alert carries, per language, the CAP `event`, `headline`, `description` and
`instruction`, a short voice script for national early-warning relay (Cambodia's EWS1294
sends recorded Khmer voice messages by commune: one or two short sentences saying what,
where and what to do) and an SMS text.

Why templates are chosen by hazard and not only by rule id: the rules file grows (levels,
rate of change, AQI, combined rules), and a new rule on a known metric must get proper
Khmer at once instead of a machine-garbled placeholder. A rule may still name its template
(`AlertMessage.template`); otherwise the metric picks it (`template_key`).

Khmer conventions used here:
- Khmer digits (០ to ៩) for values, times and dates, with the Khmer locale's decimal comma
  and full-stop grouping (CLDR `km`: 2.5 -> ២,៥, 12500 -> ១២.៥០០), via `format_number`;
  symbols that are read as names (PM2.5, N95, NTU, device ids) stay Latin.
- Units spelled out in Khmer where Khmer has the word (ម៉ែត្រ, មីលីម៉ែត្រក្នុងមួយម៉ោង ...).
- Sentences end with the khan (។); headlines use the Khmer colon (៖).
- Every returned string is NFC-normalised (`unicodedata.normalize`).
- Latin script stays only where Khmer writing keeps it: device ids and the symbols in
  `LATIN_IN_KHMER`. Severity and AQI category names have one table each (`SEVERITY_NAMES`,
  `_AQI_NAMES`), used by the templates here and by the rules' own titles (`fill_titles`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Final, Literal

from services.alerts.model import ICT, AlertMessage

Language = Literal["en", "km"]
LANGUAGES: Final[tuple[Language, ...]] = ("en", "km")

# CAP `<language>` codes (RFC 3066 tags, as CAP 1.2 asks) for each text language.
CAP_LANGUAGE: Final[Mapping[Language, str]] = {"en": "en-US", "km": "km-KH"}


_KHMER_DIGITS: Final = str.maketrans("0123456789", "០១២៣៤៥៦៧៨៩")

_MONTHS_EN: Final = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
_MONTHS_KM: Final = (
    "មករា", "កុម្ភៈ", "មីនា", "មេសា", "ឧសភា", "មិថុនា",
    "កក្កដា", "សីហា", "កញ្ញា", "តុលា", "វិច្ឆិកា", "ធ្នូ",
)  # fmt: skip

# Sihanoukville place names in Khmer script, keyed by lower-case romanisation (with the
# spellings seen on maps and in government documents). Areas may carry their own Khmer
# name; this table is the fallback for the province and its districts.
PLACES_KM: Final[Mapping[str, str]] = {
    "preah sihanouk": "ខេត្តព្រះសីហនុ",
    "preah sihanouk province": "ខេត្តព្រះសីហនុ",
    "sihanoukville": "ក្រុងព្រះសីហនុ",
    "krong preah sihanouk": "ក្រុងព្រះសីហនុ",
    "mittapheap": "មិត្តភាព",
    "mittakpheap": "មិត្តភាព",
    "prey nob": "ព្រៃនប់",
    "prey nop": "ព្រៃនប់",
    "stueng hav": "ស្ទឹងហាវ",
    "steung hav": "ស្ទឹងហាវ",
    "stung hav": "ស្ទឹងហាវ",
    "kampong seila": "កំពង់សីលា",
    "kompong seila": "កំពង់សីលា",
}

# Units of schemas/registry.py: (English as shown, Khmer as read, SMS-safe ASCII).
# NTU, pH, ppb and ppm are kept as symbols: Khmer technical writing uses them as is.
_UNITS: Final[Mapping[str, tuple[str, str, str]]] = {
    "m": ("m", "ម៉ែត្រ", "m"),
    "mm/h": ("mm/h", "មីលីម៉ែត្រក្នុងមួយម៉ោង", "mm/h"),
    "mm": ("mm", "មីលីម៉ែត្រ", "mm"),  # rain accumulated (combined rules' accumulated_mm)
    "m³/s": ("m³/s", "ម៉ែត្រគូបក្នុងមួយវិនាទី", "m3/s"),
    "µg/m³": ("µg/m³", "មីក្រូក្រាមក្នុងមួយម៉ែត្រគូប", "ug/m3"),
    "NTU": ("NTU", "NTU", "NTU"),
    "mg/L": ("mg/L", "មីលីក្រាមក្នុងមួយលីត្រ", "mg/L"),
    "µS/cm": ("µS/cm", "µS/cm", "uS/cm"),
    "°C": ("°C", "អង្សាសេ", "C"),
    "%": ("%", "ភាគរយ", "%"),
    "kg": ("kg", "គីឡូក្រាម", "kg"),
    "count": ("items", "ដុំ", "items"),
    "pH": ("", "", ""),
    "ppb": ("ppb", "ppb", "ppb"),
    "ppm": ("ppm", "ppm", "ppm"),
    "dBm": ("dBm", "dBm", "dBm"),
    # Units of rule titles only: an offline device's silence, an AQI rule's index.
    "min": ("min", "នាទី", "min"),
    "AQI": ("AQI", "", "AQI"),
}

# Latin symbols Khmer alert texts keep as they are, because Khmer technical writing reads
# them as names: units (NTU, pH, ppb, ppm, dBm, µS/cm), pollutants (PM2.5, PM10), mask
# standards (N95, KN95), and the sender's name. Everything else in a Khmer text is Khmer
# script, except the device id. tests/test_alert_texts.py holds the texts to this list.
LATIN_IN_KHMER: Final[tuple[str, ...]] = (
    "CityWatch", "PM2.5", "PM10", "KN95", "N95", "µS/cm", "NTU", "pH", "ppb", "ppm", "dBm",
)  # fmt: skip

# Alert severities as words: (English, Khmer). The Khmer words are the stage words of the
# flood texts below (ប្រុងប្រយ័ត្ន "be on watch", ព្រមាន "warn", គ្រោះថ្នាក់ "danger");
# an advisory is a notice (ជូនដំណឹង), the word the texts use for an alert level.
SEVERITY_NAMES: Final[Mapping[str, tuple[str, str]]] = {
    "advisory": ("advisory", "ជូនដំណឹង"),
    "watch": ("watch", "ប្រុងប្រយ័ត្ន"),
    "warning": ("warning", "ព្រមាន"),
    "danger": ("danger", "គ្រោះថ្នាក់"),
}

# Metric names as a sentence uses them: (English, Khmer).
_METRICS: Final[Mapping[str, tuple[str, str]]] = {
    "water_level_m": ("water level", "កម្ពស់ទឹក"),
    "rain_mm_h": ("rainfall", "បរិមាណទឹកភ្លៀង"),
    "flow_m3s": ("river flow", "លំហូរទឹកទន្លេ"),
    "ph": ("pH", "កម្រិត pH"),
    "turbidity_ntu": ("turbidity", "ភាពល្អក់"),
    "dissolved_oxygen_mgl": ("dissolved oxygen", "អុកស៊ីសែនរលាយក្នុងទឹក"),
    "conductivity_uscm": ("conductivity", "ភាពចម្លងចរន្តអគ្គិសនី"),
    "temperature_c": ("temperature", "សីតុណ្ហភាព"),
    "pm25_ugm3": ("PM2.5", "PM2.5"),
    "pm10_ugm3": ("PM10", "PM10"),
    "no2_ppb": ("nitrogen dioxide", "ឧស្ម័ននីត្រូសែនឌីអុកស៊ីត"),
    "o3_ppb": ("ozone", "ឧស្ម័នអូហ្សូន"),
    "so2_ppb": ("sulphur dioxide", "ឧស្ម័នស៊ុលហ្វួរឌីអុកស៊ីត"),
    "co_ppm": ("carbon monoxide", "ឧស្ម័នកាបូនម៉ូណូអុកស៊ីត"),
    "humidity_pct": ("humidity", "សំណើម"),
    "litter_items": ("litter", "សំរាម"),
    "fill_level_pct": ("fill level", "កម្រិតពេញ"),
    "litter_kg": ("litter", "សំរាម"),
    "battery_pct": ("battery", "ថ្មឧបករណ៍"),
    "rssi_dbm": ("signal strength", "កម្លាំងសញ្ញា"),
}


@dataclass(frozen=True, slots=True)
class AlertTexts:
    """One language's texts for one alert message (all NFC-normalised)."""

    language: str  # CAP language code: en-US or km-KH
    event: str
    headline: str
    description: str
    instruction: str
    voice: str  # one or two short sentences: what, where, what to do
    sms: str


@dataclass(frozen=True, slots=True)
class _Template:
    event: str
    headline: str
    description: str
    instruction: str
    voice: str
    sms: str


def nfc(text: str) -> str:
    """NFC-normalise: the same Khmer word must be the same code points everywhere."""
    return unicodedata.normalize("NFC", text)


def khmer_digits(text: str) -> str:
    """Replace ASCII digits with Khmer digits (០ to ៩); everything else is left alone."""
    return text.translate(_KHMER_DIGITS)


def format_number(value: float, language: Language) -> str:
    """A reading as people read it: up to 2 decimals below 10, 1 below 100, none above.

    English: `2.75`, `12,500`. Khmer (CLDR `km`): Khmer digits, decimal comma, full-stop
    grouping: `២,៧៥`, `១២.៥០០`.
    """
    decimals = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
    text = f"{value:,.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if language == "en":
        return text
    swapped = text.translate(str.maketrans(",.", ".,"))
    return khmer_digits(swapped)


def place_name(name: str, language: Language, name_km: str | None = None) -> str:
    """An area's name in `language`: the area's own Khmer name, else the table, else as is."""
    if language == "en":
        return name
    if name_km:
        return nfc(name_km)
    key = name.strip().lower()
    # "Mittapheap (town centre)": the area file's gloss is English, the place is the name.
    bare = re.sub(r"\s*\(.*\)$", "", key)
    return nfc(PLACES_KM.get(key) or PLACES_KM.get(bare) or name)


def unit_text(unit: str, language: Language, *, sms_safe: bool = False) -> str:
    """The unit as written in `language` (`sms_safe`: ASCII only, for GSM-7 texts)."""
    en, km, ascii_ = _UNITS.get(unit, (unit, unit, unit))
    if sms_safe:
        return ascii_
    return en if language == "en" else km


def metric_name(metric: str, language: Language) -> str:
    en, km = _METRICS.get(metric, (metric.replace("_", " "), metric))
    return en if language == "en" else km


def format_time(at: datetime, language: Language, tz: tzinfo = ICT) -> tuple[str, str]:
    """(full, short) local time: `14:30 on 24 November 2026` / `ម៉ោង ១៤:៣០ ...`."""
    local = at.astimezone(tz)
    hhmm = f"{local:%H:%M}"
    if language == "en":
        return f"{hhmm} on {local.day} {_MONTHS_EN[local.month - 1]} {local.year}", hhmm
    month = _MONTHS_KM[local.month - 1]
    full = f"ម៉ោង {hhmm} ថ្ងៃទី{local.day} ខែ{month} ឆ្នាំ{local.year}"
    return khmer_digits(full), khmer_digits(hhmm)


# --- air quality index categories (US EPA; the AQI scale itself, 0-500) -----------------

AqiCategory = Literal[
    "good", "moderate", "sensitive", "unhealthy", "very_unhealthy", "hazardous"
]  # fmt: skip

_AQI_UPPER: Final[tuple[tuple[int, AqiCategory], ...]] = (
    (50, "good"),
    (100, "moderate"),
    (150, "sensitive"),
    (200, "unhealthy"),
    (300, "very_unhealthy"),
)
# Concentration upper bounds of each category (µg/m³): PM2.5 from the 2024 revision,
# PM10 unchanged since 2012. Used when the alert carries no AQI number.
_CONC_UPPER: Final[Mapping[str, tuple[float, ...]]] = {
    "pm25_ugm3": (9.0, 35.4, 55.4, 125.4, 225.4),
    "pm10_ugm3": (54, 154, 254, 354, 424),
}
_AQI_NAMES: Final[Mapping[AqiCategory, tuple[str, str]]] = {
    "good": ("good", "ល្អ"),
    "moderate": ("moderate", "មធ្យម"),
    "sensitive": ("unhealthy for sensitive groups", "មិនល្អសម្រាប់ក្រុមងាយរងផលប៉ះពាល់"),
    "unhealthy": ("unhealthy", "មិនល្អសម្រាប់សុខភាព"),
    "very_unhealthy": ("very unhealthy", "មិនល្អខ្លាំងសម្រាប់សុខភាព"),
    "hazardous": ("hazardous", "គ្រោះថ្នាក់"),
}
# (instruction, voice advice) per category and language.
_AQI_ADVICE: Final[Mapping[AqiCategory, Mapping[Language, tuple[str, str]]]] = {
    "good": {
        "en": ("No action is needed.", "No action is needed."),
        "km": ("មិនចាំបាច់ចាត់វិធានការទេ។", "មិនចាំបាច់ចាត់វិធានការទេ។"),
    },
    "moderate": {
        "en": (
            "Unusually sensitive people should consider reducing heavy outdoor activity.",
            "Very sensitive people should take it easy outdoors.",
        ),
        "km": (
            "អ្នកដែលងាយរងផលប៉ះពាល់ខ្លាំង គួរពិចារណាកាត់បន្ថយសកម្មភាពខ្លាំងៗនៅខាងក្រៅ។",
            "អ្នកដែលងាយរងផលប៉ះពាល់ គួរកាត់បន្ថយសកម្មភាពនៅខាងក្រៅ។",
        ),
    },
    "sensitive": {
        "en": (
            "Children, older people, pregnant women and people with heart or lung disease "
            "should reduce long or heavy outdoor activity.",
            "Children, older people and the sick should stay indoors more.",
        ),
        "km": (
            "កុមារ មនុស្សចាស់ ស្ត្រីមានផ្ទៃពោះ និងអ្នកមានជំងឺបេះដូង ឬជំងឺផ្លូវដង្ហើម "
            "គួរកាត់បន្ថយសកម្មភាពយូរ ឬខ្លាំងៗនៅខាងក្រៅ។",
            "កុមារ មនុស្សចាស់ និងអ្នកជំងឺ គួរកាត់បន្ថយសកម្មភាពនៅខាងក្រៅ។",
        ),
    },
    "unhealthy": {
        "en": (
            "Everyone should reduce outdoor activity and sensitive groups should avoid it. "
            "Keep windows closed and wear a well-fitting mask (N95 or KN95) outdoors.",
            "Reduce outdoor activity and wear a mask.",
        ),
        "km": (
            "គ្រប់គ្នាគួរកាត់បន្ថយសកម្មភាពនៅខាងក្រៅ ហើយក្រុមងាយរងផលប៉ះពាល់គួរជៀសវាង។ "
            "សូមបិទបង្អួច និងពាក់ម៉ាស់ដែលការពារបាន (N95 ឬ KN95) ពេលចេញក្រៅ។",
            "សូមកាត់បន្ថយសកម្មភាពនៅខាងក្រៅ និងពាក់ម៉ាស់។",
        ),
    },
    "very_unhealthy": {
        "en": (
            "Everyone should avoid outdoor activity. Stay indoors with windows closed and "
            "wear a well-fitting mask if you must go out.",
            "Stay indoors and keep windows closed.",
        ),
        "km": (
            "គ្រប់គ្នាគួរជៀសវាងសកម្មភាពនៅខាងក្រៅ។ សូមស្នាក់នៅក្នុងផ្ទះ បិទបង្អួច និងពាក់ម៉ាស់ ប្រសិនបើចាំបាច់ត្រូវចេញក្រៅ។",
            "សូមស្នាក់នៅក្នុងផ្ទះ និងបិទបង្អួច។",
        ),
    },
    "hazardous": {
        "en": (
            "Everyone should stay indoors with doors and windows closed, avoid all outdoor "
            "activity and follow the health authorities' advice.",
            "Stay indoors with doors and windows closed.",
        ),
        "km": (
            "គ្រប់គ្នាគួរស្នាក់នៅក្នុងផ្ទះ ហើយបិទទ្វារ និងបង្អួច។ សូមជៀសវាងសកម្មភាពទាំងអស់"
            "នៅខាងក្រៅ និងអនុវត្តតាមការណែនាំរបស់អាជ្ញាធរសុខាភិបាល។",
            "សូមស្នាក់នៅក្នុងផ្ទះ និងបិទទ្វារ និងបង្អួច។",
        ),
    },
}


# The rules file's names of AQI categories (services/alerts/rules.py) that differ here.
_AQI_RULE_NAMES: Final[Mapping[str, AqiCategory]] = {"unhealthy_sensitive": "sensitive"}


def aqi_category_name(category: str, language: Language) -> str:
    """An AQI category (`unhealthy_sensitive`, `hazardous` ...) as words in `language`.

    Accepts the rules' names too; an unknown name is returned as is (a bug to see, not hide).
    """
    key = _AQI_RULE_NAMES.get(category, category)
    for name, (en, km) in _AQI_NAMES.items():
        if name == key:
            return en if language == "en" else km
    return category


def severity_name(severity: str, language: Language) -> str:
    """A severity (`advisory` ... `danger`) as a word in `language` (`SEVERITY_NAMES`)."""
    en, km = SEVERITY_NAMES.get(severity, (severity, severity))
    return en if language == "en" else km


def aqi_category(aqi: int) -> AqiCategory:
    """The US EPA AQI category of an index value (0-50 good ... above 300 hazardous)."""
    for upper, category in _AQI_UPPER:
        if aqi <= upper:
            return category
    return "hazardous"


def _air_category(msg: AlertMessage) -> AqiCategory:
    if msg.aqi is not None:
        return aqi_category(msg.aqi)
    bounds = _CONC_UPPER.get(msg.metric)
    if bounds is None:
        return "unhealthy"
    names: tuple[AqiCategory, ...] = (
        "good", "moderate", "sensitive", "unhealthy", "very_unhealthy",
    )  # fmt: skip
    for upper, category in zip(bounds, names, strict=True):
        if msg.value <= upper:
            return category
    return "hazardous"


# --- templates ---------------------------------------------------------------------------
# Fields: {value} {unit} {threshold} {place} {time} {time_short} {device} {metric}
# and for air quality {category} {aqi_clause} {advice} {voice_advice}.

_FLOOD: Final[Mapping[str, Mapping[Language, _Template]]] = {
    "watch": {
        "en": _Template(
            event="Flood watch",
            headline="Flood watch: water level {value} {unit} in {place}",
            description=(
                "At {time} the water level at gauge {device} in {place} reached "
                "{value} {unit}, above the watch level of {threshold} {unit}. The water is "
                "rising and flooding is possible."
            ),
            instruction=(
                "Stay alert and follow the local authorities. Prepare important documents, "
                "medicine and drinking water, and keep children away from rivers and streams."
            ),
            voice=(
                "Flood watch for {place}: the water is rising. Get ready to move to higher "
                "ground and follow the local authorities."
            ),
            sms=(
                "CityWatch FLOOD WATCH {place}: water {value} {unit} at {time_short}. "
                "Get ready, keep away from rivers, follow local authorities."
            ),
        ),
        "km": _Template(
            event="ប្រុងប្រយ័ត្នទឹកជំនន់",
            headline="ប្រុងប្រយ័ត្នទឹកជំនន់៖ កម្ពស់ទឹក {value} {unit} នៅ{place}",
            description=(
                "នៅ{time} កម្ពស់ទឹកនៅស្ថានីយ៍វាស់ {device} ក្នុង{place} បានឡើងដល់ "
                "{value} {unit} លើសកម្រិតប្រុងប្រយ័ត្ន {threshold} {unit}។ "
                "ទឹកកំពុងឡើង ហើយអាចនឹងមានទឹកជំនន់។"
            ),
            instruction=(
                "សូមប្រុងប្រយ័ត្ន និងអនុវត្តតាមការណែនាំរបស់អាជ្ញាធរមូលដ្ឋាន។ "
                "សូមរៀបចំឯកសារសំខាន់ៗ ថ្នាំពេទ្យ និងទឹកស្អាតសម្រាប់ផឹក "
                "ហើយកុំឱ្យកុមារនៅជិតទន្លេ ឬស្ទឹង។"
            ),
            voice=(
                "ប្រុងប្រយ័ត្នទឹកជំនន់នៅ{place}៖ ទឹកកំពុងឡើង។ "
                "សូមត្រៀមខ្លួនផ្លាស់ទីទៅកន្លែងខ្ពស់ និងស្តាប់ការណែនាំរបស់អាជ្ញាធរមូលដ្ឋាន។"
            ),
            sms=(
                "CityWatch ប្រុងប្រយ័ត្នទឹកជំនន់ {place}៖ ទឹក {value} {unit} ម៉ោង {time_short}។ "
                "សូមត្រៀមខ្លួន និងនៅឱ្យឆ្ងាយពីទន្លេ។"
            ),
        ),
    },
    "warning": {
        "en": _Template(
            event="Flood warning",
            headline="Flood warning: water level {value} {unit} in {place}",
            description=(
                "At {time} the water level at gauge {device} in {place} reached "
                "{value} {unit}, above the warning level of {threshold} {unit}. "
                "Low-lying areas are expected to flood."
            ),
            instruction=(
                "Move people, animals and valuables to higher ground now. Do not walk or "
                "drive through flood water. Follow the local authorities' instructions."
            ),
            voice=(
                "Flood warning for {place}. Move to higher ground now and do not cross flood water."
            ),
            sms=(
                "CityWatch FLOOD WARNING {place}: water {value} {unit} at {time_short}. "
                "Move to higher ground now. Do not cross flood water."
            ),
        ),
        "km": _Template(
            event="ការព្រមានទឹកជំនន់",
            headline="ការព្រមានទឹកជំនន់៖ កម្ពស់ទឹក {value} {unit} នៅ{place}",
            description=(
                "នៅ{time} កម្ពស់ទឹកនៅស្ថានីយ៍វាស់ {device} ក្នុង{place} បានឡើងដល់ "
                "{value} {unit} លើសកម្រិតព្រមាន {threshold} {unit}។ "
                "តំបន់ទំនាបនឹងត្រូវទឹកលិច។"
            ),
            instruction=(
                "សូមផ្លាស់ទីមនុស្ស សត្វ និងទ្រព្យសម្បត្តិទៅកន្លែងខ្ពស់ជាបន្ទាន់។ "
                "កុំដើរ ឬបើកបរកាត់ទឹកជំនន់។ សូមអនុវត្តតាមការណែនាំរបស់អាជ្ញាធរមូលដ្ឋាន។"
            ),
            voice=("ការព្រមានទឹកជំនន់នៅ{place}។ សូមផ្លាស់ទីទៅកន្លែងខ្ពស់ឥឡូវនេះ ហើយកុំឆ្លងកាត់ទឹកជំនន់។"),
            sms=(
                "CityWatch ព្រមានទឹកជំនន់ {place}៖ ទឹក {value} {unit} ម៉ោង {time_short}។ "
                "សូមផ្លាស់ទីទៅកន្លែងខ្ពស់ភ្លាម កុំឆ្លងកាត់ទឹកជំនន់។"
            ),
        ),
    },
    "danger": {
        "en": _Template(
            event="Flood danger",
            headline="Flood danger: water level {value} {unit} in {place}",
            description=(
                "At {time} the water level at gauge {device} in {place} reached "
                "{value} {unit}, above the danger level of {threshold} {unit}. "
                "Dangerous flooding is under way."
            ),
            instruction=(
                "Evacuate to higher ground or an evacuation site immediately. Do not cross "
                "flood water. Follow the local authorities and rescue teams."
            ),
            voice=(
                "Flood danger in {place}. Evacuate to higher ground immediately and follow "
                "the local authorities."
            ),
            sms=(
                "CityWatch FLOOD DANGER {place}: water {value} {unit} at {time_short}. "
                "Evacuate to higher ground now. Follow local authorities."
            ),
        ),
        "km": _Template(
            event="គ្រោះថ្នាក់ទឹកជំនន់",
            headline="គ្រោះថ្នាក់ទឹកជំនន់៖ កម្ពស់ទឹក {value} {unit} នៅ{place}",
            description=(
                "នៅ{time} កម្ពស់ទឹកនៅស្ថានីយ៍វាស់ {device} ក្នុង{place} បានឡើងដល់ "
                "{value} {unit} លើសកម្រិតគ្រោះថ្នាក់ {threshold} {unit}។ "
                "ទឹកជំនន់ដ៏គ្រោះថ្នាក់កំពុងកើតឡើង។"
            ),
            instruction=(
                "សូមជម្លៀសទៅកន្លែងខ្ពស់ ឬទីតាំងជម្លៀសភ្លាមៗ។ កុំឆ្លងកាត់ទឹកជំនន់។ "
                "សូមអនុវត្តតាមការណែនាំរបស់អាជ្ញាធរមូលដ្ឋាន និងក្រុមសង្គ្រោះ។"
            ),
            voice=("គ្រោះថ្នាក់ទឹកជំនន់នៅ{place}។ សូមជម្លៀសទៅកន្លែងខ្ពស់ភ្លាមៗ និងស្តាប់ការណែនាំរបស់អាជ្ញាធរ។"),
            sms=(
                "CityWatch គ្រោះថ្នាក់ទឹកជំនន់ {place}៖ ទឹក {value} {unit} ម៉ោង {time_short}។ "
                "សូមជម្លៀសទៅកន្លែងខ្ពស់ភ្លាមៗ។"
            ),
        ),
    },
}

_TEMPLATES: Final[Mapping[str, Mapping[Language, _Template]]] = {
    "heavy-rain": {
        "en": _Template(
            event="Heavy rain",
            headline="Heavy rain: {value} {unit} in {place}",
            description=(
                "At {time} rain at station {device} in {place} fell at {value} {unit} "
                "(alert level {threshold} {unit}). Flash floods and flooded roads are possible."
            ),
            instruction=(
                "Avoid travel that is not necessary, do not cross flooded roads and follow "
                "the local authorities."
            ),
            voice="Heavy rain in {place}. Watch for flash floods and do not cross flooded roads.",
            sms=(
                "CityWatch HEAVY RAIN {place}: {value} {unit} at {time_short}. "
                "Flash floods possible. Do not cross flooded roads."
            ),
        ),
        "km": _Template(
            event="ភ្លៀងធ្លាក់ខ្លាំង",
            headline="ភ្លៀងធ្លាក់ខ្លាំង៖ {value} {unit} នៅ{place}",
            description=(
                "នៅ{time} ភ្លៀងនៅស្ថានីយ៍ {device} ក្នុង{place} ធ្លាក់ {value} {unit} "
                "(កម្រិតជូនដំណឹង {threshold} {unit})។ អាចមានទឹកជំនន់ភ្លាមៗ និងទឹកលិចផ្លូវ។"
            ),
            instruction=(
                "សូមជៀសវាងការធ្វើដំណើរដែលមិនចាំបាច់ កុំឆ្លងកាត់ផ្លូវដែលមានទឹកលិច "
                "និងអនុវត្តតាមការណែនាំរបស់អាជ្ញាធរមូលដ្ឋាន។"
            ),
            voice=("ភ្លៀងធ្លាក់ខ្លាំងនៅ{place}។ សូមប្រយ័ត្នទឹកជំនន់ភ្លាមៗ ហើយកុំឆ្លងកាត់ផ្លូវដែលមានទឹកលិច។"),
            sms=(
                "CityWatch ភ្លៀងធ្លាក់ខ្លាំង {place}៖ {value} {unit} ម៉ោង {time_short}។ "
                "កុំឆ្លងកាត់ផ្លូវដែលមានទឹកលិច។"
            ),
        ),
    },
    "air-quality": {
        "en": _Template(
            event="Air quality alert",
            headline="Air {category}: {metric} {value} {unit} in {place}",
            description=(
                "At {time} {metric} at station {device} in {place} was {value} {unit}"
                "{aqi_clause}, which the US EPA Air Quality Index rates as {category}."
            ),
            instruction="{advice}",
            voice="The air in {place} is {category}. {voice_advice}",
            sms="CityWatch AIR {category_upper} {place}: {metric} {value} {unit}. {voice_advice}",
        ),
        "km": _Template(
            event="ការជូនដំណឹងគុណភាពខ្យល់",
            headline="គុណភាពខ្យល់{category}៖ {metric} {value} {unit} នៅ{place}",
            description=(
                "នៅ{time} កំហាប់ធូលីល្អិត {metric} នៅស្ថានីយ៍ {device} ក្នុង{place} "
                "មាន {value} {unit}{aqi_clause} ដែលតាមសន្ទស្សន៍គុណភាពខ្យល់"
                "របស់ទីភ្នាក់ងារការពារបរិស្ថានអាមេរិក ស្ថិតក្នុងកម្រិត «{category}»។"
            ),
            instruction="{advice}",
            voice="គុណភាពខ្យល់នៅ{place} {category}។ {voice_advice}",
            sms="CityWatch គុណភាពខ្យល់{category} {place}៖ {metric} {value}។ {voice_advice}",
        ),
    },
    "water-turbidity": {
        "en": _Template(
            event="Turbid water",
            headline="Turbid water: {value} {unit} at intake in {place}",
            description=(
                "At {time} turbidity at water intake {device} in {place} reached "
                "{value} {unit} (alert level {threshold} {unit}). Very turbid raw water can "
                "overwhelm treatment and carry germs."
            ),
            instruction=(
                "Water operators: check treatment and disinfection at this intake. Residents: "
                "if tap water looks cloudy, boil it before drinking until the all-clear."
            ),
            voice="Turbid water in {place}. Boil water before drinking until further notice.",
            sms=(
                "CityWatch TURBID WATER {place}: {value} {unit} at {time_short}. "
                "Boil water before drinking until further notice."
            ),
        ),
        "km": _Template(
            event="ទឹកល្អក់",
            headline="ទឹកល្អក់៖ ភាពល្អក់ {value} {unit} នៅកន្លែងបូមទឹកក្នុង{place}",
            description=(
                "នៅ{time} ភាពល្អក់នៃទឹកនៅកន្លែងបូមទឹក {device} ក្នុង{place} បានឡើងដល់ "
                "{value} {unit} (កម្រិតជូនដំណឹង {threshold} {unit})។ "
                "ទឹកឆៅដែលល្អក់ខ្លាំងអាចធ្វើឱ្យការចម្រោះទឹកមិនមានប្រសិទ្ធភាព និងអាចមានមេរោគ។"
            ),
            instruction=(
                "ប្រតិបត្តិករផ្គត់ផ្គង់ទឹក៖ សូមពិនិត្យការចម្រោះ និងការសម្លាប់មេរោគនៅកន្លែងបូមទឹកនេះ។ "
                "ប្រជាពលរដ្ឋ៖ ប្រសិនបើទឹករ៉ូប៊ីណេល្អក់ សូមដាំទឹកឱ្យពុះមុនពេលផឹក "
                "រហូតដល់មានដំណឹងថាមានសុវត្ថិភាពវិញ។"
            ),
            voice="ទឹកល្អក់នៅ{place}។ សូមដាំទឹកឱ្យពុះមុនពេលផឹក រហូតដល់មានដំណឹងថ្មី។",
            sms=("CityWatch ទឹកល្អក់ {place}៖ {value} {unit} ម៉ោង {time_short}។ សូមដាំទឹកឱ្យពុះមុនពេលផឹក។"),
        ),
    },
    "surface-water-turbidity": {
        "en": _Template(
            event="Turbid water",
            headline="Turbid water: {value} {unit} in {place}",
            description=(
                "At {time} turbidity at water sensor {device} in {place} reached "
                "{value} {unit} (alert level {threshold} {unit}). Runoff after heavy rain "
                "carries mud, sewage and germs into rivers and the sea."
            ),
            instruction=(
                "Residents and visitors: avoid swimming, bathing and fishing here until the "
                "water clears. Water operators: check the outfalls upstream."
            ),
            voice="Turbid water in {place}. Avoid swimming and fishing until it clears.",
            sms=(
                "CityWatch TURBID WATER {place}: {value} {unit} at {time_short}. "
                "Avoid swimming and fishing until it clears."
            ),
        ),
        "km": _Template(
            event="ទឹកល្អក់",
            headline="ទឹកល្អក់៖ ភាពល្អក់ {value} {unit} នៅ{place}",
            description=(
                "នៅ{time} ភាពល្អក់នៃទឹកនៅឧបករណ៍ចាប់សញ្ញា {device} ក្នុង{place} បានឡើងដល់ "
                "{value} {unit} (កម្រិតជូនដំណឹង {threshold} {unit})។ "
                "ទឹកហូរបន្ទាប់ពីភ្លៀងខ្លាំងនាំភក់ ទឹកស្អុយ និងមេរោគចូលទៅក្នុងទន្លេ និងសមុទ្រ។"
            ),
            instruction=(
                "ប្រជាពលរដ្ឋ និងភ្ញៀវទេសចរ៖ សូមជៀសវាងការហែលទឹក ងូតទឹក និងនេសាទនៅទីនេះ "
                "រហូតដល់ទឹកថ្លាវិញ។ ប្រតិបត្តិករ៖ សូមពិនិត្យលូបង្ហូរទឹកនៅខាងលើ។"
            ),
            voice="ទឹកល្អក់នៅ{place}។ សូមជៀសវាងការហែលទឹក និងនេសាទ រហូតដល់ទឹកថ្លាវិញ។",
            sms="CityWatch ទឹកល្អក់ {place}៖ {value} {unit} ម៉ោង {time_short}។ ជៀសវាងការហែលទឹក និងនេសាទ។",
        ),
    },
    "water-quality": {
        "en": _Template(
            event="Water quality alert",
            headline="Water quality: {metric} {value} {unit} in {place}",
            description=(
                "At {time} {metric} at sensor {device} in {place} was {value} {unit} "
                "(alert level {threshold} {unit})."
            ),
            instruction=(
                "Water operators: check the water at this site. Residents: avoid using water "
                "straight from this source until further notice."
            ),
            voice="Water quality problem in {place}. Avoid this water until further notice.",
            sms=(
                "CityWatch WATER QUALITY {place}: {metric} {value} {unit} at {time_short}. "
                "Avoid this water until further notice."
            ),
        ),
        "km": _Template(
            event="ការជូនដំណឹងគុណភាពទឹក",
            headline="គុណភាពទឹក៖ {metric} {value} {unit} នៅ{place}",
            description=(
                "នៅ{time} {metric} នៅឧបករណ៍ចាប់សញ្ញា {device} ក្នុង{place} មាន "
                "{value} {unit} (កម្រិតជូនដំណឹង {threshold} {unit})។"
            ),
            instruction=(
                "ប្រតិបត្តិករផ្គត់ផ្គង់ទឹក៖ សូមពិនិត្យគុណភាពទឹកនៅទីតាំងនេះ។ "
                "ប្រជាពលរដ្ឋ៖ សូមជៀសវាងការប្រើទឹកពីប្រភពនេះដោយផ្ទាល់ រហូតដល់មានដំណឹងថ្មី។"
            ),
            voice="គុណភាពទឹកមិនប្រក្រតីនៅ{place}។ សូមជៀសវាងប្រើទឹកនេះ រហូតដល់មានដំណឹងថ្មី។",
            sms=("CityWatch គុណភាពទឹក {place}៖ {metric} {value} {unit}។ សូមជៀសវាងប្រើទឹកនេះ។"),
        ),
    },
    "litter": {
        "en": _Template(
            event="Litter boom full",
            headline="Litter boom needs collection: {value} {unit} in {place}",
            description=(
                "At {time} litter boom {device} in {place} held {value} {unit} "
                "(collection level {threshold} {unit}). A full boom lets plastic escape to the "
                "sea and can block drains in heavy rain."
            ),
            instruction=(
                "Send a collection crew to empty the boom. Residents: please do not throw "
                "rubbish into rivers, canals or drains."
            ),
            voice=(
                "The litter boom in {place} is full. Please do not throw rubbish into rivers, "
                "canals or drains."
            ),
            sms=(
                "CityWatch LITTER BOOM FULL {place}: {value} {unit} at {time_short}. "
                "Collection crew needed."
            ),
        ),
        "km": _Template(
            event="របាំងចាប់សំរាមពេញ",
            headline="របាំងចាប់សំរាមត្រូវការប្រមូល៖ {value} {unit} នៅ{place}",
            description=(
                "នៅ{time} របាំងចាប់សំរាម {device} ក្នុង{place} មានសំរាម {value} {unit} "
                "(កម្រិតត្រូវប្រមូល {threshold} {unit})។ របាំងដែលពេញធ្វើឱ្យសំរាមប្លាស្ទិក"
                "ហូរចូលសមុទ្រ ហើយអាចធ្វើឱ្យស្ទះលូពេលភ្លៀងធ្លាក់ខ្លាំង។"
            ),
            instruction=(
                "សូមបញ្ជូនក្រុមការងារទៅប្រមូលសំរាមពីរបាំង។ ប្រជាពលរដ្ឋ៖ សូមកុំបោះចោលសំរាមចូលទន្លេ ប្រឡាយ ឬលូ។"
            ),
            voice="របាំងចាប់សំរាមនៅ{place}ពេញហើយ។ សូមកុំបោះចោលសំរាមចូលទន្លេ ប្រឡាយ ឬលូ។",
            sms=(
                "CityWatch របាំងចាប់សំរាមពេញ {place}៖ {value} {unit} ម៉ោង {time_short}។ "
                "ត្រូវការក្រុមប្រមូលសំរាម។"
            ),
        ),
    },
}

# The all-clear for a resolved alert, for every template: `{event}` is the alert's event.
_ALL_CLEAR: Final[Mapping[Language, _Template]] = {
    "en": _Template(
        event="{event}",
        headline="Ended: {event} in {place}",
        description=(
            "At {time} the {metric} in {place} was back to {value} {unit}. "
            "The {event_lower} has ended."
        ),
        instruction="No further action is needed. Follow the local authorities for news.",
        voice="The {event_lower} for {place} has ended.",
        sms="CityWatch ENDED {place}: {event_lower} over at {time_short}. No action needed.",
    ),
    "km": _Template(
        event="{event}",
        headline="បានបញ្ចប់៖ {event} នៅ{place}",
        description=(
            "នៅ{time} {metric} នៅ{place} បានត្រឡប់មកកម្រិតធម្មតាវិញ ({value} {unit})។ {event} បានបញ្ចប់ហើយ។"
        ),
        instruction="មិនចាំបាច់ចាត់វិធានការបន្ថែមទេ។ សូមតាមដានព័ត៌មានពីអាជ្ញាធរមូលដ្ឋាន។",
        voice="{event}នៅ{place} បានបញ្ចប់ហើយ។",
        sms="CityWatch បានបញ្ចប់ {place}៖ {event} ម៉ោង {time_short}។",
    ),
}

# Prefixes that make rehearsal messages unmistakable (CAP status Test and Exercise).
_STATUS_PREFIX: Final[Mapping[str, Mapping[Language, str]]] = {
    "Test": {"en": "TEST: ", "km": "សារសាកល្បង៖ "},
    "Exercise": {"en": "EXERCISE: ", "km": "សមយុទ្ធ៖ "},
}

TEMPLATE_KEYS: Final[tuple[str, ...]] = ("flood-level", *_TEMPLATES)


def template_key(msg: AlertMessage) -> str:
    """The template an alert uses: the rule's choice, else the one for its metric."""
    if msg.template:
        return msg.template
    if msg.kind == "flood":
        return "heavy-rain" if msg.metric == "rain_mm_h" else "flood-level"
    if msg.kind == "air":
        return "air-quality"
    if msg.kind == "water":
        if msg.metric != "turbidity_ntu":
            return "water-quality"
        # Boil-water advice only where people drink the water (issue 14): a registered
        # drinking-water point; sea, estuary and river water gets contact advice.
        return "water-turbidity" if msg.drinking_water else "surface-water-turbidity"
    return "litter"


def _template(msg: AlertMessage, language: Language) -> _Template:
    key = template_key(msg)
    if key == "flood-level":
        # advisory has no flood stage of its own: it reads as a watch.
        stage = "watch" if msg.severity == "advisory" else msg.severity
        return _FLOOD[stage][language]
    try:
        return _TEMPLATES[key][language]
    except KeyError:
        msg_ = f"no alert text template {key!r}; known: {', '.join(TEMPLATE_KEYS)}"
        raise ValueError(msg_) from None


def _fields(msg: AlertMessage, language: Language, tz: tzinfo, *, sms: bool) -> dict[str, str]:
    place = place_name(msg.area.name, language, msg.area.name_km)
    if language == "km" and place and not ("\u1780" <= place[0] <= "\u17ff"):
        place = " " + place  # "នៅ{place}" joins Khmer words; a Latin name needs a space
    # The reading's time: the value below is the reading that crossed the level.
    full, short = format_time(msg.observed_at or msg.sent, language, tz)
    ascii_units = sms and language == "en"
    fields = {
        "value": format_number(msg.value, language),
        "threshold": format_number(msg.threshold, language),
        "unit": unit_text(msg.unit, language, sms_safe=ascii_units),
        "place": place,
        "time": full,
        "time_short": short,
        "device": msg.device_id,
        "metric": metric_name(msg.metric, language),
    }
    if msg.kind == "air":
        category = _air_category(msg)
        en, km = _AQI_NAMES[category]
        advice, voice_advice = _AQI_ADVICE[category][language]
        fields["category"] = en if language == "en" else km
        fields["category_upper"] = en.upper()
        fields["advice"], fields["voice_advice"] = advice, voice_advice
        if msg.aqi is None:
            fields["aqi_clause"] = ""
        elif language == "en":
            fields["aqi_clause"] = f" (AQI {msg.aqi})"
        else:
            fields["aqi_clause"] = f" (សន្ទស្សន៍គុណភាពខ្យល់ {khmer_digits(str(msg.aqi))})"
    return fields


# A unit-less metric (pH) leaves "5.1  in" or "6.5 )": close those gaps after filling.
_GAPS: Final = ((re.compile(r" {2,}"), " "), (re.compile(r" ([)។.,:;])"), r"\1"))


def _fill(template: _Template, fields: Mapping[str, str], prefix: str) -> _Template:
    def f(text: str) -> str:
        filled = text.format_map(fields)
        for pattern, replacement in _GAPS:
            filled = pattern.sub(replacement, filled)
        return nfc(filled.strip())

    return _Template(
        event=f(template.event),
        headline=prefix + f(template.headline),
        description=f(template.description),
        instruction=f(template.instruction),
        voice=prefix + f(template.voice),
        sms=prefix + f(template.sms),
    )


def render(msg: AlertMessage, language: Language, tz: tzinfo = ICT) -> AlertTexts:
    """The texts of `msg` in `language`, filled with value, unit, place and local time.

    A resolved alert gets the all-clear texts under the same event name. When the rule
    gave its own titles (`title_en` / `title_km`), they are the headline: the rules file
    is where a city tailors wording.
    """
    fields = _fields(msg, language, tz, sms=False)
    sms_fields = _fields(msg, language, tz, sms=True)
    prefix = _STATUS_PREFIX.get(msg.status, {}).get(language, "")
    base = _template(msg, language)
    if msg.state == "resolved":
        event = base.event.format_map(fields)
        extra = {"event": event, "event_lower": event[:1].lower() + event[1:]}
        filled = _fill(_ALL_CLEAR[language], {**fields, **extra}, prefix)
        sms_text = _fill(_ALL_CLEAR[language], {**sms_fields, **extra}, prefix).sms
    else:
        filled = _fill(base, fields, prefix)
        sms_text = _fill(base, sms_fields, prefix).sms
    title = msg.title_en if language == "en" else msg.title_km
    headline = prefix + nfc(title) if title and msg.state != "resolved" else filled.headline
    return AlertTexts(
        language=CAP_LANGUAGE[language],
        event=filled.event,
        headline=headline,
        description=filled.description,
        instruction=filled.instruction,
        voice=filled.voice,
        sms=sms_text,
    )


# An alert without an area leaves "at gauge g1 ()": drop the empty brackets; and a title
# that ends "... in {area}" a dangling " in" (Khmer " នៅ").
_EMPTY_PARENS: Final = re.compile(r" ?\(\s*\)")
_DANGLING_IN: Final = re.compile(r"\s+(?:in|នៅ)\s*$")


def fill_titles(
    title_en: str,
    title_km: str,
    *,
    value: float,
    unit: str,
    device: str | None,
    area: str | None,
    severity: str,
    category: str = "",
    area_km: str | None = None,
) -> tuple[str, str]:
    """A rule's `title_en` and `title_km` (rules.yaml) filled for one alert.

    English gets the fields as they are (`{value:g}`, the unit symbol, the area label,
    the severity and category words). Khmer gets Khmer words from the same tables the
    alert texts use: the severity (`SEVERITY_NAMES`), the AQI category, the unit as read,
    the value in Khmer digits with the decimal comma, and the area's Khmer name (`area_km`,
    else `place_name`'s table, else the label as given). Both NFC-normalised.
    """
    common = {"device": device or ""}
    en = {
        **common,
        "value": f"{value:g}",
        "unit": unit_text(unit, "en"),
        "area": area or "",
        "severity": severity_name(severity, "en"),
        "category": aqi_category_name(category, "en") if category else "",
    }
    km = {
        **common,
        "value": format_number(value, "km"),
        "unit": unit_text(unit, "km"),
        "area": place_name(area, "km", area_km) if area else "",
        "severity": severity_name(severity, "km"),
        "category": aqi_category_name(category, "km") if category else "",
    }

    def f(template: str, fields: Mapping[str, str]) -> str:
        filled = _EMPTY_PARENS.sub("", template.format_map(fields))
        filled = _DANGLING_IN.sub("", filled)
        for pattern, replacement in _GAPS:
            filled = pattern.sub(replacement, filled)
        return nfc(filled.strip())

    return f(title_en, en), f(title_km, km)


def render_all(msg: AlertMessage, tz: tzinfo = ICT) -> dict[Language, AlertTexts]:
    """English and Khmer texts of `msg`, English first (the order of the CAP info blocks)."""
    return {language: render(msg, language, tz) for language in LANGUAGES}

"""SMS texts of alerts, split into the parts a network carries. Pure: no I/O.

A text that fits the GSM 7-bit default alphabet (3GPP TS 23.038) travels as GSM-7: 160
septets in a single message, 153 per part of a concatenated one (the user data header
takes the rest); each character of the extension table (`^{}\\[~]|€` and form feed) costs
two septets, escape plus character. Anything else, Khmer included, travels as UCS-2: 70
UTF-16 code units alone, 67 per part (a character outside the BMP, such as an emoji,
costs two units).

Parts end only on grapheme-cluster boundaries, so no handset shows half a letter: a Khmer
syllable such as ស្ទឹ or ព្រះ stacks a subscript consonant under its base through the coeng
sign U+17D2, and a split between the coeng and the subscript would show a dangling sign on
one part and a bare consonant on the next. Among the boundaries, a part prefers to end
after a space or a zero-width space (Khmer marks word breaks with ZWSP), as long as that
keeps at least half a part's worth of text in it.

Grapheme segmentation uses `regex` (`\\X`): it follows each new Unicode release (Unicode
17 since 2025.10.20, 18 since 2026.9.29) and is a compiled C extension. Its current data
gives the coeng the Indic_Conjunct_Break=Linker property, so rule GB9c keeps ស្ទឹ in one
cluster; `grapheme` (Unicode 13, last released 2020) and `uniseg` 0.10 (Unicode 16) both
split it as ស្|ទឹ. As a tailoring that UAX #29 allows, we also never break right after a
coeng, so the guarantee does not rest on the installed Unicode data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import Final, Literal

import regex

from services.alerts import texts
from services.alerts.model import ICT, AlertMessage

Encoding = Literal["GSM-7", "UCS-2"]

GSM7_SINGLE: Final = 160
GSM7_PART: Final = 153
UCS2_SINGLE: Final = 70
UCS2_PART: Final = 67

# 3GPP TS 23.038 GSM 7-bit default alphabet (the basic table, without the escape code).
GSM7_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Its extension table: each costs an escape septet plus its own.
GSM7_EXTENSION: Final = frozenset("\f^{}\\[~]|€")

COENG: Final = "\u17d2"  # KHMER SIGN COENG: the next consonant is written as a subscript
ZWSP: Final = "\u200b"
_BREAK_AFTER: Final = frozenset(" \t\n" + ZWSP)
_GRAPHEME: Final = regex.compile(r"\X")

# Typographic characters an English alert text may contain, spelled in GSM-7.
_TO_GSM7: Final = str.maketrans(
    {
        "\u2013": "-",
        "\u2014": "-",
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "…": "...",
        "µ": "u",
        "³": "3",
        "²": "2",
        "°": "",
        "•": "-",
        "\u00a0": " ",
        ZWSP: "",
    }
)


@dataclass(frozen=True, slots=True)
class SmsSplit:
    """A text as the network carries it: its encoding and its parts (one if it fits)."""

    encoding: Encoding
    parts: tuple[str, ...]

    @property
    def text(self) -> str:
        return "".join(self.parts)


@dataclass(frozen=True, slots=True)
class AlertSms:
    """An alert's SMS: Khmer (UCS-2) and the English fallback for handsets without Khmer
    fonts (GSM-7, romanised place names)."""

    khmer: SmsSplit
    fallback: SmsSplit


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def gsm7_septets(text: str) -> int:
    """Septets `text` takes in GSM-7 (extension characters count 2)."""
    return sum(2 if ch in GSM7_EXTENSION else 1 for ch in text)


def ucs2_units(text: str) -> int:
    """UTF-16 code units `text` takes in a UCS-2 SMS (astral characters count 2)."""
    return len(text.encode("utf-16-le")) // 2


def to_gsm7(text: str) -> str:
    """`text` in the GSM-7 alphabet: typographic characters spelled out, others as `?`."""
    spelled = text.translate(_TO_GSM7)
    return "".join(ch if ch in GSM7_BASIC or ch in GSM7_EXTENSION else "?" for ch in spelled)


def graphemes(text: str) -> list[str]:
    """Extended grapheme clusters (UAX #29), never ending right after a Khmer coeng."""
    clusters: list[str] = []
    for cluster in _GRAPHEME.findall(text):
        if clusters and clusters[-1].endswith(COENG):
            clusters[-1] += cluster
        else:
            clusters.append(cluster)
    return clusters


def _split(
    clusters: Sequence[str], cost: Callable[[str], int], single: int, part: int
) -> list[str]:
    if sum(cost(c) for c in clusters) <= single:
        return ["".join(clusters)]
    # A cluster longer than a whole part (a long emoji sequence, a pile of marks) cannot
    # keep whole: it alone is cut between code points.
    units: list[str] = []
    for cluster in clusters:
        units.extend(cluster if cost(cluster) > part else (cluster,))
    parts: list[str] = []
    current: list[str] = []
    used = 0
    for unit in units:
        size = cost(unit)
        if used + size > part:
            cut = len(current)
            breaks = [i + 1 for i, c in enumerate(current) if c[0] in _BREAK_AFTER]
            if breaks and sum(cost(c) for c in current[: breaks[-1]]) >= part // 2:
                cut = breaks[-1]
            parts.append("".join(current[:cut]))
            current = current[cut:]
            used = sum(cost(c) for c in current)
        current.append(unit)
        used += size
    if current:
        parts.append("".join(current))
    return parts


def split_sms(text: str) -> SmsSplit:
    """Split `text` into SMS parts: GSM-7 (160/153 septets) if it fits that alphabet, else
    UCS-2 (70/67 code units); `"".join(parts) == text`."""
    clusters = graphemes(text)
    if is_gsm7(text):
        return SmsSplit("GSM-7", tuple(_split(clusters, gsm7_septets, GSM7_SINGLE, GSM7_PART)))
    return SmsSplit("UCS-2", tuple(_split(clusters, ucs2_units, UCS2_SINGLE, UCS2_PART)))


def sms_for(msg: AlertMessage, tz: tzinfo = ICT) -> AlertSms:
    """The Khmer SMS of an alert and its English GSM-7 fallback, both split into parts."""
    khmer = texts.render(msg, "km", tz).sms
    english = texts.render(msg, "en", tz).sms
    return AlertSms(khmer=split_sms(khmer), fallback=split_sms(to_gsm7(english)))

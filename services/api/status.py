"""What the stored numbers mean for people: device states, area categories, advice codes.

Pure functions (no I/O) so the thresholds are unit-testable and the pages and the API say
the same thing. The pages turn the codes into words in Khmer and English; the codes are
the contract (`/areas`, `/devices`, the residents' page).

Thresholds and their sources:
- Air: PM2.5 24-hour breakpoints of the US EPA AQI (2024 revision), which Cambodia's
  Ministry of Environment also reports against: good <= 9, moderate <= 35.4, unhealthy
  for sensitive groups <= 55.4, unhealthy <= 125.4, very unhealthy <= 225.4, then hazardous.
- Water: most sensors measure the sea, an estuary or a river (`schemas.city.Area.water`),
  not water at a tap, so drinking-water limits (WHO: 1 and 5 NTU) would call every river
  a warning. Only devices registered as drinking-water points (`devices.drinking_water`,
  migration 0013) form their own section, `drinking_water` (`section_of`), judged against
  the WHO guideline for drinking water: turbidity above 1 NTU an advisory, above 5 NTU a
  warning (boil before drinking); pH outside 6.5-8.5 an advisory. The page calls only this
  section "drinking water" and gives boil-water advice only for it and its alerts. Other
  water's levels follow the shipped water rules instead: turbidity above 25 NTU is an
  advisory (murky, the rule's all-clear level) and above 50 NTU a warning (the level at
  which the water-turbidity alert fires); dissolved oxygen below 2 mg/L is hypoxia (US EPA
  / NOAA), a warning; pH outside 6.5-8.5 in river or estuary water is an advisory.
- Flood: each gauge area's watch / warning / danger levels from the areas file. A water
  level flagged suspect still counts: a real fast rise can look like a spike to the checks,
  and a rise must never be hidden (issue 14). Only `fail` is left out.
- Alerts: an area's level of a kind is never below what its active alerts of that kind say
  (`alert_level`), so the page cannot read "Flooding: Normal" under "Flood danger".
  Only alerts whose rule's audience is `public` speak to residents (`for_residents`):
  device health (offline, stuck) and crews' tasks (a full litter boom) are `operators`
  alerts (services/alerts/rules.py, stored in `alerts.audience`).
- Litter: bin or boom fill level, low < 50 %, moderate < 80 %, high from 80 %.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from schemas.city import Area, City

__all__ = [
    "DEVICE_STATES",
    "AreaKindStatus",
    "DeviceState",
    "LatestValue",
    "air_category",
    "alert_level",
    "area_of",
    "device_state",
    "drinking_water_level",
    "flood_level",
    "for_residents",
    "kind_status",
    "litter_level",
    "section_of",
    "slug",
    "water_level",
]

DeviceState = Literal["normal", "suspect", "offline", "alert"]
DEVICE_STATES: tuple[DeviceState, ...] = ("normal", "suspect", "offline", "alert")
ConnStatus = Literal["online", "offline", "stuck"]

# QARTOD flags (IOOS): 3 suspect, 4 fail. Values flagged so do not speak for an area,
# except a suspect water level (see the module docstring).
_SUSPECT_FLAGS = frozenset({3, 4})
_FAIL = 4
# Rule types about the device, not the environment: operators' business, not residents'.
# A device further than this from every area's point belongs to none ("unassigned").
_MAX_AREA_DISTANCE_M = 15_000.0

_PM25_BREAKPOINTS: tuple[tuple[float, str], ...] = (
    (9.0, "good"),
    (35.4, "moderate"),
    (55.4, "unhealthy_sensitive"),
    (125.4, "unhealthy"),
    (225.4, "very_unhealthy"),
)


@dataclass(frozen=True)
class LatestValue:
    value: float
    quality: int


@dataclass(frozen=True)
class AreaKindStatus:
    """One kind in one area: how many devices, how many report, and the plain category."""

    devices: int
    online: int
    level: str  # a code the pages translate, e.g. "moderate", "warning", "no_data"
    value: float | None  # the value the level was read from (worst trusted one)
    metric: str | None
    by_alert: bool = False  # the level comes from an active alert, not from the values


def slug(text: str) -> str:
    """`"Stueng Hav"` -> `"stueng-hav"`: how a registry's free-text area meets an area id."""
    out = "".join(c if c.isalnum() else "-" for c in text.lower())
    return "-".join(part for part in out.split("-") if part)


def _distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    # Equirectangular: exact enough within a city, and cheap.
    x = math.radians(lon2 - lon1) * math.cos(math.radians((lat1 + lat2) / 2))
    y = math.radians(lat2 - lat1)
    return 6_371_000.0 * math.hypot(x, y)


def area_of(
    city: City, registry_area: str | None, lat: float | None, lon: float | None
) -> str | None:
    """The area id a device belongs to: the registry's area when it names one of the city's
    areas (by id or name), else the nearest area point within 15 km, else None."""
    if registry_area:
        key = slug(registry_area)
        for a in city.areas:
            if key in (a.id, slug(a.name)) or registry_area.strip().lower() == a.name.lower():
                return a.id
    if lat is None or lon is None:
        return None
    best: tuple[float, Area] | None = None
    for a in city.areas:
        d = _distance_m(lat, lon, a.lat, a.lon)
        if best is None or d < best[0]:
            best = (d, a)
    if best is None or best[0] > _MAX_AREA_DISTANCE_M:
        return None
    return best[1].id


def device_state(
    conn: ConnStatus, in_alert: bool, latest: Mapping[str, LatestValue]
) -> DeviceState:
    """The map colour: an open alert wins, then silence, then doubtful data."""
    if in_alert:
        return "alert"
    if conn == "offline":
        return "offline"
    if conn == "stuck" or any(v.quality in _SUSPECT_FLAGS for v in latest.values()):
        return "suspect"
    return "normal"


def air_category(pm25_ugm3: float) -> str:
    for upper, name in _PM25_BREAKPOINTS:
        if pm25_ugm3 <= upper:
            return name
    return "hazardous"


def flood_level(level_m: float, area: Area | None) -> str:
    """normal / watch / warning / danger against the area's gauge levels."""
    if area is None or area.flood_levels is None:
        return "normal"
    f = area.flood_levels
    if level_m >= f.danger:
        return "danger"
    if level_m >= f.warning:
        return "warning"
    if level_m >= f.watch:
        return "watch"
    return "normal"


def water_level(metric: str, value: float) -> str:
    """ok / advisory / warning for river, estuary or sea water (module docstring)."""
    if metric == "turbidity_ntu":
        return "warning" if value > 50.0 else "advisory" if value > 25.0 else "ok"
    if metric == "dissolved_oxygen_mgl":
        return "warning" if value < 2.0 else "ok"
    if metric == "ph":
        return "ok" if 6.5 <= value <= 8.5 else "advisory"
    return "ok"


def litter_level(fill_pct: float) -> str:
    return "high" if fill_pct >= 80 else "moderate" if fill_pct >= 50 else "low"


# Per kind: the metrics that decide its level and the order of severity of the levels.
_ORDER: dict[str, tuple[str, ...]] = {
    "air": (
        "good",
        "moderate",
        "unhealthy_sensitive",
        "unhealthy",
        "very_unhealthy",
        "hazardous",
    ),
    "flood": ("normal", "watch", "warning", "danger"),
    "water": ("ok", "advisory", "warning"),
    "drinking_water": ("ok", "advisory", "warning"),
    "litter": ("low", "moderate", "high"),
}


def section_of(kind: str, drinking_water: bool) -> str:
    """The residents' page section a device's values (or its alerts) belong to: its kind,
    except that water from a registered drinking-water point is `drinking_water`."""
    return "drinking_water" if kind == "water" and drinking_water else kind


def drinking_water_level(metric: str, value: float) -> str | None:
    """ok / advisory / warning for a drinking-water point (WHO guideline values)."""
    if metric == "turbidity_ntu":
        return "warning" if value > 5.0 else "advisory" if value > 1.0 else "ok"
    if metric == "ph":
        return "ok" if 6.5 <= value <= 8.5 else "advisory"
    return None


def _level(kind: str, metric: str, value: float, area: Area | None) -> str | None:
    if kind == "air" and metric == "pm25_ugm3":
        return air_category(value)
    if kind == "flood" and metric == "water_level_m":
        return flood_level(value, area)
    if kind == "water" and metric in ("turbidity_ntu", "ph", "dissolved_oxygen_mgl"):
        if area is not None and area.coastal and metric == "ph":
            return None  # sea water's pH is buffered near 8.1: not a signal here
        return water_level(metric, value)
    if kind == "drinking_water":
        return drinking_water_level(metric, value)
    if kind == "litter" and metric == "fill_level_pct":
        return litter_level(value)
    return None


def kind_status(
    kind: str,
    area: Area | None,
    devices: Iterable[tuple[ConnStatus, Mapping[str, LatestValue]]],
) -> AreaKindStatus:
    """The worst trusted level among the area's reporting devices of one kind (or the
    `drinking_water` section, `section_of`).

    Offline devices and values flagged suspect or fail are left out: a broken sensor must
    not raise or calm a neighbourhood. A suspect water level is kept (a real fast rise may
    look like a spike); a failed one is not. No trusted value at all gives `no_data`.
    """
    order = _ORDER[kind]
    total = online = 0
    worst: tuple[int, str, float, str] | None = None
    for conn, latest in devices:
        total += 1
        if conn == "offline":
            continue
        online += 1
        for metric, lv in latest.items():
            if lv.quality in _SUSPECT_FLAGS and not (
                metric == "water_level_m" and lv.quality != _FAIL
            ):
                continue
            level = _level(kind, metric, lv.value, area)
            if level is None:
                continue
            rank = order.index(level)
            if worst is None or rank > worst[0]:
                worst = (rank, level, lv.value, metric)
    if worst is None:
        return AreaKindStatus(total, online, "no_data", None, None)
    return AreaKindStatus(total, online, worst[1], worst[2], worst[3])


# What an active alert of each severity says about its kind's level in its area.
_ALERT_LEVEL: dict[str, dict[str, str]] = {
    "flood": {"advisory": "watch", "watch": "watch", "warning": "warning", "danger": "danger"},
    # As the shipped AQI rule grades them (deploy/alerts/rules.yaml, air-aqi severities):
    # an advisory is "unhealthy for sensitive groups" (AQI 101-150); the page showed
    # "Moderate" under an active AQI 116 advisory for the same area.
    "air": {
        "advisory": "unhealthy_sensitive",
        "watch": "unhealthy",
        "warning": "very_unhealthy",
        "danger": "hazardous",
    },
    "water": {
        "advisory": "advisory",
        "watch": "warning",
        "warning": "warning",
        "danger": "warning",
    },
    "litter": {"advisory": "moderate", "watch": "high", "warning": "high", "danger": "high"},
}
_ALERT_LEVEL["drinking_water"] = _ALERT_LEVEL["water"]


def for_residents(audience: str | None) -> bool:
    """Whether an alert of `audience` (its rule's, `alerts.audience`) reaches residents:
    only `public` ones; the rule says so, no guess from its type or metric."""
    return audience == "public"


def alert_level(status: AreaKindStatus, kind: str, severities: Iterable[str]) -> AreaKindStatus:
    """`status` raised to at least what the area's active alerts of `kind` say: a page may
    show the sensors' latest values calmer than an alert only while no alert is open."""
    order = _ORDER[kind]
    levels = [_ALERT_LEVEL[kind][s] for s in severities if s in _ALERT_LEVEL[kind]]
    if not levels:
        return status
    worst = max(levels, key=order.index)
    if status.level != "no_data" and order.index(status.level) >= order.index(worst):
        return status
    return AreaKindStatus(status.devices, status.online, worst, status.value, status.metric, True)

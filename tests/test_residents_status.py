"""What the residents' page says per area, as pure functions (services/api/status.py).

No stack: the level codes `/areas` serves are computed here from plain values, so these
tests pin the rules the page relies on. The page itself is checked in a real browser in
tests/test_pages.py.
"""

from __future__ import annotations

import pytest

from schemas.city import load_city
from services.api.status import (
    AreaKindStatus,
    LatestValue,
    alert_level,
    for_residents,
    kind_status,
    section_of,
)

CITY = load_city()
MOUTH = CITY.area("prek-toek-sap-mouth")  # danger level 3.0 m


def test_a_suspect_fast_rise_still_sets_the_flood_level_a_failed_value_does_not() -> None:
    # QARTOD 3 (suspect): a real 1 m rise in minutes can look like a spike to the checks.
    suspect = kind_status("flood", MOUTH, [("online", {"water_level_m": LatestValue(3.4, 3)})])
    assert suspect.level == "danger"
    failed = kind_status("flood", MOUTH, [("online", {"water_level_m": LatestValue(3.4, 4)})])
    assert failed.level == "no_data"
    # Other metrics' suspect values still do not speak for the area.
    air = kind_status("air", None, [("online", {"pm25_ugm3": LatestValue(300.0, 3)})])
    assert air.level == "no_data"


@pytest.mark.parametrize(
    ("kind", "severity", "level"),
    [
        ("flood", "danger", "danger"),
        ("flood", "warning", "warning"),
        ("flood", "advisory", "watch"),
        ("air", "warning", "very_unhealthy"),
        ("air", "advisory", "unhealthy_sensitive"),  # the AQI rule's advisory: AQI 101-150
        ("water", "advisory", "advisory"),
        ("litter", "advisory", "moderate"),
    ],
)
def test_an_active_alert_raises_a_calmer_area_level_to_its_own(
    kind: str, severity: str, level: str
) -> None:
    calm = {"flood": "normal", "air": "good", "water": "ok", "litter": "low"}[kind]
    st = AreaKindStatus(devices=2, online=2, level=calm, value=0.4, metric="m")
    raised = alert_level(st, kind, [severity])
    assert (raised.level, raised.by_alert) == (level, True)
    # with no sensor value at all, the alert still speaks
    assert alert_level(AreaKindStatus(0, 0, "no_data", None, None), kind, [severity]).level == level


def test_an_alert_never_lowers_what_the_values_say() -> None:
    st = AreaKindStatus(devices=1, online=1, level="danger", value=3.4, metric="water_level_m")
    assert alert_level(st, "flood", ["watch"]) == st
    assert alert_level(st, "flood", []) == st


@pytest.mark.parametrize(
    ("audience", "shown"), [("public", True), ("operators", False), (None, False)]
)
def test_only_alerts_whose_rule_names_the_public_as_audience_reach_residents(
    audience: str | None, shown: bool
) -> None:
    # The rule's audience decides (offline, stuck and litter-boom-full are `operators`),
    # not a guess from the rule type or metric as before issue 14's audience field.
    assert for_residents(audience) is shown


def test_water_is_named_for_what_the_sensors_measure_from_the_area_type() -> None:
    by_type = {a.type: a.water for a in CITY.areas}
    assert by_type == {
        "beach": "sea",
        "coast": "sea",
        "harbour": "sea",
        "river_mouth": "estuary",
        "district": "river",
    }


def test_ordinary_river_turbidity_is_not_a_warning() -> None:
    """River water at 6-10 NTU is ordinary (the drinking-water 5 NTU limit does not apply to a
    river); the page warns where the water-turbidity alert does (50 NTU)."""
    area = CITY.area("mittapheap")
    ordinary = kind_status("water", area, [("online", {"turbidity_ntu": LatestValue(8.0, 1)})])
    assert ordinary.level == "ok"
    murky = kind_status("water", area, [("online", {"turbidity_ntu": LatestValue(60.0, 1)})])
    assert murky.level == "warning"


def test_only_a_registered_drinking_water_point_is_judged_and_named_as_drinking_water() -> None:
    """Issue 14: water from a device registered as a drinking-water point is its own section,
    judged against the WHO drinking-water guideline (8 NTU: boil before drinking); the same
    value from a river or estuary sensor stays ordinary river water."""
    assert section_of("water", True) == "drinking_water"
    assert section_of("water", False) == "water"
    assert section_of("flood", True) == "flood"  # the flag means nothing for other kinds
    area = CITY.area("mittapheap")
    tap = kind_status("drinking_water", area, [("online", {"turbidity_ntu": LatestValue(8.0, 1)})])
    assert tap.level == "warning"
    cloudy = kind_status(
        "drinking_water", area, [("online", {"turbidity_ntu": LatestValue(2.0, 1)})]
    )
    assert cloudy.level == "advisory"
    # an active water alert from a drinking-water point raises the drinking-water section
    calm = kind_status("drinking_water", area, [("online", {"turbidity_ntu": LatestValue(0.5, 1)})])
    assert calm.level == "ok"
    assert alert_level(calm, "drinking_water", ["warning"]).level == "warning"

"""One CAP `<area>` per alert, whichever channel builds it, and Khmer that is Khmer.

Pure tests: no stack. The API's CAP (`api.cap_message`, from the alerts table's row) and the
delivery's (`notice.build_notice`, from the Kafka event) are built from the same alert and
compared; the shipped rules' titles and texts are rendered for every area of the shipped
areas file and checked for English left in the Khmer.
"""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from lxml import etree

from schemas.city import CityError as AreasError
from schemas.city import load_city, parse_city
from schemas.registry import Kind, metric_spec
from services.alerts import texts
from services.alerts.api import cap_message
from services.alerts.areas import CityAreas, cap_origin, city_areas, default_areas
from services.alerts.cap import CAP_NS, build_cap, validate_cap
from services.alerts.delivery.notice import AlertEvent, Earlier, build_notice
from services.alerts.model import AlertMessage, Area, CapSource
from services.alerts.rules import load_rules
from services.alerts.titles import rule_titles
from services.common.settings import Settings
from tests.harness import REPO

NS = {"cap": CAP_NS}
T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
SOURCE = CapSource(base_url="https://alerts.example")
CITY = load_city()
CITY_AREAS = default_areas()
KHMER = re.compile("[\u1780-\u17ff]")


def _areas_of(xml: bytes) -> list[bytes]:
    """Each info block's `<area>`, serialised: what a CAP consumer reads as the place."""
    doc = etree.fromstring(xml)
    return [etree.tostring(a, method="c14n") for a in doc.findall("cap:info/cap:area", NS)]


def _both_channels(
    area: str | None, transitions: tuple[str, ...], device: str | None = "gauge-7"
) -> tuple[bytes, bytes]:
    """The API's and the delivery's CAP for the same alert at its last transition (`device`
    None: an area's alert, as a combined rule raises)."""
    alert_id = "7b0c9e5e-8f7d-4a55-9c1e-3f0c2b9a6d11"
    times = [T0 + timedelta(minutes=10 * i) for i in range(len(transitions))]
    state = "resolved" if transitions[-1] == "resolved" else "firing"
    row: dict[str, Any] = {
        "alert_id": alert_id, "rule_id": "flood-level", "device_id": device,
        "kind": "flood", "metric": "water_level_m", "severity": "warning", "state": state,
        "value": 2.7, "threshold": 2.5, "started_at": T0, "status": "Actual", "area": area,
        "title_en": "Flood warning", "title_km": "ការព្រមានទឹកជំនន់",
        # The registry's position of the device: the API has it, the Kafka event does not.
        "device_lat": 10.61, "device_lon": 103.52,
    }  # fmt: skip
    # Each message is issued a little after its reading (the engine's lag, a backlog).
    issued = [at + timedelta(minutes=3, seconds=7) for at in times]
    events = [
        {"state": t, "value": 2.7, "at": at, "recorded_at": i}
        for t, at, i in zip(transitions, times, issued, strict=True)
    ]
    api_xml = build_cap(cap_message(row, events, SOURCE), SOURCE)
    event = AlertEvent.model_validate(
        {
            "event_id": "42", "alert_id": alert_id, "transition": transitions[-1],
            "value": 2.7, "at": times[-1], "rule_id": "flood-level", "device_id": device,
            "area": area, "kind": "flood", "metric": "water_level_m", "severity": "warning",
            "threshold": 2.5, "title_en": "Flood warning", "title_km": "ការព្រមានទឹកជំនន់",
            "issued_at": issued[-1], "started_at": T0,
        }
    )  # fmt: skip
    earlier = [
        Earlier(i, at, sent)
        for i, (at, sent) in enumerate(zip(times[:-1], issued[:-1], strict=True))
    ]
    notice = build_notice(event, seq=len(times) - 1, earlier=earlier, source=SOURCE)
    return api_xml, notice["cap"].encode()


@pytest.mark.parametrize("area", ["stueng-hav", "Stueng Hav", "otres-beach", "t-nowhere", None])
@pytest.mark.parametrize("transitions", [("firing",), ("firing", "escalated", "resolved")])
def test_api_and_delivery_cap_of_one_alert_carry_the_same_area(
    area: str | None, transitions: tuple[str, ...]
) -> None:
    api_xml, delivered_xml = _both_channels(area, transitions)
    for xml in (api_xml, delivered_xml):
        validate_cap(xml)  # OASIS's CAP 1.2 schema
    assert etree.fromstring(api_xml).findtext("cap:identifier", namespaces=NS) == (
        etree.fromstring(delivered_xml).findtext("cap:identifier", namespaces=NS)
    )
    assert _areas_of(api_xml) == _areas_of(delivered_xml)


@pytest.mark.parametrize("transitions", [("firing",), ("firing", "escalated", "resolved")])
def test_api_and_delivery_send_the_identical_cap_message_sent_at_its_issue_time(
    transitions: tuple[str, ...],
) -> None:
    """One identifier, one message: byte for byte the same from the API and from delivery,
    with `<sent>` the issue time of the last transition and `references` the issue times of
    the earlier ones, never the readings' times."""
    api_xml, delivered_xml = _both_channels("stueng-hav", transitions)
    assert api_xml == delivered_xml
    doc = etree.fromstring(api_xml)
    n = len(transitions) - 1
    issued = T0 + timedelta(minutes=10 * n, seconds=187)
    assert doc.findtext("cap:sent", namespaces=NS) == issued.astimezone(SOURCE.tz).isoformat()
    refs = (doc.findtext("cap:references", namespaces=NS) or "").split()
    assert [datetime.fromisoformat(r.split(",")[2]) for r in refs] == [
        T0 + timedelta(minutes=10 * i, seconds=187) for i in range(n)
    ]
    onsets = {i.findtext("cap:onset", namespaces=NS) for i in doc.findall("cap:info", NS)}
    assert onsets == {T0.astimezone(SOURCE.tz).isoformat()}


def test_cap_settings_name_the_sender_contact_and_the_public_page() -> None:
    settings = Settings(
        cap={"sender": "ews@kh.example", "web_base_url": "https://alerts.kh.example/",
             "contact": "1294"}
    )  # fmt: skip
    src = cap_origin(settings).source
    assert (src.sender, src.contact) == ("ews@kh.example", "1294")
    assert src.web_url("a1") == "https://alerts.kh.example/alerts/a1.html"
    assert src.cap_url("a1") == "https://alerts.kh.example/cap/a1.xml"
    # unset: the alerts service's own address (a demo on one machine)
    assert cap_origin(Settings()).source.web_url("a1") == "http://127.0.0.1:8103/alerts/a1.html"


def test_an_area_alert_of_a_combined_rule_is_delivered_with_the_apis_cap() -> None:
    """A combined rule's alert belongs to an area, not a device: its event has no
    device_id, and delivery must still notify it with the CAP the API serves."""
    api_xml, delivered_xml = _both_channels("prey-nob", ("firing",), device=None)
    validate_cap(delivered_xml)
    assert _areas_of(api_xml) == _areas_of(delivered_xml)

    def device_parameter(xml: bytes) -> list[str | None]:
        return [
            p.findtext("cap:value", namespaces=NS)
            for p in etree.fromstring(xml).findall("cap:info/cap:parameter", NS)
            if p.findtext("cap:valueName", namespaces=NS) == "CityWatch:device"
        ]

    assert device_parameter(api_xml) == device_parameter(delivered_xml) == ["area:prey-nob"] * 2


def test_known_area_cap_has_its_circle_khmer_name_and_district_geocode() -> None:
    api_xml, _ = _both_channels("Stueng Hav", ("firing",))
    en, km = etree.fromstring(api_xml).findall("cap:info/cap:area", NS)
    assert en.findtext("cap:areaDesc", namespaces=NS) == "Stueng Hav (port and industrial coast)"
    assert km.findtext("cap:areaDesc", namespaces=NS) == "ស្ទឹងហាវ"
    for area in (en, km):
        assert area.findtext("cap:circle", namespaces=NS) == "10.755,103.58 3"
        codes = [
            (g.findtext("cap:valueName", namespaces=NS), g.findtext("cap:value", namespaces=NS))
            for g in area.findall("cap:geocode", NS)
        ]
        assert codes == [("NCDD", "1803")]


def test_unknown_area_is_the_city_extent_holding_every_area_with_the_province_code() -> None:
    areas = default_areas()
    got = areas.cap_area("t-nowhere")
    assert got == Area("T Nowhere", circle=areas.extent(), geocodes=(("ISO3166-2", "KH-18"),))
    assert areas.cap_area(None).name == "Sihanoukville"
    assert areas.cap_area(None).name_km == "ក្រុងព្រះសីហនុ"
    c = areas.extent()
    for a in CITY.areas:  # every area's edge lies inside the extent
        dy = (a.lat - c.lat) * 111.32
        dx = (a.lon - c.lon) * 111.32 * math.cos(math.radians(c.lat))
        assert (dx * dx + dy * dy) ** 0.5 + a.radius_m / 1000 <= c.radius_km


def test_every_shipped_area_has_a_khmer_name_and_an_ncdd_district_code() -> None:
    districts = {"mittapheap": "1801", "prey-nob": "1802", "stueng-hav": "1803",
                 "kampong-seila": "1804"}  # fmt: skip
    for a in CITY.areas:
        assert a.name_km and KHMER.search(a.name_km) and not re.search("[A-Za-z]", a.name_km)
        assert unicodedata.is_normalized("NFC", a.name_km)
        (name, code), *_ = a.geocodes
        assert name == "NCDD" and code in districts.values(), a.id
        if a.id in districts:
            assert code == districts[a.id]
        # found by id and by its English name alike
        assert default_areas().cap_area(a.id) == default_areas().cap_area(a.name)
    assert CITY.geocodes == (("ISO3166-2", "KH-18"),)


def test_the_builder_reads_the_areas_file_the_settings_name() -> None:
    settings = Settings()
    assert city_areas(settings.city_file) == default_areas()
    assert isinstance(default_areas(), CityAreas)


@pytest.mark.parametrize(
    ("geocodes", "why"),
    [({"NCDD": 1801}, "quote codes"), (["NCDD", "1801"], "must map"), ({"": "1"}, "quote")],
)
def test_areas_file_geocodes_must_be_named_strings(geocodes: Any, why: str) -> None:
    data = {"areas": [{"id": "a", "lat": 10.6, "lon": 103.5, "geocodes": geocodes}]}
    with pytest.raises(AreasError, match=why):
        parse_city(data)


# -- Khmer without English -----------------------------------------------------------------


def _latin_left(text: str, device: str) -> list[str]:
    """ASCII words left in a Khmer text once the device id and the symbols Khmer writing
    keeps (`texts.LATIN_IN_KHMER`: units, PM2.5, N95, the sender's name) are taken out."""
    text = text.replace(device, " ")
    for symbol in texts.LATIN_IN_KHMER:
        text = text.replace(symbol, " ")
    return re.findall("[A-Za-z]+", text)


RULES = load_rules(REPO / "deploy" / "alerts" / "rules.yaml")


@pytest.mark.parametrize("rule", RULES.rules, ids=lambda r: r.id)
def test_khmer_titles_and_texts_of_every_shipped_rule_have_no_english(rule: Any) -> None:
    device = "gauge-7"
    kind: Kind = rule.kind or "flood"
    metric = rule.metrics()[0] if rule.metrics() else ""
    spec = metric_spec(kind, metric) if metric else None
    categories = ("unhealthy_sensitive", "hazardous") if rule.id == "air-aqi" else ("",)
    for area_ in (*CITY.areas, None):
        area = area_.id if area_ is not None else None
        for severity in dict.fromkeys(rule.stages()):
            for category in categories:
                en, km = rule_titles(
                    rule, CITY_AREAS, value=2.75, device=device, area=area,
                    severity=severity, category=category,
                )  # fmt: skip
                assert not _latin_left(km, device), km
                assert unicodedata.is_normalized("NFC", km)
                if "{severity}" in rule.title_km:
                    assert texts.severity_name(severity, "km") in km
                if area_ is not None and "{area}" in rule.title_km:
                    assert area_.name_km in km
                    # English names the area by name, never by its id (issue 14)
                    assert area_.name.split(" (")[0] in en
                    assert area not in en
                for state in ("firing", "resolved"):
                    msg = AlertMessage(
                        alert_id="a-1", rule_id=rule.id, kind=kind, metric=metric,
                        severity=severity, state=state, value=2.75,
                        unit=spec.unit if spec else "", threshold=2.5, device_id=device,
                        area=default_areas().cap_area(area), onset=T0, sent=T0,
                        title_en=en, title_km=km,
                    )  # fmt: skip
                    t = texts.render(msg, "km")
                    for field in (t.event, t.headline, t.description, t.instruction,
                                  t.voice, t.sms):  # fmt: skip
                        assert not _latin_left(field, device), field
                        assert unicodedata.is_normalized("NFC", field)


def _titles(
    rule: Any, value: float, device: str, area: str | None, severity: str, category: str = ""
) -> tuple[str, str]:
    return rule_titles(
        rule, CITY_AREAS, value=value, device=device, area=area, severity=severity,
        category=category,
    )  # fmt: skip


def test_khmer_titles_say_the_severity_and_aqi_category_in_khmer() -> None:
    by_id = {r.id: r for r in RULES.rules}
    # flood-level is one alert per area (per: area): its title names the area, no gauge
    en, km = _titles(by_id["flood-level"], 3.2, "g1", "stueng-hav", "danger")
    assert en == "Flood danger in Stueng Hav: river level 3.2 m"
    assert km == "ទឹកជំនន់កម្រិតគ្រោះថ្នាក់ នៅ ស្ទឹងហាវ៖ កម្ពស់ទឹកទន្លេ ៣,២ ម៉ែត្រ"
    en, _ = _titles(by_id["litter-boom-full"], 85, "boom-11", "stueng-hav-estuary", "advisory")
    assert en == "Litter boom needs collection: 85 % full at boom-11 (Stueng Hav estuary)"
    en, km = _titles(by_id["air-aqi"], 160, "a1", "Stueng Hav", "watch", "unhealthy")
    # public titles name the area, not a device id (residents read them)
    assert en == "Air quality unhealthy: AQI 160 in Stueng Hav"
    en, _ = _titles(by_id["air-aqi"], 160, "a1", None, "watch", "unhealthy")
    assert en == "Air quality unhealthy: AQI 160"
    assert km.startswith("គុណភាពខ្យល់មិនល្អសម្រាប់សុខភាព៖ សន្ទស្សន៍គុណភាពខ្យល់ ១៦០")
    # an alert without an area leaves no empty brackets
    en, _ = _titles(by_id["device-offline"], 35, "d1", None, "advisory")
    assert en == "Device offline: d1 silent for 35 min"


def test_severity_words_are_the_flood_texts_stage_words() -> None:
    """One vocabulary: the Khmer severity in a rule's title is the word the flood texts use
    for that stage (watch ប្រុងប្រយ័ត្ន, warning ព្រមាន, danger គ្រោះថ្នាក់)."""
    for severity in ("watch", "warning", "danger"):
        msg = AlertMessage(
            alert_id="a-1", rule_id="r", kind="flood", metric="water_level_m",
            severity=severity, state="firing", value=2.75, unit="m", threshold=2.5,
            device_id="g1", area=default_areas().cap_area("stueng-hav"), onset=T0, sent=T0,
        )  # fmt: skip
        assert texts.severity_name(severity, "km") in texts.render(msg, "km").event

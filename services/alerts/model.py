"""The alert's data types: plain, frozen values that every part of the alerts service shares.

The rules, the engine, the CAP renderer, the texts and the delivery channels all speak of
an alert's severity, its area (a name, a circle, geocodes), its earlier messages and the
transition being announced. They live here, importing nothing else of CityWatch's alerts,
so the modules that build on them (`cap`, `texts`, `areas`, `rules`) form no import circle.

`AlertMessage` checks what CAP 1.2 would refuse (naive times, an Update without references)
when it is built, so a bad message fails where it is made, not where it is rendered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Final, Literal

from schemas.registry import Kind
from services.common.errors import CityWatchError

__all__ = [
    "ICT",
    "SEVERITIES",
    "AlertMessage",
    "AlertState",
    "Area",
    "CapError",
    "CapSource",
    "Certainty",
    "Circle",
    "MessageRef",
    "MsgType",
    "Severity",
    "Status",
    "Urgency",
    "cap_time",
    "message_identifier",
]

# An alert's stages, least to most severe; levels rules escalate along this order.
Severity = Literal["advisory", "watch", "warning", "danger"]
SEVERITIES: Final[tuple[Severity, ...]] = ("advisory", "watch", "warning", "danger")
# Indochina Time, the city's civil time (no daylight saving): texts and CAP show local time.
ICT: Final[tzinfo] = timezone(timedelta(hours=7), "ICT")

AlertState = Literal["firing", "acknowledged", "resolved"]
MsgType = Literal["Alert", "Update", "Cancel"]
Status = Literal["Actual", "Test", "Exercise"]
Certainty = Literal["Observed", "Likely", "Possible"]
# Who an alert is for (issue 14; the rule's `audience`, stored in `alerts.audience`):
# `public` alerts reach residents and public channels (CAP scope Public); `operators`
# alerts (a device's own health: offline, stuck, low battery) reach operator channels only
# and their CAP says scope Restricted.
Audience = Literal["public", "operators"]
# Rule types about a device's own health: an event or row that does not say its audience
# (written before migration 0012 / before the producer sent it) is for operators.
DEVICE_HEALTH_RULES: Final = frozenset({"offline", "stuck", "battery"})


def audience_of(audience: str | None, rule_type: str | None) -> Audience:
    """An alert's audience as stated, else the default for its rule type (see above)."""
    if audience in ("public", "operators"):
        return audience  # type: ignore[return-value]
    return "operators" if rule_type in DEVICE_HEALTH_RULES else "public"


CapSeverity = Literal["Minor", "Moderate", "Severe", "Extreme"]
Urgency = Literal["Immediate", "Expected", "Future", "Past"]

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
    `value` is the value of the reading that crossed the level and `observed_at` its
    reading time (the texts' "At {time}"; `sent` when unknown): a message states what
    raised it, not what the device reads when the message goes out.
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
    observed_at: datetime | None = None
    audience: Audience = "public"
    # The device is a registered drinking-water point: texts.py then gives drinking-water
    # advice (boil before drinking); other water (sea, estuary, river) gets contact advice.
    drinking_water: bool = False

    def __post_init__(self) -> None:
        for name in ("onset", "sent", "expires", "observed_at"):
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
    tz: tzinfo = ICT
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
        """CAP `<web>`: the alert's human-readable page (English and Khmer), not its JSON."""
        return f"{self.base_url.rstrip('/')}/alerts/{alert_id}.html"


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

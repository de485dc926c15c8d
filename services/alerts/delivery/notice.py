"""Alert events in, notifications out: the pure half of delivery (no I/O).

`AlertEvent` is the contract of `citywatch.alerts.v1` as this consumer reads it: fields
the producer does not send yet are optional and read as null, and `status` defaults to
Actual. `build_notice` turns one event (or a reminder of it) into the notification every
channel carries: the event, the CAP message type, the English and Khmer texts, the voice
script, the SMS parts and the CAP 1.2 XML. The webhook sends it as JSON, the e-mail renders
it, the MQTT retained state summarises it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    ValidationError,
    field_validator,
    model_validator,
)

from schemas.registry import Kind, metric_spec
from services.alerts import cap, model, sms, texts
from services.alerts.areas import CityAreas, default_areas
from services.alerts.model import Severity
from services.common.errors import CityWatchError

Transition = Literal["firing", "escalated", "deescalated", "acknowledged", "resolved"]
Reason = Literal["transition", "reminder", "escalation"]

STATE_OF: dict[str, model.AlertState] = {
    "firing": "firing",
    "escalated": "firing",
    "deescalated": "firing",
    "acknowledged": "acknowledged",
    "resolved": "resolved",
}


class EventError(CityWatchError, ValueError):
    """A record on the alerts topic is not an alert event; it is logged and skipped."""


class AlertEvent(BaseModel):
    """One alert transition as published on `citywatch.alerts.v1`."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: str
    alert_id: str
    transition: Transition
    value: float
    at: AwareDatetime
    rule_id: str
    rule_type: str | None = None
    device_id: str | None = None  # None for an area's alert (a combined rule)
    area: str | None = None
    kind: Kind
    # None for an alert about the device rather than a value (offline), as the engine's
    # Transition.metric and the `alerts.metric` column allow.
    metric: str | None = None
    severity: Severity
    previous_severity: Severity | None = None
    threshold: float | None = None
    title_en: str | None = None
    title_km: str | None = None
    status: model.Status = "Actual"
    # When the transition was recorded, i.e. the message issued (`alert_events.recorded_at`);
    # `at` is the reading time that caused it. CAP `<sent>` is the issue time. Producers
    # that predate it leave it out: `sent` then falls back to `at`.
    issued_at: AwareDatetime | None = None
    # When the alert's episode began (its first reading over the level): CAP `<onset>`.
    started_at: AwareDatetime | None = None
    # The reading that crossed the level (for a resolution, the first back below it): what
    # the CAP message states. Producers that predate it leave it out: `value`, `sent`.
    trigger_value: float | None = None
    trigger_at: AwareDatetime | None = None
    # Who the alert is for (`alerts.audience`, migration 0012): an `operators` alert goes to
    # operator channels only (config.py). Producers that predate it leave it out: the rule
    # type's default then (device health is for operators, `model.audience_of`).
    audience: model.Audience = "public"
    # Whether the alert's device is a registered drinking-water point (migration 0013): its
    # water texts then speak of drinking water and boiling; other water's of contact.
    drinking_water: bool = False

    @model_validator(mode="before")
    @classmethod
    def _default_audience(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("audience") is None:
            return {**data, "audience": model.audience_of(None, data.get("rule_type"))}
        return data

    @field_validator("event_id", "alert_id", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        # Today's producer sends the outbox's bigserial event_id as a number.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("status", mode="before")
    @classmethod
    def _default_status(cls, value: Any) -> Any:
        return "Actual" if value is None else value

    @property
    def state(self) -> model.AlertState:
        return STATE_OF[self.transition]

    @property
    def sent(self) -> datetime:
        """CAP `<sent>`: when this message was issued (the reading time for old producers)."""
        return self.issued_at or self.at

    @classmethod
    def parse(cls, raw: bytes) -> AlertEvent:
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            raise EventError(f"not an alert event: {exc.errors()[:3]}") from exc

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# -- MQTT topics ----------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def topic_area(area: str | None) -> str:
    """An area as one MQTT topic level: lower case, `-` for anything but letters and digits
    (an MQTT level may not hold `/`, `+` or `#`); `unassigned` when the alert has none."""
    return _slug(area) if area and _slug(area) else "unassigned"


def mqtt_topic(template: str, severity: str, area: str | None) -> str:
    return template.format(severity=severity, area=topic_area(area))


# -- notifications --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Earlier:
    """An earlier message of the same alert, as CAP `references` needs it: `at` is its
    reading time, `issued_at` when it was sent (CAP `sent`, which `references` repeats)."""

    seq: int
    at: datetime
    issued_at: datetime | None = None

    @property
    def sent(self) -> datetime:
        return self.issued_at or self.at


def msg_type_of(ev: AlertEvent, seq: int) -> model.MsgType:
    """Alert first, Update after; a rehearsal's end (Test/Exercise resolved) is a Cancel."""
    if ev.transition == "resolved" and ev.status != "Actual":
        return "Cancel"
    return "Alert" if seq == 0 and ev.transition == "firing" else "Update"


def alert_message(
    ev: AlertEvent,
    seq: int,
    earlier: list[Earlier],
    source: model.CapSource,
    msg_type: model.MsgType | None = None,
    areas: CityAreas | None = None,
) -> model.AlertMessage:
    """The CAP message of one event; its `<area>` from `areas` (the city's areas file,
    Sihanoukville when None), by the same rule as the API's (services/alerts/areas.py)."""
    metric = ev.metric or ""  # offline alerts concern no metric (as the API says)
    spec = metric_spec(ev.kind, metric) if metric else None
    msg_type = msg_type or msg_type_of(ev, seq)
    refs = tuple(
        model.MessageRef(source.sender, model.message_identifier(ev.alert_id, e.seq), e.sent)
        for e in earlier
    )
    return model.AlertMessage(
        alert_id=ev.alert_id,
        rule_id=ev.rule_id,
        kind=ev.kind,
        metric=metric,
        severity=ev.severity,
        state=ev.state,
        value=ev.value if ev.trigger_value is None else ev.trigger_value,
        observed_at=ev.trigger_at,
        unit=spec.unit if spec else "",
        threshold=ev.threshold if ev.threshold is not None else ev.value,
        device_id=ev.device_id or f"area:{ev.area}",  # as the API names an area's alert
        area=(areas or default_areas()).cap_area(ev.area),
        onset=ev.started_at or (earlier[0].at if earlier else ev.at),
        sent=ev.sent,
        seq=seq,
        msg_type=msg_type,
        status=ev.status,
        references=refs if msg_type != "Alert" else (),
        title_en=ev.title_en,
        title_km=ev.title_km,
        audience=ev.audience,
        drinking_water=ev.drinking_water,
    )


def build_notice(
    ev: AlertEvent,
    *,
    seq: int,
    earlier: list[Earlier],
    reason: Reason = "transition",
    reminder: int = 0,
    source: model.CapSource | None = None,
    areas: CityAreas | None = None,
) -> dict[str, Any]:
    """The notification of one event (or its `reminder`-th reminder), as a JSON-able dict.

    `areas` is the city the CAP `<area>` comes from (`city_areas(settings.city_file)`;
    the shipped city when None), the same the alerts API uses for the same identifier.

    CAP needs the earlier messages of an Update; when this consumer has not seen them (it
    started after the alert fired) the notification carries no CAP (`cap` is null) rather
    than a message with invented references. Texts and SMS are there either way.
    """
    src = source or model.CapSource()
    notice: dict[str, Any] = {
        "event": ev.dump(),
        "reason": reason,
        "reminder": reminder,
        "status": ev.status,
        "state": ev.state,
        "msg_type": msg_type_of(ev, seq),
        "identifier": model.message_identifier(ev.alert_id, seq),
    }
    if msg_type_of(ev, seq) != "Alert" and not earlier:
        msg = alert_message(ev, seq, [], src, "Alert", areas)  # for the texts only
        notice["cap"] = None
    else:
        msg = alert_message(ev, seq, earlier, src, areas=areas)
        notice["cap"] = cap.build_cap(msg, src).decode()
    rendered = texts.render_all(msg, src.tz)
    notice["texts"] = {
        lang: {
            "language": t.language,
            "event": t.event,
            "headline": t.headline,
            "description": t.description,
            "instruction": t.instruction,
            "voice": t.voice,
            "sms": t.sms,
        }
        for lang, t in rendered.items()
    }
    split = sms.sms_for(msg, src.tz)
    notice["sms"] = {
        "km": {"encoding": split.khmer.encoding, "parts": list(split.khmer.parts)},
        "fallback": {"encoding": split.fallback.encoding, "parts": list(split.fallback.parts)},
    }
    return notice


def encode(notice: dict[str, Any]) -> str:
    """The one serialisation of a notice: the webhook signs exactly these bytes."""
    return json.dumps(notice, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def subject(notice: dict[str, Any]) -> str:
    """E-mail subject: the English headline, then the Khmer one."""
    t = notice["texts"]
    prefix = "Reminder: " if notice["reason"] == "reminder" else ""
    prefix = "Escalated: " if notice["reason"] == "escalation" else prefix
    return f"{prefix}{t['en']['headline']} / {t['km']['headline']}"


def email_text(notice: dict[str, Any], languages: tuple[str, ...] = ("en", "km")) -> str:
    """The plain-text e-mail body: each language's headline, description and instruction."""
    blocks = []
    for lang in languages:
        t = notice["texts"][lang]
        blocks.append(f"{t['headline']}\n\n{t['description']}\n\n{t['instruction']}")
    ev = notice["event"]
    footer = (
        f"alert {ev['alert_id']} · {notice['msg_type']} · status {notice['status']} · "
        f"CAP identifier {notice['identifier']}"
    )
    return texts.nfc("\n\n-----\n\n".join(blocks) + f"\n\n-----\n{footer}\n")


def retained_state(severity: str, area: str | None, alerts: list[dict[str, Any]]) -> bytes:
    """The retained payload of `citywatch/alerts/{severity}/{area}`: the open alerts there.

    An empty payload clears the retained message (MQTT 3.1.1 section 3.3.1.3): a siren that
    subscribes after the all-clear sees nothing rather than a stale alarm.
    """
    if not alerts:
        return b""
    body = {"severity": severity, "area": area, "alerts": alerts}
    return json.dumps(body, ensure_ascii=False, sort_keys=True).encode()

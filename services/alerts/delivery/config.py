"""Who receives alerts, and when they are reminded: `deploy/alerts/subscribers.yaml`. Pure.

The rules file (`deploy/alerts/rules.yaml`) says *when* an alert fires; this file says
*who hears about it*. Keeping the two apart lets a city change its duty rota without
touching thresholds, and lets the rules file stay the alerts engine's alone.

- `subscribers`: each has a channel (`webhook` or `email`), its address or URL, for
  webhooks the HMAC secret, and filters (severity, kind, area; empty means all).
- `contact_lists`: named lists of subscribers.
- `rules`: per rule id, `remind_every` and `escalate_after` (durations such as `30m`,
  `2h`), the first contact list(s) and the second (escalation) contact list(s).

A transition goes to every subscriber whose filters match, and to the rule's first
contact lists. An alert still firing (not acknowledged) after `remind_every` is sent again
to the same people; after `escalate_after` it also goes to the second contact lists.
Test messages (CAP status Test, `citywatch alerts test`) go to every subscriber regardless
of filters: a rehearsal of the pipes must reach every pipe.

Every channel declares its `audience` (issue 14): a `public` channel hears only alerts whose
audience is `public`; an `operators` channel hears every alert, including `operators` ones
(a device's own health: offline, stuck, low battery), which never reach a public channel.
Defaults: the MQTT retained topics (`citywatch/alerts/{severity}/{area}`, read by street
displays and sirens) are `public` (`settings.delivery.mqtt_audience`); a webhook or e-mail
subscriber is `operators` (this file is the duty rota), so a subscriber that speaks to the
public (a residents' SMS gateway, a broadcaster's webhook) must say `audience: public`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from schemas.registry import Kind
from services.alerts.model import Audience, Severity
from services.common.errors import ConfigError
from services.common.settings import is_loopback

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> object:
    """`90s`, `30m`, `2h`, `1d` (or seconds as a number) -> timedelta."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=float(value))
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            msg = f"duration {value!r} must look like 90s, 30m, 2h or 1d"
            raise ValueError(msg)
        return timedelta(seconds=float(m.group(1)) * _UNIT_S[m.group(2)])
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Filters(_Model):
    """What a subscriber wants; an empty list means every value."""

    severity: tuple[Severity, ...] = ()
    kind: tuple[Kind, ...] = ()
    area: tuple[str, ...] = ()

    def match(self, severity: str, kind: str, area: str | None) -> bool:
        return (
            (not self.severity or severity in self.severity)
            and (not self.kind or kind in self.kind)
            and (not self.area or (area is not None and area in self.area))
        )


# The shortest webhook secret accepted: an HMAC key guessable from a short word protects
# nothing (16 characters of a password generator are about 95 bits).
MIN_SECRET = 16


class Subscriber(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    channel: Literal["webhook", "email"]
    url: str | None = Field(default=None, pattern=r"^https?://")
    secret: SecretStr | None = None
    address: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$")
    language: Literal["both", "en", "km"] = "both"
    # `public`: hears public alerts only; `operators` (the default): every alert.
    audience: Audience = "operators"
    filters: Filters = Filters()

    @model_validator(mode="after")
    def _fits_channel(self) -> Subscriber:
        if self.channel == "webhook" and (self.url is None or self.secret is None):
            raise ValueError(f"webhook subscriber {self.name!r} needs a url and a secret")
        if self.channel == "webhook":
            assert self.url is not None and self.secret is not None
            # The alert, its CAP and the signature cross the network: TLS, except to a
            # receiver on this machine; and a signature needs a secret worth the name.
            host = urlsplit(self.url).hostname or ""
            if self.url.startswith("http://") and not is_loopback(host):
                msg = f"webhook subscriber {self.name!r}: {self.url} must be https://"
                raise ValueError(msg)
            if len(self.secret.get_secret_value()) < MIN_SECRET:
                msg = f"webhook subscriber {self.name!r}: secret shorter than {MIN_SECRET}"
                raise ValueError(msg)
        if self.channel == "email" and self.address is None:
            raise ValueError(f"e-mail subscriber {self.name!r} needs an address")
        return self


class RuleContacts(_Model):
    remind_every: Duration | None = None
    escalate_after: Duration | None = None
    contacts: tuple[str, ...] = ()
    escalation_contacts: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _positive(self) -> RuleContacts:
        for name in ("remind_every", "escalate_after"):
            value = getattr(self, name)
            if value is not None and value <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        if self.escalate_after is not None and not self.escalation_contacts:
            raise ValueError("escalate_after needs escalation_contacts")
        return self


class SubscribersFile(_Model):
    subscribers: tuple[Subscriber, ...] = ()
    contact_lists: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    rules: dict[str, RuleContacts] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references(self) -> SubscribersFile:
        names = [s.name for s in self.subscribers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate subscriber names: {dupes}")
        for list_name, members in self.contact_lists.items():
            unknown = sorted(set(members) - set(names))
            if unknown:
                raise ValueError(f"contact list {list_name!r} names unknown subscribers {unknown}")
        for rule_id, rc in self.rules.items():
            unknown = sorted(set(rc.contacts + rc.escalation_contacts) - set(self.contact_lists))
            if unknown:
                raise ValueError(f"rule {rule_id!r} names unknown contact lists {unknown}")
        return self

    def subscriber(self, name: str) -> Subscriber | None:
        return next((s for s in self.subscribers if s.name == name), None)

    def _members(self, lists: tuple[str, ...]) -> list[Subscriber]:
        wanted = {m for name in lists for m in self.contact_lists.get(name, ())}
        return [s for s in self.subscribers if s.name in wanted]

    def recipients(
        self,
        *,
        rule_id: str,
        severity: str,
        kind: str,
        area: str | None,
        status: str,
        audience: Audience = "public",
    ) -> list[Subscriber]:
        """Who gets a transition: filter matches and the rule's first contact lists, among
        the subscribers that hear the alert's `audience` (`hears`)."""
        if status == "Test":
            return [s for s in self.subscribers if hears(s.audience, audience)]
        rc = self.rules.get(rule_id)
        listed = {s.name for s in self._members(rc.contacts)} if rc else set()
        return [
            s
            for s in self.subscribers
            if hears(s.audience, audience)
            and (s.name in listed or s.filters.match(severity, kind, area))
        ]

    def reminder_recipients(
        self, rule_id: str, *, escalated: bool, audience: Audience = "public"
    ) -> list[Subscriber]:
        """Who is reminded: the first contact lists, and once escalated the second ones too.

        A rule without contact lists reminds nobody by list; the service then reminds the
        subscribers that got the alert (see `DeliveryService`)."""
        rc = self.rules.get(rule_id)
        if rc is None:
            return []
        lists = rc.contacts + (rc.escalation_contacts if escalated else ())
        return [s for s in self._members(lists) if hears(s.audience, audience)]

    def escalation_recipients(
        self, rule_id: str, audience: Audience = "public"
    ) -> list[Subscriber]:
        rc = self.rules.get(rule_id)
        members = self._members(rc.escalation_contacts) if rc else []
        return [s for s in members if hears(s.audience, audience)]


def hears(channel: Audience, alert: Audience) -> bool:
    """Whether a channel of audience `channel` may carry an alert of audience `alert`: an
    operators' channel carries everything, a public one only public alerts."""
    return channel == "operators" or alert == "public"


def load_subscribers(path: Path) -> SubscribersFile:
    """Read and validate the subscribers file; a missing file means nobody subscribes."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return SubscribersFile()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read alert subscribers {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"alert subscribers {path} are not valid YAML: {exc}") from exc
    try:
        return SubscribersFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"alert subscribers {path} are invalid:\n{exc}") from exc

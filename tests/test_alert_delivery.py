"""Alert delivery on the real stack: Kafka in, Mosquitto (with auth), PostgreSQL, and real
webhook receivers and a real SMTP server (aiosmtpd) on 127.0.0.1 out.

Events are produced as JSON records to the test's own alerts topic, as the alerts service
publishes them; the delivery service runs in the test's event loop with its own consumer
group. Every check reads the source: what the receivers got, the retained state a fresh
MQTT subscriber sees, and the delivery tables.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import asyncpg
import paho.mqtt.client as mqtt
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiosmtpd.controller import Controller
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from services.alerts.delivery import DeliveryService
from services.alerts.delivery.channels import SIGNATURE_HEADER, TIMESTAMP_HEADER
from services.alerts.delivery.config import SubscribersFile
from services.alerts.delivery.notice import topic_area
from services.common.kafka import client_options
from services.common.settings import KAFKA_ADMIN, DeliverySettings, Settings, TopicSettings
from tests.harness import REPO, Namespace, free_port, wait_until

pytestmark = pytest.mark.stack

SECRET = "s3cret-for-tests"


# -- real receivers on loopback ---------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


@dataclass
class WebhookReceiver:
    """An aiohttp server: each path answers 500 for its first `fail_first[path]` requests."""

    fail_first: dict[str, int] = field(default_factory=dict)
    got: dict[str, list[Received]] = field(default_factory=dict)
    answered: dict[str, list[int]] = field(default_factory=dict)
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        path = request.match_info["name"]
        body = await request.read()
        codes = self.answered.setdefault(path, [])
        code = 500 if len(codes) < self.fail_first.get(path, 0) else 200
        codes.append(code)
        if code == 200:
            self.got.setdefault(path, []).append(Received(dict(request.headers), body))
        return web.Response(status=code)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"


class SmtpSink:
    """aiosmtpd handler: keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = message_from_bytes(envelope.original_content, policy=policy.default)
        with self._lock:
            self.messages.append(msg)  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    def snapshot(self) -> list[EmailMessage]:
        with self._lock:
            return list(self.messages)


@dataclass
class Rig:
    ns: Namespace
    settings: Settings
    hooks: WebhookReceiver
    smtp: SmtpSink
    service: DeliveryService
    producer: AIOKafkaProducer
    db: asyncpg.Connection

    @property
    def area(self) -> str:
        return f"{self.ns.suffix} Riverside"

    def event(self, alert_id: str, transition: str, **over: Any) -> dict[str, Any]:
        ev: dict[str, Any] = {
            "event_id": f"{self.ns.suffix}-{uuid.uuid4().hex[:12]}",
            "alert_id": alert_id,
            "transition": transition,
            "value": 2.7,
            "at": datetime.now(UTC).isoformat(),
            "rule_id": "flood-level-warning",
            "rule_type": "threshold",
            "device_id": f"{self.ns.device_prefix}gauge-1",
            "area": self.area,
            "kind": "flood",
            "metric": "water_level_m",
            "severity": "warning",
            "previous_severity": None,
            "threshold": 2.5,
            "title_en": None,
            "title_km": None,
        }
        return {**ev, **over}

    async def send(self, *events: dict[str, Any]) -> None:
        for ev in events:
            await self.producer.send_and_wait(
                self.ns.alerts_topic,
                key=ev["alert_id"].encode(),
                value=json.dumps(ev, ensure_ascii=False).encode(),
            )

    async def delivery(self, event_id: str, channel: str, target: str) -> asyncpg.Record | None:
        return await self.db.fetchrow(
            "SELECT * FROM alert_deliveries WHERE event_id = $1 AND channel = $2 AND target = $3",
            event_id,
            channel,
            target,
        )

    async def delivered(self, event_id: str, channel: str, target: str) -> bool:
        row = await self.delivery(event_id, channel, target)
        return row is not None and row["status"] == "delivered"


def _subscribers(
    hooks: WebhookReceiver, names: list[str], rules: dict[str, Any]
) -> SubscribersFile:
    dead_port = free_port()  # bound and released at once: nothing listens there
    catalogue: dict[str, dict[str, Any]] = {
        "flaky": {"channel": "webhook", "url": hooks.url("flaky"), "secret": SECRET},
        "ok": {"channel": "webhook", "url": hooks.url("ok"), "secret": SECRET},
        "dead": {
            "channel": "webhook",
            "url": f"http://127.0.0.1:{dead_port}/hook",
            "secret": SECRET,
        },
        "mail": {"channel": "email", "address": "duty@example.org"},
        # a channel that speaks to the public (a residents' SMS gateway): public alerts only
        "public": {"channel": "webhook", "url": hooks.url("public"), "secret": SECRET,
                   "audience": "public"},
        "primary": {"channel": "webhook", "url": hooks.url("primary"), "secret": SECRET,
                    "filters": {"severity": ["danger"]}},
        "second": {"channel": "webhook", "url": hooks.url("second"), "secret": SECRET,
                   "filters": {"severity": ["danger"]}},
    }  # fmt: skip
    contact_lists = {"duty": ["primary"], "chiefs": ["second"]} if rules else {}
    return SubscribersFile.model_validate(
        {
            "subscribers": [{"name": n, **catalogue[n]} for n in names],
            "contact_lists": contact_lists,
            "rules": rules,
        }
    )


@pytest.fixture
async def rig_factory(ns: Namespace, dbcon: asyncpg.Connection) -> AsyncIterator[Any]:
    stack = ns.settings
    hooks = WebhookReceiver(fail_first={"flaky": 2})
    app = web.Application()
    app.add_routes([web.post("/{name}", hooks.handle)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    hooks.port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hooks.port).start()
    smtp = SmtpSink()
    controller = Controller(smtp, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings = stack.model_copy(
        update={
            "topics": TopicSettings(alerts=ns.alerts_topic),
            "delivery": DeliverySettings(
                group_id=f"delivery-{ns.suffix}",
                http_port=free_port(),
                smtp_host="127.0.0.1",
                smtp_port=controller.port,
                attempt_timeout_s=5,
                retry_initial_s=0.2,
                retry_max_s=0.5,
                poll_s=0.3,
            ),
        }
    )
    producer = AIOKafkaProducer(**client_options(stack, KAFKA_ADMIN), acks="all")
    await producer.start()
    running: list[tuple[DeliveryService, asyncio.Task[None]]] = []

    async def make(names: list[str], rules: dict[str, Any] | None = None) -> Rig:
        service = DeliveryService(settings, subscribers=_subscribers(hooks, names, rules or {}))
        await service.__aenter__()
        task = asyncio.create_task(service.run())
        running.append((service, task))
        await wait_until(
            lambda: _ready(service), timeout=30, what="delivery service ready (kafka, db, mqtt)"
        )
        return Rig(ns, settings, hooks, smtp, service, producer, dbcon)

    yield make
    for service, task in running:
        service.stop_event.set()
        await asyncio.wait_for(task, 30)
        await service.__aexit__(None, None, None)
    await producer.stop()
    controller.stop()
    await runner.cleanup()


async def _ready(service: DeliveryService) -> bool:
    return all(service.ready_checks().values())


def _verify(rec: Received) -> None:
    timestamp = rec.headers[TIMESTAMP_HEADER]
    expected = hmac.new(
        SECRET.encode(), timestamp.encode() + b"." + rec.body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(rec.headers[SIGNATURE_HEADER], f"sha256={expected}")
    assert abs(int(timestamp) - datetime.now(UTC).timestamp()) < 120


# -- webhooks ---------------------------------------------------------------------------------


async def test_webhook_failing_twice_gets_the_third_attempt_signed_and_logged(
    rig_factory: Any,
) -> None:
    rig: Rig = await rig_factory(["flaky"])
    alert = str(uuid.uuid4())
    ev = rig.event(alert, "firing")
    await rig.send(ev)

    await wait_until(
        lambda: rig.delivered(ev["event_id"], "webhook", "flaky"),
        timeout=30,
        what="flaky receiver's third attempt delivered",
    )
    assert rig.hooks.answered["flaky"] == [500, 500, 200]
    [got] = rig.hooks.got["flaky"]
    _verify(got)
    body = got.json
    assert body["event"]["event_id"] == ev["event_id"] and body["msg_type"] == "Alert"
    assert body["texts"]["km"]["language"] == "km-KH" and body["cap"].startswith("<?xml")

    row = await rig.delivery(ev["event_id"], "webhook", "flaky")
    assert row is not None and row["attempts"] == 3
    log = await rig.db.fetch(
        "SELECT attempt, ok, status_code FROM alert_delivery_attempts"
        " WHERE delivery_id = $1 ORDER BY attempt",
        row["delivery_id"],
    )
    assert [(r["attempt"], r["ok"], r["status_code"]) for r in log] == [
        (1, False, 500),
        (2, False, 500),
        (3, True, 200),
    ]


async def test_unreachable_subscriber_delays_nobody_else(rig_factory: Any) -> None:
    rig: Rig = await rig_factory(["dead", "ok"])
    first, second = rig.event(str(uuid.uuid4()), "firing"), rig.event(str(uuid.uuid4()), "firing")
    await rig.send(first)

    async def dead_retrying() -> bool:
        row = await rig.delivery(first["event_id"], "webhook", "dead")
        return row is not None and row["attempts"] >= 2 and row["status"] == "pending"

    await wait_until(
        lambda: rig.delivered(first["event_id"], "webhook", "ok"), timeout=30, what="ok got it"
    )
    await wait_until(dead_retrying, timeout=30, what="the dead subscriber retrying")
    # While the dead one keeps failing, a later alert still reaches the healthy receiver.
    await rig.send(second)
    await wait_until(
        lambda: rig.delivered(second["event_id"], "webhook", "ok"), timeout=30, what="2nd to ok"
    )
    assert [r.json["event"]["event_id"] for r in rig.hooks.got["ok"]] == [
        first["event_id"],
        second["event_id"],
    ]
    dead = await rig.delivery(first["event_id"], "webhook", "dead")
    assert dead is not None and dead["status"] == "pending" and dead["delivered_at"] is None
    assert "ClientConnector" in (dead["last_error"] or "")


async def test_redelivered_event_is_delivered_once(rig_factory: Any) -> None:
    rig: Rig = await rig_factory(["ok"])
    alert = str(uuid.uuid4())
    ev = rig.event(alert, "firing")
    sentinel = rig.event(alert, "acknowledged")
    await rig.send(ev, ev, sentinel)  # the same event_id twice, as at-least-once allows
    await wait_until(
        lambda: rig.delivered(sentinel["event_id"], "webhook", "ok"),
        timeout=30,
        what="the sentinel after the duplicate delivered",
    )
    ids = [r.json["event"]["event_id"] for r in rig.hooks.got["ok"]]
    assert ids == [ev["event_id"], sentinel["event_id"]]
    assert rig.hooks.got["ok"][1].json["msg_type"] == "Update"
    stored = await rig.db.fetchval(
        "SELECT count(*) FROM alert_delivery_events WHERE event_id = $1", ev["event_id"]
    )
    assert stored == 1


async def test_offline_alert_event_without_a_metric_is_delivered(rig_factory: Any) -> None:
    # An offline alert concerns the device, not a value: the alerts service publishes its
    # event with `metric: null`, and delivery must deliver it, not skip it as malformed.
    rig: Rig = await rig_factory(["ok"])
    ev = rig.event(
        str(uuid.uuid4()), "firing",
        rule_id="device-offline", rule_type="offline", metric=None, severity="advisory",
        value=31.0, threshold=30.0, title_en="Device offline: gauge-1 silent for 31.0 min",
    )  # fmt: skip
    await rig.send(ev)
    await wait_until(
        lambda: rig.delivered(ev["event_id"], "webhook", "ok"),
        timeout=30,
        what="the offline alert's event delivered to the webhook",
    )
    [got] = rig.hooks.got["ok"]
    _verify(got)
    body = got.json
    assert body["event"]["event_id"] == ev["event_id"] and body["event"]["metric"] is None
    assert body["msg_type"] == "Alert" and "Device offline" in body["cap"]


# -- MQTT -------------------------------------------------------------------------------------


def _retained(settings: Settings, topics: list[str], timeout: float = 15) -> dict[str, bytes]:
    """What a fresh subscriber sees on `topics`, subscribed one after another: the broker
    sends each subscription's retained messages after its SUBACK, in order, so once the
    last topic's message has arrived every earlier topic has shown what it holds."""
    username, password = settings.mqtt_login("citywatch-simulator")
    seen: dict[str, bytes] = {}
    done = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"citywatch-siren-{uuid.uuid4().hex[:8]}"
    )
    client.username_pw_set(username, password)

    def on_connect(c: mqtt.Client, *_: Any) -> None:
        for t in topics:
            c.subscribe(t, qos=1)

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        seen[msg.topic] = msg.payload
        if msg.topic == topics[-1]:
            done.set()

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(settings.mqtt_services_host, settings.mqtt_services_port)
    client.loop_start()
    try:
        assert done.wait(timeout), f"no retained message on {topics[-1]}"
    finally:
        client.disconnect()
        client.loop_stop()
    return seen


async def test_mqtt_retained_state_per_area_appears_and_is_cleared_on_resolve(
    rig_factory: Any,
) -> None:
    rig: Rig = await rig_factory([])
    other_area = f"{rig.ns.suffix} Harbour"
    topic = f"citywatch/alerts/warning/{topic_area(rig.area)}"
    sentinel_topic = f"citywatch/alerts/watch/{topic_area(other_area)}"
    alert, other = str(uuid.uuid4()), str(uuid.uuid4())
    firing = rig.event(alert, "firing")
    elsewhere = rig.event(other, "firing", area=other_area, severity="watch")
    await rig.send(firing, elsewhere)
    for ev, t in ((firing, topic), (elsewhere, sentinel_topic)):
        await wait_until(
            lambda ev=ev, t=t: rig.delivered(ev["event_id"], "mqtt", t),
            timeout=30,
            what=f"retained state on {t}",
        )
    seen = await asyncio.to_thread(_retained, rig.settings, [topic])
    state = json.loads(seen[topic])
    assert state["area"] == rig.area and state["severity"] == "warning"
    assert [a["alert_id"] for a in state["alerts"]] == [alert]

    resolved = rig.event(alert, "resolved", value=2.0)
    await rig.send(resolved)
    await wait_until(
        lambda: rig.delivered(resolved["event_id"], "mqtt", topic), timeout=30, what="cleared"
    )
    # A fresh subscriber: nothing retained on the resolved area, while the other area's
    # state (still open) arrives after it as the sentinel.
    seen = await asyncio.to_thread(_retained, rig.settings, [topic, sentinel_topic])
    assert topic not in seen
    assert json.loads(seen[sentinel_topic])["alerts"][0]["alert_id"] == other


async def test_operators_alert_never_reaches_the_public_mqtt_topic_or_a_public_subscriber(
    rig_factory: Any,
) -> None:
    """Issue 14: device health (audience `operators`) goes to operator channels only. The
    street displays' retained topic, which the alert shares with a public alert of the same
    severity and area, lists the public alert alone; the public subscriber gets only the
    public alert; the operators' webhook (the default audience) gets both."""
    rig: Rig = await rig_factory(["ok", "public"])
    topic = f"citywatch/alerts/warning/{topic_area(rig.area)}"
    ops_alert, public_alert = str(uuid.uuid4()), str(uuid.uuid4())
    offline = rig.event(
        ops_alert, "firing",
        rule_id="device-offline", rule_type="offline", metric=None, value=31.0,
        threshold=30.0, title_en="Device offline: gauge-1 silent for 31.0 min",
        audience="operators",
    )  # fmt: skip
    # an event from a producer that predates `audience`: its rule type decides (stuck)
    stuck = rig.event(
        str(uuid.uuid4()), "firing", rule_id="device-stuck", rule_type="stuck", value=2.0
    )
    flood = rig.event(public_alert, "firing", audience="public")
    await rig.send(offline, stuck, flood)
    await wait_until(
        lambda: rig.delivered(flood["event_id"], "mqtt", topic), timeout=30, what="retained"
    )
    for ev in (offline, stuck, flood):
        await wait_until(
            lambda ev=ev: rig.delivered(ev["event_id"], "webhook", "ok"),
            timeout=30,
            what="every alert at the operators' webhook",
        )
    await wait_until(
        lambda: rig.delivered(flood["event_id"], "webhook", "public"),
        timeout=30,
        what="the public alert at the public webhook",
    )
    rows = await rig.db.fetch(
        "SELECT event_id, channel, target FROM alert_deliveries WHERE event_id = ANY($1)",
        [offline["event_id"], stuck["event_id"], flood["event_id"]],
    )
    queued = {(r["event_id"], r["channel"], r["target"]) for r in rows}
    assert queued == {
        (offline["event_id"], "webhook", "ok"),
        (stuck["event_id"], "webhook", "ok"),
        (flood["event_id"], "webhook", "ok"),
        (flood["event_id"], "webhook", "public"),
        (flood["event_id"], "mqtt", topic),
    }
    seen = await asyncio.to_thread(_retained, rig.settings, [topic])
    assert [a["alert_id"] for a in json.loads(seen[topic])["alerts"]] == [public_alert]
    assert [r.json["event"]["alert_id"] for r in rig.hooks.got["public"]] == [public_alert]


# -- e-mail -----------------------------------------------------------------------------------


async def test_email_arrives_in_utf8_with_khmer_and_english(rig_factory: Any) -> None:
    rig: Rig = await rig_factory(["mail"])
    ev = rig.event(str(uuid.uuid4()), "firing", area="Stueng Hav")
    await rig.send(ev)
    await wait_until(
        lambda: rig.delivered(ev["event_id"], "email", "mail"), timeout=30, what="e-mail sent"
    )
    [msg] = [m for m in rig.smtp.snapshot() if m["X-CityWatch-Event"] == ev["event_id"]]
    assert msg["To"].addresses[0].addr_spec == "duty@example.org"
    subject = str(msg["Subject"])
    assert "Flood warning" in subject and "ការព្រមានទឹកជំនន់" in subject
    body = msg.get_body(preferencelist=("plain",))
    assert body is not None and body.get_content_charset() == "utf-8"
    text = body.get_content()
    assert "Flood warning" in text and "ស្ទឹងហាវ" in text  # Stueng Hav in Khmer script
    assert "២,៧" in text  # 2.7 in Khmer digits with the Khmer decimal comma
    [cap] = [p for p in msg.iter_attachments() if p.get_content_type() == "application/cap+xml"]
    assert b"<status>Actual</status>" in cap.get_content()


# -- reminders and escalation ------------------------------------------------------------------


async def test_unacknowledged_alert_is_reminded_then_escalated_and_ack_stops_it(
    rig_factory: Any,
) -> None:
    rule = f"rule-{uuid.uuid4().hex[:8]}"
    rig: Rig = await rig_factory(
        ["primary", "second"],
        {rule: {"remind_every": "1s", "escalate_after": "2s",
                "contacts": ["duty"], "escalation_contacts": ["chiefs"]}},
    )  # fmt: skip
    alert = str(uuid.uuid4())
    ev = rig.event(alert, "firing", rule_id=rule)  # severity warning: no filter matches
    await rig.send(ev)
    await wait_until(
        lambda: rig.delivered(ev["event_id"], "webhook", "primary"), timeout=30, what="first"
    )
    assert "second" not in rig.hooks.got  # not yet escalated

    async def escalated_and_reminded() -> bool:
        got = rig.hooks.got
        reasons = [r.json["reason"] for r in got.get("primary", [])]
        return "reminder" in reasons and "escalation" in {
            r.json["reason"] for r in got.get("second", [])
        }

    await wait_until(escalated_and_reminded, timeout=30, what="a reminder and the escalation")
    reminder = next(r for r in rig.hooks.got["primary"] if r.json["reason"] == "reminder")
    _verify(reminder)
    assert reminder.json["event"]["event_id"] == ev["event_id"]

    ack = rig.event(alert, "acknowledged", rule_id=rule)
    await rig.send(ack)
    await wait_until(
        lambda: rig.delivered(ack["event_id"], "webhook", "primary"), timeout=30, what="ack"
    )
    row = await rig.db.fetchrow(
        "SELECT state, next_remind_at, escalate_at FROM alert_delivery_alerts WHERE alert_id = $1",
        alert,
    )
    assert row is not None and row["state"] == "acknowledged"
    assert row["next_remind_at"] is None and row["escalate_at"] is None


# -- citywatch alerts test -----------------------------------------------------------------------


async def test_alerts_test_command_reaches_every_channel_with_test_and_cancel(
    rig_factory: Any,
) -> None:
    rig: Rig = await rig_factory(["ok", "mail"])
    area = f"{rig.ns.suffix} rehearsal"
    env = {**os.environ, "CITYWATCH_TOPICS__ALERTS": rig.ns.alerts_topic}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "alerts", "test", "--area", area,
        "--timeout", "60", cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 150)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "every channel reached" in text

    bodies = [r.json for r in rig.hooks.got["ok"] if r.json["event"]["area"] == area]
    assert [(b["status"], b["msg_type"]) for b in bodies] == [("Test", "Alert"), ("Test", "Cancel")]
    for b in bodies:
        assert b["texts"]["en"]["headline"].startswith("TEST: ")
        assert b["texts"]["km"]["headline"].startswith("សារសាកល្បង៖ ")
        assert "<status>Test</status>" in b["cap"]
    assert "<msgType>Cancel</msgType>" in bodies[1]["cap"]
    mails = [m for m in rig.smtp.snapshot() if m["X-CityWatch-Status"] == "Test"]
    ours = [m for m in mails if str(m["X-CityWatch-Event"]).startswith(
        f"test-{bodies[0]['event']['alert_id']}")]  # fmt: skip
    assert len(ours) == 2
    topic = f"citywatch/alerts/advisory/{topic_area(area)}"
    mqtt_rows = await rig.db.fetch(
        "SELECT status FROM alert_deliveries WHERE channel = 'mqtt' AND target = $1", topic
    )
    assert [r["status"] for r in mqtt_rows] == ["delivered", "delivered"]


# -- the subscribers file (pure) -----------------------------------------------------------------


def test_shipped_subscribers_file_loads_and_a_bad_one_is_refused_with_its_reason(
    tmp_path: Any,
) -> None:
    from services.alerts.delivery.config import load_subscribers
    from services.common.errors import ConfigError

    assert load_subscribers(REPO / "deploy" / "alerts" / "subscribers.yaml").subscribers == ()
    bad = tmp_path / "subscribers.yaml"
    bad.write_text(
        "subscribers: [{name: a, channel: email, address: a@example.org}]\n"
        "rules: {flood-level-warning: {remind_every: 30m, contacts: [nobody]}}\n"
    )
    with pytest.raises(ConfigError, match="unknown contact lists"):
        load_subscribers(bad)
    bad.write_text("rules: {r: {remind_every: soon}}\n")
    with pytest.raises(ConfigError, match="must look like 90s, 30m"):
        load_subscribers(bad)


def test_recipients_follow_filters_rule_contacts_and_test_status() -> None:
    subs = SubscribersFile.model_validate(
        {
            "subscribers": [
                {"name": "floods", "channel": "email", "address": "f@example.org",
                 "filters": {"kind": ["flood"], "severity": ["warning", "danger"]}},
                {"name": "air", "channel": "email", "address": "a@example.org",
                 "filters": {"kind": ["air"]}},
                {"name": "duty", "channel": "email", "address": "d@example.org",
                 "filters": {"area": ["nowhere"]}},
            ],
            "contact_lists": {"rota": ["duty"]},
            "rules": {"r1": {"remind_every": "30m", "contacts": ["rota"]}},
        }
    )  # fmt: skip

    def names(**kw: Any) -> list[str]:
        base = {"rule_id": "r0", "severity": "warning", "kind": "flood", "area": None}
        return [s.name for s in subs.recipients(**{**base, "status": "Actual", **kw})]

    assert names() == ["floods"]
    assert names(severity="watch") == []
    assert names(rule_id="r1", severity="watch") == ["duty"]  # the rule's contact list
    assert names(status="Test", kind="litter") == ["floods", "air", "duty"]  # every pipe
    assert [s.name for s in subs.reminder_recipients("r1", escalated=False)] == ["duty"]


def test_a_public_channel_hears_public_alerts_only_an_operators_channel_hears_all() -> None:
    """Issue 14: every channel declares its audience; subscribers default to operators."""
    subs = SubscribersFile.model_validate(
        {
            "subscribers": [
                {"name": "sms", "channel": "webhook", "url": "https://sms.example/",
                 "secret": SECRET, "audience": "public"},
                {"name": "duty", "channel": "email", "address": "d@example.org"},
            ],
            "contact_lists": {"rota": ["sms", "duty"]},
            "rules": {"r1": {"remind_every": "30m", "escalate_after": "1h",
                             "contacts": ["rota"], "escalation_contacts": ["rota"]}},
        }
    )  # fmt: skip
    assert subs.subscribers[1].audience == "operators"
    base = {"rule_id": "r1", "severity": "warning", "kind": "flood", "area": None}
    for status in ("Actual", "Test"):
        ops = subs.recipients(**base, status=status, audience="operators")
        assert [s.name for s in ops] == ["duty"]
        public = subs.recipients(**base, status=status, audience="public")
        assert [s.name for s in public] == ["sms", "duty"]
    reminded = subs.reminder_recipients("r1", escalated=True, audience="operators")
    assert [s.name for s in reminded] == ["duty"]
    assert [s.name for s in subs.escalation_recipients("r1", "operators")] == ["duty"]


@pytest.mark.parametrize(
    ("url", "secret", "why"),
    [
        ("http://hooks.example/alerts", SECRET, "must be https"),
        ("https://hooks.example/alerts", "", "shorter than"),
        ("https://hooks.example/alerts", "change-me", "shorter than"),
    ],
)
def test_a_webhook_in_clear_or_with_a_guessable_secret_is_refused(
    url: str, secret: str, why: str
) -> None:
    """Issue 10: alerts, CAP and signatures cross the network; a receiver on this machine
    may use http://, any other needs TLS, and the HMAC key is at least 16 characters."""
    sub = {"name": "hook", "channel": "webhook", "url": url, "secret": secret}
    with pytest.raises(ValidationError, match=why):
        SubscribersFile.model_validate({"subscribers": [sub]})
    local = {**sub, "url": "http://127.0.0.1:9/alerts", "secret": SECRET}
    assert SubscribersFile.model_validate({"subscribers": [local]}).subscribers[0].url


def test_smtp_login_without_tls_to_another_host_is_refused_a_local_relay_may() -> None:
    """Issue 10: SMTP logged in without TLS by default; STARTTLS is now the default for a
    relay on another host, and a clear-text login there is a settings error."""
    assert DeliverySettings(smtp_host="smtp.example.org").smtp_tls is True
    assert DeliverySettings(smtp_host="127.0.0.1").smtp_tls is False
    with pytest.raises(ValidationError, match="without TLS"):
        DeliverySettings(smtp_host="smtp.example.org", smtp_username="u", smtp_starttls=False)
    assert DeliverySettings(smtp_host="localhost", smtp_username="u").smtp_tls is False

"""The three ways an alert leaves CityWatch: MQTT retained state, signed webhooks, e-mail.

Each channel turns one attempt into an `Outcome` and never raises for a failure of the far
side: the worker that called it records the outcome and schedules the retry. Errors of our
own making (a bug) still propagate.

Webhook signature: `X-CityWatch-Signature: sha256=<hex HMAC-SHA256>` over
`{X-CityWatch-Timestamp}.{body}` with the subscriber's secret. The timestamp (Unix seconds)
is inside the signed text, as Stripe and Slack do, so a captured request cannot be replayed
later under a fresh timestamp; receivers refuse timestamps older than a few minutes and
deduplicate on `X-CityWatch-Event`.

E-mail uses aiosmtplib rather than smtplib in a thread: an SMTP exchange is a few
round trips of waiting, which asyncio does without a thread per message, and a shutdown
can cancel it (a thread blocked in smtplib cannot be cancelled, only waited for).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from typing import Any

import aiohttp
import aiosmtplib
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from services.alerts.delivery.config import Subscriber
from services.alerts.delivery.notice import email_text, subject
from services.common.mqtt_client import BufferedClient

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-CityWatch-Signature"
TIMESTAMP_HEADER = "X-CityWatch-Timestamp"
EVENT_HEADER = "X-CityWatch-Event"
DELIVERY_HEADER = "X-CityWatch-Delivery"


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    status_code: int | None = None
    error: str | None = None


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class MqttChannel:
    """A paho-mqtt v5 client (its network loop in paho's thread) for retained alert state.

    Publishes are QoS 1 and retained; an attempt succeeds when Mosquitto's PUBACK arrives.
    Clean start and a fresh client id per process: retained messages live in the broker,
    not in a session, so there is nothing to resume.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str | None,
        password: str | None,
        client_prefix: str,
    ) -> None:
        self._host, self._port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connected = asyncio.Event()
        self._client = BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=f"{client_prefix}-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        if username:
            self._client.username_pw_set(username, password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=15)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client.connect_async(self._host, self._port, keepalive=15, clean_start=True)
        self._client.loop_start()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, _c: mqtt.Client, _ud: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure:
            log.error("mqtt connect refused", extra={"reason": str(rc), "role": "delivery"})
            return
        log.info("mqtt connected", extra={"role": "delivery"})
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.connected.set)

    def _on_disconnect(self, _c: mqtt.Client, _ud: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        log.warning("mqtt disconnected", extra={"reason": str(rc), "role": "delivery"})
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.connected.clear)

    async def publish_retained(self, topic: str, payload: bytes, timeout_s: float) -> Outcome:
        if not self._client.is_connected():
            return Outcome(False, error="mqtt not connected")
        info = self._client.publish(topic, payload, qos=1, retain=True)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return Outcome(False, error=f"mqtt publish refused: {mqtt.error_string(info.rc)}")
        try:
            # wait_for_publish blocks on a condition paho's thread signals at PUBACK.
            await asyncio.to_thread(info.wait_for_publish, timeout_s)
        except (RuntimeError, ValueError) as exc:
            return Outcome(False, error=f"mqtt publish failed: {exc}")
        if not info.is_published():
            return Outcome(False, error=f"no PUBACK within {timeout_s}s")
        return Outcome(True)


class WebhookChannel:
    """POSTs a notification's JSON to a subscriber's URL, signed with its secret."""

    def __init__(self, session: aiohttp.ClientSession, timeout_s: float) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def send(self, sub: Subscriber, body: str, *, event_id: str, delivery_id: int) -> Outcome:
        assert sub.url is not None and sub.secret is not None  # checked by the config model
        raw = body.encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "CityWatch-Alerts/1",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(sub.secret.get_secret_value().encode(), timestamp, raw),
            EVENT_HEADER: event_id,
            DELIVERY_HEADER: str(delivery_id),
        }
        try:
            async with self._session.post(
                sub.url, data=raw, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return Outcome(True, resp.status)
                return Outcome(False, resp.status, f"HTTP {resp.status}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Outcome(False, error=f"{type(exc).__name__}: {exc}"[:500])


class EmailChannel:
    """Sends a notification as a UTF-8 e-mail in English and Khmer, with its CAP attached."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        username: str | None,
        password: str | None,
        starttls: bool,
        timeout_s: float,
    ) -> None:
        self._host, self._port = host, port
        self._sender = sender
        self._username, self._password = username, password
        self._starttls = starttls
        self._timeout_s = timeout_s

    def message(self, sub: Subscriber, notice: dict[str, Any]) -> EmailMessage:
        assert sub.address is not None
        languages = ("en", "km") if sub.language == "both" else (sub.language,)
        msg = EmailMessage()  # policy=default: RFC 2047 headers, UTF-8 body
        msg["From"] = self._sender
        msg["To"] = formataddr((sub.name, sub.address))
        msg["Subject"] = subject(notice)
        msg["Message-ID"] = make_msgid(domain="citywatch.invalid")
        msg["X-CityWatch-Event"] = notice["event"]["event_id"]
        msg["X-CityWatch-Status"] = notice["status"]
        msg.set_content(email_text(notice, languages), charset="utf-8", cte="8bit")
        if notice.get("cap"):
            msg.add_attachment(
                notice["cap"].encode(),
                maintype="application",
                subtype="cap+xml",
                filename=f"{notice['identifier']}.xml",
            )
        return msg

    async def send(self, sub: Subscriber, notice: dict[str, Any]) -> Outcome:
        try:
            errors, _reply = await aiosmtplib.send(
                self.message(sub, notice),
                hostname=self._host,
                port=self._port,
                username=self._username,
                password=self._password,
                start_tls=self._starttls,
                timeout=self._timeout_s,
            )
        except aiosmtplib.SMTPResponseException as exc:
            return Outcome(False, exc.code, f"SMTP {exc.code}: {exc.message}"[:500])
        except (aiosmtplib.SMTPException, TimeoutError, OSError) as exc:
            return Outcome(False, error=f"{type(exc).__name__}: {exc}"[:500])
        if errors:
            return Outcome(False, error=f"recipients refused: {errors}"[:500])
        return Outcome(True, 250, None)

"""Publishing a fleet to MQTT at a target rate, with progress and a summary.

QoS 1 with many publishes in flight: the simulator measures what the broker accepted
(PUBACK), so its "published" count is what a device fleet really delivered.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from services.common.mqtt_client import BufferedClient
from simulators.fleet import Message


@dataclass
class PublishStats:
    sent: int = 0
    acked: int = 0
    valid: int = 0
    malformed: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    first_publish_at: float = 0.0
    last_ack_at: float = 0.0

    @property
    def rate(self) -> float:
        return self.acked / self.elapsed_s if self.elapsed_s else 0.0


class Publisher:
    """A paho client publishing a fleet's messages at `rate` messages per second (0 = max)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str = "citywatch-simulator",
        username: str | None = None,
        password: str | None = None,
        max_inflight: int = 1000,
        reconnect_delay_s: tuple[int, int] = (1, 120),
    ) -> None:
        self._client = BufferedClient(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        if username:
            self._client.username_pw_set(username, password)
        # The window of unacknowledged publishes is ours (`run` waits for acks past it), and
        # paho's own in-flight limit is off (0): with a limit, paho scans its whole queue of
        # unacknowledged messages on every PUBACK to find one to send (`_update_inflight`),
        # a third of this process's CPU at 1,000 in flight (issue 11).
        self._client.max_inflight_messages_set(0)
        # After a lost connection paho retries after min, doubling up to max (seconds).
        self._client.reconnect_delay_set(*reconnect_delay_s)
        self._window = max_inflight
        self._connected = threading.Event()
        self._lock = threading.Condition()
        self._acked = 0
        self._last_ack = 0.0
        self._refused: str | None = None  # the CONNACK reason when the broker said no
        self._client.on_connect = self._on_connect
        self._client.on_publish = self._on_publish
        self._host, self._port = host, port

    def _on_connect(self, *args: object) -> None:
        reason = args[3]  # (client, userdata, flags, reason code, properties)
        if isinstance(reason, ReasonCode) and reason.is_failure:
            self._refused = str(reason)
        self._connected.set()

    @property
    def acked(self) -> int:
        """Publishes the broker has acknowledged (PUBACK) so far, over every run."""
        with self._lock:
            return self._acked

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up; False once paho has read the broker's close
        (after every PUBACK that came before it)."""
        return bool(self._client.is_connected())

    def _on_publish(self, *_args: object) -> None:
        with self._lock:
            self._acked += 1
            self._last_ack = time.monotonic()
            self._lock.notify_all()

    def __enter__(self) -> Publisher:
        self._client.connect(self._host, self._port, keepalive=30)
        self._client.loop_start()
        if not self._connected.wait(10) or self._refused:
            self._client.loop_stop()
            raise ConnectionError(
                f"MQTT broker {self._host}:{self._port} did not accept the simulator"
                + (f": {self._refused} (check the MQTT username/password)" if self._refused else "")
            )
        return self

    def __exit__(self, *_exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def publish_raw(self, topic: str, payload: bytes, qos: int = 1) -> mqtt.MQTTMessageInfo:
        return self._client.publish(topic, payload, qos=qos)

    def run(
        self,
        messages: Iterator[Message],
        *,
        count: int | None = None,
        duration_s: float | None = None,
        rate: float = 0.0,
        progress: Callable[[PublishStats], None] | None = None,
        stop: threading.Event | None = None,
    ) -> PublishStats:
        """Publish `messages` until they run out, `count` messages or `duration_s` seconds,
        at `rate` per second (0 = as fast as the broker takes them), then wait for the acks.

        A publisher is reused across runs (the bench's phases), so the run counts the acks it
        has had since it began: the window and the final wait are about this run's
        publishes. (Until 2026-12-04 they compared this run's count with every run's acks,
        so a second run had no window at all and returned before its acks arrived.)
        """
        stats = PublishStats()
        with self._lock:
            acked_before = self._acked
        start = time.monotonic()
        stats.first_publish_at = start
        next_progress = start + 1.0
        stop = stop or threading.Event()
        while not stop.is_set():
            if count is not None and stats.sent >= count:
                break
            now = time.monotonic()
            if duration_s is not None and now - start >= duration_s:
                break
            if rate > 0:
                due = start + stats.sent / rate
                if due > now:
                    time.sleep(min(due - now, 0.05))  # pacing the rate, not synchronising
                    continue
            with self._lock:  # a bounded window of unacknowledged publishes
                self._lock.wait_for(
                    lambda: stats.sent - (self._acked - acked_before) < self._window, timeout=1
                )
            msg = next(messages, None)
            if msg is None:
                break
            self._client.publish(msg.topic, msg.payload, qos=1)
            stats.sent += 1
            if msg.valid:
                stats.valid += 1
            else:
                stats.malformed += 1
                stats.by_reason[msg.expected_reason or "?"] += 1
            if progress and now >= next_progress:
                with self._lock:
                    stats.acked = self._acked - acked_before
                stats.elapsed_s = now - start
                progress(stats)
                next_progress = now + 1.0
        with self._lock:
            self._lock.wait_for(lambda: self._acked - acked_before >= stats.sent, timeout=30)
            stats.acked = self._acked - acked_before
            stats.last_ack_at = self._last_ack
        stats.elapsed_s = time.monotonic() - start
        return stats

"""MQTT side of the gateway: a paho-mqtt v5 client feeding an asyncio queue, with manual acks.

paho runs its network loop in its own thread (`loop_start`); messages cross into the event
loop through a hand-over list: paho's thread appends, and wakes the loop
(`call_soon_threadsafe`, a write to the loop's self-pipe) only when no wake-up is pending
yet, so under load one wake-up carries every message paho read meanwhile instead of one
each. Two bounds keep overload in Mosquitto, never in our
memory: our MQTT v5 Receive Maximum asks the broker to hold back everything past that many
unacknowledged messages, and a semaphore blocks paho's thread when the hand-over queue is
full, so the socket stops being read and TCP pushes back. The second bound is not
belt-and-braces: Mosquitto 2.0.11 over-sends past Receive Maximum once acks flow (seen
here: 219 messages delivered against a maximum of 10 with 100 acked), and a message we
could not queue would have stayed unacked until the next reconnect.

Acknowledgements carry the connection *generation* they belong to. After a reconnect the
broker redelivers every unacknowledged message; a late ack for the old connection's copy
is then skipped, because the broker may already have reused that packet id for another
message, and acking it would release a message we have not yet given to Kafka.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from schemas import now_utc
from services.common.mqtt_client import BufferedClient

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Inbound:
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int
    received_at: datetime


class MqttSource:
    """A persistent-session QoS 1 subscriber whose messages are acknowledged by the caller.

    A new session subscribes to `filters`; a resumed one does so again only on the broker
    that needs it (`broker`: Mosquitto yes, Artemis no; see `_on_connect`).
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        filters: tuple[str, ...],
        receive_maximum: int,
        session_expiry_s: int,
        broker: Literal["mosquitto", "artemis"],
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._host, self._port = host, port
        self._filters = filters
        self._receive_maximum = receive_maximum
        self._session_expiry_s = session_expiry_s
        self._resubscribe_on_resume = broker == "mosquitto"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Inbound] = asyncio.Queue()
        self._space = threading.BoundedSemaphore(receive_maximum)
        # paho's thread -> the loop: appended under `_handover_lock`; `_wake_pending` says
        # a `_take_handover` is already scheduled and will see what is appended now.
        self._handover: collections.deque[Inbound] = collections.deque()
        self._handover_lock = threading.Lock()
        self._wake_pending = False
        self._closing = False
        self._generation = 0
        self._lock = threading.Lock()
        self.connected = asyncio.Event()
        self._client = BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if username:
            self._client.username_pw_set(username, password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=15)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    # -- lifecycle (event loop thread) ----------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._session_expiry_s
        props.ReceiveMaximum = self._receive_maximum
        # clean_start=False: resume the session, and with it every message not yet acked.
        self._client.connect_async(
            self._host, self._port, keepalive=15, clean_start=False, properties=props
        )
        self._client.loop_start()

    def get_nowait(self) -> Inbound | None:
        """The next message if one is waiting (the fast path under load), else None."""
        try:
            msg = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None
        self._space.release()
        return msg

    async def get(self) -> Inbound:
        """The next message; frees its slot so paho's thread may hand over another."""
        msg = await self._queue.get()
        self._space.release()
        return msg

    def close(self) -> None:
        """Disconnect cleanly; the broker keeps the session and every unacked message."""
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()

    def ack(self, msg: Inbound) -> bool:
        """Acknowledge `msg` to the broker, unless it belongs to an earlier connection."""
        with self._lock:
            if msg.generation != self._generation or not self._client.is_connected():
                return False
            self._client.ack(msg.mid, msg.qos)
            return True

    # -- paho callbacks (paho's network thread) -------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, _ud: Any, flags: Any, rc: ReasonCode, _props: Any
    ) -> None:
        if rc.is_failure:
            log.error("mqtt connect refused", extra={"reason": str(rc)})
            return
        with self._lock:
            self._generation += 1
        # A resumed session holds its subscriptions (they are session state). Artemis must
        # not be asked again: it then replaces the subscription's consumer, the PUBACKs for
        # the unacked messages it redelivers on resume match no delivery ("attempted to Ack
        # already Ack'd message"), their Receive Maximum slots are never freed, and once
        # they fill the window it delivers nothing more, for good. Mosquitto 2.0 must be:
        # after its own crash it resumes the session without its shared subscriptions.
        if not flags.session_present or self._resubscribe_on_resume:
            client.subscribe([(f, 1) for f in self._filters])
        log.info(
            "mqtt connected",
            extra={"session_present": bool(flags.session_present), "filters": list(self._filters)},
        )
        self._call(self.connected.set)

    def _on_disconnect(
        self, _c: mqtt.Client, _ud: Any, _flags: Any, rc: ReasonCode, _props: Any
    ) -> None:
        with self._lock:
            self._generation += 1  # acks for what we hold now would be for a dead connection
        log.warning("mqtt disconnected", extra={"reason": str(rc)})
        self._call(self.connected.clear)

    def _on_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        inbound = Inbound(
            topic=msg.topic,
            payload=bytes(msg.payload),
            mid=msg.mid,
            qos=msg.qos,
            generation=self._generation,
            received_at=now_utc(),
        )
        # Block paho's thread while the queue is full: backpressure onto the socket.
        while not self._space.acquire(timeout=1.0):
            if self._closing:
                return  # not acked: the broker redelivers it on our next connection
        with self._handover_lock:
            self._handover.append(inbound)
            wake = not self._wake_pending
            self._wake_pending = True
        if wake:
            self._call(self._take_handover)

    def _take_handover(self) -> None:
        """On the loop: move what paho handed over into the queue, in arrival order."""
        with self._handover_lock:
            taken, self._handover = self._handover, collections.deque()
            self._wake_pending = False
        for inbound in taken:
            self._queue.put_nowait(inbound)

    def _call(self, fn: Any, *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

"""MQTT side of the gateway: a paho-mqtt v5 client run by the event loop, with manual acks.

paho runs inside the service's asyncio loop (paho's "external event loop" mode, as aiomqtt
uses it): the loop watches paho's socket and calls `loop_read` when it is readable, a
timer calls `loop_misc` for keepalive, and paho's `on_message` puts each message straight
into an asyncio queue. There is no paho thread. With one (paho's `loop_start`), every
message crossed threads twice -- paho's thread woke the loop through its self-pipe, and
each PUBACK the loop queued woke paho's thread through paho's socket pair -- and the two
threads took turns on the GIL: at a quarter of the pipeline's saturation rate the gateway
spent about 900 µs of CPU per message, most of it in those wake-ups (issue 11,
docs/performance.md, "Fifth session"). Now an ack is written to the socket where it is made.

The TCP connect is the one blocking step paho has, so it runs in a worker thread
(`asyncio.to_thread`); the loop watches the socket only once it is connected.

Two bounds keep overload in the broker, never in our memory: our MQTT v5 Receive Maximum
asks the broker to hold back everything past that many unacknowledged messages, and once
the queue holds that many the loop stops reading the socket, so TCP pushes back. (What one
64 KiB read already brought in is still queued: at most that much over the bound.) The
second bound is not belt-and-braces: Mosquitto 2.0.11 over-sends past Receive Maximum once
acks flow (seen here: 219 messages delivered against a maximum of 10 with 100 acked).

Acknowledgements carry the connection *generation* they belong to. After a reconnect the
broker redelivers every unacknowledged message; a late ack for the old connection's copy
is then skipped, because the broker may already have reused that packet id for another
message, and acking it would release a message we have not yet given to Kafka.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from schemas import now_utc
from services.common.backoff import Backoff
from services.common.mqtt_client import BufferedClient

log = logging.getLogger(__name__)

KEEPALIVE_S = 15
RECONNECT_MIN_S, RECONNECT_MAX_S = 1.0, 15.0


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
    that needs it (`broker`: Mosquitto yes, Artemis no; see `_on_connect`). Every method,
    and every paho callback, runs on the event loop's thread.
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
        self._fd: int | None = None  # the socket the loop watches for reading
        self._paused = False  # the queue is full: the socket is not read
        self._writing = False  # the loop also waits for the socket to take more bytes
        self._lost = asyncio.Event()  # the connection ended (or a connect failed)
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._generation = 0
        self.connected = asyncio.Event()
        self._client = BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if username:
            self._client.username_pw_set(username, password)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_socket_close = self._on_socket_close

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._session_expiry_s
        props.ReceiveMaximum = self._receive_maximum
        # clean_start=False: resume the session, and with it every message not yet acked.
        self._client.connect_async(
            self._host, self._port, keepalive=KEEPALIVE_S, clean_start=False, properties=props
        )
        self._tasks = [
            asyncio.create_task(self._keep_connected(), name="mqtt-connect"),
            asyncio.create_task(self._keep_alive(), name="mqtt-keepalive"),
        ]

    def get_nowait(self) -> Inbound | None:
        """The next message if one is waiting (the fast path under load), else None."""
        try:
            msg = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None
        self._resume_reading()
        return msg

    async def get(self) -> Inbound:
        """The next message; frees its place, so the socket is read again if it was full."""
        msg = await self._queue.get()
        self._resume_reading()
        return msg

    def close(self) -> None:
        """Disconnect cleanly; the broker keeps the session and every unacked message."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        self._client.disconnect()  # written at once: DISCONNECT, then paho closes the socket
        self._unwatch()

    def ack(self, msg: Inbound) -> bool:
        """Acknowledge `msg` to the broker, unless it belongs to an earlier connection."""
        if msg.generation != self._generation or not self._client.is_connected():
            return False
        self._client.ack(msg.mid, msg.qos)  # paho writes the PUBACK now, if the socket takes it
        self._want_write()
        return True

    # -- connection ---------------------------------------------------------------------
    async def _keep_connected(self) -> None:
        """Connect, and connect again whenever the connection ends, with backoff (reset by
        each accepted connection, as paho's own loop does)."""
        backoff = Backoff(initial_s=RECONNECT_MIN_S, maximum_s=RECONNECT_MAX_S)
        while not self._closing:
            self._lost.clear()
            generation = self._generation
            try:
                # The TCP connect blocks (up to paho's connect timeout): not on the loop.
                await asyncio.to_thread(self._client.reconnect)
            except OSError as exc:
                log.warning("mqtt connect failed", extra={"error": repr(exc)})
            except Exception:  # a bug or a paho surprise: keep trying, loudly
                log.exception("mqtt connect raised")
            else:
                self._watch()
                await self._lost.wait()
            if self._generation > generation + 1:  # connected (+1), then lost (+1)
                backoff.reset()
            await asyncio.sleep(backoff.next_delay())

    async def _keep_alive(self) -> None:
        """paho's keepalive (PINGREQ, and a lost connection noticed) needs a regular tick."""
        while True:
            await asyncio.sleep(1.0)
            if self._fd is not None:
                self._client.loop_misc()
                self._want_write()

    # -- the socket, watched by the loop --------------------------------------------------
    def _watch(self) -> None:
        sock = self._client.socket()
        if sock is None or self._closing:
            self._lost.set()
            return
        assert self._loop is not None
        self._fd = sock.fileno()
        self._paused = False
        self._loop.add_reader(self._fd, self._readable)
        self._want_write()  # CONNECT may not have gone out whole

    def _unwatch(self) -> None:
        if self._fd is None or self._loop is None:
            return
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._fd, self._paused, self._writing = None, False, False

    def _readable(self) -> None:
        rc = self._client.loop_read()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and self._fd is not None:
            self._unwatch()
            self._lost.set()
            return
        self._want_write()  # what paho queued inside a callback, e.g. `_on_connect`'s SUBSCRIBE
        if self._fd is not None and self._queue.qsize() >= self._receive_maximum:
            assert self._loop is not None
            self._loop.remove_reader(self._fd)
            self._paused = True

    def _resume_reading(self) -> None:
        if not self._paused or self._fd is None or self._queue.qsize() >= self._receive_maximum:
            return
        assert self._loop is not None
        self._paused = False
        self._loop.add_reader(self._fd, self._readable)
        sock = self._client.socket()
        if getattr(sock, "pending", lambda: 0)():
            self._loop.call_soon(self._readable)  # bytes read already: epoll will not say so

    def _want_write(self) -> None:
        """Wait for the socket to take the rest of what paho could not write at once."""
        if self._fd is None or self._loop is None:
            return
        wants = self._client.want_write()
        if wants and not self._writing:
            self._loop.add_writer(self._fd, self._writable)
        elif not wants and self._writing:
            self._loop.remove_writer(self._fd)
        self._writing = wants

    def _writable(self) -> None:
        self._client.loop_write()
        self._want_write()

    # -- paho callbacks (on the loop's thread) ---------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, _ud: Any, flags: Any, rc: ReasonCode, _props: Any
    ) -> None:
        if rc.is_failure:
            log.error("mqtt connect refused", extra={"reason": str(rc)})
            return
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
        self.connected.set()

    def _on_disconnect(
        self, _c: mqtt.Client, _ud: Any, _flags: Any, rc: ReasonCode, _props: Any
    ) -> None:
        self._generation += 1  # acks for what we hold now would be for a dead connection
        if not self._closing:
            log.warning("mqtt disconnected", extra={"reason": str(rc)})
        self.connected.clear()
        self._lost.set()

    def _on_socket_close(self, _c: mqtt.Client, _ud: Any, _sock: Any) -> None:
        # Stop watching before paho closes it. (paho's `reconnect`, in its worker thread,
        # closes a socket only if one is left, and `_keep_connected` calls it only after a
        # loss, when the socket is already closed and unwatched.)
        self._unwatch()

    def _on_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        self._queue.put_nowait(
            Inbound(
                topic=msg.topic,
                payload=bytes(msg.payload),
                mid=msg.mid,
                qos=msg.qos,
                generation=self._generation,
                received_at=now_utc(),
            )
        )

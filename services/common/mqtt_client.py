"""The paho-mqtt client every CityWatch MQTT connection uses: paho, reading its socket in chunks.

paho-mqtt 2.x reads a packet with one `recv` for its first byte, one per byte of its
remaining length and one for the rest, and its network loop (`loop_start`/`loop_forever`)
makes a `select` before every packet: five or six system calls and their Python wrapping per
QoS 1 message, the largest part of the gateway's paho time at saturation (issue 11,
docs/performance.md). `BufferedClient` gives paho a socket that reads up to 64 KiB at once
and serves paho's small reads from memory, and drains every complete packet it already holds
in one `loop_read`.

It does not change what paho does with a packet. paho's own loop already supports a socket
that holds bytes the kernel no longer has: it asks `pending()` (the contract its TLS and
WebSocket sockets use) and, while bytes are pending, reads without waiting in `select`.
Writes (PUBACKs, publishes) go straight to the kernel socket. TLS and WebSocket transports
keep paho's own sockets (they buffer already).
"""

from __future__ import annotations

import socket
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

_CHUNK = 65536


class BufferedSocket:
    """A connected TCP socket read in chunks of up to 64 KiB, with paho's `pending()`."""

    __slots__ = ("_buf", "_pos", "_sock")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, bufsize: int) -> bytes:
        """Up to `bufsize` bytes: from what an earlier read left, else from one large read.

        Raises what the socket raises (BlockingIOError when nothing is there) and returns
        b"" at end of stream, as `socket.recv` does, so paho's error handling is unchanged.
        """
        if self._pos >= len(self._buf):
            data = self._sock.recv(_CHUNK)
            if len(data) <= bufsize:
                return data
            self._buf, self._pos = data, 0
        end = self._pos + bufsize
        chunk = self._buf[self._pos : end]
        self._pos = min(end, len(self._buf))
        return chunk

    def pending(self) -> int:
        """Bytes read from the kernel that paho has not taken yet."""
        return len(self._buf) - self._pos

    def send(self, data: bytes | bytearray) -> int:
        return self._sock.send(data)

    def close(self) -> None:
        self._sock.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)


class BufferedClient(mqtt.Client):
    """`paho.mqtt.client.Client` over a `BufferedSocket` for plain TCP connections."""

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        if self._ssl or self._transport == "websockets" or not isinstance(sock, socket.socket):
            return sock
        return BufferedSocket(sock)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Read as paho does, then every complete packet already read from the kernel.

        paho reads one packet per pass of its loop for a subscriber (it sizes a pass by its
        own in-flight QoS 2/outgoing messages), then polls the socket again; with a chunk in
        memory that poll is pure overhead. The bytes a pass leaves are at most one chunk, so
        a pass stays short and the loop still writes acks and keeps the connection alive
        between chunks.
        """
        rc = super().loop_read(max_packets)
        sock = self._sock
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and isinstance(sock, BufferedSocket):
            if sock.pending() == 0:
                break
            rc = super().loop_read(1)
            if self._sock is not sock:
                break
        return rc

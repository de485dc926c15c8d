"""The buffered paho socket hands paho exactly the byte stream the kernel delivered.

paho reads a packet in pieces (one byte, the length bytes, the rest) and relies on
`recv` semantics: at most `bufsize` bytes, BlockingIOError when nothing is there, b"" at
the end of the stream, and `pending()` for bytes it must read before it waits in select.
The gateway's end-to-end tests run it against the real broker; these pin the stream
contract on a socket pair, where a split at every offset can be forced.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from services.common.mqtt_client import BufferedSocket


@pytest.fixture
def pair() -> Iterator[tuple[BufferedSocket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    buffered = BufferedSocket(a)
    yield buffered, b
    buffered.close()
    b.close()


def _read_all(sock: BufferedSocket, sizes: list[int]) -> bytes:
    out = bytearray()
    i = 0
    while True:
        try:
            chunk = sock.recv(sizes[i % len(sizes)])
        except BlockingIOError:
            return bytes(out)
        i += 1
        out += chunk


@pytest.mark.parametrize("sizes", [[1], [1, 1, 200], [7], [65536], [3, 100_000]])
def test_paho_sized_reads_return_the_stream_in_order_and_nothing_else(
    pair: tuple[BufferedSocket, socket.socket], sizes: list[int]
) -> None:
    buffered, peer = pair
    stream = bytes(range(256)) * 300  # larger than one 64 KiB chunk
    peer.sendall(stream)
    got = _read_all(buffered, sizes)
    assert got == stream
    assert buffered.pending() == 0


def test_pending_counts_what_was_read_from_the_kernel_but_not_yet_taken(
    pair: tuple[BufferedSocket, socket.socket],
) -> None:
    buffered, peer = pair
    peer.sendall(b"\x30\x05hello\x40\x02\x00\x01")
    assert buffered.recv(1) == b"\x30"
    # one read took everything the kernel had: paho must not wait in select for the rest
    assert buffered.pending() == 10
    assert buffered.recv(1) == b"\x05"
    assert buffered.recv(5) == b"hello"
    assert buffered.pending() == 4
    assert buffered.recv(100) == b"\x40\x02\x00\x01"
    with pytest.raises(BlockingIOError):
        buffered.recv(1)


def test_end_of_stream_reads_empty_after_the_buffered_bytes(
    pair: tuple[BufferedSocket, socket.socket],
) -> None:
    buffered, peer = pair
    peer.sendall(b"\xe0\x00tail")
    peer.shutdown(socket.SHUT_WR)
    assert buffered.recv(2) == b"\xe0\x00"
    assert buffered.recv(10) == b"tail"
    assert buffered.recv(1) == b""  # paho reads this as the connection lost

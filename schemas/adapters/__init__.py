"""Payload adapters: pure functions from (topic, payload bytes, receive time) to readings or a
rejection. `decode` is the one entry point the gateway uses."""

from schemas.adapters.dispatch import ADAPTERS, DEFAULT_FUTURE_TOLERANCE, Adapter, decode
from schemas.adapters.native import DEFAULT_MAX_PAYLOAD_BYTES, decode_native

__all__ = [
    "ADAPTERS",
    "DEFAULT_FUTURE_TOLERANCE",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "Adapter",
    "decode",
    "decode_native",
]

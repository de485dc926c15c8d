"""Payload adapters: pure functions `(topic, payload, received_at) -> list[Reading] | Rejection`."""

from schemas.adapters.native import DEFAULT_MAX_PAYLOAD_BYTES, decode_native

__all__ = ["DEFAULT_MAX_PAYLOAD_BYTES", "decode_native"]

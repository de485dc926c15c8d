"""Payload adapters: pure functions from (topic, payload bytes, receive time) to readings or a
rejection. `decode` is the one entry point the gateway uses; it picks the adapter (native
JSON, SenML, The Things Stack, ChirpStack) by topic and payload shape."""

from schemas.adapters.chirpstack import decode_chirpstack, match_chirpstack
from schemas.adapters.dispatch import (
    ADAPTERS,
    DEFAULT_FUTURE_TOLERANCE,
    DEFAULT_MAX_AGE,
    DEFAULT_MAX_SPREAD,
    Adapter,
    decode,
    device_of,
)
from schemas.adapters.mappings import SHIPPED_MAPPINGS, resolve_mapping
from schemas.adapters.native import DEFAULT_MAX_PAYLOAD_BYTES, decode_native
from schemas.adapters.senml import decode_senml, looks_like_senml, resolve
from schemas.adapters.ttn import decode_ttn, match_ttn
from schemas.adapters.units import METRIC_UNITS, convert

__all__ = [
    "ADAPTERS",
    "DEFAULT_FUTURE_TOLERANCE",
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFAULT_MAX_SPREAD",
    "METRIC_UNITS",
    "SHIPPED_MAPPINGS",
    "Adapter",
    "convert",
    "decode",
    "decode_chirpstack",
    "decode_native",
    "decode_senml",
    "decode_ttn",
    "device_of",
    "looks_like_senml",
    "match_chirpstack",
    "match_ttn",
    "resolve",
    "resolve_mapping",
]

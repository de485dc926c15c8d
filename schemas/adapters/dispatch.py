"""One entry point for every uplink: pick the adapter by topic, apply the registry's word on
the device, calibrate, and refuse readings from the future. Pure: no I/O.

    decode(topic, payload, received_at, lookup=registry.get, unknown="reject")
        -> list[Reading] | Rejection

Each adapter is an `Adapter(name, match, decode, sniff)`: `match(topic)` returns the device
id the topic names (or None if the topic is not this adapter's), `sniff(payload)`, when set,
says whether the payload is this adapter's (SenML and native JSON share their topics and
are told apart by payload shape, see `senml.looks_like_senml`), and `decode(topic, payload,
received_at, profile)` turns the payload into readings or a rejection. The registry profile
(kind, field mapping, calibration) is looked up once, before decoding, because LoRaWAN
topics carry no kind and network servers use their own field names.

Adapters are tried in `ADAPTERS` order: The Things Stack (`.../v3/{app}/devices/{id}/up`),
ChirpStack (`.../application/{app}/device/{eui}/event/up`), SenML, then native JSON on
`.../{kind}/{device_id}/up`. The LoRaWAN shapes come first because they are the more
specific; none of the three topic shapes can match a valid topic of another.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.adapters._reject import rejection
from schemas.adapters._values import check_size
from schemas.adapters.chirpstack import decode_chirpstack, match_chirpstack
from schemas.adapters.derived import derive
from schemas.adapters.native import DEFAULT_MAX_PAYLOAD_BYTES, decode_native
from schemas.adapters.senml import decode_senml, looks_like_senml
from schemas.adapters.ttn import decode_ttn, match_ttn
from schemas.device import DeviceLookup, DeviceProfile, UnknownDevicePolicy
from schemas.errors import PayloadError
from schemas.reading import Reading, Rejection
from schemas.registry import metric_spec
from schemas.topics import is_device_id, parse_uplink_topic

# A device clock may run a little fast; beyond this, a reading "from the future" is refused.
DEFAULT_FUTURE_TOLERANCE = timedelta(minutes=5)
# How old a reading may be on arrival, and how far apart one message's readings may lie
# (issue 10): a device back from an outage flushes hours or days of buffer, but one message
# spanning years would touch a partition (or chunk) per day in one transaction, and a
# reading older than the minute rollups' retention has nowhere useful to go.
DEFAULT_MAX_AGE = timedelta(days=90)
DEFAULT_MAX_SPREAD = timedelta(days=2)

Decoder = Callable[[str, bytes, datetime, DeviceProfile | None], list[Reading] | Rejection]


@dataclass(frozen=True)
class Adapter:
    """One payload format: which topics and payloads are its own, and how to decode them."""

    name: str
    match: Callable[[str], str | None]
    decode: Decoder
    sniff: Callable[[bytes], bool] | None = None


def _native_match(topic: str) -> str | None:
    try:
        return parse_uplink_topic(topic).device_id
    except PayloadError:
        return None


def _native_decode(
    topic: str, payload: bytes, received_at: datetime, _profile: DeviceProfile | None
) -> list[Reading] | Rejection:
    return decode_native(topic, payload, received_at, max_bytes=len(payload))


NATIVE = Adapter("native", _native_match, _native_decode)

# Tried in order; the first whose `match` names a device (and whose `sniff`, if any,
# accepts the payload) decodes the message.
ADAPTERS: list[Adapter] = [
    Adapter("ttn", match_ttn, decode_ttn),
    Adapter("chirpstack", match_chirpstack, decode_chirpstack),
    Adapter("senml", _native_match, decode_senml, sniff=looks_like_senml),
    NATIVE,
]


def decode(
    topic: str,
    payload: bytes,
    received_at: datetime,
    *,
    lookup: DeviceLookup | None = None,
    unknown: UnknownDevicePolicy = "accept",
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    future_tolerance: timedelta = DEFAULT_FUTURE_TOLERANCE,
    max_age: timedelta | None = None,
    max_spread: timedelta | None = None,
) -> list[Reading] | Rejection:
    """Decode one MQTT message from any supported source into readings, or say why not.

    `max_age` and `max_spread` bound how old a reading and how wide one message may be;
    None (for replaying recorded samples) leaves them unbounded. The gateway passes its
    settings, whose defaults are `DEFAULT_MAX_AGE` and `DEFAULT_MAX_SPREAD`.
    """
    try:
        outcome = _decode(topic, payload, received_at, lookup, unknown, max_bytes, future_tolerance)
        if not isinstance(outcome, Rejection):
            _check_times(outcome, received_at, future_tolerance, max_age, max_spread)
    except PayloadError as exc:
        return rejection(exc, topic, payload, received_at)
    return outcome


def _decode(
    topic: str,
    payload: bytes,
    received_at: datetime,
    lookup: DeviceLookup | None,
    unknown: UnknownDevicePolicy,
    max_bytes: int,
    future_tolerance: timedelta,
) -> list[Reading] | Rejection:
    """`decode`, raising `PayloadError` for its own refusals; an adapter's pass through."""
    check_size(payload, max_bytes)
    adapter, device_id = _pick(topic, payload)
    if not is_device_id(device_id):
        raise PayloadError(
            "bad_topic",
            f"device id {device_id!r} in topic {topic!r} must be 1-128 of letters, digits, '._:-'",
        )

    profile = lookup(device_id) if lookup is not None else None
    if lookup is not None and profile is None and unknown == "reject":
        raise PayloadError(
            "unknown_device",
            f"device {device_id!r} is not registered (register it with `citywatch devices add`)",
        )
    if profile is not None and profile.status == "disabled":
        raise PayloadError("device_disabled", f"device {device_id!r} is disabled in the registry")
    if profile is not None and _family(adapter.name) != _family(profile.payload_format):
        # A LoRaWAN integration's login may publish for any device id under its application's
        # topics; the broker cannot tell its devices from others. Without this check it could
        # write readings for a device that sends native JSON (or another network server's).
        raise PayloadError(
            "format_mismatch",
            f"device {device_id!r} is registered to send {profile.payload_format!r}, "
            f"but this message came as {adapter.name!r} on {topic!r}",
        )

    outcome = adapter.decode(topic, payload, received_at, profile)
    if isinstance(outcome, Rejection):
        return outcome
    if profile is not None:
        for reading in outcome:
            if reading.kind != profile.kind:
                raise PayloadError(
                    "kind_mismatch",
                    f"device {device_id!r} is registered as {profile.kind!r}, not {reading.kind!r}",
                )
        if profile.calibration:
            outcome = _calibrate(outcome, profile)
        if profile.derived:
            outcome = derive(outcome, profile.derived, profile.params, profile.also_kinds)
    return outcome


def _family(payload_format: str) -> str:
    """Formats that share a channel: native JSON and SenML both come on the device's own
    topics, under its own login, so a device may send either; each network server is its own."""
    return "direct" if payload_format in ("native", "senml") else payload_format


def _check_times(
    readings: list[Reading],
    received_at: datetime,
    future_tolerance: timedelta,
    max_age: timedelta | None,
    max_spread: timedelta | None,
) -> None:
    """Refuse a message with a reading from the future or too far in the past, or whose
    readings lie further apart than `max_spread`."""
    first = min(r.time for r in readings)
    last = max(r.time for r in readings)
    if last > received_at + future_tolerance:
        raise PayloadError(
            "time_in_future",
            f"reading time {last.isoformat()} is more than "
            f"{future_tolerance.total_seconds():.0f}s after receipt "
            f"({received_at.isoformat()}); is the device clock right?",
        )
    if max_age is not None and first < received_at - max_age:
        raise PayloadError(
            "time_too_old",
            f"reading time {first.isoformat()} is more than {_days(max_age)} before receipt "
            f"({received_at.isoformat()}); is the device clock right?",
        )
    if max_spread is not None and last - first > max_spread:
        raise PayloadError(
            "time_spread_too_wide",
            f"the message's readings span {first.isoformat()} to {last.isoformat()}, more than "
            f"{_days(max_spread)}; send long buffers in several messages",
        )


def _days(span: timedelta) -> str:
    days = span.total_seconds() / 86400
    return f"{days:g} day" + ("" if days == 1 else "s")


def device_of(topic: str) -> str | None:
    """The device id an uplink topic names, whatever its format (None: no uplink topic). The
    gateway uses it to tell a registered device's operators why its messages are refused."""
    for adapter in ADAPTERS:
        device_id = adapter.match(topic)
        if device_id is not None:
            return device_id
    try:
        return parse_uplink_topic(topic).device_id
    except PayloadError:
        return None


def _pick(topic: str, payload: bytes) -> tuple[Adapter, str]:
    """The adapter that decodes the message, and the device id its topic names.

    Raises:
        PayloadError: no adapter takes the topic (`bad_topic`, `unknown_kind`).
    """
    for adapter in ADAPTERS:
        device_id = adapter.match(topic)
        if device_id is not None and (adapter.sniff is None or adapter.sniff(payload)):
            return adapter, device_id
    # None took it: the message is native JSON on a topic that breaks the native grammar
    # (the one docs/devices.md gives devices), and parsing the topic raises the reason.
    return NATIVE, parse_uplink_topic(topic).device_id


def _calibrate(readings: list[Reading], profile: DeviceProfile) -> list[Reading]:
    """Add the registry's offsets; a calibrated value must still be physically possible."""
    out: list[Reading] = []
    for reading in readings:
        metrics = dict(reading.metrics)
        for metric, offset in profile.calibration.items():
            if metric in metrics:
                value = metrics[metric] + offset
                spec = metric_spec(reading.kind, metric, profile.also_kinds)
                if spec is None or not math.isfinite(value) or not spec.accepts(value):
                    raise PayloadError(
                        "out_of_range",
                        f"calibrated {metric!r} = {value:g} is outside the possible range",
                    )
                metrics[metric] = value
        out.append(reading.model_copy(update={"metrics": metrics}))
    return out

"""ChirpStack v4 uplink events on `application/{application_id}/device/{dev_eui}/event/up`.

Any prefix before `application/` is accepted (ChirpStack's event topic is configurable). The
DevEUI in the topic is the CityWatch device id, as ChirpStack spells it (lower-case hex).

From the event (format: ChirpStack docs, "Event types", `up`; the protobuf `UplinkEvent`
in its JSON mapping):
- `object` (set when the device profile has a codec) -> metrics through the device's field
  mapping (`mappings.py`); without it the event is refused as `no_decoded_payload`;
- `time` is the reading's time when `object` has none (`time_from_gateway` is then true);
- `fCnt` -> `seq`;
- the best gateway's `rxInfo[].rssi` -> `rssi_dbm`; SNR is not kept (no registry metric);
- position: decoded `lat`/`lon` only (rxInfo locations are the gateways', not the device's);
- `deviceInfo.devEui` (any case) and `deviceInfo.applicationId` must agree with the topic.
Everything else (deduplicationId, tenant, names, tags, txInfo, data, ...) is not stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schemas.adapters._lorawan import best_rssi, decoded_fields, uplink_reading
from schemas.adapters._reject import decode_or_reject
from schemas.adapters._values import load_json
from schemas.adapters.mappings import resolve_mapping
from schemas.device import DeviceProfile
from schemas.errors import PayloadError
from schemas.reading import Reading, Rejection
from schemas.topics import is_device_id


def match_chirpstack(topic: str) -> str | None:
    """The DevEUI of a ChirpStack v4 uplink topic, or None when the topic is not one."""
    parts = topic.split("/")
    if (
        len(parts) >= 6
        and parts[-6] == "application"
        and parts[-4] == "device"
        and parts[-2:] == ["event", "up"]
    ):
        return parts[-3]
    return None


def decode_chirpstack(
    topic: str, payload: bytes, received_at: datetime, profile: DeviceProfile | None
) -> list[Reading] | Rejection:
    """Decode one ChirpStack uplink event into one reading, or say why it cannot be."""
    return decode_or_reject(_decode, topic, payload, received_at, profile)


def _decode(
    topic: str, payload: bytes, received_at: datetime, profile: DeviceProfile | None
) -> list[Reading]:
    dev_eui = match_chirpstack(topic)
    if dev_eui is None or not is_device_id(dev_eui):
        raise PayloadError(
            "bad_topic", f"topic {topic!r} is not application/{{app}}/device/{{dev_eui}}/event/up"
        )
    app = topic.split("/")[-5]
    body = load_json(payload)
    if not isinstance(body, dict):
        raise PayloadError("invalid_structure", "a ChirpStack uplink event is a JSON object")
    _check_device_info(body.get("deviceInfo"), dev_eui, app)
    decoded = body.get("object")
    if not isinstance(decoded, dict):
        raise PayloadError(
            "no_decoded_payload",
            "the event has no decoded 'object': configure a codec in the device's device "
            "profile in ChirpStack",
        )

    mapping = resolve_mapping(profile.field_mapping if profile else None)
    fields = decoded_fields(
        decoded,
        mapping,
        profile.kind if profile else None,
        measurements=profile.measurements if profile else None,
        also=profile.also_kinds if profile else (),
        extra=best_rssi(body.get("rxInfo")),
    )
    reading = uplink_reading(
        fields,
        device_id=dev_eui,
        received_at=received_at,
        server_time=("time", body.get("time")),
        frame_counter=("fCnt", body.get("fCnt")),
        source="chirpstack",
    )
    return [reading]


def _check_device_info(info: Any, dev_eui: str, app: str) -> None:
    if info is None:
        return
    if not isinstance(info, dict):
        raise PayloadError("invalid_structure", "deviceInfo must be an object")
    eui = info.get("devEui")
    if eui is not None and (not isinstance(eui, str) or eui.lower() != dev_eui.lower()):
        raise PayloadError(
            "device_mismatch",
            f"deviceInfo.devEui {eui!r} differs from the topic's DevEUI {dev_eui!r}",
        )
    app_id = info.get("applicationId")
    if app_id is not None and app_id != app:
        raise PayloadError(
            "device_mismatch",
            f"deviceInfo.applicationId {app_id!r} differs from the topic's application {app!r}",
        )

"""The Things Stack (v3) uplink messages on `v3/{app}@{tenant}/devices/{device_id}/up`.

The Things Network community edition drops the tenant (`v3/{app}/devices/{device_id}/up`);
both are accepted, and so is any prefix before `v3/` (a bridge may add one). The TTN device
id in the topic is the CityWatch device id.

From the message (format: The Things Stack docs, "Data Formats", uplink messages):
- `uplink_message.decoded_payload` -> metrics through the device's field mapping
  (`mappings.py`); without it the uplink is refused as `no_decoded_payload`, since CityWatch
  does not run device codecs: set a payload formatter in The Things Stack;
- `uplink_message.received_at` (network server), else the top-level `received_at`, is the
  reading's time when the decoded payload has none (`time_from_gateway` is then true);
- `uplink_message.f_cnt` -> `seq`;
- the best gateway's `rx_metadata[].rssi` -> `rssi_dbm`; SNR is not kept (no registry metric);
- position: decoded `lat`/`lon`, else `uplink_message.locations` (`frm-payload`, then `user`);
- `end_device_ids.device_id` and `application_ids.application_id` must agree with the topic.
Everything else (correlation ids, settings, version ids, dev_eui, ...) is not stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schemas.adapters._lorawan import best_rssi, decoded_fields, uplink_reading
from schemas.adapters._reject import decode_or_reject
from schemas.adapters._values import load_json, position
from schemas.adapters.mappings import resolve_mapping
from schemas.device import DeviceProfile
from schemas.errors import PayloadError
from schemas.reading import Reading, Rejection
from schemas.topics import is_device_id


def match_ttn(topic: str) -> str | None:
    """The device id of a TTN uplink topic, or None when the topic is not one."""
    parts = topic.split("/")
    if len(parts) >= 5 and parts[-5] == "v3" and parts[-3] == "devices" and parts[-1] == "up":
        return parts[-2]
    return None


def decode_ttn(
    topic: str, payload: bytes, received_at: datetime, profile: DeviceProfile | None
) -> list[Reading] | Rejection:
    """Decode one TTN uplink message into one reading, or say why it cannot be."""
    return decode_or_reject(_decode, topic, payload, received_at, profile)


def _decode(
    topic: str, payload: bytes, received_at: datetime, profile: DeviceProfile | None
) -> list[Reading]:
    device_id = match_ttn(topic)
    if device_id is None or not is_device_id(device_id):
        raise PayloadError(
            "bad_topic", f"topic {topic!r} is not v3/{{app}}/devices/{{device_id}}/up"
        )
    app = topic.split("/")[-4].partition("@")[0]
    body = load_json(payload)
    if not isinstance(body, dict):
        raise PayloadError("invalid_structure", "a TTN uplink message is a JSON object")
    _check_ids(body.get("end_device_ids"), device_id, app)
    uplink = body.get("uplink_message")
    if not isinstance(uplink, dict):
        raise PayloadError("invalid_structure", "the message has no 'uplink_message' object")
    decoded = uplink.get("decoded_payload")
    if not isinstance(decoded, dict):
        raise PayloadError(
            "no_decoded_payload",
            "the uplink has no decoded_payload object: set an uplink payload formatter for the "
            "device (or its application) in The Things Stack",
        )

    mapping = resolve_mapping(profile.field_mapping if profile else None)
    fields = decoded_fields(
        decoded,
        mapping,
        profile.kind if profile else None,
        measurements=profile.measurements if profile else None,
        also=profile.also_kinds if profile else (),
        extra=best_rssi(uplink.get("rx_metadata")),
    )
    lat, lon = (None, None)
    if fields.lat is None and fields.lon is None:
        lat, lon = _registry_location(uplink.get("locations"))
    reading = uplink_reading(
        fields,
        device_id=device_id,
        received_at=received_at,
        server_time=("received_at", uplink.get("received_at", body.get("received_at"))),
        frame_counter=("f_cnt", uplink.get("f_cnt")),
        source="ttn",
        lat=lat,
        lon=lon,
    )
    return [reading]


def _check_ids(ids: Any, device_id: str, app: str) -> None:
    if ids is None:
        return
    if not isinstance(ids, dict):
        raise PayloadError("invalid_structure", "end_device_ids must be an object")
    if "device_id" in ids and ids["device_id"] != device_id:
        raise PayloadError(
            "device_mismatch",
            f"end_device_ids.device_id {ids['device_id']!r} differs from the topic's "
            f"device id {device_id!r}",
        )
    app_ids = ids.get("application_ids")
    app_id = app_ids.get("application_id", app) if isinstance(app_ids, dict) else app
    if app_id != app:
        raise PayloadError(
            "device_mismatch",
            f"application_id {app_id!r} differs from the topic's application {app!r}",
        )


def _registry_location(locations: Any) -> tuple[float | None, float | None]:
    """The device's location from `uplink_message.locations`: the payload's, else the user's."""
    if not isinstance(locations, dict):
        return None, None
    for source in ("frm-payload", "user"):
        where = locations.get(source)
        if isinstance(where, dict) and "latitude" in where and "longitude" in where:
            return position(where["latitude"], where["longitude"])
    return None, None

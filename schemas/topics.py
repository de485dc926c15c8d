"""MQTT topic grammar for device uplinks.

Native and SenML uplinks end in `{kind}/{device_id}/up`; whatever stands before that
(`citywatch/` in production, a per-test prefix in tests) is the deployment's namespace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from schemas.errors import PayloadError
from schemas.registry import Kind, is_kind

# Letters, digits and `._:-`, at most 128: what a DevEUI, a TTN device id or a city asset
# tag needs, and nothing that could break a topic ACL, a Kafka key or a log line.
# The pattern is also JSON Schema's and pydantic's (where `$` is the end of the text); in
# Python `$` also matches before a final newline, so Python code checks with
# `is_device_id` (a full match), never `DEVICE_ID.match`.
DEVICE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def is_device_id(text: str) -> bool:
    """Whether `text` is a device id: all of it, so "buoy-1\\n" is not."""
    return DEVICE_ID.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class UplinkTopic:
    kind: Kind
    device_id: str


def parse_uplink_topic(topic: str) -> UplinkTopic:
    """The kind and device id a native or SenML uplink topic names.

    Raises:
        PayloadError: `bad_topic` or `unknown_kind` when the topic does not follow
            `.../{kind}/{device_id}/up`.
    """
    parts = topic.split("/")
    if len(parts) < 3 or parts[-1] != "up":
        raise PayloadError(
            "bad_topic", f"topic {topic!r} does not end in '{{kind}}/{{device_id}}/up'", topic=topic
        )
    kind, device_id = parts[-3], parts[-2]
    if not is_kind(kind):
        raise PayloadError("unknown_kind", f"unknown kind {kind!r} in topic {topic!r}", topic=topic)
    if not is_device_id(device_id):
        raise PayloadError(
            "bad_topic",
            f"device id {device_id!r} in topic {topic!r} must be 1-128 of letters, digits, '._:-'",
            topic=topic,
        )
    return UplinkTopic(kind=kind, device_id=device_id)  # type: ignore[arg-type]


def uplink_topic(prefix: str, kind: str, device_id: str) -> str:
    """The topic a device of `kind` publishes to under `prefix` (e.g. 'citywatch')."""
    return f"{prefix}/{kind}/{device_id}/up" if prefix else f"{kind}/{device_id}/up"

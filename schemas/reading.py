"""Canonical models: what every adapter produces and every service consumes.

A `Reading` is one device's measurements at one instant, already validated against the
metric registry. A `Rejection` is the typed outcome for a payload that cannot become
readings: it travels to `citywatch.rejected.v1` with the raw bytes, so nothing is
dropped silently.
"""

from __future__ import annotations

import base64
import hashlib
import math
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from schemas.registry import Kind
from schemas.topics import DEVICE_ID

DeviceId = Annotated[str, Field(pattern=DEVICE_ID.pattern)]
Source = Literal["native", "senml", "ttn", "chirpstack", "simulator"]


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("time must carry a time zone")
    return value.astimezone(UTC)


UtcDateTime = Annotated[datetime, AfterValidator(_utc)]


class Reading(BaseModel):
    """One device's measurements at one instant (UTC), as stored and as sent on Kafka."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device_id: DeviceId
    kind: Kind
    time: UtcDateTime
    received_at: UtcDateTime
    metrics: dict[str, float] = Field(min_length=1)
    seq: int | None = Field(default=None, ge=0)
    time_from_gateway: bool = Field(
        default=False, description="True when the device sent no time and receive time was used"
    )
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    source: Source = "native"

    @field_validator("metrics")
    @classmethod
    def _finite(cls, metrics: dict[str, float]) -> dict[str, float]:
        for name, value in metrics.items():
            if not math.isfinite(value):
                raise ValueError(f"metric {name!r} is not a finite number")
        return metrics

    def to_kafka(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_kafka(cls, value: bytes) -> Reading:
        return cls.model_validate_json(value)


# What a rejection may quote (issue 10): its detail sentence quotes names and values from
# the payload, and a 256 KiB metric name of escaped characters once made a 1.27 MB record
# that Kafka refused. The detail is cut to this many characters, the raw bytes to the
# excerpt the caller allows; the full payload's size and SHA-256 always travel with them.
MAX_DETAIL_CHARS = 1000
DEFAULT_RAW_EXCERPT_BYTES = 256 * 1024


def _cap_detail(detail: str) -> str:
    if len(detail) <= MAX_DETAIL_CHARS:
        return detail
    cut = len(detail) - (MAX_DETAIL_CHARS - 40)
    return f"{detail[: MAX_DETAIL_CHARS - 40]}... ({cut} more characters cut)"


class Rejection(BaseModel):
    """A payload that could not become readings, with the reason a device engineer can act on.

    `reason` is a short stable code (for metrics labels); `detail` is the readable sentence,
    at most `MAX_DETAIL_CHARS` long whatever the payload quotes.
    """

    model_config = ConfigDict(frozen=True)

    reason: str
    detail: Annotated[str, AfterValidator(_cap_detail)]
    topic: str
    raw: bytes
    received_at: UtcDateTime

    def to_kafka(self, max_raw_bytes: int = DEFAULT_RAW_EXCERPT_BYTES) -> bytes:
        """The record for the rejected topic: the first `max_raw_bytes` of the payload, and the
        whole payload's size and SHA-256, so a cut excerpt is still identifiable."""
        # Raw bytes travel base64-encoded: they may be anything, including invalid UTF-8.
        body = {
            "reason": self.reason,
            "detail": self.detail,
            "topic": self.topic,
            "received_at": self.received_at.isoformat(),
            "raw_b64": base64.b64encode(self.raw[:max_raw_bytes]).decode(),
            "raw_size": len(self.raw),
            "raw_sha256": hashlib.sha256(self.raw).hexdigest(),
        }
        return RejectedRecord.model_validate(body).model_dump_json().encode()


class RejectedRecord(BaseModel):
    """The wire form of a rejection on `citywatch.rejected.v1`."""

    model_config = ConfigDict(frozen=True)

    reason: str
    detail: str
    topic: str
    received_at: datetime
    raw_b64: str = Field(
        description="the payload's first bytes (all of it unless raw_size says more)"
    )
    raw_size: int | None = Field(default=None, description="the whole payload's size in bytes")
    raw_sha256: str | None = Field(default=None, description="SHA-256 of the whole payload, hex")

    @property
    def raw(self) -> bytes:
        return base64.b64decode(self.raw_b64)


def now_utc() -> datetime:
    return datetime.now(UTC)

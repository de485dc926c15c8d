"""Canonical models: what every adapter produces and every service consumes.

A `Reading` is one device's measurements at one instant, already validated against the
metric registry. A `Rejection` is the typed outcome for a payload that cannot become
readings: it travels to `citywatch.rejected.v1` with the raw bytes, so nothing is
dropped silently.
"""

from __future__ import annotations

import base64
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


class Rejection(BaseModel):
    """A payload that could not become readings, with the reason a device engineer can act on.

    `reason` is a short stable code (for metrics labels); `detail` is the readable sentence.
    """

    model_config = ConfigDict(frozen=True)

    reason: str
    detail: str
    topic: str
    raw: bytes
    received_at: UtcDateTime

    def to_kafka(self) -> bytes:
        # Raw bytes travel base64-encoded: they may be anything, including invalid UTF-8.
        body = {
            "reason": self.reason,
            "detail": self.detail,
            "topic": self.topic,
            "received_at": self.received_at.isoformat(),
            "raw_b64": base64.b64encode(self.raw).decode(),
        }
        return RejectedRecord.model_validate(body).model_dump_json().encode()


class RejectedRecord(BaseModel):
    """The wire form of a rejection on `citywatch.rejected.v1`."""

    model_config = ConfigDict(frozen=True)

    reason: str
    detail: str
    topic: str
    received_at: datetime
    raw_b64: str

    @property
    def raw(self) -> bytes:
        return base64.b64decode(self.raw_b64)


def now_utc() -> datetime:
    return datetime.now(UTC)

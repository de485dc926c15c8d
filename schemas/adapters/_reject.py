"""The one place where an adapter's `PayloadError` becomes the payload's `Rejection`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from schemas.errors import PayloadError
from schemas.reading import Reading, Rejection

if TYPE_CHECKING:
    from schemas.device import DeviceProfile

__all__ = ["Decoder", "decode_or_reject", "rejection"]

# An adapter's decoder: raises `PayloadError` for a payload it cannot take.
Decoder = Callable[[str, bytes, datetime, "DeviceProfile | None"], list[Reading]]


def decode_or_reject(
    decode: Decoder,
    topic: str,
    payload: bytes,
    received_at: datetime,
    profile: DeviceProfile | None,
) -> list[Reading] | Rejection:
    """Run an adapter's decoder; the `PayloadError` it raises becomes the payload's `Rejection`,
    with the reason and detail that go to the rejected topic and the metric."""
    try:
        return decode(topic, payload, received_at, profile)
    except PayloadError as exc:
        return rejection(exc, topic, payload, received_at)


def rejection(exc: PayloadError, topic: str, payload: bytes, received_at: datetime) -> Rejection:
    """The `Rejection` of a message refused with `exc`: its reason and detail, and the raw bytes."""
    return Rejection(
        reason=exc.reason, detail=exc.detail, topic=topic, raw=payload, received_at=received_at
    )

"""One error hierarchy for CityWatch, split by whose fault it is.

- `ConfigError`: the operator's settings are wrong; fix the environment and restart.
- `PayloadError` (from `schemas.errors`): a device sent something that cannot become a
  reading; the adapter turns it into a Rejection.
- `UpstreamError`: Kafka, MQTT or the database failed us; `retriable` says whether waiting helps.
- `StateError`: the machine or stack is not usable as it is; the message says the fix.
"""

from __future__ import annotations

from typing import ClassVar

# The root, configuration and payload errors belong to `schemas`, the lower layer, which must
# not import `services`; they are re-exported here so services import every error from here.
from schemas.errors import CityWatchError, ConfigError, PayloadError

__all__ = [
    "CityWatchError",
    "ConfigError",
    "DatabaseUnavailable",
    "KafkaUnavailable",
    "PayloadError",
    "StateError",
    "UpstreamError",
]


class UpstreamError(CityWatchError):
    """A dependency (Kafka, MQTT, PostgreSQL) failed."""

    retriable: ClassVar[bool] = True

    def __init__(self, component: str, detail: str) -> None:
        super().__init__(f"{component}: {detail}")
        self.component = component
        self.detail = detail


class DatabaseUnavailable(UpstreamError):
    """PostgreSQL could not be reached or dropped the connection; retry with backoff."""


class KafkaUnavailable(UpstreamError):
    """Kafka did not acknowledge in time; retry with backoff."""


class StateError(CityWatchError):
    """The local stack or machine is not usable as it is; the message says how to fix it."""

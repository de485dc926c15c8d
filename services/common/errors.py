"""One error hierarchy for CityWatch, split by whose fault it is.

- `ConfigError`: the operator's settings are wrong; fix the environment and restart.
- `PayloadError`: a device sent something that cannot become a reading (becomes a Rejection).
- `UpstreamError`: Kafka, MQTT or the database failed us; `retriable` says whether waiting helps.
- `StateError`: the machine or stack is not usable as it is; the message says the fix.
"""

from __future__ import annotations

from typing import ClassVar


class CityWatchError(Exception):
    """Base of every error CityWatch raises on purpose."""


class ConfigError(CityWatchError, ValueError):
    """A setting is missing or invalid."""


class PayloadError(CityWatchError):
    """A payload cannot become readings."""

    def __init__(self, reason: str, topic: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail} (topic {topic})")
        self.reason = reason
        self.topic = topic
        self.detail = detail


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

"""Shared plumbing: settings, errors, logging, and the one Kafka, database and HTTP helper."""

from services.common.errors import (
    CityWatchError,
    ConfigError,
    DatabaseUnavailable,
    KafkaUnavailable,
    PayloadError,
    StateError,
    UpstreamError,
)
from services.common.settings import Settings, load_settings

__all__ = [
    "CityWatchError",
    "ConfigError",
    "DatabaseUnavailable",
    "KafkaUnavailable",
    "PayloadError",
    "Settings",
    "StateError",
    "UpstreamError",
    "load_settings",
]

"""The one frozen settings tree, built once in `main()` from `CITYWATCH_*` variables.

Endpoints are flat (`CITYWATCH_MQTT_URL`, `CITYWATCH_KAFKA_BOOTSTRAP`,
`CITYWATCH_DATABASE_URL`) because operators set them most; per-service tuning is nested
(`CITYWATCH_PROCESSOR__BATCH_SIZE=5000`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.adapters import DEFAULT_MAX_PAYLOAD_BYTES
from services.common.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TopicSettings(_Section):
    readings: str = "citywatch.readings.v1"
    rejected: str = "citywatch.rejected.v1"
    alerts: str = "citywatch.alerts.v1"
    readings_partitions: int = Field(default=6, ge=1)
    rejected_partitions: int = Field(default=3, ge=1)
    alerts_partitions: int = Field(default=3, ge=1)


class IngestSettings(_Section):
    http_port: int = 8101
    client_id: str = "citywatch-ingest-1"
    # A shared subscription: every gateway in the group gets a share of the device topics.
    filters: tuple[str, ...] = ("$share/citywatch-ingest/citywatch/+/+/up",)
    max_payload_bytes: int = Field(default=DEFAULT_MAX_PAYLOAD_BYTES, ge=1024)
    # MQTT v5 Receive Maximum: how many unacknowledged QoS 1 messages the broker may have in
    # flight to us. It is the gateway's in-flight window, so memory stays bounded.
    receive_maximum: int = Field(default=1000, ge=1, le=65535)
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    graceful_timeout_s: float = 15.0


class ProcessorSettings(_Section):
    http_port: int = 8102
    group_id: str = "processor"
    batch_size: int = Field(default=2000, ge=1)
    batch_max_wait_ms: int = Field(default=250, ge=1)
    graceful_timeout_s: float = 15.0


class AlertSettings(_Section):
    http_port: int = 8103
    group_id: str = "alerts"
    rules_file: Path = REPO_ROOT / "deploy" / "alerts" / "rules.yaml"
    batch_max_wait_ms: int = Field(default=250, ge=1)
    graceful_timeout_s: float = 15.0


class Settings(BaseSettings):
    """Everything a CityWatch process may be told. Frozen: read it, never change it."""

    model_config = SettingsConfigDict(
        env_prefix="CITYWATCH_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    kafka_bootstrap: str = "127.0.0.1:9092"
    database_url: SecretStr = SecretStr("postgresql://citywatch@127.0.0.1:5432/citywatch")
    state_dir: Path = REPO_ROOT / ".citywatch"
    http_host: str = "127.0.0.1"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    topics: TopicSettings = TopicSettings()
    ingest: IngestSettings = IngestSettings()
    processor: ProcessorSettings = ProcessorSettings()
    alerts: AlertSettings = AlertSettings()

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"mqtt", "tcp"}:
            raise ValueError("CITYWATCH_MQTT_URL must look like mqtt://host:1883")
        return value

    @property
    def mqtt_host(self) -> str:
        return urlsplit(self.mqtt_url).hostname or "127.0.0.1"

    @property
    def mqtt_port(self) -> int:
        return urlsplit(self.mqtt_url).port or 1883

    @property
    def kafka_host_port(self) -> tuple[str, int]:
        first = self.kafka_bootstrap.split(",")[0].strip()
        host, _, port = first.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(
                f"CITYWATCH_KAFKA_BOOTSTRAP {self.kafka_bootstrap!r} is not host:port"
            )
        return host, int(port)

    @property
    def database_dsn(self) -> str:
        return self.database_url.get_secret_value()

    def masked(self) -> dict[str, Any]:
        """The settings as a dict safe for logs: secrets and passwords in URLs masked."""
        dump = self.model_dump(mode="json")
        dsn = urlsplit(self.database_dsn)
        if dsn.password:
            dump["database_url"] = self.database_dsn.replace(dsn.password, "***")
        else:
            dump["database_url"] = self.database_dsn
        return dump


def load_settings(**overrides: Any) -> Settings:
    """Build the settings once; turn pydantic's error into a `ConfigError` an operator can read."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(f"invalid CITYWATCH_* settings:\n{exc}") from exc

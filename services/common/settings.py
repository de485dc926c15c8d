"""The one frozen settings tree, built once in `main()` from `CITYWATCH_*` variables.

Endpoints are flat (`CITYWATCH_MQTT_URL`, `CITYWATCH_KAFKA_BOOTSTRAP`,
`CITYWATCH_DATABASE_URL`) because operators set them most; per-service tuning is nested
(`CITYWATCH_PROCESSOR__BATCH_SIZE=5000`).
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.adapters import DEFAULT_MAX_AGE, DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_MAX_SPREAD
from schemas.device import UnknownDevicePolicy
from services.common.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]

# The MQTT accounts CityWatch's own programs log in with. `citywatch stack up` generates
# their passwords into `{state_dir}/mqtt-accounts.json` (mode 0600); the registry writes
# their hashes and topic rights into Mosquitto's password and ACL files.
ServiceAccount = Literal["citywatch-ingest", "citywatch-alerts", "citywatch-simulator"]
SERVICE_ACCOUNTS: tuple[ServiceAccount, ...] = (
    "citywatch-ingest",
    "citywatch-alerts",
    "citywatch-simulator",
)
MQTT_ACCOUNTS_FILE = "mqtt-accounts.json"
# Every CityWatch MQTT client id (the gateway's `citywatch-ingest-1`, delivery's, the
# simulator's...) and service account starts with this. On the device listener a device's
# client id is its id (`use_username_as_clientid`), so no device id may start with it.
SERVICE_ID_PREFIX = "citywatch-"


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
    # Its MQTT and Kafka client id. It starts with `citywatch-`, which no device id may, so
    # no device can take over the gateway's MQTT session.
    client_id: str = Field(default="citywatch-ingest-1", pattern=f"^{SERVICE_ID_PREFIX}")
    # Plain subscriptions, for one gateway: Mosquitto 2.0 saves them with the session, so
    # after a broker crash it queues for the gateway again from the moment it is back. Several
    # gateways share the topics with `$share/citywatch-ingest/...` instead, which Mosquitto
    # 2.0 does not save (docs/broker-durability.md says what that costs on a crash).
    filters: tuple[str, ...] = (
        "citywatch/+/+/up",  # native JSON and SenML
        "v3/+/devices/+/up",  # The Things Stack v3
        "application/+/device/+/event/up",  # ChirpStack v4
    )
    # At most 512 KiB: a rejection carries the payload (base64, 4/3 of it) and must stay
    # under the producer's 1 MiB record limit (services/common/kafka.py). Keep Mosquitto's
    # `max_packet_size` (deploy/mosquitto/mosquitto.conf) a little above this.
    max_payload_bytes: int = Field(default=DEFAULT_MAX_PAYLOAD_BYTES, ge=1024, le=512 * 1024)
    # A reading older than this on arrival is `time_too_old`; one message whose readings
    # lie further apart than this is `time_spread_too_wide` (schemas/adapters/dispatch.py).
    max_reading_age_days: float = Field(default=DEFAULT_MAX_AGE.total_seconds() / 86400, gt=0)
    max_message_span_h: float = Field(default=DEFAULT_MAX_SPREAD.total_seconds() / 3600, gt=0)
    # MQTT v5 Receive Maximum: how many unacknowledged QoS 1 messages the broker may have in
    # flight to us. It is the gateway's in-flight window, so memory stays bounded.
    receive_maximum: int = Field(default=1000, ge=1, le=65535)
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    graceful_timeout_s: float = 15.0
    # Messages from devices the registry does not know: "reject" them (production: only the
    # city's devices feed its alerts) or "accept" them (the demo's simulated city, whose
    # devices the processor then records as unprovisioned).
    unknown_devices: UnknownDevicePolicy = "reject"
    # How often the gateway reloads the registry from PostgreSQL. A disable or a new device
    # takes effect within this time; one reload reads every registered device (one indexed
    # scan, about a millisecond per thousand devices), so 10 s costs the database nothing.
    registry_refresh_s: float = Field(default=10.0, gt=0)


class ProcessorSettings(_Section):
    http_port: int = 8102
    group_id: str = "processor"
    batch_size: int = Field(default=2000, ge=1)
    batch_max_wait_ms: int = Field(default=250, ge=1)
    graceful_timeout_s: float = 15.0
    # Per-device QARTOD overrides are re-read from `devices` this often.
    qc_overrides_refresh_s: float = Field(default=60.0, gt=0)
    # The drift check (services/quality/drift.py) re-reads its bucket means this often.
    drift_refresh_s: float = Field(default=120.0, gt=0)


class AlertSettings(_Section):
    http_port: int = 8103
    group_id: str = "alerts"
    rules_file: Path = REPO_ROOT / "deploy" / "alerts" / "rules.yaml"
    batch_max_wait_ms: int = Field(default=250, ge=1)
    graceful_timeout_s: float = 15.0
    # Run the notifiers (services/alerts/delivery: MQTT, webhooks, e-mail) in this process.
    delivery: bool = True


class ApiSettings(_Section):
    """The read API and the two pages (services/api/)."""

    http_port: int = 8104
    # A device is offline when the gateway has heard nothing from it for this long, and
    # stuck when it still talks but its newest reading time has not advanced for this long.
    offline_after_s: float = Field(default=900.0, gt=0)
    stuck_after_s: float = Field(default=1800.0, gt=0)
    # Bounds that keep one request from exhausting the database.
    max_page_size: int = Field(default=1000, ge=1)
    max_raw_range_h: float = Field(default=48.0, gt=0)
    max_bucket_range_d: float = Field(default=31.0, gt=0)
    # Live stream: open connections and per-client queue (a slow client loses events,
    # counted, instead of growing memory).
    max_stream_clients: int = Field(default=200, ge=1)
    # Stream slots one client address may hold at once (an operator's browser tabs): one
    # client cannot take every slot of `max_stream_clients`.
    max_streams_per_client: int = Field(default=4, ge=1)
    stream_queue: int = Field(default=1000, ge=1)
    geojson_file: Path = REPO_ROOT / "services" / "api" / "static" / "geo" / "sihanoukville.geojson"
    open_data_licence: str = "CC-BY-4.0"
    # This deployment shows simulated data only (`citywatch demo` sets it): every page says
    # so, whatever the alerts' CAP status, so a screenshot of a demo is never taken as real.
    simulated_data: bool = False
    graceful_timeout_s: float = 10.0


class DeliverySettings(_Section):
    """Alert delivery (services/alerts/delivery): MQTT, webhooks, e-mail, reminders."""

    group_id: str = "alerts-delivery"
    http_port: int = 8105  # used when the delivery service runs on its own
    subscribers_file: Path = REPO_ROOT / "deploy" / "alerts" / "subscribers.yaml"
    mqtt_topic: str = "citywatch/alerts/{severity}/{area}"
    # Who the MQTT retained topics speak to (issue 14): `public` (street displays, sirens)
    # carry public alerts only; `operators` would carry device health too (a private broker).
    mqtt_audience: Literal["public", "operators"] = "public"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    # STARTTLS: unset means yes, unless the relay is on this machine (a local MTA). A login
    # without TLS to another host (the password in clear on the network) is refused.
    smtp_starttls: bool | None = None
    mail_from: str = "CityWatch <alerts@citywatch.invalid>"
    attempt_timeout_s: float = Field(default=10.0, gt=0)
    retry_initial_s: float = Field(default=1.0, gt=0)
    retry_max_s: float = Field(default=300.0, gt=0)
    give_up_after_s: float = Field(default=24 * 3600.0, gt=0)
    claim_batch: int = Field(default=50, ge=1)
    poll_s: float = Field(default=2.0, gt=0)
    graceful_timeout_s: float = 15.0

    @property
    def smtp_tls(self) -> bool:
        """Whether delivery starts TLS with the relay (`smtp_starttls`, unset: not loopback)."""
        if self.smtp_starttls is not None:
            return self.smtp_starttls
        return not is_loopback(self.smtp_host)

    @model_validator(mode="after")
    def _no_clear_login(self) -> Self:
        if self.smtp_username and not self.smtp_tls and not is_loopback(self.smtp_host):
            msg = (
                f"SMTP login to {self.smtp_host} without TLS would send the password in "
                "clear: set CITYWATCH_DELIVERY__SMTP_STARTTLS=true (or drop the login)"
            )
            raise ValueError(msg)
        return self


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: traffic that never leaves the machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CapSettings(_Section):
    """Who publishes the CAP 1.2 messages and where people read them (services/alerts/cap.py).

    Each deployment names itself: `sender` is CAP's `<sender>` (an address without spaces,
    commas, `<` or `&`, section 3.2.1), `web_base_url` the public address of the alerts
    service, under which `<web>` opens the alert's page (`/alerts/{id}.html`) and the CAP
    files live (`/cap/{id}.xml`); left unset it is `http://{http_host}:{alerts.http_port}`,
    which only suits a demo on one machine. `contact` is CAP's `<contact>` (a phone number
    or address people may call about the alert), omitted when unset.
    """

    sender: str = "citywatch@preahsihanouk.example"
    sender_name_en: str = "CityWatch operations centre, Preah Sihanouk"
    sender_name_km: str = "មជ្ឈមណ្ឌលប្រតិបត្តិការ CityWatch ខេត្តព្រះសីហនុ"
    web_base_url: str | None = None
    contact: str | None = None


class RetentionSettings(_Section):
    """How long data is kept, in one place; `citywatch db maintain` applies it on both paths
    (services/common/maintenance.py). Days are whole UTC days."""

    # At least 4: the TimescaleDB refresh policies re-aggregate the last 3 days, and a
    # refresh over a range whose raw rows are gone would empty the aggregates there.
    raw_days: int = Field(default=30, ge=4)
    minute_days: int = Field(default=90, ge=4)  # readings_1m
    hour_days: int = Field(default=730, ge=4)  # readings_1h
    compress_after_days: int = Field(default=7, ge=1)  # TimescaleDB only
    # The processor applies this retention itself at start and then every so many hours
    # (services/processor/writer.py `_upkeep`); 0 leaves it to `citywatch db maintain` alone.
    maintain_every_h: float = Field(default=24.0, ge=0)

    @model_validator(mode="after")
    def _aggregates_outlive_raw(self) -> RetentionSettings:
        if not self.raw_days <= self.minute_days <= self.hour_days:
            raise ValueError("retention must satisfy raw_days <= minute_days <= hour_days")
        return self


class Settings(BaseSettings):
    """Everything a CityWatch process may be told. Frozen: read it, never change it."""

    model_config = SettingsConfigDict(
        env_prefix="CITYWATCH_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    # The broker's device listener: devices log in here, and Mosquitto replaces whatever
    # client id a device sends with its username (its device id), so no device can take
    # over another client's session.
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    # The broker's services listener: CityWatch's own programs (the ingest gateway, alert
    # delivery, the simulator, benchmarks, tests) log in here with the service accounts,
    # under client ids that start with `citywatch-` (no device id may: the registry refuses
    # them). Only service accounts can log in on it. Unset: mqtt_url's host, next port.
    mqtt_services_url: str | None = None
    # Set both to log every CityWatch program in as one account (an external broker). Left
    # unset, each program uses its own service account from `mqtt_accounts` (see mqtt_login).
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    # Service-account passwords; read from {state_dir}/mqtt-accounts.json when not given.
    mqtt_accounts: dict[str, SecretStr] = Field(default_factory=dict)
    # The simulator's account may publish as any device (demo, tests, benchmarks): false in
    # production leaves it out of the broker's password and ACL files.
    mqtt_simulator_account: bool = True
    kafka_bootstrap: str = "127.0.0.1:9092"
    # How long a producer waits for Kafka: per request, for a topic's metadata, and for a
    # record to leave its buffer while a partition has no leader. A send that times out is
    # retried by the gateway, in order (services/ingest/gateway.py).
    kafka_request_timeout_ms: int = Field(default=15_000, ge=1000)
    database_url: SecretStr = SecretStr("postgresql://citywatch@127.0.0.1:5432/citywatch")
    state_dir: Path = REPO_ROOT / ".citywatch"
    # The operator routes' secret (/ops, /devices, /readings, the alert history, /metrics:
    # services/common/http_auth.py). Left unset, it is read from {state_dir}/operator-token,
    # which the first service to need it creates (mode 0600).
    operator_token: SecretStr | None = None
    http_host: str = "127.0.0.1"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    # The city: its areas by id, names in English and Khmer, aliases, geocodes, circles and
    # flood levels (schemas/city.py). Every service that names a place reads this one file.
    city_file: Path = REPO_ROOT / "deploy" / "city" / "sihanoukville.yaml"
    # QARTOD defaults per metric (services/quality/): the processor stores the verdict and
    # the alerts service acts on the same verdict, so both read this one file.
    quality_file: Path = REPO_ROOT / "deploy" / "quality" / "defaults.yaml"

    topics: TopicSettings = TopicSettings()
    ingest: IngestSettings = IngestSettings()
    processor: ProcessorSettings = ProcessorSettings()
    alerts: AlertSettings = AlertSettings()
    delivery: DeliverySettings = DeliverySettings()
    api: ApiSettings = ApiSettings()
    retention: RetentionSettings = RetentionSettings()
    cap: CapSettings = CapSettings()

    @model_validator(mode="before")
    @classmethod
    def _read_mqtt_accounts(cls, data: Any) -> Any:
        """Fill `mqtt_accounts` from the state folder's accounts file, once, here in the
        settings layer, so no service reads files for its credentials."""
        if not isinstance(data, dict) or data.get("mqtt_accounts"):
            return data
        state_dir = Path(data.get("state_dir") or REPO_ROOT / ".citywatch")
        return {**data, "mqtt_accounts": read_mqtt_accounts(state_dir / MQTT_ACCOUNTS_FILE)}

    @field_validator("mqtt_url", "mqtt_services_url")
    @classmethod
    def _mqtt_scheme(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in {"mqtt", "tcp"}:
            raise ValueError("an MQTT URL must look like mqtt://host:1883")
        return value

    @property
    def mqtt_host(self) -> str:
        return urlsplit(self.mqtt_url).hostname or "127.0.0.1"

    @property
    def mqtt_port(self) -> int:
        return urlsplit(self.mqtt_url).port or 1883

    @property
    def mqtt_services(self) -> str:
        """The services listener's URL: where CityWatch's own programs connect."""
        return self.mqtt_services_url or f"mqtt://{self.mqtt_host}:{self.mqtt_port + 1}"

    @property
    def mqtt_services_host(self) -> str:
        return urlsplit(self.mqtt_services).hostname or "127.0.0.1"

    @property
    def mqtt_services_port(self) -> int:
        return urlsplit(self.mqtt_services).port or 1884

    def mqtt_login(self, account: ServiceAccount) -> tuple[str | None, str | None]:
        """(username, password) for one CityWatch program's MQTT connection.

        CITYWATCH_MQTT_USERNAME/PASSWORD win when set; otherwise the program's own service
        account from the state folder; (None, None) means anonymous (a broker without auth).
        """
        if self.mqtt_username:
            secret = self.mqtt_password.get_secret_value() if self.mqtt_password else None
            return self.mqtt_username, secret
        password = self.mqtt_accounts.get(account)
        if password is not None:
            return account, password.get_secret_value()
        return None, None

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


def read_mqtt_accounts(path: Path) -> dict[str, str]:
    """The service-account passwords in `path` ({account: password}); none if it is absent."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the MQTT service accounts in {path}: {exc}") from exc
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise ConfigError(f"{path} must hold a JSON object of account name -> password")
    return raw


def load_settings(**overrides: Any) -> Settings:
    """Build the settings once; turn pydantic's error into a `ConfigError` an operator can read."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(f"invalid CITYWATCH_* settings:\n{exc}") from exc

"""Payload encoders: one device's readings as each format a real CityWatch device uses.

Written from each format's public documentation, so the decoders in `schemas/adapters/`
can be checked against them:

- **native**: CityWatch's JSON (DESIGN.md, "Topics"), on `{prefix}/{kind}/{device_id}/up`;
  one object, or a list for a buffered upload.
- **senml**: a SenML JSON pack (RFC 8428) on the same topic. The first record carries the
  base name (`bn`, an RFC 9039 `urn:dev:mac:` name from the device's EUI-64, ending in `:`
  so that `bn` + `n` is the measurement's globally unique name, RFC 8428 §4.5.1) and the
  base time (`bt`, seconds since the epoch); further instants of a buffered upload carry
  `t` relative to `bt` (§4.5.3). Units are SenML registry units (IANA "SenML Units", with
  RFC 8798's secondary units where the issue names them: `ug/m3`, `mm/h`, `ppm`, `dBm`);
  where no registered unit matches the registry's, the value is converted to a registered
  one: mg/L -> `kg/m3`, µS/cm -> `S/m`, ppb -> `ppm`, a fill level in % -> the ratio `/`
  (SenML's `%` is a ratio too, RFC 8428 §12.1 note 1; `%RH` and `%EL` are percentages).
- **ttn**: a The Things Stack v3 uplink message (TTS docs, "Reference / Data Formats /
  Uplink messages") on `v3/{application_id}@{tenant_id}/devices/{device_id}/up`, with
  `end_device_ids`, `received_at`, `uplink_message.{f_port, f_cnt, frm_payload,
  decoded_payload, rx_metadata[], settings, received_at, consumed_airtime, network_ids}`.
- **chirpstack**: a ChirpStack v4 uplink event (`integration.UplinkEvent` in ChirpStack's
  protobuf API, JSON-encoded with camelCase names as its MQTT integration publishes it) on
  `application/{application_id}/device/{dev_eui}/event/up`, with `deduplicationId`,
  `time`, `deviceInfo`, `devAddr`, `fCnt`, `fPort`, `data`, `object`, `rxInfo[]`, `txInfo`.

LoRaWAN payloads carry the application bytes (`frm_payload` / `data`, base64) and the
network server's decoded object; the bytes are CityWatch's reference codec: a version byte
then each metric, in the order of the registry, as a big-endian int32 of value * 1000.
Decoded field names are CityWatch's metric names (a device whose network server uses other
names gets a field mapping in the registry).
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from schemas.registry import COMMON, METRICS, Kind
from schemas.topics import uplink_topic

Format = Literal["native", "senml", "ttn", "chirpstack"]
FORMATS: tuple[Format, ...] = get_args(Format)

# metric -> (SenML unit, factor from the registry's unit to that unit)
SENML_UNITS: dict[str, tuple[str, float]] = {
    "ph": ("pH", 1.0),
    "turbidity_ntu": ("NTU", 1.0),  # what turbidimeters report; no SI alternative exists
    "dissolved_oxygen_mgl": ("kg/m3", 1e-3),  # 1 mg/L = 1e-3 kg/m3
    "conductivity_uscm": ("S/m", 1e-4),  # 1 µS/cm = 1e-4 S/m
    "temperature_c": ("Cel", 1.0),
    "pm25_ugm3": ("ug/m3", 1.0),
    "pm10_ugm3": ("ug/m3", 1.0),
    "no2_ppb": ("ppm", 1e-3),
    "o3_ppb": ("ppm", 1e-3),
    "so2_ppb": ("ppm", 1e-3),
    "co_ppm": ("ppm", 1.0),
    "humidity_pct": ("%RH", 1.0),
    "water_level_m": ("m", 1.0),
    "rain_mm_h": ("mm/h", 1.0),
    "flow_m3s": ("m3/s", 1.0),
    "litter_items": ("count", 1.0),
    # RFC 8428 §12.1 note 1: SenML "%" (like "/") is the ratio 0..1, NOT a percentage.
    "fill_level_pct": ("/", 0.01),
    "litter_kg": ("kg", 1.0),
    "battery_pct": ("%EL", 1.0),  # RFC 8428: remaining battery energy level in percents
    "rssi_dbm": ("dBm", 1.0),
}

# The Kingdom of Cambodia uses the AS923 LoRaWAN frequency plan.
_AS923_CHANNELS = (923_200_000, 923_400_000, 922_200_000, 922_400_000, 922_600_000,
                   922_800_000, 923_000_000, 922_000_000)  # fmt: skip
TTN_TENANT = "ttn"
CHIRPSTACK_TENANT_ID = "52f14cd4-c6f1-4fbd-8f87-4025e1d49242"


@dataclass(frozen=True)
class Identity:
    """A device as each network knows it."""

    device_id: str
    kind: Kind
    lat: float
    lon: float
    area: str

    @property
    def dev_eui(self) -> str:
        """A stable EUI-64 from the device id (locally administered, so never a real one)."""
        digest = bytearray(hashlib.sha256(self.device_id.encode()).digest()[:8])
        digest[0] = (digest[0] | 0x02) & 0xFE
        return digest.hex()

    @property
    def dev_addr(self) -> str:
        return hashlib.sha256(b"addr" + self.device_id.encode()).hexdigest()[:8]

    def pipeline_id(self, fmt: Format) -> str:
        """The device id CityWatch's readings will carry for this format's topic."""
        return self.dev_eui if fmt == "chirpstack" else self.device_id


@dataclass(frozen=True)
class Sample:
    """One reading as the device took it (time by the device's own clock)."""

    time: datetime
    seq: int
    metrics: dict[str, float]  # the kind's metrics plus battery_pct and rssi_dbm
    snr_db: float = 7.5


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def encode_native(prefix: str, who: Identity, samples: list[Sample]) -> tuple[str, bytes]:
    bodies = [
        {"time": iso(s.time), "seq": s.seq, "metrics": s.metrics, "lat": who.lat, "lon": who.lon}
        for s in samples
    ]
    return uplink_topic(prefix, who.kind, who.device_id), _dumps(
        bodies[0] if len(bodies) == 1 else bodies
    )


def _senml_value(metric: str, value: float) -> tuple[str, float]:
    unit, factor = SENML_UNITS[metric]
    # Rounded to 12 significant digits so a factor never shows float noise like 0.0072000001.
    return unit, float(f"{value * factor:.12g}")


def encode_senml(prefix: str, who: Identity, samples: list[Sample]) -> tuple[str, bytes]:
    base_time = round(samples[0].time.timestamp(), 3)
    records: list[dict[str, Any]] = []
    for s in samples:
        rel = round(s.time.timestamp() - base_time, 3)
        for metric, value in s.metrics.items():
            unit, v = _senml_value(metric, value)
            rec: dict[str, Any] = {}
            if not records:
                rec["bn"] = f"urn:dev:mac:{who.dev_eui}:"
                rec["bt"] = base_time
            rec["n"] = metric
            rec["u"] = unit
            rec["v"] = v
            if rel != 0:  # absent `t` means "at the base time" (RFC 8428 §4.5.3)
                rec["t"] = rel
            records.append(rec)
    return uplink_topic(prefix, who.kind, who.device_id), _dumps(records)


def frm_payload(kind: Kind, metrics: dict[str, float]) -> bytes:
    """CityWatch's reference codec: version 1, then int32 (value * 1000) per metric."""
    order = [*METRICS[kind], *COMMON]
    out = bytearray([1])
    for name in order:
        value = metrics.get(name)
        raw = -(2**31) if value is None else max(-(2**31) + 1, min(2**31 - 1, round(value * 1000)))
        out += struct.pack(">i", raw)
    return bytes(out)


def _radio(who: Identity, s: Sample) -> tuple[int, int, float]:
    """Channel frequency, spreading factor and airtime: stable per device, varying by seq."""
    h = int(who.dev_addr, 16)
    freq = _AS923_CHANNELS[(h + s.seq) % len(_AS923_CHANNELS)]
    sf = 7 + h % 4
    airtime = 0.0566 * 2 ** (sf - 7)
    return freq, sf, airtime


def _decoded(s: Sample) -> dict[str, float]:
    # The radio's RSSI travels in the rx metadata, not in the application payload.
    return {k: v for k, v in s.metrics.items() if k != "rssi_dbm"}


def _ids(who: Identity, s: Sample, salt: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"citywatch:{salt}:{who.device_id}:{s.seq}:{iso(s.time)}")


def ttn_topic(app: str, who: Identity, tenant: str = TTN_TENANT) -> str:
    return f"v3/{app}@{tenant}/devices/{who.device_id}/up"


def encode_ttn(app: str, who: Identity, s: Sample, tenant: str = TTN_TENANT) -> tuple[str, bytes]:
    freq, sf, airtime = _radio(who, s)
    rx_time = iso(s.time)
    gw_rx = iso(s.time + timedelta(milliseconds=180))
    ns_rx = iso(s.time + timedelta(milliseconds=320))
    decoded = _decoded(s)
    counter = int(_ids(who, s, "ts").int % 2**32)
    body = {
        "end_device_ids": {
            "device_id": who.device_id,
            "application_ids": {"application_id": app},
            "dev_eui": who.dev_eui.upper(),
            "join_eui": "0000000000000000",
            "dev_addr": who.dev_addr.upper(),
        },
        "correlation_ids": [f"as:up:{_ids(who, s, 'as').hex.upper()[:26]}"],
        "received_at": ns_rx,
        "uplink_message": {
            "session_key_id": base64.b64encode(_ids(who, s, "sk").bytes).decode(),
            "f_port": 1,
            "f_cnt": s.seq,
            "frm_payload": base64.b64encode(frm_payload(who.kind, decoded)).decode(),
            "decoded_payload": decoded,
            "rx_metadata": [
                {
                    "gateway_ids": {
                        "gateway_id": f"citywatch-gw-{who.area}",
                        "eui": "A84041FFFF1C2D3E",
                    },
                    "time": rx_time,
                    "timestamp": counter,
                    "rssi": round(s.metrics.get("rssi_dbm", -100.0)),
                    "channel_rssi": round(s.metrics.get("rssi_dbm", -100.0)),
                    "snr": s.snr_db,
                    "uplink_token": base64.b64encode(_ids(who, s, "tok").bytes).decode(),
                    "received_at": gw_rx,
                }
            ],
            "settings": {
                "data_rate": {
                    "lora": {"bandwidth": 125000, "spreading_factor": sf, "coding_rate": "4/5"}
                },
                "frequency": str(freq),
                "timestamp": counter,
                "time": rx_time,
            },
            "received_at": ns_rx,
            "consumed_airtime": f"{airtime:.6f}s",
            "locations": {
                "user": {"latitude": who.lat, "longitude": who.lon, "source": "SOURCE_REGISTRY"}
            },
            "network_ids": {"net_id": "000013", "tenant_id": tenant, "cluster_id": "au1"},
        },
    }
    return ttn_topic(app, who, tenant), _dumps(body)


def chirpstack_app_id(app: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"citywatch:chirpstack-app:{app}"))


def chirpstack_topic(app: str, who: Identity) -> str:
    return f"application/{chirpstack_app_id(app)}/device/{who.dev_eui}/event/up"


def encode_chirpstack(app: str, who: Identity, s: Sample) -> tuple[str, bytes]:
    freq, sf, _ = _radio(who, s)
    decoded = _decoded(s)
    body = {
        "deduplicationId": str(_ids(who, s, "dedup")),
        "time": iso(s.time),
        "deviceInfo": {
            "tenantId": CHIRPSTACK_TENANT_ID,
            "tenantName": "CityWatch",
            "applicationId": chirpstack_app_id(app),
            "applicationName": app,
            "deviceProfileId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"citywatch:profile:{who.kind}")),
            "deviceProfileName": f"citywatch-{who.kind}",
            "deviceName": who.device_id,
            "devEui": who.dev_eui,
            "deviceClassEnabled": "CLASS_A",
            "tags": {"kind": who.kind, "area": who.area},
        },
        "devAddr": who.dev_addr,
        "adr": True,
        "dr": 12 - sf,  # AS923: DR5 = SF7 ... DR2 = SF10
        "fCnt": s.seq,
        "fPort": 1,
        "confirmed": False,
        "data": base64.b64encode(frm_payload(who.kind, decoded)).decode(),
        "object": decoded,
        "rxInfo": [
            {
                "gatewayId": "a84041ffff1c2d3e",
                "uplinkId": int(_ids(who, s, "up").int % 2**32),
                "gwTime": iso(s.time + timedelta(milliseconds=150)),
                "nsTime": iso(s.time + timedelta(milliseconds=290)),
                "rssi": round(s.metrics.get("rssi_dbm", -100.0)),
                "snr": s.snr_db,
                "channel": _AS923_CHANNELS.index(freq),
                "rfChain": 0,
                "location": {"latitude": who.lat, "longitude": who.lon},
                "context": base64.b64encode(_ids(who, s, "ctx").bytes[:4]).decode(),
                "metadata": {"region_common_name": "AS923", "region_config_id": "as923"},
                "crcStatus": "CRC_OK",
            }
        ],
        "txInfo": {
            "frequency": freq,
            "modulation": {
                "lora": {"bandwidth": 125000, "spreadingFactor": sf, "codeRate": "CR_4_5"}
            },
        },
        "regionConfigId": "as923",
    }
    return chirpstack_topic(app, who), _dumps(body)


def encode(
    fmt: Format, who: Identity, samples: list[Sample], *, prefix: str, app: str
) -> list[tuple[str, bytes]]:
    """The MQTT messages that carry `samples`: one for native and SenML (a list or a pack
    when several), one uplink per sample for the LoRaWAN network servers."""
    if fmt == "native":
        return [encode_native(prefix, who, samples)]
    if fmt == "senml":
        return [encode_senml(prefix, who, samples)]
    if fmt == "ttn":
        return [encode_ttn(app, who, s) for s in samples]
    return [encode_chirpstack(app, who, s) for s in samples]

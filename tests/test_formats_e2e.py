"""One device of each payload format through the real Mosquitto (authentication on), the
gateway, Kafka and the processor: rows in PostgreSQL with the right metrics, units
converted and ids mapped as the registry says."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from schemas.device import DeviceProfile
from services.registry import store as registry
from simulators import Publisher
from tests.harness import Namespace, Services, wait_until

pytestmark = pytest.mark.stack


async def test_each_payload_format_is_stored_with_converted_units_and_mapped_ids(
    ns: Namespace, services: Services, publisher: Publisher, dbcon: asyncpg.Connection
) -> None:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    native_id = f"{ns.device_prefix}native-1"
    senml_id = f"{ns.device_prefix}senml-1"
    ttn_id = f"{ns.device_prefix}ttn-gauge"
    eui = f"0004a30b{ns.suffix}"  # ChirpStack names devices by DevEUI (16 hex digits)
    await registry.upsert_devices(
        dbcon,
        [
            DeviceProfile(device_id=native_id, kind="water"),
            DeviceProfile(device_id=senml_id, kind="water", payload_format="senml"),
            # The Things Stack device decoding FIWARE FloodMonitoring names.
            DeviceProfile(
                device_id=ttn_id, kind="flood", payload_format="ttn", field_mapping="fiware-flood"
            ),
            # A ChirpStack air sensor whose codec says pm2_5 and a 0-1 humidity fraction.
            DeviceProfile(
                device_id=eui,
                kind="air",
                payload_format="chirpstack",
                field_mapping={"pm2_5": "pm25_ugm3", "hum": "humidity_pct@/"},
            ),
        ],
    )
    # The gateway loads the registry when it starts: register first, then start.
    await services.start("ingest", "processor", CITYWATCH_INGEST__UNKNOWN_DEVICES="reject")

    messages = {
        f"{ns.prefix}/water/{native_id}/up": {"time": at.isoformat(), "metrics": {"ph": 7.1}},
        # SenML (RFC 8428): kelvin and siemens per metre, converted to °C and µS/cm.
        f"{ns.prefix}/water/{senml_id}/up": [
            {
                "bn": f"urn:dev:cw:{senml_id}:",
                "bt": at.timestamp(),
                "n": "temperature_c",
                "u": "K",
                "v": 302.15,
            },
            {"n": "conductivity_uscm", "u": "S/m", "v": 0.05},
        ],
        f"v3/{ns.ttn_app}@citywatch/devices/{ttn_id}/up": {
            "end_device_ids": {
                "device_id": ttn_id,
                "dev_eui": "70B3D57ED0000001",
                "application_ids": {"application_id": ns.ttn_app},
            },
            "received_at": at.isoformat(),
            "uplink_message": {
                "f_port": 1,
                "f_cnt": 12,
                "received_at": at.isoformat(),
                "decoded_payload": {"currentLevel": 1.75},
                "rx_metadata": [
                    {"gateway_ids": {"gateway_id": "gw-otres"}, "rssi": -97, "snr": 7.5}
                ],
            },
        },
        f"application/{ns.chirpstack_app}/device/{eui}/event/up": {
            "deduplicationId": "3c5e1d7a-9a41-4c38-b4a2-2d3f1a7c0b11",
            "time": at.isoformat(),
            "deviceInfo": {
                "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
                "applicationId": ns.chirpstack_app,
                "deviceName": "aq-port",
                "devEui": eui,
                "tags": {},
            },
            "fCnt": 40,
            "fPort": 2,
            "object": {"pm2_5": 12.5, "hum": 0.62},
            "rxInfo": [{"gatewayId": "0016c001ff10a235", "rssi": -80, "snr": 9.0}],
        },
    }
    for topic, body in messages.items():
        info = publisher.publish_raw(topic, json.dumps(body).encode())
        await asyncio.to_thread(info.wait_for_publish, 10)

    async def stored() -> dict[tuple[str, str], float]:
        rows = await dbcon.fetch(
            "SELECT device_id, metric, value FROM readings WHERE device_id = ANY($1::text[])",
            [native_id, senml_id, ttn_id, eui],
        )
        return {(r["device_id"], r["metric"]): r["value"] for r in rows}

    expected = {
        (native_id, "ph"): 7.1,
        (senml_id, "temperature_c"): 29.0,
        (senml_id, "conductivity_uscm"): 500.0,
        (ttn_id, "water_level_m"): 1.75,
        (ttn_id, "rssi_dbm"): -97.0,
        (eui, "pm25_ugm3"): 12.5,
        (eui, "humidity_pct"): 62.0,
        (eui, "rssi_dbm"): -80.0,
    }

    async def all_stored() -> bool:
        return len(await stored()) >= len(expected)

    await wait_until(all_stored, timeout=30, what="a row for every metric of every format")
    got = await stored()
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
    times = await dbcon.fetch(
        "SELECT DISTINCT time FROM readings WHERE device_id = ANY($1::text[])",
        [native_id, senml_id, ttn_id, eui],
    )
    assert [r["time"] for r in times] == [at]

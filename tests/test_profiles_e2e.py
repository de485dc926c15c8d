"""Devices registered with shipped profiles, their vendors' own example uplinks through the
real Mosquitto, the gateway, Kafka and the processor: the corpus rows in PostgreSQL, derived
levels, catalog metrics and a decoder's measurement list included, and a catalog metric
served by the read API (issue 13)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.registry import store as registry
from simulators import Publisher
from tests.harness import REPO, Namespace, Services, wait_until
from tests.test_api import get
from tests.test_device_profiles import registered

pytestmark = pytest.mark.stack

# A flood gauge whose level is derived from a distance, a CTD keeping its depth (a catalog
# metric), and a weather station whose decoder returns a list of measurements.
CASES = ("decentlab-dl-mbx", "decentlab-dl-ctd10", "sensecap-s2120")


async def test_profiled_devices_store_their_vendor_examples_corpus_rows(
    ns: Namespace, services: Services, publisher: Publisher, dbcon: asyncpg.Connection
) -> None:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    cases = {
        f"{ns.device_prefix}{name}": json.loads(
            (REPO / "tests" / "corpus" / f"{name}.json").read_text()
        )
        for name in CASES
    }
    await registry.upsert_devices(dbcon, [registered(c, d) for d, c in cases.items()])
    procs = await services.start(
        "ingest", "processor", "api", CITYWATCH_INGEST__UNKNOWN_DEVICES="reject"
    )

    for device_id, case in cases.items():
        body = {
            "end_device_ids": {
                "device_id": device_id,
                "application_ids": {"application_id": ns.ttn_app},
            },
            "uplink_message": {
                "f_cnt": 7,
                "received_at": at.isoformat(),
                "decoded_payload": case["decoded"],
                "rx_metadata": [{"gateway_ids": {"gateway_id": "gw-1"}, "rssi": -90, "snr": 6.0}],
            },
        }
        topic = f"v3/{ns.ttn_app}@citywatch/devices/{device_id}/up"
        info = publisher.publish_raw(topic, json.dumps(body).encode())
        await asyncio.to_thread(info.wait_for_publish, 10)

    expected = {
        (d, metric): value
        for d, case in cases.items()
        for metric, value in {**case["rows"], "rssi_dbm": -90}.items()
    }

    async def stored() -> dict[tuple[str, str], float]:
        rows = await dbcon.fetch(
            "SELECT device_id, metric, value FROM readings WHERE device_id = ANY($1::text[])",
            list(cases),
        )
        return {(r["device_id"], r["metric"]): r["value"] for r in rows}

    async def all_stored() -> bool:
        return len(await stored()) >= len(expected)

    await wait_until(all_stored, timeout=30, what="every corpus row of every profiled device")
    got = await stored()
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key

    # A catalog metric is served like any other: the CTD's depth through the read API.
    ctd = f"{ns.device_prefix}decentlab-dl-ctd10"
    frm = (at - timedelta(minutes=1)).isoformat().replace("+", "%2B")
    status, body, _ = await get(
        f"http://127.0.0.1:{procs[-1].port}/readings?device={ctd}&metric=depth_m&from={frm}"
    )
    assert status == 200, body
    assert [r["value"] for r in body["readings"]] == [pytest.approx(4.232)]

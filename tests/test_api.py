"""The read API against the real stack: a real `citywatch api` process, real PostgreSQL
holding a simulated day played through the whole pipeline (MQTT -> ingest -> Kafka ->
processor), once per module, and the module's own Kafka topics for the live stream."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from schemas import Reading
from services.api.status import LatestValue, air_category, area_of, kind_status
from services.common.http_auth import operator_headers
from services.common.kafka import client_options
from services.common.settings import KAFKA_ADMIN, load_settings
from simulators import Message, Publisher
from simulators.run import ScenarioRun
from simulators.scenarios import load_scenario
from tests.harness import Namespace, Services, wait_until

pytestmark = pytest.mark.stack

# Inside Mittapheap (town centre) and at the Prek Toek Sap river mouth gauge.
TOWN = (10.6265, 103.5225)
MOUTH = (10.5880, 103.6650)


def reading(
    device: str, kind: str, t: datetime, where: tuple[float, float], **metrics: float
) -> Reading:
    return Reading(
        device_id=device,
        kind=kind,  # type: ignore[arg-type]
        time=t,
        received_at=datetime.now(UTC),
        metrics=metrics,
        lat=where[0],
        lon=where[1],
    )


async def produce(ns: Namespace, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(**client_options(ns.settings, KAFKA_ADMIN))
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, v) for v in values])
    finally:
        await producer.stop()


# The simulated fleet: a normal day of 8 devices (two per kind, in Mittapheap and Prey Nob),
# the last SIM_HOURS of it played through MQTT -> ingest -> Kafka -> processor -> PostgreSQL.
SIM_DEVICES = 8
SIM_HOURS = 3


async def seed(
    services: Services, dbcon: asyncpg.Connection, ns: Namespace, publisher: Publisher
) -> dict[str, Any]:
    """Through the whole pipeline (MQTT, a real ingest and processor): the simulator's
    normal day ending now, faults off, so every message must become rows. On top of it,
    the few states a calm day does not produce (see the comments below)."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    run = ScenarioRun(
        load_scenario("normal-day"),
        devices=SIM_DEVICES,
        seed=23,  # a fleet whose Mittapheap devices lie nearest Mittapheap's centre
        start=now - timedelta(hours=24),  # the day ends now: the latest values are fresh
        prefix=ns.prefix,
        id_prefix=ns.device_prefix,
        fault_scale=0,
    )
    fleet = {(d.who.kind, d.area.id): d.who.device_id for d in run.devices}
    where = {d.who.device_id: (d.who.lat, d.who.lon) for d in run.devices}
    air, probe, bin_ = (fleet[(k, "mittapheap")] for k in ("air", "water", "litter"))
    # The API places an unregistered device in the area whose centre is nearest.
    for dev in (air, probe, bin_):
        assert area_of(run.city, None, *where[dev]) == "mittapheap", dev
    since, bin_stops = now - timedelta(hours=SIM_HOURS), now - timedelta(hours=1)
    msgs: list[Message] = [
        m
        for m in run.messages()
        if m.sent_at is not None
        and m.sent_at >= since
        # Hand-made: the litter bin's last hour is withheld, so its newest reading time
        # stands still while (below) it keeps talking: a stuck device.
        and not (m.device_id == bin_ and m.sent_at >= bin_stops)
    ]
    await services.start("ingest", "processor")
    stats = await asyncio.to_thread(publisher.run, iter(msgs))
    assert stats.acked == len(msgs)
    # Hand-made: a calm day crosses no flood level, so one gauge of our own at the Prek
    # Toek Sap river mouth reads above its danger level (through Kafka and the processor).
    gauge = f"{ns.device_prefix}gauge"
    await produce(
        ns,
        ns.readings_topic,
        [reading(gauge, "flood", now - timedelta(minutes=1), MOUTH, water_level_m=3.4).to_kafka()],
    )
    expected = sum(m.rows for m in msgs) + 1

    async def stored() -> bool:
        return await ns.rows(dbcon) == expected

    await wait_until(stored, timeout=60, what=f"{expected} rows of the simulated day stored")
    # Hand-made: the probe fell silent an hour ago; the bin still talks (clock stood still).
    await dbcon.execute(
        "UPDATE devices SET last_seen = now() - interval '1 hour' WHERE device_id = $1", probe
    )
    await dbcon.execute("UPDATE devices SET last_seen = now() WHERE device_id = $1", bin_)
    air_metrics = [json.loads(m.payload)["metrics"] for m in msgs if m.device_id == air]
    probe_metrics = [json.loads(m.payload)["metrics"] for m in msgs if m.device_id == probe]
    return {
        "now": now,
        "ns": ns,
        "air": air,
        "gauge": gauge,
        "probe": probe,
        "bin": bin_,
        # Devices the live-stream test may send new readings for without changing the
        # state the other tests of the module read (their latest values stay as seeded).
        "air2": fleet[("air", "prey-nob")],
        "flood2": fleet[("flood", "mittapheap")],
        "where": where,
        "pm25": [x["pm25_ugm3"] for x in air_metrics],
        "air_rows": sum(len(x) for x in air_metrics),
        "probe_turbidity": probe_metrics[-1]["turbidity_ntu"],
    }


@pytest.fixture(scope="module")
async def api(
    mod_services: Services,
    mod_dbcon: asyncpg.Connection,
    mod_ns: Namespace,
    mod_publisher: Publisher,
) -> dict[str, Any]:
    data = await seed(mod_services, mod_dbcon, mod_ns, mod_publisher)
    (proc,) = await mod_services.start("api")
    return {**data, "base": f"http://127.0.0.1:{proc.port}"}


def operator() -> dict[str, str]:
    """The operator token's header, from the state folder the services read it from."""
    return operator_headers(load_settings())


async def get(url: str, *, token: bool = True) -> tuple[int, Any, dict[str, str]]:
    """GET `url`, as an operator (the default) or, with `token=False`, as anyone."""
    headers = operator() if token else {}
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
        body = await r.read()
        ctype = r.headers.get("Content-Type", "")
        parsed = json.loads(body) if "json" in ctype else body.decode()
        return r.status, parsed, dict(r.headers)


async def test_devices_report_status_state_and_latest_values_with_filters(api):
    base = api["base"]
    status, body, _ = await get(f"{base}/devices?kind=air&area=mittapheap")
    assert status == 200
    mine = {d["device_id"]: d for d in body["devices"]}
    assert api["air"] in mine and api["gauge"] not in mine
    air = mine[api["air"]]
    assert air["status"] == "online" and air["state"] == "normal" and air["area"] == "mittapheap"
    assert air["latest"]["pm25_ugm3"]["value"] == api["pm25"][-1]  # the newest reading
    assert air["last_seen"] is not None

    async def ids(q: str) -> set[str]:
        # Every page: the shared database holds other tests' devices, over a page of them.
        out: set[str] = set()
        offset: int | None = 0
        while offset is not None:
            st, b, _ = await get(f"{base}/devices?{q}&limit=1000&offset={offset}")
            assert st == 200
            out |= {d["device_id"] for d in b["devices"]}
            offset = b["next_offset"]
        return out

    assert api["probe"] in await ids("status=offline")
    assert api["probe"] not in await ids("status=online")
    assert api["bin"] in await ids("status=stuck")
    assert api["gauge"] in await ids("area=prek-toek-sap-mouth&status=online")
    st, one, _ = await get(f"{base}/devices/{api['probe']}")
    assert (
        st == 200
        and one["state"] == "offline"
        and one["latest"]["turbidity_ntu"]["value"] == api["probe_turbidity"]
    )
    st, _, _ = await get(f"{base}/devices/{api['probe']}-nope")
    assert st == 404


async def test_readings_raw_pages_cover_every_row_once_and_buckets_aggregate(api):
    base, dev = api["base"], api["air"]
    frm = (api["now"] - timedelta(hours=4)).isoformat()
    seen: list[tuple[str, str]] = []
    cursor = ""
    for _ in range(20):
        url = f"{base}/readings?device={dev}&from={frm}&limit=100" + (
            f"&cursor={cursor}" if cursor else ""
        )
        st, body, _ = await get(url.replace("+", "%2B"))
        assert st == 200, body
        seen += [(r["time"], r["metric"]) for r in body["readings"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    # every metric of every simulated air reading, no repeats
    assert len(seen) == api["air_rows"] == len(set(seen))
    st, body, _ = await get(
        f"{base}/readings?device={dev}&metric=pm25_ugm3&bucket=1h&from={frm}".replace("+", "%2B")
    )
    assert st == 200
    rows = body["readings"]
    assert sum(r["count"] for r in rows) == len(api["pm25"])
    assert all(r["min"] <= r["avg"] <= r["max"] for r in rows)
    assert min(r["min"] for r in rows) == min(api["pm25"])
    assert max(r["max"] for r in rows) == max(api["pm25"])


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("", "device"),
        ("device=x&from=yesterday", "from"),
        ("device=x&from=2026-01-01T00:00:00", "from"),  # no zone
        ("device=x&from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z", "from"),  # > 48 h raw
        ("device=x&bucket=1h&from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
        ("device=x&bucket=7m", "bucket"),
        ("device=x&metric=pm99", "metric"),
        ("device=x&limit=100000", "limit"),
        ("device=x&cursor=%%%", "cursor"),
    ],
)
async def test_bad_reading_parameters_get_a_400_naming_the_parameter(api, query, parameter):
    st, body, _ = await get(f"{api['base']}/readings?{query}")
    assert st == 400 and body["parameter"] == parameter and body["detail"]


async def test_bad_device_and_stream_filters_get_a_400(api):
    base = api["base"]
    for url, parameter in [
        ("/devices?kind=lava", "kind"),
        ("/devices?status=asleep", "status"),
        ("/devices?area=atlantis", "area"),
        ("/devices?limit=0", "limit"),
        ("/stream?kind=lava", "kind"),
        ("/stream?types=gossip", "types"),
        ("/open-data/hourly.csv?from=2020-01-01T00:00:00Z", "from"),
    ]:
        st, body, _ = await get(base + url)
        assert (st, body["parameter"]) == (400, parameter), url


async def test_areas_say_each_kinds_level_in_codes_the_pages_translate(api):
    st, body, _ = await get(f"{api['base']}/areas")
    assert st == 200
    areas = {a["id"]: a for a in body["areas"]}
    assert set(areas) >= {"mittapheap", "prek-toek-sap-mouth", "victory-beach"}
    # Our gauge reads 3.4 m at a river mouth whose danger level is 3.0 m; other tests'
    # gauges may stand there too, but "danger" is the worst level, so it must win.
    assert areas["prek-toek-sap-mouth"]["kinds"]["flood"]["level"] == "danger"
    assert areas["mittapheap"]["kinds"]["air"]["level"] in {
        "moderate",
        "unhealthy_sensitive",
        "unhealthy",
        "very_unhealthy",
        "hazardous",
    }


async def test_only_a_registered_drinking_water_point_is_the_areas_drinking_water(
    api, mod_dbcon: asyncpg.Connection
):
    """Issue 14: a water device registered as a drinking-water point (migration 0013) is its
    area's `drinking_water` section, judged as drinking water (8 NTU: a warning, boil
    before drinking), and /devices says so; the same reading from an unregistered buoy
    beside it stays in the area's `water` section."""
    ns = api["ns"]
    tap, buoy = f"{ns.device_prefix}tap", f"{ns.device_prefix}buoy"
    at = datetime.now(UTC) - timedelta(minutes=1)
    await produce(
        ns,
        ns.readings_topic,
        [reading(d, "water", at, MOUTH, turbidity_ntu=8.0).to_kafka() for d in (tap, buoy)],
    )

    async def both_stored() -> bool:
        n = await mod_dbcon.fetchval(
            "SELECT count(*) FROM device_latest WHERE device_id = ANY($1)", [tap, buoy]
        )
        return bool(n == 2)

    await wait_until(both_stored, timeout=60, what="the tap's and the buoy's readings")
    await mod_dbcon.execute("UPDATE devices SET drinking_water = true WHERE device_id = $1", tap)
    try:
        st, body, _ = await get(f"{api['base']}/areas")
        assert st == 200
        mouth = {a["id"]: a for a in body["areas"]}["prek-toek-sap-mouth"]
        drinking = mouth["kinds"]["drinking_water"]
        assert drinking["level"] == "warning" and drinking["metric"] == "turbidity_ntu"
        # 8 NTU in estuary water is ordinary: the buoy's section is not raised by it
        assert mouth["kinds"]["water"]["devices"] >= 1
        st, devices, _ = await get(f"{api['base']}/devices")
        flags = {d["device_id"]: d["drinking_water"] for d in devices["devices"]}
        assert flags[tap] is True and flags[buoy] is False
    finally:
        # /areas is the whole city's: other tests' pages must not see this tap
        await mod_dbcon.execute("DELETE FROM devices WHERE device_id = ANY($1)", [tap, buoy])


def test_area_levels_leave_out_offline_devices_and_flagged_values():
    assert air_category(9.0) == "good" and air_category(35.5) == "unhealthy_sensitive"
    st = kind_status(
        "air",
        None,
        [
            ("offline", {"pm25_ugm3": LatestValue(300.0, 1)}),
            ("online", {"pm25_ugm3": LatestValue(500.0, 4)}),  # QARTOD fail: not trusted
            ("online", {"pm25_ugm3": LatestValue(12.0, 1)}),
        ],
    )
    assert (st.devices, st.online, st.level, st.value) == (3, 2, "moderate", 12.0)


async def test_open_data_csv_and_json_state_the_licence_and_aggregate_per_area(api):
    base = api["base"]
    st, text, headers = await get(f"{base}/open-data/hourly.csv?area=mittapheap&kind=air")
    assert st == 200 and headers["Content-Type"].startswith("text/csv")
    assert (
        'rel="license"' in headers["Link"]
        and "creativecommons.org/licenses/by/4.0" in headers["Link"]
    )
    assert "CC-BY-4.0" in headers["X-License"]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert (
        rows
        and {r["area"] for r in rows} == {"mittapheap"}
        and {r["kind"] for r in rows} == {"air"}
    )
    assert {r["metric"] for r in rows} >= {"pm25_ugm3", "pm10_ugm3"}
    st, body, headers = await get(f"{base}/open-data/hourly.json?area=mittapheap")
    assert st == 200 and body["licence"]["id"] == "CC-BY-4.0" and body["licence"]["url"]
    assert body["rows"] and all(r["area"] == "mittapheap" for r in body["rows"])


async def test_openapi_describes_every_route(api):
    st, doc, _ = await get(f"{api['base']}/openapi.json")
    assert st == 200 and doc["openapi"].startswith("3.")
    for path in (
        "/devices",
        "/devices/{device_id}",
        "/readings",
        "/areas",
        "/stream",
        "/open-data/hourly.csv",
        "/open-data/hourly.json",
    ):
        assert path in doc["paths"], path


async def test_stream_sends_new_readings_and_alert_changes_matching_the_filter(api):
    """Events arrive from the test's Kafka topics; a filter on one device lets only its
    events through (the other device's reading, sent first, must not appear). Both are
    simulated devices no other test of the module reads, so their new readings change
    nothing the others check."""
    base, dev, other, ns = api["base"], api["air2"], api["flood2"], api["ns"]
    got: list[tuple[str, dict[str, Any]]] = []
    connected = asyncio.Event()

    async def listen() -> None:
        async with (
            aiohttp.ClientSession(headers=operator()) as s,
            s.get(f"{base}/stream?device={dev}") as r,
        ):
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
            event = ""
            async for raw in r.content:
                line = raw.decode().rstrip("\n")
                if line.startswith(": connected"):
                    connected.set()
                elif line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    got.append((event, json.loads(line[6:])))

    task = asyncio.create_task(listen())
    try:
        await asyncio.wait_for(connected.wait(), 10)
        producer = AIOKafkaProducer(**client_options(ns.settings, KAFKA_ADMIN))
        await producer.start()
        try:
            t = datetime.now(UTC)
            await producer.send_and_wait(
                ns.readings_topic,
                reading(other, "flood", t, api["where"][other], water_level_m=1.0).to_kafka(),
            )
            await producer.send_and_wait(
                ns.readings_topic,
                reading(dev, "air", t, api["where"][dev], pm25_ugm3=77.0).to_kafka(),
            )
            alert = {
                "event_id": 1,
                "alert_id": str(uuid.uuid4()),
                "transition": "firing",
                "device_id": dev,
                "kind": "air",
                "metric": "pm25_ugm3",
                "severity": "warning",
                "value": 77.0,
            }
            await producer.send_and_wait(ns.alerts_topic, json.dumps(alert).encode())
        finally:
            await producer.stop()

        async def both() -> bool:
            return {e for e, _ in got} == {"reading", "alert"}

        await wait_until(both, timeout=20, what="a reading and an alert event on the stream")
        assert all(d["device_id"] == dev for _, d in got)
        assert [d["metrics"]["pm25_ugm3"] for e, d in got if e == "reading"] == [77.0]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

"""The alerts HTTP API against the real PostgreSQL, served by the real `HttpServer`.

Each test writes its own devices and alerts straight into the tables, under names with a
uuid suffix (device ids, areas, rule ids, token names), and filters by them, so tests
never see each other's alerts in the shared database. The server runs in-process on a
free port, exactly as the alerts service composes it (`HttpServer(routes=api.routes())`).
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import jsonschema
import pytest
from lxml import etree
from openapi_spec_validator import validate as validate_openapi

from schemas.city import parse_city
from services.alerts import api_queries
from services.alerts.api import AlertsApi
from services.alerts.areas import CityAreas
from services.alerts.cap import CAP_NS, validate_cap
from services.alerts.feed import ATOM_NS
from services.alerts.model import Circle
from services.alerts.openapi import document
from services.alerts.tokens import TOKEN_PREFIX, new_token, token_digest
from services.common import db
from services.common.http import HttpServer
from services.common.http_auth import operator_headers
from services.common.settings import CapSettings, Settings, load_settings
from tests.harness import REPO, free_port

pytestmark = pytest.mark.stack

NS = {"cap": CAP_NS, "atom": ATOM_NS}
NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass
class Fleet:
    """One test's devices and alerts, named with its own suffix."""

    con: asyncpg.Connection
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def area(self, name: str) -> str:
        return f"t{self.suffix}-{name}"

    async def device(
        self,
        name: str,
        *,
        kind: str = "flood",
        area: str | None = "north",
        lat: float | None = 10.63,
        lon: float | None = 103.52,
    ) -> str:
        device_id = f"t{self.suffix}-{name}"
        await self.con.execute(
            """INSERT INTO devices (device_id, kind, name, area, lat, lon, status)
               VALUES ($1, $2, $3, $4, $5, $6, 'active')""",
            device_id,
            kind,
            f"Gauge {name}",
            self.area(area) if area else None,
            lat,
            lon,
        )
        return device_id

    async def alert(
        self,
        device_id: str | None,
        *,
        kind: str = "flood",
        metric: str | None = "water_level_m",
        severity: str = "warning",
        transitions: Sequence[str] = ("firing",),
        started_at: datetime | None = None,
        value: float = 2.6,
        status: str = "Actual",
        area: str | None = None,
    ) -> uuid.UUID:
        """An alert with one event per transition, 10 minutes apart, in its final state
        (`escalated` and `deescalated` leave it firing)."""
        alert_id = uuid.uuid4()
        start = started_at or NOW - timedelta(hours=1)
        state = {"escalated": "firing", "deescalated": "firing"}.get(
            transitions[-1], transitions[-1]
        )
        times = [start + timedelta(minutes=10 * i) for i in range(len(transitions))]
        await self.con.execute(
            """INSERT INTO alerts (alert_id, rule_id, device_id, kind, metric, severity, state,
                                   value, last_value, threshold, started_at, resolved_at,
                                   title_en, title_km, status, area)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, 2.5, $9, $10, $11, $12, $13, $14)""",
            alert_id,
            f"t{self.suffix}-rule",
            device_id,
            kind,
            metric,
            severity,
            state,
            value,
            start,
            times[-1] if state == "resolved" else None,
            "Flood warning",
            "ការព្រមានទឹកជំនន់",
            status,
            self.area(area) if area else None,
        )
        for transition, at in zip(transitions, times, strict=True):
            await self.con.execute(
                "INSERT INTO alert_events (alert_id, state, value, at, published_at)"
                " VALUES ($1, $2, $3, $4, now())",
                alert_id,
                transition,
                value,
                at,
            )
        return alert_id

    async def token(self, name: str) -> str:
        token = new_token()
        assert await api_queries.create_token(
            self.con, f"t{self.suffix}-{name}", token_digest(token)
        )
        return token


@dataclass
class Api:
    """The API on a real HTTP server, and a client session to call it."""

    base: str
    session: aiohttp.ClientSession
    operator: dict[str, str]  # the operator token's header (the alert history needs it)

    async def get(
        self, path: str, *, token: bool = True, **params: Any
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        """GET `path`, as an operator (the default) or, with `token=False`, as anyone."""
        headers = self.operator if token else {}
        async with self.session.get(
            self.base + path, params=params or None, headers=headers
        ) as resp:
            body: Any = await resp.read()
            if resp.content_type == "application/json":
                body = await resp.json()
            return resp.status, body, resp

    async def ack(self, alert_id: object, token: str | None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with self.session.post(f"{self.base}/alerts/{alert_id}/ack", headers=headers) as resp:
            return resp.status, await resp.json()


@pytest.fixture
async def pool(migrated: Settings) -> AsyncIterator[asyncpg.Pool]:
    async with db.create_pool(migrated.database_dsn) as p:
        yield p


@pytest.fixture
async def fleet(dbcon: asyncpg.Connection) -> Fleet:
    return Fleet(dbcon)


async def _serve(api: AlertsApi, port: int | None = None) -> AsyncIterator[Api]:
    port = port or free_port()
    async with (
        HttpServer(
            service="alerts-api-test",
            host="127.0.0.1",
            port=port,
            ready_checks=dict,
            routes=api.routes(),
            operator=api.operator,
        ),
        aiohttp.ClientSession() as session,
    ):
        yield Api(f"http://127.0.0.1:{port}", session, operator_headers(load_settings()))


def _city(fleet: Fleet) -> CityAreas:
    """The test's own areas file: two areas under the test's suffix, with geocodes."""
    return CityAreas(
        parse_city(
            {
                "city": "Testville",
                "geocodes": {"ISO3166-2": "KH-18"},
                "areas": [
                    {"id": fleet.area("mapped"), "name": "Stueng Hav", "name_km": "ស្ទឹងហាវ",
                     "lat": 10.755, "lon": 103.58, "radius_m": 3000,
                     "geocodes": {"NCDD": "1803"}},
                    {"id": fleet.area("far"), "lat": 10.60, "lon": 103.50, "radius_m": 1000},
                ],
            }
        )
    )  # fmt: skip


def _circle(c: Circle | None) -> str:
    assert c is not None
    return f"{c.lat:g},{c.lon:g} {c.radius_km:g}"


@pytest.fixture
async def client(migrated: Settings, pool: asyncpg.Pool, fleet: Fleet) -> AsyncIterator[Api]:
    async for api in _serve(AlertsApi(lambda: pool, migrated, areas=_city(fleet))):
        yield api


async def _ids(api: Api, **params: Any) -> list[str]:
    status, body, _ = await api.get("/alerts", **params)
    assert status == 200, body
    return [a["alert_id"] for a in body["alerts"]]


# -- GET /alerts ---------------------------------------------------------------------------


async def test_alert_filters_return_exactly_the_matching_alerts(client: Api, fleet: Fleet) -> None:
    north = await fleet.device("g1")
    south = await fleet.device("g2", area="south")
    air = await fleet.device("a1", kind="air", area="south")
    h = timedelta(hours=1)
    firing = await fleet.alert(north, severity="warning", started_at=NOW - 5 * h)
    acked = await fleet.alert(
        south, severity="danger", transitions=("firing", "acknowledged"), started_at=NOW - 4 * h
    )
    resolved = await fleet.alert(
        north,
        severity="watch",
        transitions=("firing", "resolved"),
        started_at=NOW - 30 * h,  # resolved 10 minutes later: long before `since` below
    )
    hazy = await fleet.alert(
        air, kind="air", metric="pm25_ugm3", severity="warning", value=80.0, started_at=NOW - 2 * h
    )
    mine = f"{fleet.area('north')},{fleet.area('south')}"
    s = str

    assert await _ids(client, area=mine) == [s(hazy), s(acked), s(firing), s(resolved)]
    assert await _ids(client, area=mine, state="firing") == [s(hazy), s(firing)]
    assert await _ids(client, area=mine, state="firing,acknowledged") == [
        s(hazy),
        s(acked),
        s(firing),
    ]
    assert await _ids(client, area=fleet.area("north")) == [s(firing), s(resolved)]
    assert await _ids(client, area=mine, severity="danger") == [s(acked)]
    assert await _ids(client, area=mine, kind="air") == [s(hazy)]
    assert await _ids(client, device_id=north) == [s(firing), s(resolved)]
    assert await _ids(client, rule_id=f"t{fleet.suffix}-rule", severity="watch") == [s(resolved)]
    # Time range: alerts active at some time in [since, until).
    since = (NOW - 6 * h).isoformat()
    assert await _ids(client, area=mine, since=since) == [s(hazy), s(acked), s(firing)]
    until = (NOW - 3 * h).isoformat()
    assert await _ids(client, area=mine, since=since, until=until) == [s(acked), s(firing)]
    old = (NOW - 29 * h).isoformat()
    assert await _ids(client, area=mine, until=old) == [s(resolved)]

    _, body, _ = await client.get("/alerts", area=mine, state="acknowledged")
    [row] = body["alerts"]
    assert row["area"] == fleet.area("south") and row["location"] == {"lat": 10.63, "lon": 103.52}
    assert row["cap_url"].endswith(f"/cap/{acked}.xml")


async def test_pagination_walks_every_alert_once_newest_first(client: Api, fleet: Fleet) -> None:
    devices = [await fleet.device(f"p{i}") for i in range(7)]
    tie = NOW - timedelta(hours=3)  # two alerts at the same instant: the id breaks the tie
    started = [tie, tie, *(NOW - timedelta(hours=4 + i) for i in range(5))]
    alerts = [await fleet.alert(d, started_at=t) for d, t in zip(devices, started, strict=True)]
    expected = sorted(zip(started, alerts, strict=True), key=lambda p: (p[0], p[1]), reverse=True)

    seen: list[str] = []
    pages: list[int] = []
    cursor: str | None = None
    while True:
        params = {"area": fleet.area("north"), "limit": "3"}
        if cursor is not None:
            params["cursor"] = cursor
        status, body, _ = await client.get("/alerts", **params)
        assert status == 200, body
        pages.append(len(body["alerts"]))
        seen += [a["alert_id"] for a in body["alerts"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == [3, 3, 1]
    assert seen == [str(a) for _, a in expected]


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("/alerts", {"state": "open"}, "state"),
        ("/alerts", {"state": "firing,"}, "state"),
        ("/alerts", {"severity": "extreme"}, "severity"),
        ("/alerts", {"kind": "fire"}, "kind"),
        ("/alerts", {"limit": "0"}, "limit"),
        ("/alerts", {"limit": "501"}, "limit"),
        ("/alerts", {"limit": "ten"}, "limit"),
        ("/alerts", {"since": "yesterday"}, "since"),
        ("/alerts", {"since": "2026-11-24T10:00:00"}, "since"),
        ("/alerts", {"since": "2026-11-24T10:00:00Z", "until": "2026-11-24T09:00:00Z"}, "until"),
        ("/alerts", {"cursor": "not-a-cursor"}, "cursor"),
        ("/alerts", {"severty": "danger"}, "severty"),
        ("/alerts/not-a-uuid", {}, "alert_id"),
        ("/cap/not-a-uuid.xml", {}, "alert_id"),
        ("/cap/feed.atom", {"lang": "fr"}, "lang"),
    ],
)
async def test_bad_parameters_answer_400_naming_the_parameter(
    client: Api, path: str, params: dict[str, str], parameter: str
) -> None:
    status, body, _ = await client.get(path, **params)
    assert status == 400
    assert body["error"] == "bad_parameter" and body["parameter"] == parameter, body
    assert body["detail"]


async def test_unknown_alert_is_404(client: Api) -> None:
    for path in (f"/alerts/{uuid.uuid4()}", f"/cap/{uuid.uuid4()}.xml"):
        status, body, _ = await client.get(path)
        assert status == 404 and body["error"] == "not_found"


async def test_alert_detail_carries_its_history_in_order(client: Api, fleet: Fleet) -> None:
    alert = await fleet.alert(
        await fleet.device("h1"), transitions=("firing", "acknowledged", "resolved")
    )
    status, body, _ = await client.get(f"/alerts/{alert}")
    assert status == 200
    assert body["alert"]["alert_id"] == str(alert) and body["alert"]["state"] == "resolved"
    assert [e["state"] for e in body["history"]] == ["firing", "acknowledged", "resolved"]
    times = [datetime.fromisoformat(e["at"]) for e in body["history"]]
    assert times == sorted(times)


async def test_api_answers_503_while_the_database_pool_is_not_open(migrated: Settings) -> None:
    async for api in _serve(AlertsApi(lambda: None, migrated)):
        status, body, _ = await api.get("/alerts")
        assert status == 503 and body["error"] == "unavailable"


# -- POST /alerts/{id}/ack ---------------------------------------------------------------


async def _events(con: asyncpg.Connection, alert_id: uuid.UUID) -> list[str]:
    rows = await con.fetch(
        "SELECT state FROM alert_events WHERE alert_id = $1 ORDER BY event_id", alert_id
    )
    return [r["state"] for r in rows]


async def test_ack_without_a_live_token_is_401_and_changes_nothing(
    client: Api, fleet: Fleet
) -> None:
    alert = await fleet.alert(await fleet.device("u1"))
    revoked = await fleet.token("gone")
    assert await api_queries.revoke_token(fleet.con, f"t{fleet.suffix}-gone")
    for token in (None, "", TOKEN_PREFIX + "made-up", revoked):
        status, body = await client.ack(alert, token)
        assert status == 401, (token, body)
    async with client.session.post(
        f"{client.base}/alerts/{alert}/ack", headers={"Authorization": "Basic dXNlcjpwdw=="}
    ) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    row = await fleet.con.fetchrow(
        "SELECT state, acknowledged_by FROM alerts WHERE alert_id = $1", alert
    )
    assert row is not None
    assert (row["state"], row["acknowledged_by"]) == ("firing", None)
    assert await _events(fleet.con, alert) == ["firing"]


async def test_ack_records_who_and_when_once_and_is_idempotent(client: Api, fleet: Fleet) -> None:
    alert = await fleet.alert(await fleet.device("k1"))
    desk = await fleet.token("ops-desk")
    other = await fleet.token("night-shift")
    before = await fleet.con.fetchval("SELECT now()")

    status, body = await client.ack(alert, desk)
    assert status == 200 and body["already_acknowledged"] is False
    assert body["alert"]["state"] == "acknowledged"
    row = await fleet.con.fetchrow(
        "SELECT state, acknowledged_by, acknowledged_at FROM alerts WHERE alert_id = $1", alert
    )
    assert row is not None
    assert row["state"] == "acknowledged"
    assert row["acknowledged_by"] == f"t{fleet.suffix}-ops-desk"
    assert row["acknowledged_at"] >= before
    event = await fleet.con.fetchrow(
        "SELECT at, value, published_at FROM alert_events"
        " WHERE alert_id = $1 AND state = 'acknowledged'",
        alert,
    )
    assert event is not None
    assert event["at"] == row["acknowledged_at"] and event["value"] == 2.6
    assert event["published_at"] is None  # in the outbox, for citywatch.alerts.v1

    # Again, and by someone else: nothing changes, the first acknowledgement stands.
    for token in (desk, other):
        status, body = await client.ack(alert, token)
        assert status == 200 and body["already_acknowledged"] is True
        assert body["alert"]["acknowledged_by"] == f"t{fleet.suffix}-ops-desk"
    assert await _events(fleet.con, alert) == ["firing", "acknowledged"]


async def test_concurrent_acks_write_one_event(client: Api, fleet: Fleet) -> None:
    alert = await fleet.alert(await fleet.device("c1"))
    token = await fleet.token("racer")
    results = await asyncio.gather(*(client.ack(alert, token) for _ in range(8)))
    assert all(status == 200 for status, _ in results)
    assert sum(not body["already_acknowledged"] for _, body in results) == 1
    assert await _events(fleet.con, alert) == ["firing", "acknowledged"]


async def test_ack_of_a_resolved_alert_is_409_and_of_an_unknown_one_404(
    client: Api, fleet: Fleet
) -> None:
    alert = await fleet.alert(await fleet.device("r1"), transitions=("firing", "resolved"))
    token = await fleet.token("late")
    status, body = await client.ack(alert, token)
    assert status == 409 and body["error"] == "alert_resolved"
    assert await fleet.con.fetchval("SELECT state FROM alerts WHERE alert_id = $1", alert) == (
        "resolved"
    )
    assert await _events(fleet.con, alert) == ["firing", "resolved"]
    status, body = await client.ack(uuid.uuid4(), token)
    assert status == 404 and body["error"] == "not_found"
    status, body = await client.ack("nope", token)
    assert status == 400 and body["parameter"] == "alert_id"


async def _citywatch(*args: str) -> tuple[int, str, str]:
    """Run the real `citywatch` command line (same environment: the test database)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_token_is_printed_once_and_stored_only_as_its_sha256(
    client: Api, fleet: Fleet
) -> None:
    name = f"t{fleet.suffix}-cli"
    code, out, err = await _citywatch("alerts-token", "create", name)
    assert code == 0, err
    token = out.strip()
    assert token.startswith(TOKEN_PREFIX) and len(token) >= 40 and token not in err
    stored = await fleet.con.fetchval(
        "SELECT token_sha256 FROM api_tokens WHERE name = $1 AND revoked_at IS NULL", name
    )
    assert stored == hashlib.sha256(token.encode()).digest()

    alert = await fleet.alert(await fleet.device("t1"))
    status, body = await client.ack(alert, token)
    assert status == 200 and body["alert"]["acknowledged_by"] == name

    # The raw token is nowhere in the database: every table's rows as text, searched
    # (readings and its partitions hold only ids and numbers, and are left out for size).
    tables = await fleet.con.fetch(
        """SELECT quote_ident(table_name) AS t FROM information_schema.tables
           WHERE table_schema = 'public' AND table_type = 'BASE TABLE'
             AND table_name NOT LIKE 'readings%'"""
    )
    assert any(r["t"] == "api_tokens" for r in tables)
    for r in tables:
        hits = await fleet.con.fetchval(
            f"SELECT count(*) FROM {r['t']} x WHERE strpos(x::text, $1) > 0", token
        )
        assert hits == 0, f"the raw token appears in table {r['t']}"

    code, _, err = await _citywatch("alerts-token", "create", name)
    assert code == 1 and "exists" in err  # one live token per name
    code, out, err = await _citywatch("alerts-token", "revoke", name)
    assert code == 0, err
    other = await fleet.alert(await fleet.device("t2"))
    status, _ = await client.ack(other, token)
    assert status == 401
    code, _, _ = await _citywatch("alerts-token", "revoke", name)
    assert code == 1  # nothing live left to revoke
    code, _, err = await _citywatch("alerts-token", "create", "bad name")
    assert code == 2 and "token name" in err


# -- CAP and the feed ----------------------------------------------------------------------


def _cap(body: bytes) -> etree._Element:
    validate_cap(body)  # OASIS's CAP 1.2 XML Schema
    return etree.fromstring(body)


@pytest.mark.parametrize(
    ("transitions", "status", "msg_type"),
    [
        (("firing",), "Actual", "Alert"),
        (("firing", "acknowledged"), "Actual", "Update"),
        (("firing", "escalated"), "Actual", "Update"),
        (("firing", "escalated", "deescalated"), "Actual", "Update"),
        (("firing", "resolved"), "Actual", "Update"),  # the all-clear (cap.py, delivery)
        (("firing", "acknowledged", "resolved"), "Actual", "Update"),
        (("firing",), "Test", "Alert"),
        (("firing", "resolved"), "Test", "Cancel"),  # a rehearsal's end
        (("firing", "resolved"), "Exercise", "Cancel"),
    ],
)
async def test_cap_of_every_alert_state_validates_in_both_languages(
    client: Api, fleet: Fleet, transitions: tuple[str, ...], status: str, msg_type: str
) -> None:
    device = await fleet.device("cap1", lat=10.6265, lon=103.5225)
    alert = await fleet.alert(device, transitions=transitions, status=status)
    code, body, resp = await client.get(f"/cap/{alert}.xml")
    assert code == 200
    assert resp.content_type == "application/cap+xml"
    doc = _cap(body)
    n = len(transitions) - 1
    assert doc.findtext("cap:identifier", namespaces=NS) == f"citywatch-{alert}-{n}"
    assert doc.findtext("cap:msgType", namespaces=NS) == msg_type
    assert doc.findtext("cap:status", namespaces=NS) == status
    refs = (doc.findtext("cap:references", namespaces=NS) or "").split()
    assert [r.split(",")[1] for r in refs] == [f"citywatch-{alert}-{i}" for i in range(n)]
    infos = doc.findall("cap:info", NS)
    assert [i.findtext("cap:language", namespaces=NS) for i in infos] == ["en-US", "km-KH"]
    km_headline = infos[1].findtext("cap:headline", namespaces=NS) or ""
    assert any("\u1780" <= ch <= "\u17ff" for ch in km_headline), km_headline
    for info in infos:
        # an area the areas file does not know: the city's extent, not the device's spot
        extent = _circle(_city(fleet).extent())
        assert info.findtext("cap:area/cap:circle", namespaces=NS) == extent
        assert info.findtext("cap:area/cap:areaDesc", namespaces=NS)
        resolved = transitions[-1] == "resolved"
        assert (info.findtext("cap:urgency", namespaces=NS) == "Past") == resolved
        assert (info.findtext("cap:responseType", namespaces=NS) == "AllClear") == resolved


async def test_cap_of_alerts_without_a_metric_or_a_device_validates(
    client: Api, fleet: Fleet
) -> None:
    """A silent device (no metric) and an area-wide alert (no device) still make CAP."""
    offline = await fleet.alert(await fleet.device("s1"), metric=None, severity="advisory")
    await fleet.device("n1", area="east", lat=10.60, lon=103.50)
    await fleet.device("n2", area="east", lat=10.70, lon=103.60)
    combined = await fleet.alert(None, area="east", transitions=("firing", "escalated"))
    for alert in (offline, combined):
        code, body, _ = await client.get(f"/cap/{alert}.xml")
        assert code == 200, body
        doc = _cap(body)
        assert len(doc.findall("cap:info", NS)) == 2
    # the area-wide one, in an area the file does not know: the city's extent, its name
    area = doc.find("cap:info/cap:area", NS)
    assert area is not None
    assert area.findtext("cap:circle", namespaces=NS) == _circle(_city(fleet).extent())
    # the area id as a name: `t1a2b3c4d-east` -> `T1a2b3c4d East` (`stueng-hav` -> `Stueng Hav`)
    assert area.findtext("cap:areaDesc", namespaces=NS) == f"T{fleet.suffix} East"


async def test_cap_area_is_the_areas_file_circle_with_geocode_else_the_city_extent(
    client: Api, fleet: Fleet
) -> None:
    mapped = await fleet.alert(await fleet.device("m1", area="mapped"))
    status, body, _ = await client.get(f"/cap/{mapped}.xml")
    assert status == 200
    en, km = (i.find("cap:area", NS) for i in _cap(body).findall("cap:info", NS))
    assert en is not None and km is not None
    assert en.findtext("cap:areaDesc", namespaces=NS) == "Stueng Hav"
    assert km.findtext("cap:areaDesc", namespaces=NS) == "ស្ទឹងហាវ"
    for area in (en, km):
        assert area.findtext("cap:circle", namespaces=NS) == "10.755,103.58 3"
        assert area.findtext("cap:geocode/cap:valueName", namespaces=NS) == "NCDD"
        assert area.findtext("cap:geocode/cap:value", namespaces=NS) == "1803"

    # An area-wide alert in an area the file does not know, and a device with no area:
    # the city's extent with the city's geocode, never a guess from device positions.
    await fleet.device("w1", area="west", lat=10.60, lon=103.50)
    west = await fleet.alert(None, area="west")
    unknown = await fleet.alert(f"t{fleet.suffix}-unregistered")
    for alert, name in ((west, f"T{fleet.suffix} West"), (unknown, "Testville")):
        status, body, _ = await client.get(f"/cap/{alert}.xml")
        assert status == 200
        coarse = _cap(body).find("cap:info/cap:area", NS)
        assert coarse is not None
        assert coarse.findtext("cap:areaDesc", namespaces=NS) == name
        assert coarse.findtext("cap:circle", namespaces=NS) == _circle(_city(fleet).extent())
        assert coarse.findtext("cap:geocode/cap:value", namespaces=NS) == "KH-18"


async def test_feed_lists_only_the_active_alerts(client: Api, fleet: Fleet) -> None:
    firing = await fleet.alert(await fleet.device("f1"), started_at=NOW - timedelta(minutes=30))
    acked = await fleet.alert(
        await fleet.device("f2"),
        transitions=("firing", "acknowledged"),
        started_at=NOW - timedelta(minutes=40),
    )
    resolved = await fleet.alert(
        await fleet.device("f3"),
        transitions=("firing", "resolved"),
        started_at=NOW - timedelta(minutes=50),
    )
    for lang in ("en", "km"):
        status, body, resp = await client.get("/cap/feed.atom", lang=lang)
        assert status == 200 and resp.content_type == "application/atom+xml"
        feed = etree.fromstring(body)
        links = {
            link.get("href", "")
            for link in feed.findall("atom:entry/atom:link[@rel='alternate']", NS)
        }
        mine = {str(a) for a in (firing, acked, resolved) if any(str(a) in h for h in links)}
        assert mine == {str(firing), str(acked)}
        for href in links:
            if str(firing) in href or str(acked) in href:
                path = href[href.index("/cap/") :]
                code, cap, _ = await client.get(path)  # each entry's CAP link answers
                assert code == 200
                validate_cap(cap)


# -- OpenAPI -------------------------------------------------------------------------------


async def test_openapi_document_matches_the_served_routes(
    client: Api, fleet: Fleet, migrated: Settings
) -> None:
    status, doc, _ = await client.get("/openapi.json")
    assert status == 200
    validate_openapi(doc)  # a valid OpenAPI 3.1 document
    assert doc == document(AlertsApi(lambda: None, migrated).source.base_url)

    documented = {(m.upper(), path) for path, ops in doc["paths"].items() for m in ops}
    routes = {(r.method, r.path) for r in AlertsApi(lambda: None, migrated).routes()}
    builtin = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}  # HttpServer's
    assert documented == routes | builtin

    # Every documented operation is really served (no 404/405) on the real server.
    alert = await fleet.alert(await fleet.device("o1"), transitions=("firing", "escalated"))

    # The JSON bodies are what the document says they are.
    def check(body: Any, schema: str) -> None:
        jsonschema.validate(
            body, {"$ref": f"#/components/schemas/{schema}", "components": doc["components"]}
        )

    check((await client.get(f"/alerts/{alert}"))[1], "AlertDetail")
    check((await client.get("/alerts", device_id=f"t{fleet.suffix}-o1"))[1], "AlertPage")
    check((await client.get("/alerts", limit="1"))[1], "AlertPage")
    check((await client.get("/alerts", state="bogus"))[1], "Error")
    check((await client.ack(alert, await fleet.token("o")))[1], "AckResult")
    for method, path in sorted(documented):
        url = client.base + path.replace("{alert_id}", str(alert))
        async with client.session.request(method, url, headers=client.operator) as resp:
            assert resp.status not in (404, 405), (method, path, resp.status)
            assert str(resp.status) in doc["paths"][path][method.lower()]["responses"]


# -- CAP sender, <sent> and <web> --------------------------------------------------------


async def test_cap_sent_is_the_issue_time_and_web_opens_the_alerts_page_in_both_languages(
    migrated: Settings, pool: asyncpg.Pool, fleet: Fleet, dbcon: asyncpg.Connection
) -> None:
    """`<sent>` is when the message was issued (the event's `recorded_at`), not the time of
    the reading; sender and contact come from the settings; `<web>`, followed as a person
    would, answers an HTML page naming the alert in English and Khmer."""
    port = free_port()
    settings = migrated.model_copy(
        update={
            "cap": CapSettings(
                sender=f"ops-{fleet.suffix}@city.example",
                web_base_url=f"http://127.0.0.1:{port}",
                contact="+855 34 000 000",
            )
        }
    )
    device = await fleet.device("web1", area="mapped")
    alert = await fleet.alert(
        device, transitions=("firing", "escalated"), started_at=NOW - timedelta(hours=3)
    )
    issued = await dbcon.fetch(
        "SELECT at, recorded_at FROM alert_events WHERE alert_id = $1 ORDER BY event_id", alert
    )
    assert all(r["recorded_at"] - r["at"] > timedelta(hours=2) for r in issued)  # the premise
    async for api in _serve(AlertsApi(lambda: pool, settings, areas=_city(fleet)), port):
        code, body, _ = await api.get(f"/cap/{alert}.xml")
        assert code == 200, body
        doc = _cap(body)
        sent = datetime.fromisoformat(doc.findtext("cap:sent", namespaces=NS) or "")
        assert sent == issued[-1]["recorded_at"].replace(microsecond=0)
        refs = (doc.findtext("cap:references", namespaces=NS) or "").split(",")
        assert refs[0] == f"ops-{fleet.suffix}@city.example"
        assert datetime.fromisoformat(refs[2]) == issued[0]["recorded_at"].replace(microsecond=0)
        assert doc.findtext("cap:sender", namespaces=NS) == f"ops-{fleet.suffix}@city.example"
        infos = doc.findall("cap:info", NS)
        assert [i.findtext("cap:contact", namespaces=NS) for i in infos] == ["+855 34 000 000"] * 2
        webs = {i.findtext("cap:web", namespaces=NS) for i in infos}
        assert len(webs) == 1
        web_url = webs.pop() or ""
        assert web_url.startswith(f"http://127.0.0.1:{port}/")
        async with api.session.get(web_url) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            page = await resp.text()
        headlines = [i.findtext("cap:headline", namespaces=NS) or "" for i in infos]
        assert all(h and html.escape(h) in page for h in headlines), headlines
        assert "Stueng Hav" in page and "ស្ទឹងហាវ" in page
        assert str(alert) in page

"""Public and operator surfaces (issue 10 point 7), on real `citywatch api` and `citywatch
alerts` processes over the shared stack.

What residents, open-data users and CAP hubs may read is public; what the operations
centre reads (exact device positions, which devices are offline, raw readings, the alert
history, the live stream, /metrics, the /ops page) needs the operator token. Each service's
own OpenAPI document says which operations are which (`security: operatorToken`), and
these tests hold the running services to it: without the token those operations answer
401 and nothing else; no public answer names a device, its position or its state; and one
client cannot hold more live streams than `api.max_streams_per_client`.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from services.common.http_auth import COOKIE, operator_headers
from tests.harness import Namespace, Services, wait_until

pytestmark = pytest.mark.stack

STREAMS_PER_CLIENT = 2
# Every operation that needs the operator token, per service: the documents must mark
# exactly these (a route that silently became public, or private, fails here).
OPERATOR_OPERATIONS = {
    "api": {
        ("GET", "/devices"),
        ("GET", "/devices/{device_id}"),
        ("GET", "/readings"),
        ("GET", "/alerts/active"),
        ("GET", "/stream"),
        ("GET", "/ops"),
        ("GET", "/metrics"),
    },
    "alerts": {("GET", "/alerts"), ("GET", "/alerts/{alert_id}"), ("GET", "/metrics")},
}
# An exact position no other test uses, for devices of this module only.
LAT, LON = 10.613579, 103.524681


@pytest.fixture(scope="module")
async def running(mod_services: Services, mod_ns: Namespace) -> dict[str, Any]:
    api, alerts = await mod_services.start("api", "alerts")
    return {
        "api": f"http://127.0.0.1:{api.port}",
        "alerts": f"http://127.0.0.1:{alerts.port}",
        "operator": operator_headers(mod_ns.settings),
    }


@pytest.fixture(scope="module")
async def fleet(mod_dbcon: asyncpg.Connection, mod_ns: Namespace) -> dict[str, str]:
    """Two registered air sensors in Mittapheap at one exact position: one reporting now,
    one silent for two hours (offline), each with a reading."""
    now = datetime.now(UTC)
    devices = {"online": now, "offline": now - timedelta(hours=2)}
    ids = {state: f"{mod_ns.device_prefix}{state}" for state in devices}
    for state, seen in devices.items():
        await mod_dbcon.execute(
            "INSERT INTO devices (device_id, kind, area, lat, lon, status, first_seen,"
            " last_seen, last_reading_at) VALUES ($1, 'air', 'mittapheap', $2, $3, 'active',"
            " $4, $4, $4)",
            ids[state],
            LAT,
            LON,
            seen,
        )
        await mod_dbcon.execute(
            "INSERT INTO readings (time, device_id, metric, value)"
            " VALUES ($1, $2, 'pm25_ugm3', 12)",
            seen,
            ids[state],
        )
    return ids


def _url(base: str, path: str, fleet: dict[str, str]) -> str:
    """A documented path made concrete: our device, an alert id nobody has, and the
    required `device` of /readings."""
    path = path.replace("{device_id}", fleet["offline"]).replace("{alert_id}", str(uuid.uuid4()))
    return base + path + (f"?device={fleet['offline']}" if path == "/readings" else "")


async def _document(base: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(f"{base}/openapi.json") as r:
        assert r.status == 200
        doc: dict[str, Any] = await r.json()
        return doc


def _operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
    }


def _needs_operator(doc: dict[str, Any], op: dict[str, Any]) -> bool:
    return any("operatorToken" in req for req in op.get("security", doc.get("security", [])))


async def _status_and_text(
    session: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str]
) -> tuple[int, str, aiohttp.ClientResponse]:
    """One request; an event stream is read up to its first comment line only."""
    async with session.request(method, url, headers=headers, allow_redirects=False) as r:
        if r.headers.get("Content-Type", "").startswith("text/event-stream"):
            return r.status, (await r.content.readline()).decode(), r
        return r.status, await r.text(), r


@pytest.mark.parametrize("service", ["api", "alerts"])
async def test_operator_routes_refuse_requests_without_the_token(
    running: dict[str, Any], fleet: dict[str, str], service: str
) -> None:
    """Every operation the document marks `operatorToken` answers 401, with a bearer
    challenge and no data, to no token, a wrong one and a forged cookie; with the operator
    token the same request gets what the route serves."""
    base = running[service]
    doc = await _document(base)
    ops = _operations(doc)
    marked = {key for key, op in ops.items() if _needs_operator(doc, op)}
    assert marked == OPERATOR_OPERATIONS[service]
    refused = ({}, {"Authorization": "Bearer not-the-token"}, {"Cookie": f"{COOKIE}=forged"})
    async with aiohttp.ClientSession() as s:
        for method, path in sorted(marked):
            url = _url(base, path, fleet)
            for headers in refused:
                status, text, r = await _status_and_text(s, method, url, headers)
                assert status == 401, (path, headers, status, text)
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
                assert fleet["offline"] not in text and str(LAT) not in text, (path, text)
                assert "401" in ops[(method, path)]["responses"], path
            status, text, _ = await _status_and_text(s, method, url, running["operator"])
            # A made-up alert id is not found; everything else is served.
            assert status == (404 if "{alert_id}" in path else 200), (path, status, text)


async def test_a_browser_logs_in_to_ops_once_and_its_cookie_opens_the_operator_routes(
    running: dict[str, Any], fleet: dict[str, str]
) -> None:
    token = running["operator"]["Authorization"].removeprefix("Bearer ")
    # unsafe: aiohttp's jar otherwise keeps no cookie of an IP address (a browser does).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        async with s.get(f"{running['api']}/ops", params={"token": "wrong"}) as r:
            assert r.status == 401
        async with s.get(
            f"{running['api']}/ops", params={"token": token}, allow_redirects=False
        ) as r:
            assert (r.status, r.headers["Location"]) == (303, "/ops")
            cookie = r.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
        # The session keeps the cookie, as the browser does: the page's own requests work.
        async with s.get(f"{running['api']}/ops") as r:
            assert r.status == 200 and r.content_type == "text/html"
        async with s.get(f"{running['api']}/devices/{fleet['offline']}") as r:
            assert r.status == 200


async def test_no_public_answer_names_a_device_its_position_or_that_it_is_offline(
    running: dict[str, Any], fleet: dict[str, str]
) -> None:
    """Every documented operation, asked without the token: the residents' page, /areas,
    /city.json, the open data and the alert pages and feeds never carry our devices' ids
    or their exact position, and nothing lists devices as offline. The operator sees both
    devices, at their position, one offline: the data is there to leak."""
    leaks = (fleet["online"], fleet["offline"], f"{LAT}", f"{LON}")
    async with aiohttp.ClientSession() as s:
        for service in ("api", "alerts"):
            doc = await _document(running[service])
            for (method, path), op in sorted(_operations(doc).items()):
                if method != "GET" or _needs_operator(doc, op):
                    continue  # the test above: 401, no data
                url = _url(running[service], path, fleet)
                status, text, _ = await _status_and_text(s, method, url, {})
                assert status in (200, 404), (path, status, text)
                assert not [x for x in leaks if x in text], (path, text[:500])
                if path != "/openapi.json":  # it documents /devices' `state` values
                    assert '"offline"' not in text, (path, text[:500])
        status, text, _ = await _status_and_text(
            s, "GET", f"{running['api']}/devices?area=mittapheap&limit=1000", running["operator"]
        )
        assert status == 200
    seen = {d["device_id"]: d for d in json.loads(text)["devices"]}
    assert seen[fleet["offline"]]["state"] == "offline"
    assert (seen[fleet["online"]]["lat"], seen[fleet["online"]]["lon"]) == (LAT, LON)


@contextlib.asynccontextmanager
async def _stream(
    session: aiohttp.ClientSession, base: str, headers: dict[str, str]
) -> AsyncIterator[aiohttp.ClientResponse]:
    async with session.get(f"{base}/stream", headers=headers) as r:
        if r.status == 200:  # held once the server says so (after its `retry:` line)
            while not (await r.content.readline()).startswith(b": connected"):
                pass
        yield r


async def test_one_client_holds_at_most_its_stream_slots(services: Services, ns: Namespace) -> None:
    """With `api.max_streams_per_client` = 2, a third stream from the same address is a
    429 with Retry-After while two are open; closing one gives its slot back (once the
    server notices, at its next keep-alive at the latest). An API of its own: no other
    test's streams hold its slots."""
    (api,) = await services.start(
        "api", CITYWATCH_API__MAX_STREAMS_PER_CLIENT=str(STREAMS_PER_CLIENT)
    )
    base, headers = f"http://127.0.0.1:{api.port}", operator_headers(ns.settings)
    async with contextlib.AsyncExitStack() as held, aiohttp.ClientSession() as s:
        opened = [
            await held.enter_async_context(_stream(s, base, headers))
            for _ in range(STREAMS_PER_CLIENT)
        ]
        assert [r.status for r in opened] == [200] * STREAMS_PER_CLIENT
        async with s.get(f"{base}/stream", headers=headers) as r:
            assert r.status == 429 and r.headers["Retry-After"], await r.text()
            assert (await r.json())["error"] == "too_many_streams"
        opened[0].close()

        async def slot_free() -> bool:
            async with _stream(s, base, headers) as r:
                return r.status == 200

        await wait_until(slot_free, timeout=30, what="the closed stream's slot given back")

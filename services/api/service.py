"""The read API: devices, readings, areas, a live stream, open data and the two pages.

`async with ApiService(settings) as svc: await svc.run()`. It opens, in order, its
database pool, the live stream's Kafka consumer and the HTTP server (last, so nothing is
served before what it needs exists), and closes them in reverse. It only reads: every
answer comes from the tables the processor and the alerts service write, or from their
Kafka topics for the live stream (see `stream.py` for why).

Bounds (settings `api`): a page holds at most `max_page_size` rows; raw readings span at
most `max_raw_range_h` hours per request, buckets and open data `max_bucket_range_d`
days; the stream takes at most `max_stream_clients` connections. A bad parameter is a
400 whose text names the parameter and what it must look like.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, suppress
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from schemas.city import City, load_city
from schemas.registry import ALL_METRIC_NAMES, KINDS
from services.alerts.model import SEVERITIES
from services.api import params as p
from services.api import store
from services.api.openapi import openapi_document
from services.api.status import (
    DEVICE_STATES,
    LatestValue,
    alert_level,
    area_of,
    device_state,
    for_residents,
    kind_status,
    section_of,
)
from services.api.stream import Event, StreamFilter, StreamHub
from services.common import db
from services.common.http import HttpServer
from services.common.http_auth import OperatorAuth, operator_token
from services.common.http_params import MAX_TEXT, check_text
from services.common.lifecycle import ServiceBase
from services.common.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["LICENCES", "ApiService"]

STATIC_DIR = Path(__file__).with_name("static")
# Open licences the city may publish its data under: SPDX id -> (name, deed URL).
LICENCES: dict[str, tuple[str, str]] = {
    "CC-BY-4.0": (
        "Creative Commons Attribution 4.0 International",
        "https://creativecommons.org/licenses/by/4.0/",
    ),
    "CC0-1.0": ("CC0 1.0 Universal", "https://creativecommons.org/publicdomain/zero/1.0/"),
    "ODbL-1.0": (
        "Open Data Commons Open Database License",
        "https://opendatacommons.org/licenses/odbl/1-0/",
    ),
}
_ALL_METRICS = ALL_METRIC_NAMES  # the kinds' metrics, the common ones and the catalog
_KEEPALIVE_S = 15.0  # an SSE comment this often keeps proxies from closing an idle stream

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Query parameters per route (services/api/openapi.py documents the same).
_DEVICES = ("kind", "area", "status", "state", "limit", "offset")
_READINGS = ("device", "metric", "from", "to", "bucket", "limit", "cursor")
_OPEN_DATA = ("from", "to", "area", "kind")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _json(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        body,
        status=status,
        headers=headers,
        dumps=lambda b: json.dumps(b, default=_json_default, ensure_ascii=False),
    )


def _guarded(handler: Handler, *known: str) -> Handler:
    """Bad parameters -> 400 with the reason; an unreachable database -> 503, in JSON.

    `known` are the route's query parameters: any other is refused, so a typo such as
    `?knd=air` is an error rather than an unfiltered answer."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            for name in request.query:
                if name not in known:
                    raise p.BadParameter(name, f"unknown parameter (known: {', '.join(known)})")
            return await handler(request)
        except p.BadParameter as exc:
            body = {"error": "bad_parameter", "parameter": exc.parameter, "detail": exc.detail}
            return _json(body, status=400)
        except db.CONNECTION_ERRORS as exc:
            log.warning(
                "api: database unavailable", extra={"path": request.path, "error": repr(exc)}
            )
            return _json({"error": "database_unavailable"}, status=503)

    return guarded


def _severity_rank(alert: dict[str, Any]) -> int:
    sev = alert.get("severity")
    return SEVERITIES.index(sev) if sev in SEVERITIES else -1


class ApiService(ServiceBase):
    """The read API, the live stream and the pages, on `settings.api.http_port`."""

    def __init__(self, settings: Settings, city: City | None = None) -> None:
        self.settings = settings
        self.city = city or load_city(settings.city_file)
        self.stop_event = asyncio.Event()
        self._pool: asyncpg.Pool | None = None
        self._hub: StreamHub | None = None
        self._rollups = store.Rollups()
        self._database_ok = False
        # device id -> area id, for the stream's area filter (refreshed by `run`).
        self._areas_by_device: dict[str, str | None] = {}
        self._operator = OperatorAuth(operator_token(settings), realm="citywatch-operator")
        # Open streams per client address (stream slots: `api.max_streams_per_client`).
        self._streams_by_client: dict[str, int] = {}

    # -- lifecycle ------------------------------------------------------------------------
    async def _open(self, stack: AsyncExitStack) -> None:
        s = self.settings
        self._pool = await stack.enter_async_context(
            db.create_pool(s.database_read_dsn, max_size=8)
        )
        self._hub = await stack.enter_async_context(StreamHub(s, self._event_area))
        await stack.enter_async_context(
            HttpServer(
                service="api",
                host=s.http_host,
                port=s.api.http_port,
                ready_checks=self.ready_checks,
                routes=self._routes(),
                operator=self._operator,
            )
        )

    def ready_checks(self) -> dict[str, bool]:
        return {
            "database": self._database_ok,
            "kafka": self._hub is not None and self._hub.connected,
        }

    async def run(self) -> None:
        """Until stopped: probe the database (readiness), refresh the rollup switch and the
        device -> area map the stream's area filter uses."""
        assert self._pool is not None
        while not self.stop_event.is_set():
            try:
                async with asyncio.timeout(5), self._pool.acquire() as con:
                    self._rollups = await store.detect_rollups(con)
                    rows = await con.fetch("SELECT device_id, area, lat, lon FROM devices")
                self._areas_by_device = {
                    r["device_id"]: area_of(self.city, r["area"], r["lat"], r["lon"]) for r in rows
                }
                if not self._database_ok:
                    log.info(
                        "api: database reachable",
                        extra={"rollups": [t.name for t in self._rollups.tables]},
                    )
                self._database_ok = True
            except (*db.CONNECTION_ERRORS, TimeoutError) as exc:  # type: ignore[misc]
                if self._database_ok:
                    log.warning("api: database unreachable", extra={"error": repr(exc)})
                self._database_ok = False
            with suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), 5.0)

    def area_ids(self, *, unassigned: bool = False) -> list[str]:
        """The city's area ids (the documents' `area` enum), with `unassigned` for the
        device list's devices outside every area."""
        return [a.id for a in self.city.areas] + (["unassigned"] if unassigned else [])

    def _event_area(self, ev: Event) -> str | None:
        if ev.device_id in self._areas_by_device:
            return self._areas_by_device[ev.device_id]
        lat, lon = ev.data.get("lat"), ev.data.get("lon")
        return area_of(self.city, None, lat, lon)

    def _routes(self) -> list[web.RouteDef]:
        """Public routes (what residents and open-data users read) and operator routes
        (exact device positions, which devices are offline, raw readings, every open alert
        with operators-only ones, the live stream, the ops page): the latter answer 401
        without the operator token (services/common/http_auth.py)."""
        g, op = _guarded, self._operator.require
        return [
            # public
            web.get("/", self._index),
            web.get("/residents", self._page("residents.html")),
            web.get("/areas", g(self._get_areas)),
            web.get("/open-data/hourly.csv", g(self._open_data_csv, *_OPEN_DATA)),
            web.get("/open-data/hourly.json", g(self._open_data_json, *_OPEN_DATA)),
            web.get("/openapi.json", self._openapi),
            web.get("/city.json", self._city),
            web.get("/static/{path:.+}", self._static),  # page code and styles, no data
            # operators
            web.get("/ops", self._operator.page(self._page("ops.html"))),
            web.get("/devices", op(g(self._get_devices, *_DEVICES))),
            web.get("/devices/{device_id}", op(g(self._get_device))),
            web.get("/readings", op(g(self._get_readings, *_READINGS))),
            web.get("/alerts/active", op(g(self._get_alerts))),
            web.get("/stream", op(g(self._stream, "types", "kind", "device", "area"))),
        ]

    # -- helpers --------------------------------------------------------------------------
    def _pool_(self) -> asyncpg.Pool:
        assert self._pool is not None
        return self._pool

    async def _devices(
        self, *, kind: str | None = None, device_id: str | None = None
    ) -> list[dict[str, Any]]:
        a = self.settings.api
        async with self._pool_().acquire() as con:
            rows = await store.devices(
                con,
                kind=kind,
                device_id=device_id,
                offline_after_s=a.offline_after_s,
                stuck_after_s=a.stuck_after_s,
            )
        out = []
        for r in rows:
            latest = r["latest"]
            lv = {m: LatestValue(v["value"], int(v["quality"])) for m, v in latest.items()}
            out.append(
                {
                    "device_id": r["device_id"],
                    "kind": r["kind"],
                    "name": r["name"],
                    "area": area_of(self.city, r["area"], r["lat"], r["lon"]),
                    "registry_area": r["area"],
                    "lat": r["lat"],
                    "lon": r["lon"],
                    "registry_status": r["registry_status"],
                    "drinking_water": r["drinking_water"],
                    "status": r["conn"],
                    "state": device_state(r["conn"], r["in_alert"], lv),
                    "in_alert": r["in_alert"],
                    "first_seen": r["first_seen"],
                    "last_seen": r["last_seen"],
                    "last_reading_at": r["last_reading_at"],
                    "latest": latest,
                    "refused": r["refused"],
                }
            )
        return out

    # -- routes ---------------------------------------------------------------------------
    async def _index(self, _: web.Request) -> web.Response:
        raise web.HTTPFound("/residents")

    def _page(self, name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def page(_: web.Request) -> web.StreamResponse:
            return web.FileResponse(STATIC_DIR / name, headers={"Cache-Control": "no-cache"})

        return page

    async def _static(self, request: web.Request) -> web.StreamResponse:
        """The pages' files: the path must stay inside static/ (no `..` escapes)."""
        root = STATIC_DIR.resolve()
        path = (root / request.match_info["path"]).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise web.HTTPNotFound
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    async def _get_devices(self, request: web.Request) -> web.Response:
        q = request.query
        kind = p.parse_kind(q.get("kind"))
        status = p.parse_choice("status", q.get("status"), p.STATUSES)
        state = p.parse_choice("state", q.get("state"), DEVICE_STATES)
        area = q.get("area")
        if area is not None and area not in self.area_ids(unassigned=True):
            raise p.BadParameter(
                "area", f"{area!r} is not an area of {self.city.name} (see /areas)"
            )
        limit = p.parse_int(
            "limit", q.get("limit"), default=500, lo=1, hi=self.settings.api.max_page_size
        )
        offset = p.parse_int("offset", q.get("offset"), default=0, lo=0, hi=10_000_000)
        rows = await self._devices(kind=kind)
        rows = [
            d
            for d in rows
            if (status is None or d["status"] == status)
            and (state is None or d["state"] == state)
            and (area is None or (d["area"] or "unassigned") == area)
        ]
        page = rows[offset : offset + limit]
        nxt = offset + limit if offset + limit < len(rows) else None
        return _json(
            {
                "total": len(rows),
                "offset": offset,
                "limit": limit,
                "next_offset": nxt,
                "devices": page,
            }
        )

    async def _get_device(self, request: web.Request) -> web.Response:
        device_id = check_text("device_id", request.match_info["device_id"], MAX_TEXT)
        rows = await self._devices(device_id=device_id)
        if not rows:
            return _json({"error": "not_found", "detail": f"no device {device_id!r}"}, status=404)
        async with self._pool_().acquire() as con:
            alerts = await con.fetch(
                """SELECT alert_id::text, rule_id, metric, severity, state, value, last_value,
                          threshold, started_at, resolved_at, title_en, title_km
                   FROM alerts WHERE device_id = $1 ORDER BY started_at DESC LIMIT 20""",
                device_id,
            )
        return _json({**rows[0], "alerts": [dict(a) for a in alerts]})

    async def _get_readings(self, request: web.Request) -> web.Response:
        q = request.query
        a = self.settings.api
        device = q.get("device")
        if not device:
            raise p.BadParameter("device", "is required (a device id, see /devices)")
        check_text("device", device, MAX_TEXT)
        metric = q.get("metric")
        if metric is not None and metric not in _ALL_METRICS:
            raise p.BadParameter("metric", f"{metric!r} is not a metric CityWatch knows")
        bucket = p.parse_bucket(q.get("bucket"))
        maximum = (
            timedelta(hours=a.max_raw_range_h)
            if bucket is None
            else timedelta(days=a.max_bucket_range_d)
        )
        start, end = p.parse_time_range(
            q.get("from"),
            q.get("to"),
            default=timedelta(hours=6),
            maximum=maximum,
            now=datetime.now(UTC),
        )
        limit = p.parse_int(
            "limit", q.get("limit"), default=min(1000, a.max_page_size), lo=1, hi=a.max_page_size
        )
        after = p.decode_cursor(q.get("cursor"))
        rows: list[dict[str, Any]]
        async with self._pool_().acquire() as con:
            if bucket is None:
                raw = await store.raw_readings(
                    con,
                    device=device,
                    metric=metric,
                    start=start,
                    end=end,
                    after=after,
                    limit=limit,
                )
                rows = [
                    {"time": r.time, "metric": r.metric, "value": r.value, "quality": r.quality}
                    for r in raw
                ]
                last = (raw[-1].time, raw[-1].metric) if raw else None
            else:
                bk = await store.bucketed_readings(
                    con,
                    self._rollups,
                    device=device,
                    metric=metric,
                    start=start,
                    end=end,
                    bucket=bucket,
                    after=after,
                    limit=limit,
                )
                rows = [
                    {
                        "time": r.bucket,
                        "metric": r.metric,
                        "min": r.min,
                        "avg": r.avg,
                        "max": r.max,
                        "count": r.count,
                    }
                    for r in bk
                ]
                last = (bk[-1].bucket, bk[-1].metric) if bk else None
        cursor = p.encode_cursor(*last) if last is not None and len(rows) == limit else None
        return _json(
            {
                "device": device,
                "metric": metric,
                "from": start,
                "to": end,
                "bucket": q.get("bucket") or "raw",
                "limit": limit,
                "next_cursor": cursor,
                "readings": rows,
            }
        )

    def _alert_area(self, alert: dict[str, Any], device_area: dict[str, str | None]) -> str | None:
        """The area id of an alert: its own area when the city knows it (area-wide alerts
        have no device), else its device's."""
        own = self.city.resolve(alert.get("alert_area"))
        return own.id if own is not None else device_area.get(alert.get("device_id") or "")

    async def _get_alerts(self, _: web.Request) -> web.Response:
        """Every open alert, for operators: with the device's and the area's names, so the
        ops list never shows an id (or nothing) where a name exists."""
        async with self._pool_().acquire() as con:
            alerts = await store.active_alerts(con)
        names = {a.id: a.name for a in self.city.areas}
        for al in alerts:
            al["area"] = self._alert_area(al, self._areas_by_device)
            label = al.pop("alert_area", None)
            al["area_name"] = names.get(al["area"] or "") or label
            al["exercise"] = al["status"] != "Actual"
        return _json({"simulated": self.settings.api.simulated_data, "alerts": alerts})

    async def _get_areas(self, _: web.Request) -> web.Response:
        """Per area and kind, the level residents read. An active alert of the kind raises
        it (status.alert_level); only `public` alerts count (status.for_residents): device
        health and crews' tasks are for operators."""
        devices = await self._devices()
        async with self._pool_().acquire() as con:
            alerts = await store.active_alerts(con)
        device_area = {d["device_id"]: d["area"] for d in devices}
        public = [
            {**al, "area": self._alert_area(al, device_area)}
            for al in alerts
            if for_residents(al["audience"])
        ]
        out = []
        for area in self.city.areas:
            mine = [d for d in devices if d["area"] == area.id]
            here = [al for al in public if al["area"] == area.id]
            kinds: dict[str, Any] = {}
            # Water from drinking-water points is its own section (status.section_of).
            for kind in (*KINDS, "drinking_water"):
                of_kind = [d for d in mine if section_of(d["kind"], d["drinking_water"]) == kind]
                raised = [
                    al["severity"]
                    for al in here
                    if section_of(al["kind"], al["drinking_water"]) == kind
                ]
                if not of_kind and not raised:
                    continue
                st = kind_status(
                    kind,
                    area,
                    (
                        (
                            d["status"],
                            {
                                m: LatestValue(v["value"], int(v["quality"]))
                                for m, v in d["latest"].items()
                            },
                        )
                        for d in of_kind
                    ),
                )
                st = alert_level(st, kind, raised)
                kinds[kind] = {
                    "devices": st.devices,
                    "online": st.online,
                    "level": st.level,
                    "value": st.value,
                    "metric": st.metric,
                    "by_alert": st.by_alert,
                }
            out.append(
                {
                    "id": area.id,
                    "name": area.name,
                    "name_km": area.name_km,
                    "type": area.type,
                    "water": area.water,
                    "lat": area.lat,
                    "lon": area.lon,
                    "flood_levels": area.flood_levels.as_dict() if area.flood_levels else None,
                    "kinds": kinds,
                    "alerts": [
                        {
                            "alert_id": al["alert_id"],
                            "rule_id": al["rule_id"],
                            "kind": al["kind"],
                            "metric": al["metric"],
                            "severity": al["severity"],
                            "state": al["state"],
                            "status": al["status"],
                            "device_id": al["device_id"],
                            "drinking_water": al["drinking_water"],
                            "started_at": al["started_at"],
                            "title_en": al["title_en"],
                            "title_km": al["title_km"],
                        }
                        # worst first: the page shows one line per rule and area
                        for al in sorted(here, key=_severity_rank, reverse=True)
                    ],
                }
            )
        return _json(
            {
                "city": self.city.name,
                "generated_at": datetime.now(UTC),
                # Every alert a rehearsal (simulated devices raise Exercise): say so.
                "exercise": bool(public) and all(al["status"] != "Actual" for al in public),
                "simulated": self.settings.api.simulated_data,
                "areas": out,
            }
        )

    async def _city(self, _: web.Request) -> web.StreamResponse:
        """The city's base map (GeoJSON shipped with the project) for the ops page."""
        return web.FileResponse(
            self.settings.api.geojson_file, headers={"Content-Type": "application/geo+json"}
        )

    async def _openapi(self, _: web.Request) -> web.Response:
        return _json(openapi_document(self.settings, self.area_ids(), sorted(_ALL_METRICS)))

    # -- live stream ----------------------------------------------------------------------
    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: `event: reading` / `event: alert`, `data:` one JSON object."""
        assert self._hub is not None
        q = request.query

        def split(name: str) -> frozenset[str]:
            return frozenset(x for x in (q.get(name) or "").split(",") if x)

        types = split("types") or frozenset({"reading", "alert"})
        if not types <= {"reading", "alert"}:
            raise p.BadParameter("types", "must be reading, alert or both (comma-separated)")
        kinds = split("kind")
        if not kinds <= set(KINDS):
            raise p.BadParameter("kind", f"must be among {', '.join(KINDS)}")
        areas = split("area")
        if not areas <= {a.id for a in self.city.areas}:
            raise p.BadParameter("area", "names an area this city does not have (see /areas)")
        if self._hub.clients >= self.settings.api.max_stream_clients:
            return _json({"error": "too_many_streams"}, status=503, headers={"Retry-After": "10"})
        client = request.remote or "?"
        held = self._streams_by_client.get(client, 0)
        if held >= self.settings.api.max_streams_per_client:
            body = {
                "error": "too_many_streams",
                "detail": f"this client holds {held} streams already (the most one may hold)",
            }
            return _json(body, status=429, headers={"Retry-After": "10"})
        flt = StreamFilter(types=types, kinds=kinds, devices=split("device"), areas=areas)
        self._streams_by_client[client] = held + 1
        try:
            return await self._follow(request, flt)
        finally:
            left = self._streams_by_client.pop(client, 1) - 1
            if left > 0:
                self._streams_by_client[client] = left

    async def _follow(self, request: web.Request, flt: StreamFilter) -> web.StreamResponse:
        assert self._hub is not None
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        sub = self._hub.subscribe(flt)
        try:
            await resp.write(b"retry: 3000\n: connected\n\n")
            while not self.stop_event.is_set():
                try:
                    ev = await asyncio.wait_for(sub.queue.get(), _KEEPALIVE_S)
                except TimeoutError:
                    await resp.write(b": keepalive\n\n")
                    continue
                data = json.dumps(ev.data, default=_json_default, ensure_ascii=False)
                await resp.write(f"event: {ev.type}\ndata: {data}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the client went away, or the server is shutting down
        finally:
            self._hub.unsubscribe(sub)
        return resp

    # -- open data ------------------------------------------------------------------------
    def _licence(self) -> dict[str, str]:
        spdx = self.settings.api.open_data_licence
        name, url = LICENCES.get(spdx, (spdx, ""))
        return {
            "id": spdx,
            "name": name,
            "url": url,
            "attribution": f"{self.city.name} city, CityWatch environmental sensor network",
        }

    async def _hourly(
        self, request: web.Request
    ) -> tuple[datetime, datetime, list[dict[str, Any]]]:
        q = request.query
        now = datetime.now(UTC)
        end_default = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        start, end = p.parse_time_range(
            q.get("from"),
            q.get("to", end_default.isoformat()),
            default=timedelta(hours=24),
            maximum=timedelta(days=self.settings.api.max_bucket_range_d),
            now=now,
        )
        area = q.get("area")
        if area is not None and area not in self.area_ids():
            raise p.BadParameter("area", f"{area!r} is not an area of {self.city.name}")
        kind = p.parse_kind(q.get("kind"))
        async with self._pool_().acquire() as con:
            devs = await con.fetch("SELECT device_id, kind, area, lat, lon FROM devices")
            pairs = []
            for d in devs:
                a = area_of(self.city, d["area"], d["lat"], d["lon"])
                if (
                    a is not None
                    and (area is None or a == area)
                    and (kind is None or d["kind"] == kind)
                ):
                    pairs.append((d["device_id"], a))
            rows = await store.hourly_aggregates(
                con, self._rollups, device_areas=pairs, start=start, end=end
            )
        return start, end, rows

    def _licence_headers(self) -> dict[str, str]:
        lic = self._licence()
        return {
            "Link": f'<{lic["url"]}>; rel="license"',
            "X-License": f"{lic['id']} ({lic['name']}) {lic['url']}; "
            f"attribution: {lic['attribution']}",
            "Access-Control-Allow-Origin": "*",
        }

    async def _open_data_json(self, request: web.Request) -> web.Response:
        start, end, rows = await self._hourly(request)
        return _json(
            {
                "licence": self._licence(),
                "city": self.city.name,
                "from": start,
                "to": end,
                "fields": [
                    "hour",
                    "area",
                    "kind",
                    "metric",
                    "min",
                    "avg",
                    "max",
                    "count",
                    "devices",
                ],
                "rows": rows,
            },
            headers=self._licence_headers(),
        )

    async def _open_data_csv(self, request: web.Request) -> web.Response:
        start, end, rows = await self._hourly(request)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\r\n")  # RFC 4180
        w.writerow(["hour", "area", "kind", "metric", "min", "avg", "max", "count", "devices"])
        for r in rows:
            w.writerow(
                [
                    r["hour"].isoformat(),
                    r["area"],
                    r["kind"],
                    r["metric"],
                    f"{r['min']:.6g}",
                    f"{r['avg']:.6g}",
                    f"{r['max']:.6g}",
                    r["count"],
                    r["devices"],
                ]
            )
        name = f"citywatch-hourly-{start:%Y%m%dT%H}-{end:%Y%m%dT%H}.csv"
        return web.Response(
            text=buf.getvalue(),
            content_type="text/csv",
            charset="utf-8",
            headers={
                **self._licence_headers(),
                "Content-Disposition": f'attachment; filename="{name}"',
            },
        )

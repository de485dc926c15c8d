"""The read API's OpenAPI 3.1 document, served at /openapi.json.

Written by hand next to the handlers (aiohttp has no schema generator in the standard
install): the parameters and bounds here come from the same settings the handlers use,
and tests/test_api.py checks that every route the service serves is described.
"""

from __future__ import annotations

from typing import Any

from schemas.registry import KINDS
from services.api.params import BUCKETS, STATUSES
from services.api.status import DEVICE_STATES
from services.common.settings import Settings

__all__ = ["openapi_document"]


def _q(
    name: str, description: str, schema: dict[str, Any], required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


def openapi_document(settings: Settings) -> dict[str, Any]:
    a = settings.api
    time = {"type": "string", "format": "date-time"}
    bad = {"description": "a bad parameter: `{error, parameter, detail}`"}
    ok_json = {"description": "OK", "content": {"application/json": {}}}
    kind = _q("kind", "device kind", {"type": "string", "enum": list(KINDS)})
    area = _q("area", "area id (see /areas)", {"type": "string"})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "CityWatch read API",
            "version": "1",
            "description": "Devices, readings, areas, a live stream and open data of the "
            "city's environmental sensors. Read-only.",
            "license": {"name": a.open_data_licence, "identifier": a.open_data_licence},
        },
        "paths": {
            "/devices": {
                "get": {
                    "summary": "Devices with status, map state, last seen and latest values",
                    "parameters": [
                        kind,
                        area,
                        _q(
                            "status",
                            "online, offline (silent for "
                            f"{a.offline_after_s:g}s) or stuck (talking, but no new reading "
                            f"time for {a.stuck_after_s:g}s)",
                            {"type": "string", "enum": list(STATUSES)},
                        ),
                        _q("state", "map colour", {"type": "string", "enum": list(DEVICE_STATES)}),
                        _q(
                            "limit",
                            "page size",
                            {"type": "integer", "minimum": 1, "maximum": a.max_page_size},
                        ),
                        _q("offset", "rows to skip", {"type": "integer", "minimum": 0}),
                    ],
                    "responses": {"200": ok_json, "400": bad},
                }
            },
            "/devices/{device_id}": {
                "get": {
                    "summary": "One device with its latest values and recent alerts",
                    "parameters": [
                        {
                            "name": "device_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {"200": ok_json, "404": {"description": "no such device"}},
                }
            },
            "/readings": {
                "get": {
                    "summary": "One device's readings, raw or bucketed (min/avg/max/count), "
                    "keyset-paged",
                    "parameters": [
                        _q("device", "device id", {"type": "string"}, required=True),
                        _q(
                            "metric",
                            "metric name (all of the device's when absent)",
                            {"type": "string"},
                        ),
                        _q(
                            "from",
                            "start, ISO 8601 with zone (default: to - 6h)",
                            time,
                        ),
                        _q("to", "end, exclusive (default: now)", time),
                        _q(
                            "bucket",
                            f"raw (at most {a.max_raw_range_h:g} h per request) or a "
                            f"bucket width (at most {a.max_bucket_range_d:g} days)",
                            {"type": "string", "enum": ["raw", *BUCKETS]},
                        ),
                        _q(
                            "limit",
                            "page size",
                            {"type": "integer", "minimum": 1, "maximum": a.max_page_size},
                        ),
                        _q("cursor", "`next_cursor` of the previous page", {"type": "string"}),
                    ],
                    "responses": {"200": ok_json, "400": bad},
                }
            },
            "/areas": {
                "get": {
                    "summary": "Each area's current level per kind and active alerts",
                    "responses": {"200": ok_json},
                }
            },
            "/alerts/active": {
                "get": {
                    "summary": "Alerts firing or acknowledged, for operators: each with its "
                    "audience (public, or operators only: the residents' page leaves those out)",
                    "responses": {"200": ok_json},
                }
            },
            "/stream": {
                "get": {
                    "summary": "Server-Sent Events: `reading` and `alert` events from now on",
                    "parameters": [
                        _q("types", "reading,alert", {"type": "string"}),
                        _q("kind", "comma-separated kinds", {"type": "string"}),
                        _q("device", "comma-separated device ids", {"type": "string"}),
                        _q("area", "comma-separated area ids", {"type": "string"}),
                    ],
                    "responses": {
                        "200": {
                            "description": "event stream",
                            "content": {"text/event-stream": {}},
                        },
                        "400": bad,
                        "503": {"description": f"more than {a.max_stream_clients} streams open"},
                    },
                }
            },
            "/open-data/hourly.csv": {
                "get": {
                    "summary": "Hourly aggregates per area, kind and metric "
                    f"({a.open_data_licence}; see the Link header)",
                    "parameters": [
                        _q("from", "start (default: 24 h before to)", time),
                        _q("to", "end (default: the end of the current hour)", time),
                        area,
                        kind,
                    ],
                    "responses": {
                        "200": {"description": "CSV", "content": {"text/csv": {}}},
                        "400": bad,
                    },
                }
            },
            "/open-data/hourly.json": {
                "get": {
                    "summary": "The same as JSON, with the licence in the body",
                    "parameters": [_q("from", "start", time), _q("to", "end", time), area, kind],
                    "responses": {"200": ok_json, "400": bad},
                }
            },
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": ok_json}}},
            "/city.json": {
                "get": {"summary": "The city's base map (GeoJSON)", "responses": {"200": ok_json}}
            },
            "/ops": {
                "get": {
                    "summary": "Operations centre page",
                    "responses": {"200": {"description": "HTML"}},
                }
            },
            "/residents": {
                "get": {
                    "summary": "Residents' page (Khmer, English)",
                    "responses": {"200": {"description": "HTML"}},
                }
            },
            "/healthz": {"get": {"summary": "The process is alive", "responses": {"200": ok_json}}},
            "/readyz": {
                "get": {
                    "summary": "Database and Kafka reachable",
                    "responses": {"200": ok_json, "503": ok_json},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text"}},
                }
            },
        },
    }

"""The read API's OpenAPI 3.1 document, served at /openapi.json.

Written by hand next to the handlers (aiohttp has no schema generator in the standard
install): the parameters and bounds here come from the same settings the handlers use,
tests/test_api.py checks that every route the service serves is described, and
tests/test_api_fuzz.py runs schemathesis against it: enums, lengths, patterns, media types
and status codes here are what the handlers enforce and answer. Limits between two
parameters (a range of at most so many hours), which a schema cannot state, are in the
descriptions and in `x-max-range-hours`.

Operator routes carry `security: operatorToken` (services/common/http_auth.py).
"""

from __future__ import annotations

from typing import Any

from schemas.registry import KINDS
from services.api.params import BUCKETS, STATUSES
from services.api.status import DEVICE_STATES
from services.common.http_params import text_schema
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


def _ok(media: str = "application/json", description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": {}}}}


def _json_error(description: str, *, too_long: bool = False) -> dict[str, Any]:
    schema = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string"},
            "detail": {"type": "string"},
            "parameter": {"type": "string"},
        },
    }
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if too_long:  # aiohttp's own answer to a request line over 8190 bytes
        content["text/plain"] = {"schema": {"type": "string"}}
    return {"description": description, "content": content}


def openapi_document(settings: Settings, areas: list[str], metrics: list[str]) -> dict[str, Any]:
    """The document; `areas` are the city's area ids and `metrics` every metric name."""
    a = settings.api
    raw_h, bucket_h = a.max_raw_range_h, a.max_bucket_range_d * 24
    time = {"type": "string", "format": "date-time"}
    bad = _json_error(
        "a bad parameter (a control character, an unknown value, out of bounds); a request "
        "line over 8190 bytes is refused by the HTTP server itself, in text/plain",
        too_long=True,
    )
    down = _json_error("the database is unreachable; retry later")
    denied = _json_error("an operator route without the operator token")
    kind = _q("kind", "device kind", {"type": "string", "enum": list(KINDS)})
    area = _q("area", "area id (see /areas)", {"type": "string", "enum": areas})
    operator: list[dict[str, list[str]]] = [{"operatorToken": []}]

    def operator_get(summary: str, params: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
        return {
            "get": {
                "summary": summary,
                "security": operator,
                "parameters": params,
                "responses": {"200": _ok(), "400": bad, "401": denied, "503": down, **more},
            }
        }

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "CityWatch read API",
            "version": "1",
            "description": "Devices, readings, areas, a live stream and open data of the "
            "city's environmental sensors. Read-only. Public routes (the residents' page, "
            "/areas, open data, the city map) need nothing; operator routes (marked with "
            "the operatorToken security scheme) answer 401 without the operator token.",
            "license": {"name": a.open_data_licence, "identifier": a.open_data_licence},
        },
        "components": {
            "securitySchemes": {
                "operatorToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The operator token: CITYWATCH_OPERATOR_TOKEN, else the "
                    "contents of {state_dir}/operator-token (0600). A browser opens "
                    "/ops?token=<token> once; the cookie it gets then carries it.",
                }
            }
        },
        "paths": {
            "/devices": operator_get(
                "Devices with exact positions, status, map state, last seen and latest values",
                [
                    kind,
                    _q(
                        "area",
                        "area id (see /areas), or unassigned",
                        {"type": "string", "enum": [*areas, "unassigned"]},
                    ),
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
                    _q(
                        "offset",
                        "rows to skip",
                        {"type": "integer", "minimum": 0, "maximum": 10_000_000},
                    ),
                ],
            ),
            "/devices/{device_id}": operator_get(
                "One device with its latest values and recent alerts",
                [
                    {
                        "name": "device_id",
                        "in": "path",
                        "required": True,
                        "schema": text_schema(),
                    }
                ],
                **{"404": _json_error("no such device")},
            ),
            "/readings": {
                "get": {
                    **operator_get(
                        "One device's readings, raw or bucketed (min/avg/max/count), keyset-paged",
                        [
                            _q("device", "device id", text_schema(minLength=1), required=True),
                            _q(
                                "metric",
                                "metric name (all of the device's when absent)",
                                {"type": "string", "enum": metrics},
                            ),
                            _q("from", "start, ISO 8601 with zone (default: to - 6h)", time),
                            _q("to", "end, exclusive (default: now)", time),
                            _q(
                                "bucket",
                                f"raw (from..to at most {raw_h:g} h) or a bucket width "
                                f"(from..to at most {bucket_h:g} h); a longer range is a "
                                "400 naming `from`",
                                {"type": "string", "enum": ["raw", *BUCKETS]},
                            ),
                            _q(
                                "limit",
                                "page size",
                                {"type": "integer", "minimum": 1, "maximum": a.max_page_size},
                            ),
                            _q(
                                "cursor",
                                "`next_cursor` of the previous page (opaque: any other "
                                "value is a 400)",
                                {"type": "string"},
                            ),
                        ],
                    )["get"],
                    "x-max-range-hours": {"raw": raw_h, "bucketed": bucket_h},
                }
            },
            "/areas": {
                "get": {
                    "summary": "Each area's current level per kind and its public alerts",
                    "responses": {"200": _ok(), "503": down},
                }
            },
            "/alerts/active": operator_get(
                "Alerts firing or acknowledged, for operators: each with its audience "
                "(public, or operators only: the residents' page leaves those out)",
                [],
            ),
            "/stream": {
                "get": {
                    "summary": "Server-Sent Events: `reading` and `alert` events from now on",
                    "security": operator,
                    "parameters": [
                        _q("types", "reading,alert", text_schema()),
                        _q("kind", "comma-separated kinds", text_schema()),
                        _q("device", "comma-separated device ids", text_schema()),
                        _q("area", "comma-separated area ids", text_schema()),
                    ],
                    "responses": {
                        "200": _ok("text/event-stream", "event stream"),
                        "400": bad,
                        "401": denied,
                        "429": _json_error(
                            f"this client holds {a.max_streams_per_client} streams already"
                        ),
                        "503": _json_error(f"{a.max_stream_clients} streams open already"),
                    },
                }
            },
            "/open-data/hourly.csv": {
                "get": {
                    "summary": "Hourly aggregates per area, kind and metric "
                    f"({a.open_data_licence}; see the Link header)",
                    "parameters": [
                        _q(
                            "from",
                            f"start (default: 24 h before to); at most {bucket_h:g} h "
                            "before to, else a 400 naming `from`",
                            time,
                        ),
                        _q("to", "end (default: the end of the current hour)", time),
                        area,
                        kind,
                    ],
                    "responses": {"200": _ok("text/csv", "CSV"), "400": bad, "503": down},
                    "x-max-range-hours": bucket_h,
                }
            },
            "/open-data/hourly.json": {
                "get": {
                    "summary": "The same as JSON, with the licence in the body",
                    "parameters": [
                        _q("from", f"start; at most {bucket_h:g} h before to", time),
                        _q("to", "end", time),
                        area,
                        kind,
                    ],
                    "responses": {"200": _ok(), "400": bad, "503": down},
                    "x-max-range-hours": bucket_h,
                }
            },
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": _ok()}}},
            "/city.json": {
                "get": {
                    "summary": "The city's base map (GeoJSON)",
                    "responses": {"200": _ok("application/geo+json")},
                }
            },
            "/ops": {
                "get": {
                    "summary": "Operations centre page; `?token=` logs a browser in (an "
                    "HttpOnly cookie, then a redirect to /ops)",
                    "security": operator,
                    "parameters": [_q("token", "the operator token", text_schema())],
                    "responses": {
                        "200": _ok("text/html", "HTML"),
                        "303": {"description": "logged in: on to /ops, with the cookie"},
                        "400": bad,
                        "401": denied,
                    },
                }
            },
            "/residents": {
                "get": {
                    "summary": "Residents' page (Khmer, English)",
                    "responses": {"200": _ok("text/html", "HTML")},
                }
            },
            "/healthz": {"get": {"summary": "The process is alive", "responses": {"200": _ok()}}},
            "/readyz": {
                "get": {
                    "summary": "Database and Kafka reachable",
                    "responses": {"200": _ok(), "503": _ok(description="not ready")},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "security": operator,
                    "responses": {"200": _ok("text/plain", "text"), "401": denied},
                }
            },
        },
    }

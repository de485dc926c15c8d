"""The OpenAPI 3.1 document of the alerts service's HTTP port, served at `/openapi.json`.

Written out by hand, next to the handlers in `services/alerts/api.py`, rather than
generated: the document is a contract for the operations centre's integrators and
should read like one. `tests/test_alerts_api.py` keeps the two in step: every documented
path answers on a real server, every route of `AlertsApi.routes()` is documented, and the
document validates against the OpenAPI 3.1 schema.
"""

from __future__ import annotations

from typing import Any, Final, get_args

from schemas.registry import KINDS
from services.alerts.api import LIST_ITEM
from services.alerts.model import Severity
from services.common.http_params import MAX_TEXT

__all__ = ["document"]

_STATES: Final = ["firing", "acknowledged", "resolved"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _list_param(name: str, description: str, enum: list[str] | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "string", "maxLength": MAX_TEXT}
    if enum is not None:
        item["enum"] = enum
    else:
        item["pattern"] = f"^{LIST_ITEM}$"
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description + " Several values: repeat it or separate with commas.",
        "style": "form",
        "explode": True,
        "schema": {"type": "array", "items": item},
    }


def _time_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description + " ISO 8601 with a zone (Z or +07:00).",
        "schema": {"type": "string", "format": "date-time"},
    }


_ALERT_ID: Final = {
    "name": "alert_id",
    "in": "path",
    "required": True,
    "description": "The alert's id (a UUID): one identity from firing to resolved.",
    "schema": {"type": "string", "format": "uuid"},
}

_UNAVAILABLE: Final = _err("The database is unavailable; retry later.")
_DENIED: Final = _err("An operator route without the operator token.")
_OPERATOR: Final[list[dict[str, list[str]]]] = [{"operatorToken": []}]
_BAD: Final = {
    "description": "A parameter is invalid; `parameter` names it. A request line over 8190 "
    "bytes is refused by the HTTP server itself, in text/plain.",
    "content": {
        "application/json": {"schema": _ref("Error")},
        "text/plain": {"schema": {"type": "string"}},
    },
}
_NOT_FOUND: Final = _err("No alert has this id.")


def _schemas() -> dict[str, Any]:
    nullable_time = {"type": ["string", "null"], "format": "date-time"}
    return {
        "Alert": {
            "type": "object",
            "required": [
                "alert_id",
                "rule_id",
                "device_id",
                "kind",
                "metric",
                "severity",
                "state",
                "status",
                "value",
                "last_value",
                "latest_value",
                "trigger_value",
                "trigger_at",
                "threshold",
                "started_at",
                "updated_at",
                "title_en",
                "title_km",
                "cap_url",
            ],
            "properties": {
                "alert_id": {"type": "string", "format": "uuid"},
                "rule_id": {"type": "string"},
                "rule_type": {"type": "string", "examples": ["threshold", "levels", "combined"]},
                "audience": {
                    "type": "string",
                    "enum": ["public", "operators"],
                    "description": "Who the alert is for (the rule's audience): the "
                    "residents' page shows public alerts only.",
                },
                "device_id": {
                    "type": ["string", "null"],
                    "description": "Null for an area-wide alert (a combined rule).",
                },
                "drinking_water": {
                    "type": "boolean",
                    "description": "The device is a registered drinking-water point: the "
                    "alert's texts then give drinking-water advice.",
                },
                "kind": {"type": "string", "enum": list(KINDS)},
                "metric": {
                    "type": ["string", "null"],
                    "examples": ["water_level_m"],
                    "description": "Null for an alert about no metric (a silent device).",
                },
                "severity": {"type": "string", "enum": list(get_args(Severity))},
                "state": {"type": "string", "enum": _STATES},
                "status": {
                    "type": "string",
                    "enum": ["Actual", "Test", "Exercise"],
                    "description": "CAP status: Test and Exercise alerts are rehearsals.",
                },
                "value": {
                    "type": "number",
                    "description": "The value of the reading that confirmed the opening "
                    "(persistence may confirm a reporting interval or more after the crossing).",
                },
                "last_value": {
                    "type": "number",
                    "description": "The value at the alert's latest transition.",
                },
                "latest_value": {
                    "type": "number",
                    "description": "What the device reads now (its newest stored reading of "
                    "the metric); last_value for an area's alert.",
                },
                "latest_at": {
                    **nullable_time,
                    "description": "Reading time of latest_value; null when it is last_value.",
                },
                "trigger_value": {
                    "type": "number",
                    "description": "The value of the reading that crossed the alert's current "
                    "level: what its titles and CAP message state.",
                },
                "trigger_at": {
                    "type": "string",
                    "format": "date-time",
                    "description": "Reading time of the reading that crossed the level.",
                },
                "threshold": {"type": "number"},
                "started_at": {
                    "type": "string",
                    "format": "date-time",
                    "description": "Reading time that opened the alert.",
                },
                "resolved_at": nullable_time,
                "updated_at": {"type": "string", "format": "date-time"},
                "title_en": {"type": "string"},
                "title_km": {"type": "string"},
                "acknowledged_by": {
                    "type": ["string", "null"],
                    "description": "Name of the API token that acknowledged it.",
                },
                "acknowledged_at": nullable_time,
                "area": {
                    "type": ["string", "null"],
                    "description": "The alert's area, else its device's registry area.",
                },
                "location": {
                    "description": "The device's registered position (WGS 84), if any.",
                    "oneOf": [
                        {
                            "type": "object",
                            "required": ["lat", "lon"],
                            "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                        },
                        {"type": "null"},
                    ],
                },
                "cap_url": {"type": "string", "format": "uri"},
            },
        },
        "Event": {
            "type": "object",
            "description": "One transition of an alert.",
            "required": ["event_id", "state", "value", "at", "recorded_at"],
            "properties": {
                "event_id": {"type": "integer"},
                "state": {
                    "type": "string",
                    "enum": ["firing", "escalated", "deescalated", "acknowledged", "resolved"],
                },
                "value": {"type": "number"},
                "trigger_value": {
                    "type": ["number", "null"],
                    "description": "The reading that crossed the level (for a resolution, the "
                    "first back below it); null in events recorded before it was kept.",
                },
                "trigger_at": nullable_time,
                "severity": {
                    "type": ["string", "null"],
                    "description": "Severity after the transition, where it was recorded.",
                },
                "previous_severity": {"type": ["string", "null"]},
                "threshold": {"type": ["number", "null"]},
                "title_en": {"type": ["string", "null"]},
                "title_km": {"type": ["string", "null"]},
                "at": {
                    "type": "string",
                    "format": "date-time",
                    "description": "Reading time of the transition (time of an ack).",
                },
                "recorded_at": {"type": "string", "format": "date-time"},
            },
        },
        "AlertPage": {
            "type": "object",
            "required": ["alerts", "next_cursor"],
            "properties": {
                "alerts": {"type": "array", "items": _ref("Alert")},
                "next_cursor": {
                    "type": ["string", "null"],
                    "description": "Pass as `cursor` for the next page; null on the last.",
                },
            },
        },
        "AlertDetail": {
            "type": "object",
            "required": ["alert", "history"],
            "properties": {
                "alert": _ref("Alert"),
                "history": {"type": "array", "items": _ref("Event")},
            },
        },
        "AckResult": {
            "type": "object",
            "required": ["alert", "already_acknowledged"],
            "properties": {
                "alert": _ref("Alert"),
                "already_acknowledged": {
                    "type": "boolean",
                    "description": "True when an earlier ack stands (nothing was written).",
                },
            },
        },
        "Error": {
            "type": "object",
            "required": ["error", "detail"],
            "properties": {
                "error": {
                    "type": "string",
                    "examples": ["bad_parameter", "not_found", "unauthorized", "alert_resolved"],
                },
                "detail": {"type": "string"},
                "parameter": {"type": "string", "description": "The parameter at fault."},
            },
        },
    }


def _paths() -> dict[str, Any]:
    return {
        "/alerts": {
            "get": {
                "operationId": "listAlerts",
                "summary": "Alerts, newest first, filtered and paginated (operators)",
                "description": (
                    "Keyset pagination: follow `next_cursor` until it is null. A page is "
                    "stable under new alerts (they sort before the cursor). Unknown "
                    "parameters are refused with 400, and so is `until` not later than "
                    "`since`, and a `cursor` this API did not give out."
                ),
                "security": _OPERATOR,
                "parameters": [
                    _list_param("state", "Alert state.", _STATES),
                    _list_param("severity", "Severity.", list(get_args(Severity))),
                    _list_param("kind", "Kind of sensor.", list(KINDS)),
                    _list_param("area", "Area id (the alert's, else its device's)."),
                    _list_param("device_id", "Device id."),
                    _list_param("rule_id", "Rule id."),
                    _time_param("since", "Alerts still active at or after this time."),
                    _time_param("until", "Alerts begun before this time."),
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "required": False,
                        "description": "`next_cursor` of the previous page.",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": _json(_ref("AlertPage"), "One page of alerts."),
                    "400": _BAD,
                    "401": _DENIED,
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/alerts/{alert_id}": {
            "get": {
                "operationId": "getAlert",
                "summary": "One alert with its history (operators)",
                "security": _OPERATOR,
                "parameters": [_ALERT_ID],
                "responses": {
                    "200": _json(_ref("AlertDetail"), "The alert and its transitions."),
                    "400": _BAD,
                    "401": _DENIED,
                    "404": _NOT_FOUND,
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/alerts/{alert_id}.html": {
            "get": {
                "operationId": "getAlertPage",
                "summary": "The alert's page for people, in English and Khmer",
                "description": (
                    "What CAP `<web>` links to: headlines, descriptions and instructions in "
                    "both languages, area, severity, CAP status, times, the value that raised "
                    "the alert and its history."
                ),
                "parameters": [_ALERT_ID],
                "responses": {
                    "200": {
                        "description": "The page.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    },
                    "400": _BAD,
                    "404": _NOT_FOUND,
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/alerts/{alert_id}/ack": {
            "post": {
                "operationId": "ackAlert",
                "summary": "Acknowledge a firing alert",
                "description": (
                    "Records the token's name and the time, sets the state to acknowledged "
                    "and adds an `acknowledged` event, in one transaction. Acknowledging an "
                    "acknowledged alert changes nothing and answers 200."
                ),
                "security": [{"bearerToken": []}],
                "parameters": [_ALERT_ID],
                "responses": {
                    "200": _json(_ref("AckResult"), "Acknowledged (now or before)."),
                    "400": _BAD,
                    "401": _err("No token, or an unknown or revoked one."),
                    "404": _NOT_FOUND,
                    "409": _err("The alert is resolved: there is nothing to acknowledge."),
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/cap/{alert_id}.xml": {
            "get": {
                "operationId": "getAlertCap",
                "summary": "The alert's current OASIS CAP 1.2 message (English and Khmer)",
                "description": (
                    "msgType Alert for the first message, Update (with references) for "
                    "later transitions, Cancel once resolved. Checked against the CAP 1.2 "
                    "XML Schema before it is served."
                ),
                "parameters": [_ALERT_ID],
                "responses": {
                    "200": {
                        "description": "CAP 1.2 XML.",
                        "content": {"application/cap+xml": {"schema": {"type": "string"}}},
                    },
                    "400": _BAD,
                    "404": _NOT_FOUND,
                    "500": _err("The stored alert cannot make a valid CAP message."),
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/cap/feed.atom": {
            "get": {
                "operationId": "getAlertFeed",
                "summary": "Atom feed of the active alerts, linking each one's CAP message",
                "parameters": [
                    {
                        "name": "lang",
                        "in": "query",
                        "required": False,
                        "description": "Language of titles and summaries.",
                        "schema": {"type": "string", "enum": ["en", "km"], "default": "en"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "Atom (RFC 4287) feed.",
                        "content": {"application/atom+xml": {"schema": {"type": "string"}}},
                    },
                    "400": _BAD,
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1 document.")},
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness: the process answers",
                "responses": {"200": _json({"type": "object"}, "Alive.")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness, with each failing upstream named",
                "responses": {
                    "200": _json({"type": "object"}, "Ready."),
                    "503": _json({"type": "object"}, "Not ready; `checks` says why."),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (operators)",
                "security": _OPERATOR,
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": _DENIED,
                },
            }
        },
    }


def document(server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document; `server_url` becomes its one server entry when given."""
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "CityWatch alerts API",
            "version": "1.0.0",
            "description": (
                "Alerts raised by CityWatch's rules, their history, acknowledgement, and "
                "their OASIS CAP 1.2 messages and Atom feed. The alert pages, CAP messages "
                "and the feed are public; the alert history and /metrics need the operator "
                "token (operatorToken); acknowledging needs a named bearer token from "
                "`citywatch alerts-token create NAME`."
            ),
        },
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "operatorToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The operator token: CITYWATCH_OPERATOR_TOKEN, else the "
                    "contents of {state_dir}/operator-token (0600).",
                },
                "bearerToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token made by `citywatch alerts-token create NAME`.",
                },
            },
        },
    }
    if server_url:
        doc["servers"] = [{"url": server_url.rstrip("/")}]
    return doc

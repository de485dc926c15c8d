"""The alerts HTTP API, served on the alerts service's port beside /metrics and /readyz.

    GET  /alerts                 filter by state, severity, kind, area, device, rule, time;
                                 newest first, keyset-paginated (`limit`, `cursor`)
    GET  /alerts/{id}            one alert with its history (`alert_events`)
    GET  /alerts/{id}.html       the alert's page for people, English and Khmer (CAP `<web>`)
    POST /alerts/{id}/ack        bearer token; records who (the token's name) and when
    GET  /cap/{id}.xml           the alert's current CAP 1.2 message, schema-checked
    GET  /cap/feed.atom          Atom feed of the active alerts (`lang=en|km`)
    GET  /openapi.json           the OpenAPI 3.1 document of all of the above

Public: the alert's page, its CAP message, the feed and the document (what CAP `<web>`,
hubs and residents follow). The alert history (`/alerts`, `/alerts/{id}`: devices'
positions, who acknowledged) and the service's `/metrics` are operator routes: without
the operator token (services/common/http_auth.py) they answer 401. Acknowledging needs a
named API token (`citywatch alerts-token create NAME`), so the ack records who it was.

`AlertsApi(pool_getter, settings).routes()` is all a service needs: the getter is called
per request because the service opens its pool after its HTTP server (a not-yet-open or
unreachable database answers 503, it never crashes the server).

Errors are JSON `{"error": code, "detail": text}`; a bad query parameter is a 400 that
names it in `parameter`, and an unknown parameter is refused too, so a typo such as
`?severty=danger` is an error rather than an unfiltered list.

The CAP message of an alert is rebuilt from its history, one message per stored event:
the first event is the `Alert` (seq 0), each later one an `Update` referencing all earlier
messages (see `msg_type_for` for the all-clear and `Cancel`). Identifiers derive from the
alert id and the event's position (`cap.message_identifier`), so the same history always
gives the same messages, the ones the delivery channels sent.

Where an alert applies (CAP `<area>`) is decided by `services/alerts/areas.py`, the one
builder the delivery channels use too, from the alert's area and the city's areas file
(`settings.city_file`): the same identifier carries the same `<area>` here, in the
feed and in the webhooks and e-mails.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, NoReturn, get_args

import asyncpg
from aiohttp import web
from multidict import MultiMapping

from schemas.registry import KINDS, metric_spec
from services.alerts import api_queries as q
from services.alerts.areas import CityAreas, cap_origin, default_areas
from services.alerts.cap import CAP_MIME, build_cap, validate_cap
from services.alerts.feed import ATOM_MIME, build_feed
from services.alerts.model import (
    AlertMessage,
    CapError,
    CapSource,
    MessageRef,
    MsgType,
    Severity,
    Status,
    audience_of,
    message_identifier,
)
from services.alerts.page import alert_page
from services.alerts.tokens import token_digest
from services.common import db
from services.common.http_auth import OperatorAuth, operator_token
from services.common.http_params import MAX_TEXT, BadParameter, check_text, parse_time
from services.common.settings import Settings

__all__ = [
    "LIST_ITEM",
    "AlertsApi",
    "BadParameter",
    "cap_message",
    "decode_cursor",
    "encode_cursor",
    "msg_type_for",
    "parse_query",
]

log = logging.getLogger(__name__)

STATES: Final = ("firing", "acknowledged", "resolved")
SEVERITIES: Final[tuple[str, ...]] = get_args(Severity)
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 500
FEED_MAX_ALERTS: Final = 1000
_QUERY_PARAMETERS: Final = frozenset(
    {"state", "severity", "kind", "area", "device_id", "rule_id", "since", "until", "limit",
     "cursor"}
)  # fmt: skip
_AUTH_CHALLENGE: Final = 'Bearer realm="citywatch-alerts"'
# One free-text list value: ids separated by commas, none empty, no whitespace or
# control characters (services/alerts/openapi.py states it as the items' pattern).
_ID: Final = r"[^,\s\x00-\x1f\x7f-\x9f]+"
LIST_ITEM: Final = rf"{_ID}(?:,{_ID})*"

PoolGetter = Callable[[], asyncpg.Pool | None]


# -- request parsing (pure) ---------------------------------------------------------------


def _values(query: MultiMapping[str], name: str, allowed: Sequence[str] | None) -> tuple[str, ...]:
    """`?state=firing,acknowledged` and `?state=firing&state=acknowledged` alike.

    Each value is at most `MAX_TEXT` characters; a free-text one (an id) is refused when
    it is empty or holds an empty piece between commas, the document's `LIST_ITEM`."""
    out: list[str] = []
    for raw in query.getall(name, []):
        check_text(name, raw, MAX_TEXT)
        if allowed is None and re.fullmatch(LIST_ITEM, raw) is None:
            raise BadParameter(name, "empty value (ids, comma-separated, no spaces)")
        for value in raw.split(","):
            if allowed is not None and value not in allowed:
                raise BadParameter(name, f"{value!r} is not one of {', '.join(allowed)}")
            out.append(value)
    return tuple(dict.fromkeys(out))


def _single(query: MultiMapping[str], name: str) -> str | None:
    values = query.getall(name, [])
    if len(values) > 1:
        raise BadParameter(name, "given more than once")
    return values[0] if values else None


def _time(query: MultiMapping[str], name: str) -> datetime | None:
    raw = _single(query, name)
    return None if raw is None else parse_time(name, raw)


def encode_cursor(started_at: datetime, alert_id: uuid.UUID) -> str:
    """An opaque cursor: where the next page starts (after this alert, newest first)."""
    raw = json.dumps([started_at.isoformat(), str(alert_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, alert_id = json.loads(raw)
        started_at = datetime.fromisoformat(at)
        if started_at.utcoffset() is None:
            raise ValueError("naive time")  # one message for every bad cursor
        return started_at, uuid.UUID(alert_id)
    except (ValueError, TypeError, binascii.Error):
        raise BadParameter(
            "cursor", "not a cursor this API gave out (use next_cursor as it is)"
        ) from None


def parse_query(query: MultiMapping[str]) -> q.AlertQuery:
    """Validate a `GET /alerts` query string; raise `BadParameter` naming the first bad one."""
    for name in query:
        if name not in _QUERY_PARAMETERS:
            known = ", ".join(sorted(_QUERY_PARAMETERS))
            raise BadParameter(name, f"unknown parameter (known: {known})")
    limit_raw = _single(query, "limit")
    limit = DEFAULT_LIMIT
    if limit_raw is not None:
        # ASCII digits only: int() would also take " 5", "1_000" and other scripts' digits.
        if re.fullmatch(r"-?[0-9]{1,12}", limit_raw) is None:
            raise BadParameter("limit", f"{limit_raw!r} is not an integer")
        limit = int(limit_raw)
        if not 1 <= limit <= MAX_LIMIT:
            raise BadParameter("limit", f"must be between 1 and {MAX_LIMIT}")
    since, until = _time(query, "since"), _time(query, "until")
    if since is not None and until is not None and since >= until:
        raise BadParameter("until", "must be later than since")
    cursor = _single(query, "cursor")
    return q.AlertQuery(
        states=_values(query, "state", STATES),
        severities=_values(query, "severity", SEVERITIES),
        kinds=_values(query, "kind", KINDS),
        areas=_values(query, "area", None),
        device_ids=_values(query, "device_id", None),
        rule_ids=_values(query, "rule_id", None),
        since=since,
        until=until,
        after=decode_cursor(cursor) if cursor is not None else None,
        limit=limit,
    )


def parse_alert_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise BadParameter("alert_id", f"{raw!r} is not an alert id (a UUID)") from None


# -- CAP from stored rows (pure) ------------------------------------------------------------


def msg_type_for(state: str, status: str, seq: int, transition: str) -> MsgType:
    """CAP msgType of an alert's `seq`-th message, the rule `services/alerts/cap.py` states
    and the delivery channels follow (`delivery/notice.py::msg_type_of`), so the message a
    hub fetches here is the one the webhooks carried under the same identifier: the first
    is an Alert; later ones are Updates, the all-clear of a real alert included (urgency
    Past, responseType AllClear); a rehearsal's end (Test or Exercise resolved) is a Cancel.
    """
    if state == "resolved" and status != "Actual":
        return "Cancel"
    return "Alert" if seq == 0 and transition == "firing" else "Update"


def _issued(event: Mapping[str, Any]) -> datetime:
    at: datetime = event.get("recorded_at") or event["at"]
    return at


def cap_message(
    alert: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    source: CapSource,
    areas: CityAreas | None = None,
) -> AlertMessage:
    """The current CAP message of an alert: one message per event, this one the last.

    What the alert was at its last event (severity, threshold, titles) comes from that
    event when it recorded them, else from the alert row. An alert stored without events
    is its opening message. Its `<area>` comes from `areas` (the shipped city when None).
    Raises `CapError` when the row cannot make a valid message (unknown kind, severity or
    status): a bug or a hand-edited row, to be logged, never served half-built.
    """
    history = list(events) or [
        {"state": "firing", "value": alert["value"], "at": alert["started_at"]}
    ]
    last = history[-1]

    def latest(name: str) -> Any:
        value = last.get(name)
        return value if value is not None else alert.get(name)

    kind, severity = alert["kind"], latest("severity")
    status: Any = alert.get("status") or "Actual"
    if kind not in KINDS:
        raise CapError(f"alert {alert['alert_id']}: kind {kind!r} is not one of {KINDS}")
    if severity not in SEVERITIES:
        raise CapError(f"alert {alert['alert_id']}: severity {severity!r} is unknown")
    if status not in get_args(Status):
        raise CapError(f"alert {alert['alert_id']}: CAP status {status!r} is unknown")
    alert_id = str(alert["alert_id"])
    seq = len(history) - 1
    msg_type = msg_type_for(alert["state"], status, seq, last["state"])
    metric = alert.get("metric") or ""  # offline alerts concern no metric
    spec = metric_spec(kind, metric) if metric else None
    return AlertMessage(
        alert_id=alert_id,
        rule_id=alert["rule_id"],
        kind=kind,
        metric=metric,
        severity=severity,
        state=alert["state"],
        # The reading that crossed the level (migration 0009), else the event's own.
        value=float(last["value"] if last.get("trigger_value") is None else last["trigger_value"]),
        observed_at=last.get("trigger_at"),
        unit=spec.unit if spec is not None else "",
        threshold=float(latest("threshold")),
        # An area-wide alert has no device; its subject is named as the engine names it.
        device_id=alert.get("device_id") or f"area:{alert.get('area')}",
        area=(areas or default_areas()).cap_area(alert.get("area")),
        onset=alert["started_at"],
        # CAP `sent` is when the message was issued (the event's `recorded_at`), not the
        # time of the reading that caused it; rows without it fall back to the reading time.
        sent=_issued(last),
        seq=seq,
        msg_type=msg_type,
        status=status,
        references=()
        if msg_type == "Alert"
        else tuple(
            MessageRef(source.sender, message_identifier(alert_id, i), _issued(e))
            for i, e in enumerate(history[:-1])
        ),
        title_en=latest("title_en"),
        title_km=latest("title_km"),
        # operators-only alerts are CAP scope Restricted and left out of the public feed
        audience=audience_of(alert.get("audience"), alert.get("rule_type")),
        drinking_water=bool(alert.get("drinking_water")),
    )


# -- JSON -----------------------------------------------------------------------------------

_INTERNAL: Final = frozenset({"device_name", "device_lat", "device_lon"})


def _json_value(v: Any) -> Any:
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, datetime):
        return v.isoformat()
    return v


@dataclass(frozen=True, slots=True)
class _Json:
    source: CapSource

    def alert(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: _json_value(v) for k, v in row.items() if k not in _INTERNAL}
        out["location"] = (
            {"lat": row["device_lat"], "lon": row["device_lon"]}
            if row.get("device_lat") is not None and row.get("device_lon") is not None
            else None
        )
        out["cap_url"] = self.source.cap_url(str(row["alert_id"]))
        return out

    def event(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {k: _json_value(v) for k, v in row.items() if k != "alert_id"}


def _error(
    exc: type[web.HTTPException],
    error: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> web.HTTPException:
    body = json.dumps({"error": error, "detail": detail, **extra}, ensure_ascii=False)
    return exc(text=body, content_type="application/json", headers=headers)


def _bad(err: BadParameter) -> NoReturn:
    raise _error(web.HTTPBadRequest, "bad_parameter", err.detail, parameter=err.parameter)


# -- the API -------------------------------------------------------------------------------


class AlertsApi:
    """The alerts API's handlers; `routes()` gives them to the service's `HttpServer`.

    Args:
        pool_getter: returns the service's pool, or None while it is not open yet.
        settings: the service's settings (the default public base URL of CAP links).
        source: who publishes the CAP messages and under which base URL.
        areas: the city whose areas file gives CAP areas (circle, geocodes, Khmer name);
            read from `settings.city_file` when not given.
    """

    def __init__(
        self,
        pool_getter: PoolGetter,
        settings: Settings,
        *,
        source: CapSource | None = None,
        areas: CityAreas | None = None,
    ) -> None:
        self._pool_getter = pool_getter
        origin = cap_origin(settings)
        self.source = source or origin.source
        self._areas = areas or origin.areas
        self._json = _Json(self.source)
        # The operator routes' check; the service gives it to its HttpServer for /metrics.
        self.operator = OperatorAuth(operator_token(settings), realm="citywatch-operator")

    def routes(self) -> list[web.RouteDef]:
        """Every route of the API; `openapi.document()` documents exactly these."""
        op = self.operator.require
        return [
            web.get("/alerts", op(self.list_alerts)),
            # Before `/alerts/{alert_id}`, which would otherwise take "<id>.html" as an id.
            web.get("/alerts/{alert_id}.html", self.page),
            web.get("/alerts/{alert_id}", op(self.get_alert)),
            web.post("/alerts/{alert_id}/ack", self.ack),
            web.get("/cap/feed.atom", self.feed),
            web.get("/cap/{alert_id}.xml", self.cap),
            web.get("/openapi.json", self.openapi),
        ]

    def _pool(self) -> asyncpg.Pool:
        pool = self._pool_getter()
        if pool is None:
            raise _error(web.HTTPServiceUnavailable, "unavailable", "the database is not open yet")
        return pool

    @staticmethod
    def _db_down(exc: BaseException) -> web.HTTPException:
        log.warning("alerts api: database unavailable", extra={"error": repr(exc)})
        return _error(web.HTTPServiceUnavailable, "unavailable", "the database is unavailable")

    async def list_alerts(self, request: web.Request) -> web.Response:
        try:
            query = parse_query(request.query)
        except BadParameter as err:
            _bad(err)
        try:
            async with self._pool().acquire() as con:
                # One more than asked: whether a next page exists, without a count query.
                rows = await q.list_alerts(con, replace(query, limit=query.limit + 1))
        except db.CONNECTION_ERRORS as exc:
            raise self._db_down(exc) from None
        page, more = rows[: query.limit], len(rows) > query.limit
        last = page[-1] if page else None
        return web.json_response(
            {
                "alerts": [self._json.alert(r) for r in page],
                "next_cursor": (
                    encode_cursor(last["started_at"], last["alert_id"])
                    if more and last is not None
                    else None
                ),
            },
            dumps=_dumps,
        )

    async def _alert_with_history(self, alert_id: uuid.UUID) -> tuple[Any, list[Any]]:
        """One alert and its events, or 404; 503 while the database is unreachable."""
        try:
            async with self._pool().acquire() as con:
                alert = await q.alert_by_id(con, alert_id)
                events = (await q.events_of(con, [alert_id]))[alert_id] if alert else []
        except db.CONNECTION_ERRORS as exc:
            raise self._db_down(exc) from None
        if alert is None:
            raise _error(web.HTTPNotFound, "not_found", f"no alert {alert_id}")
        return alert, events

    async def get_alert(self, request: web.Request) -> web.Response:
        alert_id = self._alert_id(request)
        alert, events = await self._alert_with_history(alert_id)
        return web.json_response(
            {"alert": self._json.alert(alert), "history": [self._json.event(e) for e in events]},
            dumps=_dumps,
        )

    async def ack(self, request: web.Request) -> web.Response:
        # Authenticate before looking at anything else: an anonymous caller learns nothing.
        who = await self._authenticate(request)
        alert_id = self._alert_id(request)
        try:
            async with self._pool().acquire() as con:
                outcome, alert = await q.ack_alert(con, alert_id, who)
        except db.CONNECTION_ERRORS as exc:
            raise self._db_down(exc) from None
        if outcome == "unknown" or alert is None:
            raise _error(web.HTTPNotFound, "not_found", f"no alert {alert_id}")
        if outcome == "resolved":
            raise _error(
                web.HTTPConflict,
                "alert_resolved",
                f"alert {alert_id} was resolved at {alert['resolved_at']}: nothing to acknowledge",
            )
        log.info(
            "alert acknowledged" if outcome == "acknowledged" else "alert already acknowledged",
            extra={
                "alert_id": str(alert_id),
                "by": who,
                "acknowledged_by": alert["acknowledged_by"],
            },
        )
        return web.json_response(
            {
                "alert": self._json.alert(alert),
                "already_acknowledged": outcome == "already_acknowledged",
            },
            dumps=_dumps,
        )

    async def cap(self, request: web.Request) -> web.Response:
        alert_id = self._alert_id(request)
        alert, events = await self._alert_with_history(alert_id)
        try:
            xml = build_cap(cap_message(alert, events, self.source, self._areas), self.source)
            validate_cap(xml)  # never serve a message a CAP consumer would refuse
        except CapError as exc:
            log.exception("alert has no valid CAP message", extra={"alert_id": str(alert_id)})
            raise _error(web.HTTPInternalServerError, "cap_invalid", str(exc)) from None
        return web.Response(body=xml, content_type=CAP_MIME, charset="utf-8")

    async def page(self, request: web.Request) -> web.Response:
        """The alert's human-readable page (CAP `<web>`), from the same message as its CAP."""
        alert_id = self._alert_id(request)
        alert, events = await self._alert_with_history(alert_id)
        try:
            msg = cap_message(alert, events, self.source, self._areas)
        except CapError as exc:
            log.exception("alert has no valid CAP message", extra={"alert_id": str(alert_id)})
            raise _error(web.HTTPInternalServerError, "cap_invalid", str(exc)) from None
        return web.Response(
            text=alert_page(alert, events, msg, self.source),
            content_type="text/html",
            charset="utf-8",
        )

    async def feed(self, request: web.Request) -> web.Response:
        for name in request.query:
            if name != "lang":
                _bad(BadParameter(name, "unknown parameter (known: lang)"))
        lang = request.query.get("lang", "en")
        if lang not in ("en", "km"):
            _bad(BadParameter("lang", f"{lang!r} is not one of en, km"))
        try:
            async with self._pool().acquire() as con:
                alerts = await q.active_alerts(con, FEED_MAX_ALERTS)
                events = await q.events_of(con, [a["alert_id"] for a in alerts])
        except db.CONNECTION_ERRORS as exc:
            raise self._db_down(exc) from None
        messages: list[AlertMessage] = []
        for alert in alerts:
            try:
                messages.append(
                    cap_message(alert, events[alert["alert_id"]], self.source, self._areas)
                )
            except CapError:
                # One broken row must not take the feed away from every hub: logged loudly,
                # and its own /cap/{id}.xml answers 500 with the reason.
                log.exception(
                    "alert left out of the feed", extra={"alert_id": str(alert["alert_id"])}
                )
        body = build_feed(
            messages,
            self.source,
            now=datetime.now(UTC),
            language="km" if lang == "km" else "en",
        )
        return web.Response(body=body, content_type=ATOM_MIME, charset="utf-8")

    async def openapi(self, _request: web.Request) -> web.Response:
        from services.alerts.openapi import document

        return web.json_response(document(self.source.base_url), dumps=_dumps)

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _alert_id(request: web.Request) -> uuid.UUID:
        try:
            return parse_alert_id(request.match_info["alert_id"])
        except BadParameter as err:
            _bad(err)

    async def _authenticate(self, request: web.Request) -> str:
        """The name of the live token the request carries (RFC 6750), or a 401."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _error(
                web.HTTPUnauthorized,
                "unauthorized",
                'send "Authorization: Bearer <token>" (citywatch alerts-token create NAME)',
                headers={"WWW-Authenticate": _AUTH_CHALLENGE},
            )
        try:
            async with self._pool().acquire() as con:
                name = await q.token_name(con, token_digest(token))
        except db.CONNECTION_ERRORS as exc:
            raise self._db_down(exc) from None
        if name is None:
            log.warning("alerts api: unknown or revoked token", extra={"path": request.path})
            raise _error(
                web.HTTPUnauthorized,
                "invalid_token",
                "the token is unknown or revoked",
                headers={"WWW-Authenticate": f'{_AUTH_CHALLENGE}, error="invalid_token"'},
            )
        return name


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)

"""The SQL of the alerts HTTP API (`services/alerts/api.py`) and of its token commands.

Every query is one static statement: optional filters are `($n IS NULL OR ...)` terms, so
no SQL is ever assembled from request input.

An alert's area: its own `area` (set by the engine since migration 0004: the device's
registry area when it fired, or the area of an area-wide alert), else the device's current
registry area (alerts written before 0004).

An alert's value: `trigger_value` / `trigger_at` are the reading that crossed its current
level (migration 0009; for older rows the opening value and time), `value` the reading
that confirmed the opening, `last_value` the value at its latest transition, and
`latest_value` / `latest_at` what the device reads now (`device_latest`, which the processor
keeps; `last_value` for an area's alert or before the processor has stored it).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from services.common.db import Conn

__all__ = [
    "AckOutcome",
    "AlertQuery",
    "ack_alert",
    "active_alerts",
    "alert_by_id",
    "create_token",
    "events_of",
    "list_alerts",
    "list_tokens",
    "revoke_token",
    "token_name",
]

_ALERT_COLUMNS = """
    a.alert_id, a.rule_id, a.device_id, a.kind, a.metric, a.severity, a.state, a.value,
    a.last_value, a.threshold, a.started_at, a.resolved_at, a.updated_at, a.title_en,
    a.title_km, a.status, a.rule_type, a.audience, a.acknowledged_by, a.acknowledged_at,
    COALESCE(a.trigger_value, a.value) AS trigger_value,
    COALESCE(a.trigger_at, a.started_at) AS trigger_at,
    COALESCE(l.value, a.last_value) AS latest_value, l.time AS latest_at,
    COALESCE(a.area, d.area) AS area,
    d.name AS device_name, d.lat AS device_lat, d.lon AS device_lon,
    COALESCE(d.drinking_water, false) AS drinking_water
"""

_JOINS = """
    LEFT JOIN devices d ON d.device_id = a.device_id
    LEFT JOIN device_latest l ON l.device_id = a.device_id AND l.metric = a.metric
"""

_FROM = f"""
    FROM alerts a
    {_JOINS}
"""

_LIST = f"""
SELECT {_ALERT_COLUMNS}
FROM alerts a {_JOINS}
WHERE ($1::text[] IS NULL OR a.state = ANY($1::text[]))
  AND ($2::text[] IS NULL OR a.severity = ANY($2::text[]))
  AND ($3::text[] IS NULL OR a.kind = ANY($3::text[]))
  AND ($4::text[] IS NULL OR COALESCE(a.area, d.area) = ANY($4::text[]))
  AND ($5::text[] IS NULL OR a.device_id = ANY($5::text[]))
  AND ($6::text[] IS NULL OR a.rule_id = ANY($6::text[]))
  -- active at some time in [since, until): not resolved before `since`, begun before `until`
  AND ($7::timestamptz IS NULL OR a.resolved_at IS NULL OR a.resolved_at >= $7::timestamptz)
  AND ($8::timestamptz IS NULL OR a.started_at < $8::timestamptz)
  -- keyset pagination: strictly after the last alert of the previous page
  AND ($9::timestamptz IS NULL OR (a.started_at, a.alert_id) < ($9::timestamptz, $10::uuid))
ORDER BY a.started_at DESC, a.alert_id DESC
LIMIT $11
"""


@dataclass(frozen=True, slots=True)
class AlertQuery:
    """A validated `GET /alerts` request. Empty tuples mean "no filter on this field"."""

    states: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    areas: tuple[str, ...] = ()
    device_ids: tuple[str, ...] = ()
    rule_ids: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    after: tuple[datetime, uuid.UUID] | None = None  # (started_at, alert_id) of the cursor
    limit: int = 100


def _or_null(values: Sequence[str]) -> list[str] | None:
    return list(values) if values else None


async def list_alerts(con: Conn, q: AlertQuery) -> list[dict[str, Any]]:
    """Up to `q.limit` alerts matching `q`, newest first."""
    rows = await con.fetch(
        _LIST,
        _or_null(q.states),
        _or_null(q.severities),
        _or_null(q.kinds),
        _or_null(q.areas),
        _or_null(q.device_ids),
        _or_null(q.rule_ids),
        q.since,
        q.until,
        q.after[0] if q.after else None,
        q.after[1] if q.after else None,
        q.limit,
    )
    return [dict(r) for r in rows]


async def alert_by_id(con: Conn, alert_id: uuid.UUID) -> dict[str, Any] | None:
    row = await con.fetchrow(
        f"SELECT {_ALERT_COLUMNS}{_FROM} WHERE a.alert_id = $1",
        alert_id,
    )
    return dict(row) if row is not None else None


async def active_alerts(con: Conn, limit: int) -> list[dict[str, Any]]:
    """Alerts not yet resolved, newest first (what the Atom feed lists)."""
    rows = await con.fetch(
        f"""SELECT {_ALERT_COLUMNS}{_FROM}
            WHERE a.state <> 'resolved'
            ORDER BY a.started_at DESC, a.alert_id DESC LIMIT $1""",
        limit,
    )
    return [dict(r) for r in rows]


async def events_of(
    con: Conn, alert_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[dict[str, Any]]]:
    """Each alert's history (`alert_events`), oldest first; every asked id is in the answer."""
    rows = await con.fetch(
        """SELECT event_id, alert_id, state, value, at, recorded_at,
                  severity, previous_severity, threshold, title_en, title_km,
                  trigger_value, trigger_at
           FROM alert_events WHERE alert_id = ANY($1::uuid[]) ORDER BY event_id""",
        list(alert_ids),
    )
    out: dict[uuid.UUID, list[dict[str, Any]]] = {a: [] for a in alert_ids}
    for r in rows:
        out[r["alert_id"]].append(dict(r))
    return out


# -- acknowledgement ---------------------------------------------------------------------

AckOutcome = Literal["acknowledged", "already_acknowledged", "resolved", "unknown"]


async def ack_alert(
    con: Conn, alert_id: uuid.UUID, who: str
) -> tuple[AckOutcome, dict[str, Any] | None]:
    """Acknowledge a firing alert as `who`: its row and an `acknowledged` event together.

    Runs its own transaction and locks the alert row first (`FOR UPDATE`), so a concurrent
    ack or the engine resolving the alert waits: exactly one of two simultaneous acks writes
    the event, and an alert resolved meanwhile is reported as resolved, never acknowledged.
    The event's `at` is the time of the ack; like every event it waits in the outbox
    (`published_at IS NULL`) to be published on `citywatch.alerts.v1`.
    """
    async with con.transaction():
        row = await con.fetchrow(
            "SELECT state FROM alerts WHERE alert_id = $1 FOR UPDATE", alert_id
        )
        if row is None:
            return "unknown", None
        outcome: AckOutcome
        if row["state"] == "resolved":
            outcome = "resolved"
        elif row["state"] == "acknowledged":
            outcome = "already_acknowledged"
        else:
            await con.execute(
                """UPDATE alerts SET state = 'acknowledged', acknowledged_by = $2,
                                     acknowledged_at = now(), updated_at = now()
                   WHERE alert_id = $1""",
                alert_id,
                who,
            )
            await con.execute(
                """INSERT INTO alert_events (alert_id, state, value, at, trigger_value,
                                             trigger_at)
                   SELECT alert_id, 'acknowledged', last_value, acknowledged_at,
                          trigger_value, trigger_at
                   FROM alerts WHERE alert_id = $1""",
                alert_id,
            )
            outcome = "acknowledged"
        return outcome, await alert_by_id(con, alert_id)


# -- API tokens ------------------------------------------------------------------------------


async def create_token(con: Conn, name: str, digest: bytes) -> bool:
    """Store a token's SHA-256 under `name`; False when `name` already has a live token."""
    status = await con.execute(
        """INSERT INTO api_tokens (name, token_sha256) VALUES ($1, $2)
           ON CONFLICT (name) WHERE revoked_at IS NULL DO NOTHING""",
        name,
        digest,
    )
    return status.endswith(" 1")


async def revoke_token(con: Conn, name: str) -> bool:
    """Revoke the live token of `name`; False when it has none."""
    status = await con.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL", name
    )
    return status.endswith(" 1")


async def token_name(con: Conn, digest: bytes) -> str | None:
    """The name of the live token whose SHA-256 is `digest` (and note its use), or None."""
    name: str | None = await con.fetchval(
        """UPDATE api_tokens SET last_used_at = now()
           WHERE token_sha256 = $1 AND revoked_at IS NULL RETURNING name""",
        digest,
    )
    return name


async def list_tokens(con: Conn) -> list[dict[str, Any]]:
    rows = await con.fetch(
        """SELECT name, created_at, last_used_at, revoked_at FROM api_tokens
           ORDER BY revoked_at IS NOT NULL, name, created_at"""
    )
    return [dict(r) for r in rows]

"""The alerts tables: state to rebuild after a restart, transitions, and the outbox."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from services.alerts.engine import Evaluation, Key, OpenEpisode, RuleState
from services.common.db import Conn


async def load_state(con: Conn) -> dict[Key, RuleState]:
    """Rebuild evaluation state from the database, the only source of truth."""
    state: dict[Key, RuleState] = {}
    for row in await con.fetch("SELECT rule_id, device_id, last_time FROM alert_cursors"):
        state[(row["rule_id"], row["device_id"])] = RuleState(cursor=row["last_time"])
    for row in await con.fetch(
        "SELECT alert_id, rule_id, device_id, started_at FROM alerts WHERE state <> 'resolved'"
    ):
        st = state.setdefault((row["rule_id"], row["device_id"]), RuleState())
        st.open = OpenEpisode(row["alert_id"], row["started_at"])
    return state


async def apply(con: Conn, ev: Evaluation) -> None:
    """Store one batch's transitions and cursors; call inside a transaction."""
    for t in ev.transitions:
        if t.kind == "firing":
            title_en, title_km = t.rule.titles(t.value, t.device_id)
            status = await con.execute(
                """INSERT INTO alerts (alert_id, rule_id, device_id, kind, metric, severity, state,
                                       value, last_value, threshold, started_at, title_en, title_km)
                   VALUES ($1, $2, $3, $4, $5, $6, 'firing', $7, $7, $8, $9, $10, $11)
                   ON CONFLICT DO NOTHING""",
                t.alert_id,
                t.rule.id,
                t.device_id,
                t.rule.kind,
                t.rule.metric,
                t.rule.severity,
                t.value,
                t.rule.threshold,
                t.at,
                title_en,
                title_km,
            )
            if status.endswith(" 0"):
                continue  # already stored: this transition was recorded before
        else:
            await con.execute(
                """UPDATE alerts SET state = 'resolved', resolved_at = $2, last_value = $3,
                                     updated_at = now()
                   WHERE alert_id = $1 AND state <> 'resolved'""",
                t.alert_id,
                t.at,
                t.value,
            )
        await con.execute(
            "INSERT INTO alert_events (alert_id, state, value, at) VALUES ($1, $2, $3, $4)",
            t.alert_id,
            t.kind,
            t.value,
            t.at,
        )
    if ev.cursors:
        keys = sorted(ev.cursors)
        await con.execute(
            """INSERT INTO alert_cursors (rule_id, device_id, last_time)
               SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
               ON CONFLICT (rule_id, device_id) DO UPDATE SET last_time = EXCLUDED.last_time
               WHERE alert_cursors.last_time < EXCLUDED.last_time""",
            [k[0] for k in keys],
            [k[1] for k in keys],
            [ev.cursors[k] for k in keys],
        )


async def unpublished(con: Conn, limit: int = 500) -> list[dict[str, Any]]:
    rows = await con.fetch(
        """SELECT e.event_id, e.alert_id, e.state AS transition, e.value, e.at,
                  a.rule_id, a.device_id, a.kind, a.metric, a.severity, a.threshold,
                  a.title_en, a.title_km
           FROM alert_events e JOIN alerts a USING (alert_id)
           WHERE e.published_at IS NULL ORDER BY e.event_id LIMIT $1""",
        limit,
    )
    return [dict(r) for r in rows]


async def mark_published(con: Conn, event_ids: list[int]) -> None:
    await con.execute(
        "UPDATE alert_events SET published_at = now() WHERE event_id = ANY($1::bigint[])", event_ids
    )


def event_message(row: dict[str, Any]) -> bytes:
    """The JSON published on citywatch.alerts.v1 for one transition."""
    body = {
        k: (str(v) if isinstance(v, uuid.UUID) else v.isoformat() if isinstance(v, datetime) else v)
        for k, v in row.items()
    }
    return json.dumps(body, ensure_ascii=False).encode()


async def list_alerts(con: Conn, *, state: str | None, limit: int) -> list[dict[str, Any]]:
    rows = await con.fetch(
        """SELECT alert_id, rule_id, device_id, kind, metric, severity, state, value, last_value,
                  threshold, started_at, resolved_at, updated_at, title_en, title_km
           FROM alerts WHERE ($1::text IS NULL OR state = $1)
           ORDER BY started_at DESC LIMIT $2""",
        state,
        limit,
    )
    return [
        {
            k: (
                str(v)
                if isinstance(v, uuid.UUID)
                else v.isoformat()
                if isinstance(v, datetime)
                else v
            )
            for k, v in r.items()
        }
        for r in rows
    ]

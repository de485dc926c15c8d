"""The alerts tables: state to rebuild after a restart, transitions, and the outbox.

The database is the only source of truth. Per batch, `apply` writes in one transaction the
batch's transitions (`alerts` and `alert_events`), every touched (rule, subject)'s state
(`alert_cursors.state`, with its cursor) and the stream heads, so a restart resumes exactly
where the last committed batch left off. `alert_events` is also the outbox that the service
publishes to `citywatch.alerts.v1`; `event_message` is that record's JSON.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from services.alerts.engine import Evaluation, Key, RuleState
from services.alerts.rules import RuleSet
from services.common.db import Conn

__all__ = [
    "apply",
    "event_message",
    "load_areas",
    "load_heads",
    "load_simulated",
    "load_state",
    "mark_published",
    "unpublished",
]


async def load_state(con: Conn, rules: RuleSet) -> dict[Key, RuleState]:
    """Rebuild evaluation state from the database.

    The open alerts in `alerts` win over the stored state: an alert resolved or created by
    another writer is what the state follows (an acknowledged alert is still open)."""
    state: dict[Key, RuleState] = {}
    for row in await con.fetch(
        "SELECT rule_id, device_id, last_time, state::text AS s FROM alert_cursors"
    ):
        raw = json.loads(row["s"]) if row["s"] else None
        state[(row["rule_id"], row["device_id"])] = RuleState.from_json(row["last_time"], raw)
    open_keys: set[Key] = set()
    for row in await con.fetch(
        """SELECT alert_id, rule_id, device_id, area, severity, started_at
           FROM alerts WHERE state <> 'resolved'"""
    ):
        subject = row["device_id"] if row["device_id"] is not None else f"area:{row['area']}"
        key = (row["rule_id"], subject)
        open_keys.add(key)
        st = state.setdefault(key, RuleState())
        if st.alert_id != row["alert_id"] or st.stage == 0:
            rule = rules.by_id(row["rule_id"])
            stages = rule.stages() if rule is not None else ()
            st.stage = stages.index(row["severity"]) + 1 if row["severity"] in stages else 1
        st.alert_id, st.started_at = row["alert_id"], row["started_at"]
    for key, st in state.items():
        if st.alert_id is not None and key not in open_keys:
            st.alert_id, st.started_at, st.stage = None, None, 0
    for key, st in state.items():  # a rule edited to fewer stages
        rule = rules.by_id(key[0])
        if rule is not None and st.stage > len(rule.stages()):
            st.stage = len(rule.stages())
    return state


async def load_heads(con: Conn, group_id: str) -> tuple[dict[str, datetime], dict[str, datetime]]:
    """Per stream: its head (newest reading time) and when that head last advanced (the
    database's wall clock, migration 0011; engine.live_heads)."""
    rows = await con.fetch(
        "SELECT stream, head, seen_at FROM alert_stream_heads WHERE group_id = $1", group_id
    )
    return {r["stream"]: r["head"] for r in rows}, {r["stream"]: r["seen_at"] for r in rows}


async def load_areas(con: Conn) -> dict[str, str | None]:
    """device id -> registry area, for every device the registry knows."""
    rows = await con.fetch("SELECT device_id, area FROM devices")
    return {r["device_id"]: r["area"] for r in rows}


async def load_simulated(con: Conn) -> frozenset[str]:
    """Ids of the devices registered as simulated (migration 0010): their alerts are CAP
    `Exercise` (engine.evaluate's `simulated`)."""
    rows = await con.fetch("SELECT device_id FROM devices WHERE simulated")
    return frozenset(r["device_id"] for r in rows)


async def apply(
    con: Conn, ev: Evaluation, group_id: str, titles: Sequence[tuple[str, str]]
) -> None:
    """Store one batch's transitions, states and heads; call inside a transaction.

    `titles` are the transitions' (English, Khmer) titles, in order, rendered by the
    caller (services/alerts/titles.py) before the transaction: storage only stores."""
    for t, (title_en, title_km) in zip(ev.transitions, titles, strict=True):
        # The reading that crossed the level (migration 0009); the confirming one otherwise.
        trigger_value = t.value if t.trigger_value is None else t.trigger_value
        trigger_at = t.at if t.trigger_at is None else t.trigger_at
        if t.kind == "firing":
            status = await con.execute(
                """INSERT INTO alerts (alert_id, rule_id, device_id, area, kind, metric, severity,
                                       state, value, last_value, threshold, started_at, title_en,
                                       title_km, rule_type, status, origin, trigger_value,
                                       trigger_at, audience)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, 'firing', $8, $8, $9, $10, $11, $12,
                           $13, $14, $15, $16, $17, $18)
                   ON CONFLICT DO NOTHING""",
                t.alert_id,
                t.rule.id,
                t.device_id,
                t.area,
                t.device_kind,
                t.metric,
                t.severity,
                t.value,
                t.threshold,
                t.at,
                title_en,
                title_km,
                t.rule.type,
                t.status,
                group_id,
                trigger_value,
                trigger_at,
                t.rule.audience,  # migration 0012: who the alert is for
            )
            if status.endswith(" 0"):
                continue  # already stored: this transition was recorded before
        elif t.kind == "resolved":
            await con.execute(
                """UPDATE alerts SET state = 'resolved', resolved_at = $2, last_value = $3,
                                     updated_at = now()
                   WHERE alert_id = $1 AND state <> 'resolved'""",
                t.alert_id,
                t.at,
                t.value,
            )
        else:
            # Escalation asks for attention again: an acknowledged alert fires again.
            # De-escalation keeps an acknowledgement.
            await con.execute(
                """UPDATE alerts SET severity = $2, threshold = $3, last_value = $4,
                                     title_en = $5, title_km = $6, updated_at = now(),
                                     state = CASE WHEN $7 THEN 'firing' ELSE state END,
                                     trigger_value = $8, trigger_at = $9
                   WHERE alert_id = $1 AND state <> 'resolved'""",
                t.alert_id,
                t.severity,
                t.threshold,
                t.value,
                title_en,
                title_km,
                t.kind == "escalated",
                trigger_value,
                trigger_at,
            )
        await con.execute(
            """INSERT INTO alert_events (alert_id, state, value, at, severity, previous_severity,
                                         threshold, title_en, title_km, trigger_value,
                                         trigger_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
            t.alert_id,
            t.kind,
            t.value,
            t.at,
            t.severity,
            t.previous_severity,
            t.threshold,
            title_en,
            title_km,
            trigger_value,
            trigger_at,
        )
    if ev.changed:
        keys = sorted(k for k, st in ev.changed.items() if st.cursor is not None)
        await con.execute(
            """INSERT INTO alert_cursors (rule_id, device_id, last_time, state)
               SELECT r, d, t, s::jsonb
               FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) AS u(r, d, t, s)
               ON CONFLICT (rule_id, device_id) DO UPDATE
               SET last_time = GREATEST(alert_cursors.last_time, EXCLUDED.last_time),
                   state = EXCLUDED.state""",
            [k[0] for k in keys],
            [k[1] for k in keys],
            [ev.changed[k].cursor for k in keys],
            [json.dumps(ev.changed[k].to_json()) for k in keys],
        )
    if ev.heads:
        streams = sorted(ev.heads)
        await con.execute(
            """INSERT INTO alert_stream_heads (group_id, stream, head)
               SELECT $1, s, h FROM unnest($2::text[], $3::timestamptz[]) AS u(s, h)
               ON CONFLICT (group_id, stream) DO UPDATE
               SET head = GREATEST(alert_stream_heads.head, EXCLUDED.head),
                   seen_at = CASE WHEN EXCLUDED.head > alert_stream_heads.head THEN now()
                                  ELSE alert_stream_heads.seen_at END""",
            group_id,
            streams,
            [ev.heads[s] for s in streams],
        )


async def unpublished(con: Conn, group_id: str, limit: int = 500) -> list[dict[str, Any]]:
    """Events of this deployment's alerts (`alerts.origin`, see migration 0008) not yet on
    Kafka, oldest first, with what the message carries."""
    rows = await con.fetch(
        """SELECT e.event_id, e.alert_id, e.state AS transition, e.value, e.at,
                  e.recorded_at AS issued_at, e.trigger_value, e.trigger_at,
                  a.rule_id, a.rule_type, a.device_id, a.area, a.kind, a.metric,
                  coalesce(e.severity, a.severity) AS severity, e.previous_severity,
                  coalesce(e.threshold, a.threshold) AS threshold, a.status,
                  coalesce(e.title_en, a.title_en) AS title_en,
                  coalesce(e.title_km, a.title_km) AS title_km,
                  a.started_at, a.audience,
                  coalesce(d.drinking_water, false) AS drinking_water
           FROM alert_events e JOIN alerts a USING (alert_id)
           LEFT JOIN devices d ON d.device_id = a.device_id
           WHERE e.published_at IS NULL AND (a.origin = $2 OR a.origin IS NULL)
           ORDER BY e.event_id LIMIT $1""",
        limit,
        group_id,
    )
    return [dict(r) for r in rows]


async def mark_published(con: Conn, event_ids: list[int]) -> None:
    await con.execute(
        "UPDATE alert_events SET published_at = now() WHERE event_id = ANY($1::bigint[])", event_ids
    )


def _plain(v: Any) -> Any:
    return str(v) if isinstance(v, uuid.UUID) else v.isoformat() if isinstance(v, datetime) else v


def event_message(row: dict[str, Any]) -> bytes:
    """The JSON published on citywatch.alerts.v1 for one transition (README: the schema)."""
    return json.dumps({k: _plain(v) for k, v in row.items()}, ensure_ascii=False).encode()

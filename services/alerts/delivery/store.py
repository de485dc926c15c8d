"""The delivery tables (migration 0006): deduplicated events, alert state, the durable
per-channel queue and its attempt log. Every function takes a connection; the caller owns
the transaction."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.alerts.areas import CapOrigin
from services.alerts.delivery.config import Subscriber, SubscribersFile, hears
from services.alerts.delivery.notice import (
    AlertEvent,
    Earlier,
    Reason,
    build_notice,
    encode,
    mqtt_topic,
)
from services.alerts.model import Audience, audience_of
from services.common.db import Conn
from services.common.errors import CityWatchError

log = logging.getLogger(__name__)

Target = tuple[str, str]  # (channel, target): ("webhook", subscriber), ("mqtt", topic)


@dataclass(frozen=True, slots=True)
class Claimed:
    """One leased row of `alert_deliveries`."""

    delivery_id: int
    event_id: str
    alert_id: str
    channel: str
    target: str
    reason: str
    body: str
    attempts: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Recorded:
    """What a batch left for the channel workers."""

    events: int
    duplicates: int
    invalid: int
    targets: frozenset[Target]


async def _earlier(con: Conn, alert_id: str) -> list[Earlier]:
    # The issue time of each earlier message is in its stored event (`issued_at`).
    rows = await con.fetch(
        """SELECT seq, at, (event->>'issued_at')::timestamptz AS issued_at
           FROM alert_delivery_events WHERE alert_id = $1 ORDER BY seq""",
        alert_id,
    )
    return [Earlier(r["seq"], r["at"], r["issued_at"]) for r in rows]


async def _enqueue(
    con: Conn,
    *,
    event_id: str,
    alert_id: str,
    reason: Reason,
    body: str,
    subscribers: list[Subscriber],
    topics: Sequence[tuple[str, str, str | None]] = (),
) -> set[Target]:
    """One pending row per target; `ON CONFLICT DO NOTHING` keeps a replay from adding any."""
    rows: list[tuple[str, str, str]] = [(s.channel, s.name, body) for s in subscribers]
    rows += [
        ("mqtt", topic, json.dumps({"severity": sev, "area": area})) for topic, sev, area in topics
    ]
    if not rows:
        return set()
    await con.execute(
        """INSERT INTO alert_deliveries (event_id, alert_id, channel, target, reason, body)
           SELECT $1, $2, c, t, $3, b FROM unnest($4::text[], $5::text[], $6::text[]) AS u(c, t, b)
           ON CONFLICT (event_id, channel, target) DO NOTHING""",
        event_id,
        alert_id,
        reason,
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
    )
    return {(r[0], r[1]) for r in rows}


def _cap_args(origin: CapOrigin | None) -> dict[str, Any]:
    """`build_notice`'s CAP sender and areas: the process's origin, or the shipped defaults."""
    return {} if origin is None else {"source": origin.source, "areas": origin.areas}


async def record_events(
    con: Conn,
    events: list[AlertEvent],
    subscribers: SubscribersFile,
    mqtt_template: str,
    origin: CapOrigin | None = None,
    mqtt_audience: Audience = "public",
) -> Recorded:
    """Record a batch of events and queue their deliveries; call inside a transaction.

    An event already recorded (same `event_id`: Kafka redelivered it, or the producer
    published it twice) changes nothing. Each event goes only to the channels that hear
    its audience (`config.hears`): an `operators` alert never reaches the MQTT topics when
    they are public (`mqtt_audience`), nor a public subscriber.
    """
    targets: set[Target] = set()
    duplicates = 0
    invalid = 0
    for ev in events:
        earlier = await _earlier(con, ev.alert_id)
        seq = len(earlier)
        try:
            body = encode(build_notice(ev, seq=seq, earlier=earlier, **_cap_args(origin)))
        except (CityWatchError, ValueError) as exc:
            # An event whose texts or CAP cannot be built (an alert id CAP refuses, a
            # template the rule names but texts.py lacks) is a producer bug: it is logged
            # and counted, never retried forever, and it does not hold up the batch.
            log.error(
                "alert event cannot become a notification; skipped",
                extra={"event_id": ev.event_id, "alert_id": ev.alert_id, "error": str(exc)},
            )
            invalid += 1
            continue
        inserted = await con.fetchval(
            """INSERT INTO alert_delivery_events (event_id, alert_id, seq, transition, at, event)
               VALUES ($1, $2, $3, $4, $5, $6::jsonb)
               ON CONFLICT (event_id) DO NOTHING RETURNING true""",
            ev.event_id,
            ev.alert_id,
            seq,
            ev.transition,
            ev.at,
            json.dumps(ev.dump()),
        )
        if not inserted:
            duplicates += 1
            continue
        before = await con.fetchrow(
            "SELECT severity, area FROM alert_delivery_alerts WHERE alert_id = $1", ev.alert_id
        )
        rc = subscribers.rules.get(ev.rule_id)
        reminds = ev.state == "firing" and ev.status != "Test" and rc is not None
        await con.execute(
            """INSERT INTO alert_delivery_alerts AS a (alert_id, rule_id, area, severity, state,
                   status, last_event_id, last_at, next_remind_at, escalate_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                       now() + $9::interval, now() + $10::interval)
               ON CONFLICT (alert_id) DO UPDATE SET
                   area = EXCLUDED.area, severity = EXCLUDED.severity, state = EXCLUDED.state,
                   status = EXCLUDED.status, last_event_id = EXCLUDED.last_event_id,
                   last_at = EXCLUDED.last_at, updated_at = now(),
                   -- still firing (escalated, de-escalated): the reminder clock runs on;
                   -- acknowledged or resolved: no more reminders or escalation.
                   next_remind_at = CASE WHEN EXCLUDED.state = 'firing'
                       THEN COALESCE(a.next_remind_at, EXCLUDED.next_remind_at) END,
                   escalate_at = CASE WHEN EXCLUDED.state = 'firing'
                       THEN COALESCE(a.escalate_at, EXCLUDED.escalate_at) END""",
            ev.alert_id,
            ev.rule_id,
            ev.area,
            ev.severity,
            ev.state,
            ev.status,
            ev.event_id,
            ev.at,
            rc.remind_every if reminds and rc else None,
            rc.escalate_after if reminds and rc else None,
        )
        # The retained state of the alert's topic, and of the one it left when its
        # severity or area changed, is recomputed from the table by the MQTT worker.
        places = {(ev.severity, ev.area)}
        if before is not None:
            places.add((before["severity"], before["area"]))
        if ev.previous_severity is not None:
            places.add((ev.previous_severity, ev.area))
        topics = sorted(
            {(mqtt_topic(mqtt_template, sev, area), sev, area) for sev, area in places},
            key=lambda t: t[0],
        )
        if not hears(mqtt_audience, ev.audience):
            topics = []
        recipients = subscribers.recipients(
            rule_id=ev.rule_id,
            severity=ev.severity,
            kind=ev.kind,
            area=ev.area,
            status=ev.status,
            audience=ev.audience,
        )
        targets |= await _enqueue(
            con,
            event_id=ev.event_id,
            alert_id=ev.alert_id,
            reason="transition",
            body=body,
            subscribers=recipients,
            topics=topics,
        )
    recorded = len(events) - duplicates - invalid
    return Recorded(recorded, duplicates, invalid, frozenset(targets))


async def queue_reminders(
    con: Conn, subscribers: SubscribersFile, limit: int = 100, origin: CapOrigin | None = None
) -> set[Target]:
    """Queue the reminders and escalations that are due; call inside a transaction.

    Rows are locked with SKIP LOCKED, so several delivery processes share the work and each
    reminder is queued once.
    """
    due = await con.fetch(
        """SELECT a.*, e.event, e.seq FROM alert_delivery_alerts a
           JOIN alert_delivery_events e ON e.event_id = a.last_event_id
           WHERE a.state = 'firing'
             AND (a.next_remind_at <= now() OR (a.escalate_at <= now() AND NOT a.escalated))
           ORDER BY a.alert_id LIMIT $1 FOR UPDATE OF a SKIP LOCKED""",
        limit,
    )
    targets: set[Target] = set()
    now = await con.fetchval("SELECT now()")
    for row in due:
        ev = AlertEvent.model_validate(json.loads(row["event"]))
        rc = subscribers.rules.get(ev.rule_id)
        if rc is None:  # the rule's entry was removed since: stop reminding
            await con.execute(
                "UPDATE alert_delivery_alerts SET next_remind_at = NULL, escalate_at = NULL"
                " WHERE alert_id = $1",
                ev.alert_id,
            )
            continue
        earlier = [e for e in await _earlier(con, ev.alert_id) if e.seq < row["seq"]]
        escalated = row["escalated"]
        if row["escalate_at"] is not None and row["escalate_at"] <= now and not escalated:
            escalated = True
            body = encode(
                build_notice(
                    ev, seq=row["seq"], earlier=earlier, reason="escalation", **_cap_args(origin)
                )
            )
            targets |= await _enqueue(
                con,
                event_id=f"{ev.event_id}:escalation",
                alert_id=ev.alert_id,
                reason="escalation",
                body=body,
                subscribers=subscribers.escalation_recipients(ev.rule_id, ev.audience),
            )
        reminders = row["reminders"]
        next_remind: datetime | None = row["next_remind_at"]
        if next_remind is not None and next_remind <= now:
            reminders += 1
            body = encode(
                build_notice(
                    ev,
                    seq=row["seq"],
                    earlier=earlier,
                    reason="reminder",
                    reminder=reminders,
                    **_cap_args(origin),
                )
            )
            people = subscribers.reminder_recipients(
                ev.rule_id, escalated=escalated, audience=ev.audience
            )
            targets |= await _enqueue(
                con,
                event_id=f"{ev.event_id}:reminder:{reminders}",
                alert_id=ev.alert_id,
                reason="reminder",
                body=body,
                subscribers=people,
            )
            step: timedelta | None = rc.remind_every
            next_remind = now + step if step else None
        await con.execute(
            """UPDATE alert_delivery_alerts SET reminders = $2, escalated = $3,
                   next_remind_at = $4, updated_at = now() WHERE alert_id = $1""",
            ev.alert_id,
            reminders,
            escalated,
            next_remind,
        )
    return targets


async def claim(
    con: Conn, channel: str, target: str | None, limit: int, lease: timedelta
) -> list[Claimed]:
    """Lease up to `limit` due rows of one channel (and target); others skip leased rows."""
    rows = await con.fetch(
        """UPDATE alert_deliveries SET lease_until = now() + $4::interval
           WHERE delivery_id IN (
               SELECT delivery_id FROM alert_deliveries
               WHERE status = 'pending' AND channel = $1 AND ($2::text IS NULL OR target = $2)
                 AND next_attempt_at <= now()
                 AND (lease_until IS NULL OR lease_until < now())
               ORDER BY delivery_id LIMIT $3 FOR UPDATE SKIP LOCKED)
           RETURNING delivery_id, event_id, alert_id, channel, target, reason, body, attempts,
                     created_at""",
        channel,
        target,
        limit,
        lease,
    )
    return sorted((Claimed(**dict(r)) for r in rows), key=lambda r: r.delivery_id)


async def next_due(con: Conn, channel: str, target: str | None) -> datetime | None:
    return await con.fetchval(  # type: ignore[no-any-return]
        """SELECT min(next_attempt_at) FROM alert_deliveries
           WHERE status = 'pending' AND channel = $1 AND ($2::text IS NULL OR target = $2)""",
        channel,
        target,
    )


async def finish(
    con: Conn,
    delivery_id: int,
    *,
    attempt: int,
    ok: bool,
    duration_ms: float,
    status_code: int | None = None,
    error: str | None = None,
    retry_in: timedelta | None = None,
) -> None:
    """Log one attempt and settle the row: delivered, retried after `retry_in`, or expired
    (`retry_in` None on a failure: the give-up age has passed; logged, never silent)."""
    async with con.transaction():
        await con.execute(
            """INSERT INTO alert_delivery_attempts
                   (delivery_id, attempt, ok, status_code, error, duration_ms)
               VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING""",
            delivery_id,
            attempt,
            ok,
            status_code,
            error,
            duration_ms,
        )
        await con.execute(
            """UPDATE alert_deliveries SET attempts = $2, lease_until = NULL, last_error = $3,
                   status = CASE WHEN $4 THEN 'delivered'
                                 WHEN $5::interval IS NULL THEN 'expired' ELSE 'pending' END,
                   delivered_at = CASE WHEN $4 THEN now() END,
                   next_attempt_at = CASE WHEN $5::interval IS NULL THEN next_attempt_at
                                          ELSE now() + $5::interval END
               WHERE delivery_id = $1""",
            delivery_id,
            attempt,
            error,
            ok,
            retry_in,
        )


async def release(con: Conn, delivery_ids: list[int], delay: timedelta) -> None:
    """Give leased rows back unattempted, due again after `delay`."""
    if delivery_ids:
        await con.execute(
            """UPDATE alert_deliveries SET lease_until = NULL,
                   next_attempt_at = GREATEST(next_attempt_at, now() + $2::interval)
               WHERE delivery_id = ANY($1::bigint[]) AND status = 'pending'""",
            delivery_ids,
            delay,
        )


_RETAINED_FIELDS = (
    "rule_id", "kind", "metric", "value", "threshold", "at", "device_id", "title_en", "title_km",
)  # fmt: skip


async def open_alerts_at(
    con: Conn, severity: str, area: str | None, audience: Audience = "public"
) -> list[dict[str, Any]]:
    """The alerts open (firing or acknowledged) at one severity in one area, for MQTT:
    those a channel of `audience` hears (`config.hears`), so a public topic's retained
    state never lists an operators-only alert that shares its severity and area."""
    rows = await con.fetch(
        """SELECT a.alert_id, a.state, a.status, e.event FROM alert_delivery_alerts a
           JOIN alert_delivery_events e ON e.event_id = a.last_event_id
           WHERE a.state <> 'resolved' AND a.severity = $1 AND a.area IS NOT DISTINCT FROM $2
           ORDER BY a.alert_id""",
        severity,
        area,
    )
    out = []
    for r in rows:
        ev = json.loads(r["event"])
        if not hears(audience, audience_of(ev.get("audience"), ev.get("rule_type"))):
            continue
        out.append(
            {
                "alert_id": r["alert_id"],
                "state": r["state"],
                "status": r["status"],
                **{k: ev.get(k) for k in _RETAINED_FIELDS},
            }
        )
    return out

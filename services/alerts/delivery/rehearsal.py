"""`citywatch alerts test`: a Test alert and its Cancel through every channel.

Operators rehearse the whole path, not a shortcut: the command publishes two events on
`citywatch.alerts.v1` (a `firing` and its end, both with CAP status Test, which delivery
turns into an Alert and a Cancel), exactly as the alerts engine would, and then reads the
delivery tables until every channel target has delivered each one, or the time runs out.
A delivery service must be running (inside `citywatch alerts`, or on its own).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from services.common import db, kafka
from services.common.settings import Settings

TEST_RULE = "citywatch-delivery-test"


@dataclass(frozen=True)
class Report:
    """Per event: (channel, target, status, attempts, last error) of each delivery."""

    alert_id: str
    deliveries: dict[str, list[tuple[str, str, str, int, str | None]]]

    @property
    def ok(self) -> bool:
        return all(
            rows and all(r[2] == "delivered" for r in rows) for rows in self.deliveries.values()
        )


def rehearsal_events(area: str, alert_id: str | None = None) -> list[dict[str, object]]:
    """The two events of a rehearsal: a Test alert firing, then its end (a Cancel)."""
    alert = alert_id or str(uuid.uuid4())
    base: dict[str, object] = {
        "alert_id": alert,
        "value": 0.0,
        "rule_id": TEST_RULE,
        "rule_type": "test",
        "device_id": "citywatch-test",
        "area": area,
        "kind": "flood",
        "metric": "water_level_m",
        "severity": "advisory",
        "previous_severity": None,
        "threshold": 0.0,
        "title_en": "CityWatch delivery test: no action is required",
        "title_km": "ការសាកល្បងការផ្ញើសាររបស់ CityWatch៖ មិនចាំបាច់ចាត់វិធានការទេ",
        "status": "Test",
    }
    now = datetime.now(UTC).replace(microsecond=0)
    return [
        {**base, "event_id": f"test-{alert}-0", "transition": "firing", "at": now.isoformat()},
        {**base, "event_id": f"test-{alert}-1", "transition": "resolved", "at": now.isoformat()},
    ]


async def _deliveries(
    con: asyncpg.Connection, event_id: str
) -> list[tuple[str, str, str, int, str | None]]:
    rows = await con.fetch(
        """SELECT channel, target, status, attempts, last_error FROM alert_deliveries
           WHERE event_id = $1 ORDER BY channel, target""",
        event_id,
    )
    return [(r["channel"], r["target"], r["status"], r["attempts"], r["last_error"]) for r in rows]


async def run_rehearsal(settings: Settings, *, area: str, timeout_s: float) -> Report:
    """Publish the Test alert, wait for its deliveries, then the Cancel, likewise."""
    events = rehearsal_events(area)
    alert_id = str(events[0]["alert_id"])
    report: dict[str, list[tuple[str, str, str, int, str | None]]] = {}
    con = await db.connect(settings.database_dsn)
    try:
        async with kafka.producer(
            settings, account="citywatch-alerts", client_id="citywatch-alerts-test"
        ) as producer:
            for ev in events:
                event_id = str(ev["event_id"])
                await producer.send_and_wait(
                    settings.topics.alerts,
                    key=alert_id.encode(),
                    value=json.dumps(ev, ensure_ascii=False).encode(),
                )
                loop = asyncio.get_running_loop()
                deadline = loop.time() + timeout_s
                rows = await _deliveries(con, event_id)
                # Waiting on the delivery tables, the source of truth, with a deadline.
                while not (rows and all(r[2] == "delivered" for r in rows)):
                    if loop.time() > deadline:
                        break
                    await asyncio.sleep(0.2)
                    rows = await _deliveries(con, event_id)
                report[event_id] = rows
                if not rows:
                    break  # nobody consumed it: the Cancel would wait in vain as well
    finally:
        await con.close()
    return Report(alert_id, report)


def print_report(report: Report) -> None:
    print(f"test alert {report.alert_id}")
    for event_id, rows in report.deliveries.items():
        kind = "Cancel" if event_id.endswith("-1") else "Alert"
        print(f"  {kind} ({event_id}):")
        if not rows:
            print("    no deliveries recorded: is a delivery service (citywatch alerts) running?")
        for channel, target, status, attempts, error in rows:
            tail = f"  last error: {error}" if error and status != "delivered" else ""
            print(f"    {channel:<8} {target:<40} {status:<10} attempts={attempts}{tail}")
    print("every channel reached" if report.ok else "NOT every channel was reached")

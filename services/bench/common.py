"""What every `citywatch bench ...` shares: the stack, its own names, its processes, cleanup.

A bench runs on the developer's local stack next to whatever else uses it (a demo, another
bench), so it never touches the platform's own topics, consumer groups, MQTT topics or
devices: each run gets a random suffix and derives all of its names from it, and removes
its rows afterwards.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import asyncpg

from services.common import db
from services.common.kafka import TopicNames, ensure_topics, grant
from services.common.settings import Settings, load_settings
from services.stack import components
from services.supervisor import ServiceProcess


def prepare_stack(settings: Settings) -> Settings:
    """Start the local stack parts that are down, migrate, and return fresh settings (with
    the MQTT service accounts `stack up` may have generated)."""
    for part in components(settings):
        part.up()
    settings = load_settings()
    asyncio.run(db.migrate_database(settings.database_dsn))
    return settings


@dataclass(frozen=True)
class BenchNames:
    """The names of one bench run: Kafka topics, MQTT prefix, device ids, client ids."""

    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    kind: ClassVar[str] = "bench"  # what names the run's groups

    @property
    def topics(self) -> dict[str, str]:
        return {
            "readings": f"bench.{self.suffix}.readings",
            "rejected": f"bench.{self.suffix}.rejected",
            "alerts": f"bench.{self.suffix}.alerts",
        }

    @property
    def prefix(self) -> str:  # the MQTT topic prefix the bench's devices publish under
        return f"bench{self.suffix}"

    @property
    def id_prefix(self) -> str:  # every device id of the run starts with this
        return f"bench{self.suffix}-"

    def ensure_topics(self, settings: Settings) -> None:
        topics = self.topics
        asyncio.run(
            ensure_topics(
                settings,
                {
                    topics["readings"]: settings.topics.readings_partitions,
                    topics["rejected"]: 1,
                    topics["alerts"]: 1,
                },
            )
        )
        env = self.groups()  # a subclass's own (evaluate's)
        names = TopicNames(
            topics["readings"],
            topics["rejected"],
            topics["alerts"],
            env["CITYWATCH_PROCESSOR__GROUP_ID"],
            env["CITYWATCH_ALERTS__GROUP_ID"],
            env["CITYWATCH_DELIVERY__GROUP_ID"],
        )
        asyncio.run(grant(settings, names, prefixed=True))

    def groups(self) -> dict[str, str]:
        """The run's gateway client id and consumer groups (`bench-processor-<suffix>`...)."""
        kind, suffix = self.kind, self.suffix
        return {
            "CITYWATCH_INGEST__CLIENT_ID": f"citywatch-{kind}-ingest-{suffix}",
            "CITYWATCH_PROCESSOR__GROUP_ID": f"{kind}-processor-{suffix}",
            "CITYWATCH_ALERTS__GROUP_ID": f"{kind}-alerts-{suffix}",
            "CITYWATCH_DELIVERY__GROUP_ID": f"{kind}-delivery-{suffix}",
        }

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of the run's service processes: its own topics, shared
        subscription, client id and consumer groups, unregistered devices accepted."""
        topics = self.topics
        return {
            "CITYWATCH_TOPICS__READINGS": topics["readings"],
            "CITYWATCH_TOPICS__REJECTED": topics["rejected"],
            "CITYWATCH_TOPICS__ALERTS": topics["alerts"],
            "CITYWATCH_INGEST__FILTERS": json.dumps([f"$share/{self.prefix}/{self.prefix}/+/+/up"]),
            **self.groups(),
            "CITYWATCH_INGEST__UNKNOWN_DEVICES": "accept",  # the bench fleet is not registered
            "CITYWATCH_LOG_LEVEL": "WARNING",
            **extra,
        }


async def wait_ready(*procs: ServiceProcess) -> None:
    await asyncio.gather(*(p.wait_ready(timeout=120) for p in procs))


def stop_all(procs: Sequence[ServiceProcess]) -> None:
    for p in procs:
        if p.alive():
            p.stop()


async def cleanup_devices(settings: Settings, id_prefix: str) -> None:
    """Remove the readings, latest state and registry rows of the run's devices."""
    con = await asyncpg.connect(settings.database_dsn)
    try:
        for table in ("readings", "device_latest", "devices"):
            await con.execute(f"DELETE FROM {table} WHERE device_id LIKE $1", f"{id_prefix}%")
    finally:
        await con.close()


async def cleanup_alerts(con: db.Conn, rule_ids: str, group_id: str) -> None:
    """Remove a run's alerts, their events, delivery rows and evaluation state.

    `rule_ids` is a LIKE pattern (rule ids never hold `%` or `_`, so an exact id matches
    only itself): the alerts bench cleans up its one rule, `evaluate` its suffixed rules."""
    async with con.transaction():
        ids = [
            r["alert_id"]
            for r in await con.fetch("SELECT alert_id FROM alerts WHERE rule_id LIKE $1", rule_ids)
        ]
        text_ids = [str(i) for i in ids]
        await con.execute(
            "DELETE FROM alert_delivery_attempts WHERE delivery_id IN"
            " (SELECT delivery_id FROM alert_deliveries WHERE alert_id = ANY($1::text[]))",
            text_ids,
        )
        for table in ("alert_deliveries", "alert_delivery_events"):
            await con.execute(f"DELETE FROM {table} WHERE alert_id = ANY($1::text[])", text_ids)
        await con.execute("DELETE FROM alert_delivery_alerts WHERE rule_id LIKE $1", rule_ids)
        await con.execute("DELETE FROM alert_events WHERE alert_id = ANY($1::uuid[])", ids)
        await con.execute("DELETE FROM alerts WHERE rule_id LIKE $1", rule_ids)
        await con.execute("DELETE FROM alert_cursors WHERE rule_id LIKE $1", rule_ids)
        await con.execute("DELETE FROM alert_stream_heads WHERE group_id = $1", group_id)


def percentile(samples: Sequence[float], q: float) -> float:
    """The `q` quantile (0..1) of `samples`, interpolated linearly between closest ranks
    (numpy's default); NaN for no samples, so an empty run never shows a made-up 0."""
    if not 0 <= q <= 1:
        msg = f"quantile {q} is not between 0 and 1"
        raise ValueError(msg)
    if not samples:
        return math.nan
    ordered = sorted(samples)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

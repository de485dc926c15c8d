"""`citywatch bench alerts`: how long a threshold crossing takes to become an alert.

Two latencies, from the MQTT publish of a crossing reading: (a) to its `firing` event on
the alerts Kafka topic, (b) to the webhook that delivers it. They are measured under load:
a background fleet publishes at `--rate` messages per second while a few probe devices
alternately cross and clear one threshold rule (`for: 0m`, `hold: 0m`), so each crossing
opens an alert and each clear resolves it.

Like `bench pipeline`, it runs on the local stack with its own topics, consumer groups,
MQTT prefix, device ids and rule, starts its own ingest and alerts processes (the alerts
process runs the notifiers), receives the webhooks in this process on 127.0.0.1, prints
one table and removes its rows. Publish, Kafka receipt and webhook arrival are all timed
on this process's monotonic clock, so the figures need no clock sync. Figures only: on a
shared 2-core machine a threshold would flake, so none is asserted.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import paho.mqtt.client as mqtt
import yaml
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.table import Table

from schemas.registry import Kind
from schemas.topics import uplink_topic
from services.alerts.delivery.notice import mqtt_topic
from services.alerts.rules import Severity
from services.bench.common import (
    BenchNames,
    cleanup_alerts,
    cleanup_devices,
    percentile,
    prepare_stack,
    stop_all,
    wait_ready,
)
from services.common.kafka import client_options
from services.common.mqtt_client import BufferedClient
from services.common.settings import KAFKA_ADMIN, Settings
from services.supervisor import ServiceProcess
from simulators import Fleet, Message, Publisher, PublishStats

console = Console()

# A litter boom's fill level: the one metric whose only QARTOD test is the gross range, so
# a probe jumping between full and empty is never flagged a spike (a SUSPECT value opens
# no alert, see services/alerts/engine.py).
PROBE_KIND: Kind = "litter"
PROBE_METRIC = "fill_level_pct"
CROSS_VALUE, CLEAR_VALUE = 95.0, 10.0  # threshold 90, clear 50
PROBE_SEVERITY: Severity = "advisory"
PROBE_PERSIST = 2  # the rule's min_readings: consecutive crossings that open an alert
PROBE_INTERVAL_S = 0.5  # each probe device publishes this often, crossing every other time
WAIT_AFTER_LOAD_S = 60.0  # how long stragglers may take once the load stops

Key = tuple[str, datetime]  # (device id, reading time): one probe reading


@dataclass
class Probes:
    """Probe devices that alternately cross and clear the bench rule.

    Each device sends `persist` crossing readings, then `persist` clearing ones, and so
    on: the rule opens an alert only after `min_readings` consecutive crossings (issue 14:
    no alert rests on one sample), so `persist` must equal the rule's `min_readings`.
    `messages` slips one probe reading into the background stream every
    `interval_s / len(devices)` seconds and records, for each crossing that completes a
    run (the reading that opens the alert), the monotonic time it was handed to the
    publisher (which publishes it at once)."""

    devices: list[str]
    prefix: str
    interval_s: float
    persist: int = 1
    published: dict[Key, float] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    crossed: dict[str, bool] = field(default_factory=dict)
    last_at: dict[str, datetime] = field(default_factory=dict)

    def message(self, device: str, *, cross: bool) -> tuple[Message, datetime]:
        now = datetime.now(UTC)
        at = now.replace(microsecond=now.microsecond // 1000 * 1000)  # the payload's precision
        # Strictly later than the device's previous reading: the engine skips a reading at
        # or before its cursor, and the (device, time) key must name one reading.
        last = self.last_at.get(device)
        if last is not None and at <= last:
            at = last + timedelta(milliseconds=1)
        self.last_at[device] = at
        body = {
            "time": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "metrics": {PROBE_METRIC: CROSS_VALUE if cross else CLEAR_VALUE},
        }
        self.crossed[device] = cross
        msg = Message(
            uplink_topic(self.prefix, PROBE_KIND, device),
            json.dumps(body).encode(),
            True,
            device,
            kind=PROBE_KIND,
        )
        return msg, at

    def messages(self, background: Iterator[Message]) -> Iterator[Message]:
        step = self.interval_s / len(self.devices)
        due = time.monotonic()
        i = 0
        while True:
            if time.monotonic() >= due:
                device = self.devices[i % len(self.devices)]
                n = self.steps.get(device, 0)  # this device's place in its cross/clear cycle
                probe, at = self.message(device, cross=n < self.persist)
                if n == self.persist - 1:  # the crossing that completes the run
                    self.published[(device, at)] = time.monotonic()
                self.steps[device] = (n + 1) % (2 * self.persist)
                i += 1
                due += step
                yield probe
            # Taken from `background` only when it is published at once: a message drawn
            # before a probe and left unsent when the phase ended was counted as published
            # (the bench then waited for rows that could never come).
            msg = next(background, None)
            if msg is None:
                return
            yield msg

    def closing(self) -> list[Message]:
        """A clear for every probe left crossed, so each alert resolves and the retained
        MQTT state the notifier published for it is cleared again."""
        return [self.message(d, cross=False)[0] for d, c in self.crossed.items() if c]


def event_key(event: Mapping[str, Any]) -> Key | None:
    """The probe reading a `firing` event answers (None for any other transition)."""
    if event.get("transition") != "firing":
        return None
    return str(event["device_id"]), datetime.fromisoformat(str(event["at"]))


def latencies(published: Mapping[Key, float], arrived: Mapping[Key, float]) -> list[float]:
    """Seconds from publish to arrival for each published reading that arrived."""
    return [arrived[k] - t for k, t in published.items() if k in arrived]


def run_bench_alerts(
    settings: Settings, *, rate: float, duration_s: float, per_kind: int, probes: int
) -> int:
    settings = prepare_stack(settings)
    names = BenchNames()
    names.ensure_topics(settings)
    rule_id = f"bench-probe-{names.suffix}"
    try:
        return asyncio.run(
            _run(
                settings,
                names,
                rule_id,
                rate=rate,
                duration_s=duration_s,
                per_kind=per_kind,
                probes=probes,
            )
        )
    finally:
        asyncio.run(cleanup_devices(settings, names.id_prefix))
        asyncio.run(_cleanup_alerts(settings, rule_id, f"bench-alerts-{names.suffix}"))


@dataclass
class _Arrivals:
    kafka: dict[Key, float] = field(default_factory=dict)
    webhook: dict[Key, float] = field(default_factory=dict)


async def _webhook(arrivals: _Arrivals) -> web.AppRunner:
    """A webhook subscriber on 127.0.0.1 (a free port) that timestamps each `firing`."""

    async def receive(request: web.Request) -> web.Response:
        now = time.monotonic()
        notice = await request.json()
        key = event_key(notice["event"])
        if key is not None:
            arrivals.webhook.setdefault(key, now)  # a retry is not a new arrival
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


async def _watch(consumer: AIOKafkaConsumer, arrivals: _Arrivals) -> None:
    async for record in consumer:
        now = time.monotonic()
        key = event_key(json.loads(record.value))
        if key is not None:
            arrivals.kafka.setdefault(key, now)


async def _run(
    settings: Settings,
    names: BenchNames,
    rule_id: str,
    *,
    rate: float,
    duration_s: float,
    per_kind: int,
    probes: int,
) -> int:
    probe = Probes(
        devices=[f"{names.id_prefix}probe-{i:02d}" for i in range(probes)],
        prefix=names.prefix,
        interval_s=PROBE_INTERVAL_S,
        persist=PROBE_PERSIST,
    )
    # The notifier's retained alert state goes under the run's own prefix, not the city's.
    mqtt_template = f"citywatch/alerts/{names.prefix}/{{severity}}/{{area}}"
    arrivals = _Arrivals()
    runner = await _webhook(arrivals)
    port = runner.addresses[0][1]
    consumer = AIOKafkaConsumer(**client_options(settings, KAFKA_ADMIN), group_id=None)
    await consumer.start()
    watcher: asyncio.Task[None] | None = None
    procs: list[ServiceProcess] = []
    try:
        partition = TopicPartition(names.topics["alerts"], 0)  # one partition (BenchNames)
        consumer.assign([partition])
        consumer.seek(partition, 0)  # a new topic: no offset lookup needed
        watcher = asyncio.create_task(_watch(consumer, arrivals))
        with tempfile.TemporaryDirectory(prefix="citywatch-bench-") as tmp:
            env = names.env(**config_files(Path(tmp), rule_id, probe.devices, port))
            env["CITYWATCH_DELIVERY__MQTT_TOPIC"] = mqtt_template
            log_dir = settings.state_dir / "bench-logs"
            procs = [
                ServiceProcess(name, log_dir=log_dir, env=env, tag=names.suffix)
                for name in ("ingest", "alerts")
            ]
            for p in procs:
                p.start()
            await wait_ready(*procs)
            fleet = Fleet(per_kind=per_kind, seed=7, prefix=names.prefix, id_prefix=names.id_prefix)
            with console.status(
                f"alerts: publishing for {duration_s:.0f}s at "
                f"{'max' if rate <= 0 else f'{rate:g}/s'} with {probes} probes ..."
            ):
                pub = await asyncio.to_thread(
                    _publish, settings, names, probe, fleet, rate=rate, duration_s=duration_s
                )
            with console.status("alerts: waiting for the last alerts and webhooks ..."):
                await _wait_arrived(probe.published, arrivals, timeout_s=WAIT_AFTER_LOAD_S)
            await asyncio.to_thread(stop_all, procs)
    finally:
        if watcher is not None:
            watcher.cancel()
        await consumer.stop()
        await runner.cleanup()
        await asyncio.to_thread(stop_all, procs)
        # The retained state of an area lists every open alert there, the city's too (the
        # delivery tables are shared), so it is not empty after the probes resolve: clear it.
        await asyncio.to_thread(
            _clear_retained, settings, mqtt_topic(mqtt_template, PROBE_SEVERITY, None)
        )

    _print(names, probe, arrivals, pub, rate=rate, duration_s=duration_s, per_kind=per_kind)
    return 0


def config_files(tmp: Path, rule_id: str, devices: list[str], port: int | None) -> dict[str, str]:
    """The bench's rules file (one threshold rule scoped to the probes) and subscribers
    file (one webhook: this process on `port`; none without a port, when the alert's way
    out that is measured is its event on the alerts topic), as service environment."""
    rules = {
        "stale_after": "30m",
        "rules": [
            {
                "id": rule_id,
                "type": "threshold",
                "kind": PROBE_KIND,
                "metric": PROBE_METRIC,
                "devices": devices,
                "threshold": 90.0,
                "clear": 50.0,
                "for": "0m",
                "hold": "0m",
                "min_readings": PROBE_PERSIST,
                "severity": PROBE_SEVERITY,
                "status": "Exercise",
                "title_en": "Bench probe {value} {unit} at {device}",
                "title_km": "Bench probe {value} {unit} at {device}",
            }
        ],
    }
    subscribers: dict[str, list[dict[str, str]]] = {"subscribers": []}
    if port is not None:
        subscribers["subscribers"].append(
            {
                "name": "bench",
                "channel": "webhook",
                "url": f"http://127.0.0.1:{port}/hook",
                "secret": rule_id,  # the receiver does not check signatures
            }
        )
    (tmp / "rules.yaml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    (tmp / "subscribers.yaml").write_text(yaml.safe_dump(subscribers), encoding="utf-8")
    return {
        "CITYWATCH_ALERTS__RULES_FILE": str(tmp / "rules.yaml"),
        "CITYWATCH_DELIVERY__SUBSCRIBERS_FILE": str(tmp / "subscribers.yaml"),
    }


def _publish(
    settings: Settings,
    names: BenchNames,
    probe: Probes,
    fleet: Fleet,
    *,
    rate: float,
    duration_s: float,
) -> PublishStats:
    username, password = settings.mqtt_login("citywatch-simulator")
    with Publisher(
        settings.mqtt_services_host,
        settings.mqtt_services_port,
        client_id=f"citywatch-bench-fleet-{names.suffix}",
        username=username,
        password=password,
    ) as pub:
        stats = pub.run(probe.messages(fleet.messages()), duration_s=duration_s, rate=rate)
        closing = probe.closing()
        pub.run(iter(closing))  # waits for their acks
    return stats


async def _wait_arrived(
    published: Mapping[Key, float], arrivals: _Arrivals, timeout_s: float
) -> None:
    """Wait until every crossing has its event and its webhook, or the timeout passes
    (what is missing then shows in the table)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(k in arrivals.kafka and k in arrivals.webhook for k in published):
            return
        await asyncio.sleep(0.1)


def _print(
    names: BenchNames,
    probe: Probes,
    arrivals: _Arrivals,
    pub: PublishStats,
    *,
    rate: float,
    duration_s: float,
    per_kind: int,
) -> None:
    table = Table(
        title=f"citywatch bench alerts ({per_kind * 4} devices + {len(probe.devices)} probes, "
        f"{duration_s:.0f}s, target {'max' if rate <= 0 else f'{rate:g} msg/s'})"
    )
    table.add_column("measure")
    table.add_column("count", justify="right")
    table.add_column("p50", justify="right")
    table.add_column("p99", justify="right")
    table.add_column("note")
    table.add_row(
        "load (MQTT acked)",
        f"{pub.acked:,}",
        "",
        "",
        f"{pub.acked / pub.elapsed_s:,.0f} msg/s achieved, probes included",
    )
    crossings = len(probe.published)
    for label, arrived, note in (
        ("publish -> firing on Kafka", arrivals.kafka, f"topic {names.topics['alerts']}"),
        ("publish -> webhook delivered", arrivals.webhook, "in-process receiver, 127.0.0.1"),
    ):
        lat = latencies(probe.published, arrived)
        table.add_row(
            label,
            f"{len(lat):,} / {crossings:,}",
            _ms(percentile(lat, 0.5)),
            _ms(percentile(lat, 0.99)),
            note,
        )
    console.print(table)


def _clear_retained(settings: Settings, topic: str) -> None:
    """Publish an empty retained message on `topic` (MQTT 3.3.1.3: that deletes it), as the
    alerts service's account, the one allowed to write alert topics."""
    client = BufferedClient(
        CallbackAPIVersion.VERSION2,
        client_id=f"citywatch-bench-clear-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    client.username_pw_set(*settings.mqtt_login("citywatch-alerts"))
    client.connect(settings.mqtt_services_host, settings.mqtt_services_port)
    client.loop_start()
    try:
        client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def _ms(seconds: float) -> str:
    return "-" if seconds != seconds else f"{seconds * 1000:,.0f} ms"  # NaN: no samples


async def _cleanup_alerts(settings: Settings, rule_id: str, group_id: str) -> None:
    con = await asyncpg.connect(settings.database_dsn)
    try:
        await cleanup_alerts(con, rule_id, group_id)
    finally:
        await con.close()

"""`citywatch evaluate`: scenarios played through the real stack, scored against the truth.

For each scenario and cadence: a fresh set of names (Kafka topics, consumer groups, MQTT
prefix, device ids, rule ids; `services/bench/common.py`), the fleet registered as the demo
registers it, ingest + processor + alerts started as child processes, the scenario played
over MQTT on a fast clock (`--speed` scenario seconds per second), then, once the processor
and the alerts service have committed past the last reading, the stored flags
(`readings.quality`) are scored by `services/evaluate/flags.py` against the simulator's
per-reading labels, the raised alerts (`alert_events`) by `services/evaluate/scoring.py`,
and the run's rows removed. Exit 1 when a hard target of
issue 14 breaks; the figures are printed either way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.table import Table

from services.alerts.rules import RuleSet, load_rules
from services.bench.common import (
    BenchNames,
    cleanup_alerts,
    cleanup_devices,
    prepare_stack,
    stop_all,
    wait_ready,
)
from services.common import db
from services.common.kafka import client_options
from services.common.settings import KAFKA_ADMIN, Settings
from services.evaluate.flags import Labels, QualityScore, ScoredRow, flat_metrics, score
from services.evaluate.scoring import (
    AlertScore,
    Expected,
    Raised,
    hard_rule_breaches,
    median_minutes,
    score_alerts,
)
from services.evaluate.truth import Heard, device_rules, expected_alerts, no_truth
from services.quality import load_quality_config
from services.registry.store import upsert_devices
from services.supervisor import ServiceProcess, wait_until
from simulators import Message, Publisher
from simulators.run import ScenarioRun
from simulators.scenarios import load_scenario

__all__ = ["EvaluateNames", "EvaluateOptions", "Result", "evaluate_one", "run_evaluate"]

console = Console(width=None if sys.stdout.isatty() else 132)


@dataclass(frozen=True)
class EvaluateOptions:
    scenarios: tuple[str, ...] = ("normal-day", "monsoon-storm", "haze-episode", "flash-flood")
    cadences: tuple[timedelta, ...] = (timedelta(seconds=10), timedelta(minutes=5))
    duration: timedelta | None = None  # None: the whole scenario
    devices: int = 40
    seed: int = 1
    speed: float = 720.0  # scenario seconds per wall second (0: as fast as possible)
    faults: float = 1.0
    # The scenario's first reading time; None: the scenario's own default before now. A fixed
    # start makes a run repeatable (the tide and the day of the week follow the date).
    start: datetime | None = None
    # Keep the run's devices, readings and alerts in the database afterwards (to read what
    # it raised, e.g. on /ops); by default a run removes them.
    keep: bool = False


@dataclass(frozen=True)
class EvaluateNames(BenchNames):
    """A run's own names: `evaluate.<suffix>.*` topics, `ev<suffix>` MQTT prefix and ids."""

    kind: ClassVar[str] = "evaluate"

    @property
    def topics(self) -> dict[str, str]:
        return {k: f"evaluate.{self.suffix}.{k}" for k in ("readings", "rejected", "alerts")}

    @property
    def prefix(self) -> str:
        return f"ev{self.suffix}"

    @property
    def id_prefix(self) -> str:
        return f"ev{self.suffix}-"

    @property
    def rule_suffix(self) -> str:  # rule ids too: area alerts' state is keyed by rule id
        return f"-ev{self.suffix}"


@dataclass
class Result:
    scenario: str
    cadence: timedelta
    start: datetime
    end: datetime
    messages: int
    rows_stored: int
    quality: QualityScore
    alerts: AlertScore
    breaches: list[str] = field(default_factory=list)
    no_truth: list[str] = field(default_factory=list)  # rules whose alerts are all unfounded
    # For the investigation of extra alerts: the simulator's silences and, per device, the
    # scenario times the gateway heard it (first and last of each silence).
    silences: list[dict[str, Any]] = field(default_factory=list)
    heard: Heard | None = None


def cadence_label(c: timedelta) -> str:
    s = int(c.total_seconds())
    return f"{s // 60}m" if s % 60 == 0 else f"{s}s"


def run_evaluate(settings: Settings, opts: EvaluateOptions) -> int:
    settings = prepare_stack(settings)
    failed = False
    for name in opts.scenarios:
        for cadence in opts.cadences:
            result = asyncio.run(evaluate_one(settings, opts, name, cadence))
            print_result(result)
            failed |= bool(result.breaches)
    return 1 if failed else 0


def _scenario_run(
    opts: EvaluateOptions, name: str, cadence: timedelta, names: EvaluateNames
) -> ScenarioRun:
    scenario = load_scenario(name)
    scenario = dataclasses.replace(
        scenario,
        intervals=dict.fromkeys(scenario.intervals, cadence),
        duration=min(scenario.duration, opts.duration or scenario.duration),
    )
    return ScenarioRun(
        scenario,
        devices=opts.devices,
        seed=opts.seed,
        speed=opts.speed,
        start=opts.start,
        prefix=names.prefix,
        id_prefix=names.id_prefix,
        fault_scale=opts.faults,
    )


def _rules_file(settings: Settings, tmp: Path, suffix: str) -> dict[str, str]:
    """The configured rules with the run's suffix on every id, and no subscribers."""
    rules = yaml.safe_load(settings.alerts.rules_file.read_text(encoding="utf-8"))
    for r in rules["rules"]:
        r["id"] = f"{r['id']}{suffix}"
    (tmp / "rules.yaml").write_text(yaml.safe_dump(rules, allow_unicode=True), encoding="utf-8")
    (tmp / "subscribers.yaml").write_text("subscribers: []\n", encoding="utf-8")
    return {
        "CITYWATCH_ALERTS__RULES_FILE": str(tmp / "rules.yaml"),
        "CITYWATCH_DELIVERY__SUBSCRIBERS_FILE": str(tmp / "subscribers.yaml"),
    }


def _age_days(settings: Settings, start: datetime) -> float:
    """An age bound that takes every reading of a run from `start` (the configured or more)."""
    return max(
        settings.ingest.max_reading_age_days,
        (datetime.now(UTC) - start).total_seconds() / 86400 + 1,
    )


async def evaluate_one(
    settings: Settings, opts: EvaluateOptions, name: str, cadence: timedelta
) -> Result:
    """Play one scenario at one cadence through the stack and score it."""
    names = EvaluateNames()
    await asyncio.to_thread(names.ensure_topics, settings)
    run = _scenario_run(opts, name, cadence, names)
    label = f"{name} @ {cadence_label(cadence)}"
    con = await db.connect(settings.database_dsn)
    procs: list[ServiceProcess] = []
    labels = Labels()
    heard = Heard()
    rules = load_rules(settings.alerts.rules_file)
    try:
        await upsert_devices(con, run.device_profiles())
        with tempfile.TemporaryDirectory(prefix="citywatch-evaluate-") as tmp:
            env = names.env(
                **_rules_file(settings, Path(tmp), names.rule_suffix),
                **names.groups(),
                CITYWATCH_RETENTION__MAINTAIN_EVERY_H="0",
                # A replay of a fixed day may lie further back than the gateway's age bound.
                CITYWATCH_INGEST__MAX_READING_AGE_DAYS=str(_age_days(settings, run.start)),
                CITYWATCH_DELIVERY__MQTT_TOPIC=f"citywatch/alerts/{names.prefix}/{{severity}}/{{area}}",
            )
            log_dir = settings.state_dir / "evaluate-logs"
            procs = [
                ServiceProcess(n, log_dir=log_dir, env=env, tag=names.suffix)
                for n in ("ingest", "processor", "alerts")
            ]
            for p in procs:
                p.start()
            await wait_ready(*procs)
            console.print(
                f"[bold]{label}[/]: {len(run.devices)} devices, {run.scenario.duration} "
                f"from {run.start:%Y-%m-%d %H:%M}Z, speed {opts.speed or 'max'}, seed {opts.seed}"
            )
            sent = await asyncio.to_thread(_publish, settings, run, names, labels, heard, label)
            await _drained(settings, names, procs[0], sent)
            # The gateway's own count of what it rejected, by the simulator's reasons.
            counts = await asyncio.to_thread(procs[0].metrics)
            for reason in labels.must_reject:
                key = f'citywatch_ingest_rejected_total{{reason="{reason}"}}'
                labels.rejected[reason] = int(counts.get(key, 0))
            stop_all(procs)
        rows = [
            ScoredRow(r["device_id"], r["kind"], r["metric"], r["time"], r["value"], r["quality"])
            for r in await con.fetch(
                "SELECT r.device_id, d.kind, r.metric, r.time, r.value, r.quality"
                " FROM readings r JOIN devices d USING (device_id) WHERE r.device_id LIKE $1",
                f"{names.id_prefix}%",
            )
        ]
        events = [
            Raised(
                str(r["alert_id"]),
                r["rule_id"].removesuffix(names.rule_suffix),
                r["area"],
                r["device_id"],
                r["state"],
                r["severity"] or r["alert_severity"],
                r["at"],
            )
            for r in await con.fetch(
                "SELECT a.alert_id, a.rule_id, a.area, a.device_id, a.severity AS alert_severity,"
                " e.state, e.severity, e.at FROM alert_events e JOIN alerts a USING (alert_id)"
                " WHERE a.rule_id LIKE $1 ORDER BY e.event_id",
                f"%{names.rule_suffix}",
            )
        ]
    finally:
        stop_all(procs)
        if not opts.keep:
            await cleanup_alerts(con, f"%{names.rule_suffix}", f"evaluate-alerts-{names.suffix}")
        await con.close()
        if not opts.keep:
            await cleanup_devices(settings, names.id_prefix)
        else:
            print(f"kept: devices {names.id_prefix}*, rules *{names.rule_suffix}")
    quality = score(rows, labels, flat_metrics(load_quality_config(settings.quality_file)))
    alerts = score_alerts(
        _expected(run, rules, heard, labels), events, device_rules=device_rules(rules)
    )
    result = Result(name, cadence, run.start, run.end, sent, len(rows), quality, alerts)
    result.no_truth = no_truth(rules)
    result.silences, result.heard = list(run.silences), heard
    # Flood gauges report at the cadence: "within one reporting interval" is one cadence.
    result.breaches = hard_rule_breaches(name, quality, alerts, interval=cadence)
    return result


def _expected(run: ScenarioRun, rules: RuleSet, heard: Heard, labels: Labels) -> list[Expected]:
    """The truth under the rules the alerts service ran with (the same file, ids unsuffixed)."""
    stuck = [(dev, metric, at) for (dev, metric, at), f in labels.faults.items() if "stuck" in f]
    return expected_alerts(run, rules, heard, stuck=stuck)


def _publish(
    settings: Settings,
    run: ScenarioRun,
    names: EvaluateNames,
    labels: Labels,
    heard: Heard,
    label: str,
) -> int:
    began = time.monotonic()
    last = [began]

    def paced() -> Iterator[Message]:
        for msg in run.messages():
            if msg.sent_at is not None:
                run.clock.pace(msg.sent_at, began)
            labels.add(msg)
            heard.add(msg)
            now = time.monotonic()
            if now - last[0] >= 5 and run.stats.scenario_time is not None:
                last[0] = now
                done = (run.stats.scenario_time - run.start) / (run.end - run.start)
                console.print(
                    f"  {label}: {done:5.0%} of scenario time, {run.stats.messages:,} messages"
                )
            yield msg

    username, password = settings.mqtt_login("citywatch-simulator")
    with Publisher(
        settings.mqtt_services_host,
        settings.mqtt_services_port,
        client_id=f"citywatch-evaluate-{names.suffix}",
        username=username,
        password=password,
    ) as pub:
        st = pub.run(paced())
    return st.acked


async def _committed(settings: Settings, group: str, topic: str) -> tuple[int, int]:
    """(sum of `group`'s committed offsets, sum of end offsets) over `topic`."""
    consumer = AIOKafkaConsumer(
        **client_options(settings, KAFKA_ADMIN), group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or set()]
        ends = await consumer.end_offsets(tps)
        done = sum([await consumer.committed(tp) or 0 for tp in tps])
        return done, int(sum(ends.values()))
    finally:
        await consumer.stop()


async def _drained(
    settings: Settings, names: EvaluateNames, ingest: ServiceProcess, sent: int
) -> None:
    """Wait until the gateway took every message and both consumers committed past the
    last reading: the database then holds every flag and alert the run caused."""

    async def gateway_done() -> bool:
        m = await asyncio.to_thread(ingest.metrics)
        return (
            m.get("citywatch_ingest_received_total", 0) >= sent
            and m.get("citywatch_ingest_in_flight", 1) == 0
        )

    await wait_until(gateway_done, timeout=300, what="the gateway received every message")
    topic = names.topics["readings"]
    groups = names.groups()
    for g in ("CITYWATCH_PROCESSOR__GROUP_ID", "CITYWATCH_ALERTS__GROUP_ID"):

        async def caught_up(group: str = groups[g]) -> bool:
            done, end = await _committed(settings, group, topic)
            return done == end

        await wait_until(
            caught_up, timeout=600, what=f"{groups[g]} committed every reading", every=1
        )


HOUR, GAP = timedelta(hours=1), timedelta(minutes=10)


def _pct(x: float) -> str:
    return "-" if x != x else f"{x:.1%}"


def print_result(r: Result) -> None:
    title = f"{r.scenario} @ {cadence_label(r.cadence)} ({r.start:%H:%M}Z-{r.end:%H:%M}Z)"
    q = Table(
        title=f"quality: {title}; {r.quality.rows:,} readings scored of {r.rows_stored:,} stored"
    )
    for col in ("metric", "fault-free", "false flags", "share"):
        q.add_column(col, justify="left" if col == "metric" else "right")
    for m in r.quality.metrics:
        q.add_row(m.metric, f"{m.fault_free:,}", f"{m.false_flags:,}", _pct(m.share))
    for c in r.quality.faults:
        if c.fault == "low_battery" or (c.unit == "payloads" and not c.labelled):
            continue
        left = ", ".join(
            f"{n} {w}"
            for n, w in ((c.inert, "inert"), (c.unjudged, "unjudged"), (c.cut, "cut short"))
            if n
        )
        q.add_row(
            f"[italic]{c.fault} caught[/] ({c.unit}{'; ' + left + ' left out' if left else ''})",
            f"{c.labelled:,}",
            f"{c.caught:,}",
            _pct(c.share) if c.labelled else "-",
        )
    console.print(q)
    a = Table(title=f"alerts: {title}")
    for col in ("rule", "area", "expected", "raised", "median delay", "worst delay"):
        a.add_column(col, justify="left" if col in ("rule", "area") else "right")
    extra = Counter(
        (x.rule, x.area or "") for x in (*r.alerts.false, *r.alerts.duplicates, *r.alerts.flaps)
    )
    rows = r.alerts.per_rule_area()
    for key in extra:
        rows.setdefault(key, (0, 0, []))
    for (rule, area), (n, got, delays) in sorted(rows.items()):
        worst = max(delays, key=abs) if delays else None
        a.add_row(
            rule,
            area,
            str(n),
            f"{got}" + (f" +{extra[(rule, area)]} extra" if extra[(rule, area)] else ""),
            median_minutes(delays) if delays else "-",
            f"{worst.total_seconds() / 60:+.1f} min" if worst is not None else "-",
        )
    console.print(a)
    fs = r.alerts.false_by_severity()
    false = (
        ", ".join(f"{s} {fs[s]}" for s in ("danger", "warning", "watch", "advisory") if fs[s])
        or "none"
    )
    by_rule = ", ".join(
        f"{k} {v}" for k, v in sorted(Counter(x.rule for x in r.alerts.false).items())
    )
    console.print(
        f"false alerts: {false}{f' ({by_rule})' if by_rule else ''}; duplicates "
        f"{len(r.alerts.duplicates)}; flaps {len(r.alerts.flaps)}; missed "
        f"{len(r.alerts.missed)}; areas not escalated as one alert {len(r.alerts.split)}"
    )
    for x in sorted((*r.alerts.false, *r.alerts.flaps, *r.alerts.duplicates), key=lambda x: x.at)[
        :12
    ]:
        # Each unfounded alert with what the gateway heard of its device around it.
        spans = r.heard.silences.get(x.device or "", []) if r.heard else []
        near = [
            f"{a:%H:%M:%S}-{b:%H:%M:%S}"
            for a, b in spans
            if b - a >= GAP and a - HOUR <= x.at <= b + HOUR
        ]
        console.print(
            f"  extra {x.rule} {x.severity} {x.state} at {x.at:%H:%M:%S}Z: {x.device} ({x.area})"
            + (f"; silences heard near it {', '.join(near)}" if near else "")
        )
    if r.no_truth:
        console.print(
            f"rules without modelled truth (their alerts count unfounded): {', '.join(r.no_truth)}"
        )
    if r.breaches:
        console.print("[red]hard rules FAIL[/]:\n  " + "\n  ".join(r.breaches))
    else:
        console.print("[green]hard rules hold[/]")


def result_json(r: Result) -> dict[str, Any]:
    """The figures as plain data (tests and `--json`)."""
    out: dict[str, Any] = json.loads(
        json.dumps(
            {
                "scenario": r.scenario,
                "cadence_s": r.cadence.total_seconds(),
                "rows_stored": r.rows_stored,
                "scored": r.quality.rows,
                "breaches": r.breaches,
            }
        )
    )
    return out

"""`citywatch bench pipeline`: the pipeline measured in the units its goals are stated in.

One run, on the local stack (started if needed) with its own topics, consumer groups, MQTT
prefix, device ids and alert rule, with its own ingest, processor and alerts processes (so
their peak RSS is theirs alone, and the alerts service shares the cores as in production):

1. **saturation**: one native reading per message, published as fast as the pipeline
   takes them; stored values per CPU-second of the whole box (every process, the fleet
   included, from `/proc/stat` over the window from the first publish to the last row
   stored), next to msg/s and values/s;
2. **senml**: as many values as the saturation phase stored, in SenML packs of 10
   readings per message, published as fast as they are taken;
3. **25 / 50 / 75 %** of the saturation rate the same run measured (or of `--rate`):
   latency from the device's publish (the reading's own time, which the fleet stamps from
   the wall clock as it publishes) to the committed row, and from the publish of a
   threshold crossing (probe devices) to its `firing` event on the alerts topic;
4. **burst**: 3x the 50 % rate for `--burst` seconds (60 s by default; the issue's figure
   is `--burst 300`), absorbed as Kafka lag and drained: peak consumer lag and the time
   from the end of the burst to the last row stored.

Then each service's peak RSS, and at the end the rows of every phase are counted in the
database (stored == published: nothing lost, nothing doubled). A table prints the figures
against the targets of issue 11 with their ratios; `--json` writes the same report.
Figures only: on a shared 2-core machine a threshold would flake, so none is asserted.
The whole box's CPU includes whatever else runs on it; own CPU counts only the bench
process (the fleet), its services and the stack's process trees, and is broken down by
them ("own CPU share"). PostgreSQL's tree holds every backend, other clients' too.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.table import Table

from services.bench import stages
from services.bench.alerts import (
    PROBE_INTERVAL_S,
    PROBE_PERSIST,
    Probes,
    config_files,
    event_key,
    latencies,
)
from services.bench.common import (
    BenchNames,
    cleanup_alerts,
    cleanup_devices,
    percentile,
    prepare_stack,
    stop_all,
    wait_ready,
)
from services.bench.measure import (
    Counted,
    box_cpu_seconds,
    bucket_quantile,
    cpu_used,
    histogram,
    histogram_delta,
    jit_threads,
    native_stream,
    senml_stream,
    tree_cpu,
)
from services.common.kafka import client_options
from services.common.settings import KAFKA_ADMIN, Settings
from services.stack import components
from services.supervisor import ServiceProcess
from simulators import Fleet, Message, Publisher

console = Console()

SHARES = (0.25, 0.5, 0.75)
BURST_FACTOR = 3.0  # the burst publishes at this multiple of the 50 % rate
STORED_TIMEOUT_S = 180.0  # how long a phase's last rows may take once publishing stops
_ROWS = "citywatch_processor_rows_stored_total"
_DEVICE_LATENCY = "citywatch_device_to_stored_seconds"
# From the gateway's receiving a reading: what is left of the above once the broker has
# delivered it, so the two tell the broker's share from the pipeline's.
_RECEIVE_LATENCY = "citywatch_publish_to_stored_seconds"
_LAG = "citywatch_processor_consumer_lag{"

# Issue 11's targets: (figure key, target, "min" when the figure must reach it, "max"
# when it must stay under it).
TARGETS: tuple[tuple[str, str, float, str], ...] = (
    ("values_per_box_cpu_s", "stored values per CPU-second (saturation, native)", 15_000, "min"),
    ("p99_stored_50", "p99 publish -> stored at 50 % (ms)", 100, "max"),
    ("p99_stored_75", "p99 publish -> stored at 75 % (ms)", 250, "max"),
    ("p99_alert_50", "p99 publish -> alert on Kafka at 50 % (ms)", 250, "max"),
    ("senml_over_native", "SenML packs of 10 / native, values/s", 5, "min"),
    ("rss_ingest_mb", "peak RSS ingest (MB)", 100, "max"),
    ("rss_processor_mb", "peak RSS processor (MB)", 100, "max"),
    ("rss_alerts_mb", "peak RSS alerts (MB)", 100, "max"),
)


@dataclass
class Phase:
    """One load phase: what was published, what was stored, at what cost and delay."""

    name: str
    format: str
    target_rate: float  # msg/s asked of the publisher, 0 = as fast as it goes
    devices: list[str] = field(default_factory=list)
    since: str = ""  # ISO time just before the phase's first reading
    messages: int = 0  # fleet messages acknowledged by the broker
    values: int = 0  # values in them: the rows they must become
    probe_messages: int = 0
    publish_s: float = 0.0
    stored_s: float = 0.0  # first publish -> last of the phase's rows committed
    box_cpu_s: float = 0.0
    own_cpu_s: float = 0.0
    cpu_by_process: dict[str, float] = field(default_factory=dict)  # own CPU-s, by part
    jit_cpu_s: dict[str, float] = field(default_factory=dict)  # of it, JVM JIT compiling
    stored: int = 0  # the phase's rows counted in the database afterwards
    stored_distinct: int = 0  # distinct (device, metric, time) among them
    latency_ms: dict[str, float] = field(default_factory=dict)  # p50/p95/p99 -> stored
    received_ms: dict[str, float] = field(default_factory=dict)  # gateway receive -> stored
    alert_ms: dict[str, float] = field(default_factory=dict)  # p50/p99 -> firing on Kafka
    alerts: tuple[int, int] = (0, 0)  # (firing events seen, crossings published)
    peak_lag: int | None = None
    drain_s: float | None = None

    @property
    def msg_per_s(self) -> float:
        return self.messages / self.stored_s if self.stored_s else math.nan

    @property
    def values_per_s(self) -> float:
        return self.values / self.stored_s if self.stored_s else math.nan

    @property
    def values_per_box_cpu_s(self) -> float:
        return self.values / self.box_cpu_s if self.box_cpu_s else math.nan

    @property
    def values_per_own_cpu_s(self) -> float:
        return self.values / self.own_cpu_s if self.own_cpu_s else math.nan


@dataclass
class Report:
    devices_per_kind: int
    reference_rate: float  # msg/s the shares are of
    # Values in each fleet reading (`--values-per-reading`): issue 11 states its CPU target
    # for 3; 0 = every metric of the device's kind, 5.5 on average over the four kinds.
    values_per_reading: int = 3
    warmup_s: float = 0.0  # unmeasured load before the first phase (`--warmup`)
    broker: str = ""  # the MQTT broker of the stack (CITYWATCH_MQTT_BROKER): it moves every figure
    phases: list[Phase] = field(default_factory=list)
    rss_mb: dict[str, float] = field(default_factory=dict)
    raw: dict[str, float] = field(default_factory=dict)

    def phase(self, name: str) -> Phase:
        return next(p for p in self.phases if p.name == name)

    def figures(self) -> dict[str, float]:
        """The figures the targets speak of (NaN where a phase did not measure it)."""
        sat = self.phase("saturation")
        out = {
            "values_per_box_cpu_s": sat.values_per_box_cpu_s,
            "senml_over_native": self.phase("senml").values_per_s / sat.values_per_s,
        }
        for share in ("50", "75"):
            p = self.phase(f"{share} %")
            out[f"p99_stored_{share}"] = p.latency_ms.get("p99", math.nan)
            out[f"p99_alert_{share}"] = p.alert_ms.get("p99", math.nan)
        for name, mb in self.rss_mb.items():
            out[f"rss_{name}_mb"] = mb
        return out

    def to_json(self) -> dict[str, Any]:
        figures = self.figures()
        return {
            "devices_per_kind": self.devices_per_kind,
            "reference_rate": self.reference_rate,
            "values_per_reading": self.values_per_reading,
            "warmup_s": self.warmup_s,
            "broker": self.broker,
            "phases": [
                {
                    **asdict(p),
                    "msg_per_s": p.msg_per_s,
                    "values_per_s": p.values_per_s,
                    "values_per_box_cpu_s": p.values_per_box_cpu_s,
                    "values_per_own_cpu_s": p.values_per_own_cpu_s,
                }
                for p in self.phases
            ],
            "rss_mb": self.rss_mb,
            "raw": self.raw,
            "targets": [
                {
                    "key": key,
                    "label": label,
                    "figure": figures.get(key, math.nan),
                    "target": target,
                    "direction": direction,
                    "ratio": figures.get(key, math.nan) / target,
                }
                for key, label, target, direction in TARGETS
            ],
        }


def run_bench(
    settings: Settings,
    *,
    rate: float,
    duration_s: float,
    per_kind: int,
    phase_s: float = 15.0,
    burst_s: float = 60.0,
    warmup_s: float = 20.0,
    raw: bool = False,
    json_path: Path | None = None,
    values_per_reading: int = 3,
) -> int:
    settings = prepare_stack(settings)
    names = BenchNames()
    names.ensure_topics(settings)
    rule_id = f"bench-probe-{names.suffix}"
    try:
        report = Report(
            devices_per_kind=per_kind,
            reference_rate=rate,
            values_per_reading=values_per_reading,
            warmup_s=warmup_s,
            broker=settings.mqtt_broker,
        )
        if raw:
            report.raw = _raw_stages(settings, names, per_kind)
        asyncio.run(
            _run(
                settings,
                names,
                rule_id,
                report,
                duration_s=duration_s,
                phase_s=phase_s,
                burst_s=burst_s,
            )
        )
        asyncio.run(_count_stored(settings, report))
    finally:
        asyncio.run(_cleanup(settings, names, rule_id))
    _print(report)
    if json_path is not None:
        json_path.write_text(json.dumps(report.to_json(), indent=2), encoding="utf-8")
    return 0


def _raw_stages(settings: Settings, names: BenchNames, per_kind: int) -> dict[str, float]:
    """Each stage alone with the services' clients (services/bench/stages.py)."""
    n = 20_000
    with console.status(f"raw stages: {settings.mqtt_broker}, aiokafka, asyncpg ..."):
        return {
            f"{settings.mqtt_broker} pub->sub msg/s": stages.mqtt_pub_sub(
                settings, n, per_kind=per_kind
            ),
            "aiokafka produce records/s": asyncio.run(
                stages.kafka_produce(settings, n, topic=names.topics["rejected"], per_kind=per_kind)
            ),
            "asyncpg bulk insert readings/s": asyncio.run(
                stages.db_bulk_insert(
                    settings, n, per_kind=per_kind, id_prefix=f"raw{names.id_prefix}"
                )
            ),
        }


@dataclass
class _Context:
    """What every phase uses: the services, the publisher, the alerts watch, the CPU roots."""

    names: BenchNames
    per_kind: int
    values_per_reading: int
    processor: ServiceProcess
    publisher: Publisher
    roots: dict[str, int]  # bench (the fleet), the services, the stack's parts: by name
    alerts_seen: dict[tuple[str, datetime], float]


async def _run(
    settings: Settings,
    names: BenchNames,
    rule_id: str,
    report: Report,
    *,
    duration_s: float,
    phase_s: float,
    burst_s: float,
) -> None:
    probe_devices = [f"{names.id_prefix}probe-{i:02d}" for i in range(4)]
    alerts_seen: dict[tuple[str, datetime], float] = {}
    consumer = AIOKafkaConsumer(group_id=None, **client_options(settings, KAFKA_ADMIN))
    await consumer.start()
    watcher: asyncio.Task[None] | None = None
    procs: list[ServiceProcess] = []
    try:
        partition = TopicPartition(names.topics["alerts"], 0)  # one partition (BenchNames)
        consumer.assign([partition])
        consumer.seek(partition, 0)
        watcher = asyncio.create_task(_watch_alerts(consumer, alerts_seen))
        with tempfile.TemporaryDirectory(prefix="citywatch-bench-") as tmp:
            env = names.env(**config_files(Path(tmp), rule_id, probe_devices, None))
            env["CITYWATCH_DELIVERY__MQTT_TOPIC"] = f"citywatch/alerts/{names.prefix}/{{severity}}"
            log_dir = settings.state_dir / "bench-logs"
            procs = [
                ServiceProcess(name, log_dir=log_dir, env=env, tag=names.suffix)
                for name in ("ingest", "processor", "alerts")
            ]
            for p in procs:
                p.start()
            await wait_ready(*procs)
            stack_pids = {part.name: pid for part in components(settings) if (pid := part.pid())}
            username, password = settings.mqtt_login("citywatch-simulator")
            with Publisher(
                settings.mqtt_services_host,
                settings.mqtt_services_port,
                client_id=f"citywatch-bench-fleet-{names.suffix}",
                username=username,
                password=password,
            ) as publisher:
                ctx = _Context(
                    names=names,
                    per_kind=report.devices_per_kind,
                    values_per_reading=report.values_per_reading,
                    processor=procs[1],
                    publisher=publisher,
                    roots={"bench": os.getpid(), **{p.name: p.pid for p in procs}, **stack_pids},
                    alerts_seen=alerts_seen,
                )
                await _phases(ctx, report, probe_devices, duration_s, phase_s, burst_s)
            report.rss_mb = {p.name: p.peak_rss_bytes() / 1e6 for p in procs}
            await asyncio.to_thread(stop_all, procs)
    finally:
        if watcher is not None:
            watcher.cancel()
        await consumer.stop()
        await asyncio.to_thread(stop_all, procs)


async def _phases(
    ctx: _Context,
    report: Report,
    probe_devices: list[str],
    duration_s: float,
    phase_s: float,
    burst_s: float,
) -> None:
    if report.warmup_s > 0:
        await _warm_up(ctx, probe_devices, report.warmup_s)
    sat = await _phase(ctx, "saturation", "native", rate=0, seconds=duration_s)
    report.phases.append(sat)
    if report.reference_rate <= 0:
        report.reference_rate = sat.msg_per_s
    # As many values as the saturation phase stored, in packs: a bounded backlog, and the
    # two phases' times compare directly.
    report.phases.append(
        await _phase(ctx, "senml", "senml", rate=0, seconds=duration_s, values=sat.values)
    )
    for share in SHARES:
        report.phases.append(
            await _phase(
                ctx,
                f"{share * 100:.0f} %",
                "native",
                rate=share * report.reference_rate,
                seconds=phase_s,
                probes=probe_devices,
            )
        )
    report.phases.append(
        await _phase(
            ctx,
            "burst",
            "native",
            rate=BURST_FACTOR * 0.5 * report.reference_rate,
            seconds=burst_s,
            watch_lag=True,
        )
    )


async def _warm_up(ctx: _Context, probe_devices: list[str], seconds: float) -> None:
    """Unmeasured load in both shapes the phases have, before the first one: half the
    time as fast as it goes, half at 25 % of the rate that reached (probes included).

    On a stack started for the bench, Kafka's and Artemis's JVMs compile their hot code
    during the first phases, and again when the load drops from saturation to a share of
    it: up to 70 % of a core for a whole 25 % phase, and most of the brokers' CPU in a run
    (docs/performance.md, "Third session"). A broker in production has long paid for that;
    the phases should measure the pipeline, not the compiler. 20 s halves what the phases
    compile on a fresh stack without ending it (a compiler starved of CPU at saturation
    catches up when the load drops), hence each phase's JIT CPU shown apart too."""
    full = await _phase(ctx, "warm-up", "native", rate=0, seconds=seconds / 2)
    low = SHARES[0] * full.msg_per_s
    if low == low and low > 0:
        await _phase(
            ctx, "warm-up-low", "native", rate=low, seconds=seconds / 2, probes=probe_devices
        )


async def _phase(
    ctx: _Context,
    name: str,
    fmt: str,
    *,
    rate: float,
    seconds: float,
    probes: list[str] | None = None,
    watch_lag: bool = False,
    values: int | None = None,
) -> Phase:
    """Publish one phase, wait until its rows are all committed, and measure it."""
    tag = name.replace(" %", "").replace(" ", "")
    fleet = Fleet(
        per_kind=ctx.per_kind,
        seed=5,
        prefix=ctx.names.prefix,
        id_prefix=f"{ctx.names.id_prefix}{tag}-",
        values_per_reading=ctx.values_per_reading,
    )
    counted = Counted()
    stream: Iterator[Message] = (
        senml_stream(fleet, counted) if fmt == "senml" else native_stream(fleet, counted)
    )
    probe = (
        Probes(
            devices=probes,
            prefix=ctx.names.prefix,
            interval_s=PROBE_INTERVAL_S,
            persist=PROBE_PERSIST,
        )
        if probes
        else None
    )
    if probe is not None:
        stream = probe.messages(stream)
    phase = Phase(
        name=name,
        format=fmt,
        target_rate=rate,
        devices=[d.device_id for d in fleet.devices],
        since=(datetime.now(UTC) - timedelta(seconds=5)).isoformat(),
    )
    rows_before = await _metric(ctx.processor, _ROWS)
    metrics_before = await asyncio.to_thread(ctx.processor.metrics)
    lat_before = histogram(metrics_before, _DEVICE_LATENCY)
    received_before = histogram(metrics_before, _RECEIVE_LATENCY)
    lag_peak = [0]
    lag_task = asyncio.create_task(_watch_lag(ctx.processor, lag_peak)) if watch_lag else None
    label = "max" if rate <= 0 else f"{rate:,.0f} msg/s"
    with console.status(f"{name}: publishing {fmt} for {seconds:.0f}s at {label} ..."):
        jit0 = {name: jit_threads(pid) for name, pid in ctx.roots.items()}
        box0, own0, start = box_cpu_seconds(), _own_cpu(ctx.roots), time.monotonic()
        if values is not None:  # stop after the message that reaches `values`
            stream = _until(stream, counted, values)
        stats = await asyncio.to_thread(ctx.publisher.run, stream, duration_s=seconds, rate=rate)
        sent_closing = 0
        if probe is not None:
            closing = probe.closing()
            sent_closing = len(closing)
            await asyncio.to_thread(ctx.publisher.run, iter(closing))
        published_at = time.monotonic()
    phase.messages, phase.values = counted.messages, counted.values
    phase.probe_messages = stats.sent - counted.messages + sent_closing
    if stats.acked < stats.sent:
        console.print(f"[red]{name}: {stats.sent - stats.acked} messages not acknowledged")
    with console.status(f"{name}: waiting until every reading is stored ..."):
        expected = rows_before + phase.values + phase.probe_messages  # a probe: 1 value
        stored_at = await _wait_rows(ctx.processor, expected, STORED_TIMEOUT_S)
        box1, own1 = box_cpu_seconds(), _own_cpu(ctx.roots)
        jit1 = {name: jit_threads(pid) for name, pid in ctx.roots.items()}
    phase.publish_s = published_at - start
    phase.stored_s = stored_at - start
    phase.box_cpu_s = box1 - box0
    phase.cpu_by_process = {name: cpu_used(own0[name], own1[name]) for name in ctx.roots}
    phase.own_cpu_s = sum(phase.cpu_by_process.values())
    phase.jit_cpu_s = {name: cpu_used(jit0[name], jit1[name]) for name in jit1 if jit1[name]}
    if lag_task is not None:
        lag_task.cancel()
        phase.peak_lag = lag_peak[0]
        phase.drain_s = max(0.0, stored_at - published_at)
    metrics_after = await asyncio.to_thread(ctx.processor.metrics)
    lat = histogram_delta(histogram(metrics_after, _DEVICE_LATENCY), lat_before)
    received = histogram_delta(histogram(metrics_after, _RECEIVE_LATENCY), received_before)
    if fmt == "native":  # a pack's earlier readings are older than its publish
        phase.latency_ms = {f"p{q}": bucket_quantile(lat, q / 100) * 1000 for q in (50, 95, 99)}
        phase.received_ms = {f"p{q}": bucket_quantile(received, q / 100) * 1000 for q in (50, 99)}
    console.log(
        f"{name}: {phase.values:,} values, stored in {phase.stored_s:.1f}s,"
        f" {phase.box_cpu_s:.1f} box CPU-s"
    )
    if probe is not None:
        await _wait_alerts(probe.published, ctx.alerts_seen, timeout_s=30)
        lats = latencies(probe.published, ctx.alerts_seen)
        phase.alerts = (len(lats), len(probe.published))
        phase.alert_ms = {f"p{q}": percentile(lats, q / 100) * 1000 for q in (50, 99)}
    return phase


def _own_cpu(roots: dict[str, int]) -> dict[str, dict[int, float]]:
    """Per named root, the CPU-seconds of it and its descendants so far, by pid. The
    services are the bench's children: each pid counts once, under the deepest root."""
    trees = {name: tree_cpu([pid]) for name, pid in roots.items()}
    for name, tree in trees.items():
        for other, other_tree in trees.items():
            if other != name and roots[other] in tree:
                for pid in other_tree:
                    tree.pop(pid, None)
    return trees


def _until(stream: Iterator[Message], counted: Counted, values: int) -> Iterator[Message]:
    for msg in stream:
        yield msg
        if counted.values >= values:
            return


async def _metric(proc: ServiceProcess, name: str) -> float:
    return await asyncio.to_thread(proc.metric, name)


async def _wait_rows(proc: ServiceProcess, expected: float, timeout_s: float) -> float:
    """Poll the processor's stored-rows counter until it reaches `expected`; return the
    monotonic time it did (or the timeout passed: the database count shows the gap)."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = time.monotonic()
        if await _metric(proc, _ROWS) >= expected or now > deadline:
            return now
        await asyncio.sleep(0.1)


async def _watch_lag(proc: ServiceProcess, peak: list[int]) -> None:
    """The processor's consumer lag (all partitions summed), its peak kept in `peak[0]`."""
    while True:
        samples = await asyncio.to_thread(proc.metrics)
        lag = sum(v for k, v in samples.items() if k.startswith(_LAG))
        peak[0] = max(peak[0], int(lag))
        await asyncio.sleep(0.5)


async def _watch_alerts(
    consumer: AIOKafkaConsumer, seen: dict[tuple[str, datetime], float]
) -> None:
    async for record in consumer:
        now = time.monotonic()
        key = event_key(json.loads(record.value))
        if key is not None:
            seen.setdefault(key, now)


async def _wait_alerts(
    published: dict[tuple[str, datetime], float],
    seen: dict[tuple[str, datetime], float],
    timeout_s: float,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(k in seen for k in published):
            return
        await asyncio.sleep(0.1)


async def _count_stored(settings: Settings, report: Report) -> None:
    """Count each phase's rows at the source: the `readings` table."""
    con = await asyncpg.connect(settings.database_dsn)
    try:
        for p in report.phases:
            row = await con.fetchrow(
                "SELECT count(*) AS n, count(DISTINCT (device_id, metric, time)) AS d"
                " FROM readings WHERE device_id = ANY($1::text[]) AND time >= $2",
                p.devices,
                datetime.fromisoformat(p.since),
            )
            assert row is not None
            p.stored, p.stored_distinct = int(row["n"]), int(row["d"])
    finally:
        await con.close()


async def _cleanup(settings: Settings, names: BenchNames, rule_id: str) -> None:
    await cleanup_devices(settings, names.id_prefix)
    await cleanup_devices(settings, f"raw{names.id_prefix}")
    con = await asyncpg.connect(settings.database_dsn)
    try:
        await cleanup_alerts(con, rule_id, f"bench-alerts-{names.suffix}")
    finally:
        await con.close()


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None or value != value else format(value, spec)


def _print(report: Report) -> None:
    phases = Table(
        title=f"citywatch bench pipeline ({report.devices_per_kind * 4} devices, MQTT broker "
        f"{report.broker}; shares of {report.reference_rate:,.0f} msg/s)"
    )
    columns: list[tuple[str, Callable[[Phase], str]]] = [
        ("phase", lambda p: p.name),
        ("asked msg/s", lambda p: "max" if p.target_rate <= 0 else _fmt(p.target_rate)),
        ("stored msg/s", lambda p: _fmt(p.msg_per_s)),
        ("values/s", lambda p: _fmt(p.values_per_s)),
        ("values / message", lambda p: _fmt(p.values / p.messages if p.messages else None, ".1f")),
        ("box CPU-s", lambda p: _fmt(p.box_cpu_s, ".1f")),
        ("values / box CPU-s", lambda p: _fmt(p.values_per_box_cpu_s)),
        ("values / own CPU-s", lambda p: _fmt(p.values_per_own_cpu_s)),
        (
            "own CPU share",
            lambda p: " ".join(
                f"{name} {cpu / p.own_cpu_s:.0%}"
                for name, cpu in sorted(p.cpu_by_process.items(), key=lambda kv: -kv[1])
                if p.own_cpu_s and cpu / p.own_cpu_s >= 0.01
            ),
        ),
        (
            "of it JVM JIT CPU-s",
            lambda p: " ".join(f"{name} {cpu:.1f}" for name, cpu in sorted(p.jit_cpu_s.items())),
        ),
        ("stored / published", lambda p: f"{p.stored:,} / {p.values:,}"),
        (
            "publish->stored p50/p95/p99 ms",
            lambda p: (
                " / ".join(_fmt(p.latency_ms.get(k)) for k in ("p50", "p95", "p99"))
                if p.latency_ms
                else "-"
            ),
        ),
        (
            "gateway receive->stored p50/p99 ms",
            lambda p: (
                " / ".join(_fmt(p.received_ms.get(k)) for k in ("p50", "p99"))
                if p.received_ms
                else "-"
            ),
        ),
        (
            "publish->alert p50/p99 ms (n)",
            lambda p: (
                f"{_fmt(p.alert_ms.get('p50'))} / {_fmt(p.alert_ms.get('p99'))}"
                f" ({p.alerts[0]}/{p.alerts[1]})"
                if p.alert_ms
                else "-"
            ),
        ),
        (
            "peak lag / drain",
            lambda p: f"{p.peak_lag:,} / {p.drain_s:.1f}s" if p.drain_s is not None else "-",
        ),
    ]
    phases.add_column("measure")
    for p in report.phases:
        phases.add_column(p.name, justify="right")
    for title, fn in columns[1:]:
        phases.add_row(title, *(fn(p) for p in report.phases))
    console.print(phases)

    readings = (
        f"readings of {report.values_per_reading} values"
        if report.values_per_reading
        else "readings of every metric of their kind"
    )
    targets = Table(title=f"issue 11 targets (ratio = figure / target; {readings})")
    for title in ("measure", "figure", "target", "ratio", "met"):
        targets.add_column(title, justify="left" if title == "measure" else "right")
    for row in report.to_json()["targets"]:
        figure, target, ratio = row["figure"], row["target"], row["ratio"]
        met = (
            "-"
            if figure != figure
            else (
                "yes"
                if (figure >= target if row["direction"] == "min" else figure <= target)
                else "no"
            )
        )
        spec = ".2f" if target < 10 else ",.0f"
        targets.add_row(
            row["label"],
            _fmt(figure, spec),
            ("≥ " if row["direction"] == "min" else "≤ ") + _fmt(target, spec),
            _fmt(ratio, ".2f"),
            met,
        )
    console.print(targets)
    for stage, value in report.raw.items():
        console.print(f"raw {stage}: {value:,.0f}")

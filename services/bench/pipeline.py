"""`citywatch bench pipeline`: the pipeline's throughput, latency and memory, against the
raw limit of each of its stages measured in the same run on the same machine.

It runs on the local stack (started if needed) with its own topics, consumer group, MQTT
prefix and device ids, starts its own ingest and processor processes (so their peak RSS
is theirs alone), prints one table, and removes its rows afterwards. Figures only: on a
shared 2-core machine a threshold would flake, so none is asserted.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import asyncpg
from rich.console import Console
from rich.table import Table

from services.bench import stages
from services.bench.common import (
    BenchNames,
    cleanup_devices,
    prepare_stack,
    stop_all,
    wait_ready,
)
from services.common.settings import Settings
from services.supervisor import ServiceProcess
from simulators import Fleet, Message, Publisher, PublishStats

console = Console()


def run_bench(settings: Settings, *, rate: float, duration_s: float, per_kind: int) -> int:
    settings = prepare_stack(settings)
    names = BenchNames()
    names.ensure_topics(settings)
    try:
        return _run(settings, names, rate=rate, duration_s=duration_s, per_kind=per_kind)
    finally:
        asyncio.run(cleanup_devices(settings, names.id_prefix))
        asyncio.run(cleanup_devices(settings, f"raw{names.id_prefix}"))


def _run(
    settings: Settings,
    names: BenchNames,
    *,
    rate: float,
    duration_s: float,
    per_kind: int,
) -> int:
    suffix, id_prefix = names.suffix, names.id_prefix
    raw_n = 20_000
    with console.status("raw stage: Mosquitto pub -> sub ..."):
        mqtt_rate = stages.mqtt_pub_sub(settings, raw_n, per_kind=per_kind)
    with console.status("raw stage: aiokafka produce ..."):
        kafka_rate = asyncio.run(
            stages.kafka_produce(
                settings, raw_n, topic=f"bench.{suffix}.rejected", per_kind=per_kind
            )
        )
    with console.status("raw stage: asyncpg bulk insert ..."):
        db_rate = asyncio.run(
            stages.db_bulk_insert(settings, raw_n, per_kind=per_kind, id_prefix=f"raw{id_prefix}")
        )

    log_dir = settings.state_dir / "bench-logs"
    env = names.env()
    ingest = ServiceProcess("ingest", log_dir=log_dir, env=env, tag=suffix)
    processor = ServiceProcess("processor", log_dir=log_dir, env=env, tag=suffix)
    try:
        ingest.start()
        processor.start()
        asyncio.run(wait_ready(ingest, processor))
        fleet = Fleet(per_kind=per_kind, seed=5, prefix=f"bench{suffix}", id_prefix=id_prefix)
        expected = [0]
        published: list[PublishStats] = []

        def publish() -> None:
            def counted() -> Iterator[Message]:
                for msg in fleet.messages():
                    expected[0] += msg.rows
                    yield msg

            username, password = settings.mqtt_login("citywatch-simulator")
            with Publisher(
                settings.mqtt_services_host,
                settings.mqtt_services_port,
                client_id=f"citywatch-bench-fleet-{suffix}",
                username=username,
                password=password,
            ) as pub:
                published.append(pub.run(counted(), duration_s=duration_s, rate=rate))

        with console.status(
            f"pipeline: publishing for {duration_s:.0f}s at "
            f"{'max' if rate <= 0 else f'{rate:g}/s'} ..."
        ):
            start = time.monotonic()
            thread = threading.Thread(target=publish, daemon=True)
            thread.start()
            thread.join()
        pub = published[0]
        with console.status("pipeline: waiting until every reading is stored ..."):
            stored_rows, readings_stored, stored_at = asyncio.run(
                _wait_stored(settings, f"{id_prefix}%", expected[0], timeout_s=180)
            )
        stored_s = stored_at - start
        hist = processor.metrics()
        rss = {p.name: p.peak_rss_bytes() for p in (ingest, processor)}
    finally:
        stop_all((ingest, processor))

    p50, p95, p99 = (
        _quantile(hist, "citywatch_publish_to_stored_seconds", q) for q in (0.5, 0.95, 0.99)
    )
    pub_rate = pub.acked / pub.elapsed_s
    store_rate = readings_stored / stored_s
    slowest = min(mqtt_rate, kafka_rate, db_rate)
    table = Table(
        title=f"citywatch bench pipeline ({per_kind * 4} devices, {duration_s:.0f}s, "
        f"target {'max' if rate <= 0 else f'{rate:g} msg/s'})"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("note")
    table.add_row("readings published (MQTT acked)", f"{pub.acked:,}", f"{pub_rate:,.0f}/s")
    table.add_row(
        "readings stored", f"{readings_stored:,.0f}", f"{store_rate:,.0f}/s ({stored_rows:,} rows)"
    )
    table.add_row(
        "stored / published", f"{readings_stored / max(pub.acked, 1):.3f}", "1.000 = nothing lost"
    )
    table.add_row(
        "pipeline rate / publish rate",
        f"{store_rate / pub_rate:.2f}",
        "below 1: the pipeline lagged the fleet",
    )
    table.add_row(
        "latency p50 / p95 / p99",
        f"{p50 * 1000:,.0f} / {p95 * 1000:,.0f} / {p99 * 1000:,.0f} ms",
        "gateway receive -> DB commit (histogram estimate)",
    )
    for name, value in rss.items():
        table.add_row(f"peak RSS {name}", f"{value / 2**20:,.0f} MiB", "VmHWM")
    table.add_row("raw: Mosquitto pub->sub", f"{mqtt_rate:,.0f}/s", "QoS 1, one subscriber")
    table.add_row("raw: aiokafka produce", f"{kafka_rate:,.0f}/s", "idempotent, acks=all")
    table.add_row("raw: asyncpg bulk insert", f"{db_rate:,.0f}/s", "readings, batches of 2000")
    table.add_row(
        "pipeline / slowest raw stage",
        f"{store_rate / slowest:.2f}",
        "stored readings/s over the slowest stage alone",
    )
    console.print(table)
    return 0


async def _wait_stored(
    settings: Settings, pattern: str, expected: int, timeout_s: float
) -> tuple[int, int, float]:
    """Poll the row count until `expected` rows are stored (or the timeout passes);
    return (rows, readings, monotonic time the count was reached)."""
    con = await asyncpg.connect(settings.database_dsn)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            rows = int(
                await con.fetchval("SELECT count(*) FROM readings WHERE device_id LIKE $1", pattern)
            )
            now = time.monotonic()
            if rows >= expected or now > deadline:
                readings = int(
                    await con.fetchval(
                        "SELECT count(DISTINCT (device_id, time)) FROM readings"
                        " WHERE device_id LIKE $1",
                        pattern,
                    )
                )
                return rows, readings, now
            await asyncio.sleep(0.1)
    finally:
        await con.close()


def _quantile(samples: dict[str, float], name: str, q: float) -> float:
    """A quantile from a Prometheus histogram's cumulative buckets, interpolated linearly."""
    buckets: list[tuple[float, float]] = []
    for key, value in samples.items():
        if key.startswith(f'{name}_bucket{{le="'):
            bound = key.split('le="')[1].rstrip('"}')
            buckets.append((float("inf") if bound == "+Inf" else float(bound), value))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return 0.0
    target = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= target:
            if le == float("inf"):
                return prev_le
            span = count - prev_count
            return prev_le + (le - prev_le) * ((target - prev_count) / span if span else 0)
        prev_le, prev_count = le, count
    return prev_le

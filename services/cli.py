"""`citywatch`: one command line for the stack, the services, the simulator and the benchmarks."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from services.common.errors import CityWatchError
from services.common.logs import setup_logging
from services.common.settings import REPO_ROOT, Settings, load_settings

log = logging.getLogger("citywatch")

# The isolated stack `citywatch test` runs the suite against: its own state folder and
# ports, so the tests (which stop and kill parts of it) never touch a running demo.
TEST_ENV = {
    "CITYWATCH_STATE_DIR": str(REPO_ROOT / ".citywatch" / "test"),
    "CITYWATCH_MQTT_URL": "mqtt://127.0.0.1:21883",
    "CITYWATCH_KAFKA_BOOTSTRAP": "127.0.0.1:29092",
    "CITYWATCH_DATABASE_URL": "postgresql://citywatch@127.0.0.1:25432/citywatch",
}


# -- stack ------------------------------------------------------------------------------------
def cmd_stack(settings: Settings, args: argparse.Namespace) -> int:
    from services.stack import components

    only = set(args.only.split(",")) if args.only else None
    shape = {"kafka_brokers": args.kafka_brokers, "pg_standby": args.pg_standby or None}
    parts = [c for c in components(settings, **shape) if only is None or c.name in only]
    if args.action == "up":
        for c in parts:
            print(f"{c.name:<16} starting ...", flush=True)
            st = c.up()
            for m in c.statuses():
                print(f"{m.name:<16} up      {m.endpoint}  pid={m.pid or '-'}  {m.detail}")
            if len(c.statuses()) > 1:
                print(f"{c.name:<16} {st.detail}: CITYWATCH_KAFKA_BOOTSTRAP={st.endpoint}")
            if c.name == "postgres-standby":
                print(f"{c.name:<16} read API: CITYWATCH_DATABASE_READ_URL={st.endpoint}")
        print(f"state folder: {settings.state_dir}", flush=True)
    elif args.action == "down":
        for c in reversed(parts):
            c.down()
            print(f"{c.name:<16} stopped")
    else:
        worst = 0
        for st in (m for c in parts for m in c.statuses()):
            state = "up" if st.answers else ("running, not answering" if st.pid else "down")
            where = "" if st.managed else " (external)"
            print(
                f"{st.name:<16} {state:<8} {st.endpoint}{where}  pid={st.pid or '-'}  {st.detail}"
            )
            worst = worst or (0 if st.answers else 1)
        return worst
    return 0


# -- database ----------------------------------------------------------------------------------
def cmd_db(settings: Settings, args: argparse.Namespace) -> int:
    from services.common.db import migrate_database

    if args.action == "maintain":
        from services.common.maintenance import maintain_database

        r = asyncio.run(maintain_database(settings.database_dsn, settings.retention))
        print(f"storage path: {r.storage}; raw readings kept from {r.cutoffs.readings:%Y-%m-%d}")
        print(f"dropped: {', '.join(r.dropped) or 'nothing'}; deleted rows: {r.deleted_rows}")
        print(f"compressed: {len(r.compressed)} chunks; policies changed: {r.policies_changed}")
        return 0
    applied, path = asyncio.run(migrate_database(settings.database_dsn))
    print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")
    print(f"storage path: {path}")
    return 0


def cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    from services.common.kafka import TopicNames, ensure_topics, grant, topic_specs

    created = asyncio.run(ensure_topics(settings, topic_specs(settings)))
    asyncio.run(grant(settings, TopicNames.of(settings)))
    print(f"topics created: {', '.join(created) if created else 'none (all exist)'}")
    return 0


# -- services ----------------------------------------------------------------------------------
def _run_service(settings: Settings, name: str) -> int:
    from services.common.lifecycle import Service, serve

    def build() -> tuple[Service, float]:
        if name == "ingest":
            from services.ingest.gateway import IngestService

            return IngestService(settings), settings.ingest.graceful_timeout_s
        if name == "processor":
            from services.processor.writer import ProcessorService

            return ProcessorService(settings), settings.processor.graceful_timeout_s
        if name == "api":
            from services.api.service import ApiService

            return ApiService(settings), settings.api.graceful_timeout_s
        from services.alerts.service import AlertsService

        return AlertsService(settings), settings.alerts.graceful_timeout_s

    async def main() -> None:
        service, graceful_timeout_s = build()
        log.info("starting", extra={"service": name, "settings": settings.masked()})
        await serve(service, name=name, graceful_timeout_s=graceful_timeout_s)
        log.info("stopped", extra={"service": name})

    asyncio.run(main())
    return 0


def cmd_alerts(settings: Settings, args: argparse.Namespace) -> int:
    if args.action != "test":
        return _run_service(settings, "alerts")
    from services.alerts.delivery.rehearsal import print_report, run_rehearsal

    report = asyncio.run(run_rehearsal(settings, area=args.area, timeout_s=args.timeout))
    print_report(report)
    return 0 if report.ok else 1


# -- demo and bench (own modules) ------------------------------------------------------------
def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import timedelta

    from services.demo import DemoOptions, run_demo

    opts = DemoOptions(
        scenario=args.scenario,
        devices=args.devices,
        interval_s=args.interval,
        backfill=timedelta(minutes=args.backfill),
        seed=args.seed,
        faults=args.faults,
        prefix=args.prefix,
        id_prefix=args.id_prefix,
    )
    return run_demo(settings, opts)


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    # SIGTERM stops a bench as Ctrl-C does: it stops the services it started and removes
    # its devices and alerts. (Until 2026-12-05 a killed bench left both behind: its
    # services ran on, and /ops showed its 200 devices as offline.)
    from services.common.lifecycle import stop_like_ctrl_c

    stop_like_ctrl_c()
    if args.what == "broker":
        from services.bench.stages import run_bench_broker

        return run_bench_broker(
            settings,
            rates=(args.rate,) if args.rate > 0 else (200.0, 500.0, 1000.0),
            seconds=args.duration,
            topics=(1, args.per_kind * 4),
            ack_delays_ms=(0.0, 10.0),
        )
    if args.what == "alerts":
        from services.bench.alerts import run_bench_alerts

        return run_bench_alerts(
            settings,
            rate=args.rate,
            duration_s=args.duration,
            per_kind=args.per_kind,
            probes=args.probes,
        )
    from services.bench.pipeline import run_bench

    return run_bench(
        settings,
        rate=args.rate,
        duration_s=args.duration,
        per_kind=args.per_kind,
        phase_s=args.phase,
        burst_s=args.burst,
        warmup_s=args.warmup,
        raw=args.raw,
        json_path=args.json,
        values_per_reading=args.values_per_reading,
    )


def cmd_evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import timedelta

    from services.common.http_params import parse_time
    from services.common.lifecycle import stop_like_ctrl_c
    from services.evaluate import EvaluateOptions, run_evaluate
    from simulators.scenarios import parse_duration

    stop_like_ctrl_c()  # as `bench`: the services it starts stop with it
    duration = parse_duration(args.duration) if args.duration else None
    if args.hours:
        duration = timedelta(hours=args.hours)
    opts = EvaluateOptions(
        scenarios=tuple(s.strip() for s in args.scenarios.split(",") if s.strip()),
        cadences=tuple(parse_duration(c.strip()) for c in args.cadence.split(",") if c.strip()),
        duration=duration,
        devices=args.devices,
        seed=args.seed,
        speed=args.speed,
        faults=args.faults,
        start=parse_time("--start", args.start) if args.start else None,
        keep=args.keep,
    )
    return run_evaluate(settings, opts)


def cmd_schemas(settings: Settings, args: argparse.Namespace) -> int:
    """Write the JSON Schema files for device engineers into schemas/json/."""
    from schemas.export import schema_files

    out = REPO_ROOT / "schemas" / "json"
    out.mkdir(parents=True, exist_ok=True)
    for name, text in schema_files().items():
        (out / name).write_text(text, encoding="utf-8")
        print(f"wrote {out / name}")
    return 0


def cmd_fuzz(settings: Settings, args: argparse.Namespace) -> int:
    from services.fuzz import run_fuzz

    return run_fuzz(args.count, args.seed)


def cmd_test(settings: Settings, args: argparse.Namespace) -> int:
    """Run the suite against an isolated local stack that this command starts and stops."""
    env = {**os.environ, **TEST_ENV}
    os.environ.update(TEST_ENV)
    ts = load_settings()
    from services.stack import stack_down, stack_up

    print("test stack:", ", ".join(f"{k}={v}" for k, v in TEST_ENV.items()), flush=True)
    try:
        for st in stack_up(ts):
            print(f"  {st.name:<10} up  {st.endpoint}", flush=True)
        rc = subprocess.call(
            [sys.executable, "-m", "pytest", *args.pytest_args], env=env, cwd=REPO_ROOT
        )
    finally:
        if not args.keep_stack:
            stack_down(ts)
    return rc


# -- entry point -----------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="citywatch", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    st = sub.add_parser("stack", help="the local stack: Mosquitto, Kafka, PostgreSQL")
    st.add_argument("action", choices=["up", "down", "status"])
    st.add_argument(
        "--only", help="comma-separated parts: postgres,postgres-standby,mosquitto,kafka"
    )
    st.add_argument(
        "--kafka-brokers",
        type=int,
        help="up: a KRaft cluster of N brokers on the Kafka port and every second one after "
        "it (replication factor 3, min.insync.replicas 2 from 3 brokers); default: what the "
        "state folder holds, else 1",
    )
    st.add_argument(
        "--pg-standby",
        action="store_true",
        help="up: a streaming standby of PostgreSQL (CITYWATCH_DATABASE_READ_URL's port, "
        "else the primary's + 1) for the read API",
    )
    st.set_defaults(fn=cmd_stack)

    dbp = sub.add_parser("db", help="database tasks")
    dbp.add_argument(
        "action",
        choices=["migrate", "maintain"],
        help="maintain: retention and compression per CITYWATCH_RETENTION__* (run daily)",
    )
    dbp.set_defaults(fn=cmd_db)

    tp = sub.add_parser("topics", help="create CityWatch's Kafka topics on any cluster")
    tp.add_argument("action", choices=["ensure"])
    tp.set_defaults(fn=cmd_topics)

    for name, port in (("ingest", 8101), ("processor", 8102), ("alerts", 8103), ("api", 8104)):
        sp = sub.add_parser(name, help=f"run the {name} service (HTTP on {port})")
        sp.set_defaults(fn=lambda s, _a, n=name: _run_service(s, n))
    # `citywatch alerts` runs the service; `citywatch alerts test` rehearses delivery.
    alerts_parser = sub.choices["alerts"]
    alerts_parser.add_argument(
        "action",
        nargs="?",
        choices=["test"],
        help="test: send a Test alert and its Cancel through every channel",
    )
    alerts_parser.add_argument("--area", default="CityWatch test", help="area of the Test alert")
    alerts_parser.add_argument("--timeout", type=float, default=60.0, help="seconds per message")
    alerts_parser.set_defaults(fn=cmd_alerts)

    from simulators.cli import add_parser as add_simulate_parser

    add_simulate_parser(sub)

    demo = sub.add_parser(
        "demo",
        help="stack, services, a simulated city and a live view",
        description="Starts what is not running, registers a simulated Sihanoukville fleet, "
        "plays its last --backfill minutes at once and then live, and shows the flow until "
        "Ctrl-C. Settings (ports, topics) come from CITYWATCH_* as for every command.",
    )
    demo.add_argument("--scenario", default="normal-day", help="scenario name or YAML file")
    demo.add_argument("--devices", type=int, default=60, help="fleet size")
    demo.add_argument("--interval", type=float, default=10.0, help="seconds between readings")
    demo.add_argument("--backfill", type=float, default=120.0, help="minutes of history first")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--faults", type=float, default=1.0, help="scale of the fault rates")
    demo.add_argument("--prefix", default="citywatch", help="MQTT topic prefix of the devices")
    demo.add_argument("--id-prefix", default="", help="device id prefix")
    demo.set_defaults(fn=cmd_demo)

    bench = sub.add_parser("bench", help="benchmarks")
    bench.add_argument("what", choices=["pipeline", "alerts", "broker"])
    bench.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="alerts: messages/s of load (0 = as fast as it goes); pipeline: the rate the"
        " 25/50/75 %% phases are shares of (0 = the saturation rate the run measures);"
        " broker: the one rate to run (0 = 200, 500 and 1000 msg/s)",
    )
    bench.add_argument(
        "--duration",
        type=float,
        default=20.0,
        help="seconds of load (pipeline: saturation, SenML; broker: each run)",
    )
    bench.add_argument(
        "--phase", type=float, default=15.0, help="pipeline: seconds of each 25/50/75 %% phase"
    )
    bench.add_argument(
        "--burst",
        type=float,
        default=60.0,
        help="pipeline: seconds of the 3x burst (the issue's figure: 300)",
    )
    bench.add_argument(
        "--warmup",
        type=float,
        default=20.0,
        help="pipeline: seconds of unmeasured load first (full speed, then 25 %%), so that"
        " the brokers' JVMs have compiled their hot code (0: none)",
    )
    bench.add_argument(
        "--raw", action="store_true", help="pipeline: also each stage's raw limit alone"
    )
    bench.add_argument("--json", type=Path, help="pipeline: write the report as JSON here")
    bench.add_argument(
        "--per-kind", type=int, default=25, help="devices per kind (broker: 4x as many topics)"
    )
    bench.add_argument(
        "--probes", type=int, default=4, help="alerts: devices crossing and clearing the rule"
    )
    bench.add_argument(
        "--values-per-reading",
        type=int,
        default=3,
        help="pipeline: values in each fleet reading (issue 11 states its CPU target for 3;"
        " 0 = every metric of the device's kind, 5.5 on average)",
    )
    bench.set_defaults(fn=cmd_bench)

    ev = sub.add_parser(
        "evaluate",
        help="scenarios through the stack, flags and alerts scored against the truth",
        description="Plays each scenario at each cadence through MQTT, ingest, Kafka, the "
        "processor and the alerts service (own topics, groups, prefixes, device and rule ids), "
        "prints one table per scenario and cadence, and exits 1 when a hard target breaks.",
    )
    ev.add_argument("--scenarios", default="normal-day,monsoon-storm,haze-episode,flash-flood")
    ev.add_argument("--cadence", default="10s,5m", help="reporting intervals, comma-separated")
    ev.add_argument("--duration", default="", help="play only the first 90m, 2h ... of each")
    ev.add_argument("--hours", type=float, default=0.0, help="the same, in hours")
    ev.add_argument("--devices", type=int, default=40, help="fleet size")
    ev.add_argument("--seed", type=int, default=1)
    ev.add_argument("--speed", type=float, default=720.0, help="scenario s per s (0 = max)")
    ev.add_argument("--faults", type=float, default=1.0, help="scale of the fault rates")
    ev.add_argument(
        "--start",
        default="",
        help="first reading time (ISO 8601, e.g. 2026-11-21T00:00Z): a repeatable run; "
        "default: the scenario's own, before now",
    )
    ev.add_argument(
        "--keep",
        action="store_true",
        help="keep the run's devices, readings and alerts in the database afterwards",
    )
    ev.set_defaults(fn=cmd_evaluate)

    from services.registry.cli import add_parser as add_devices_parser

    add_devices_parser(sub)

    from services.registry.integrations_cli import add_parser as add_integrations_parser

    add_integrations_parser(sub)

    from services.alerts.tokens import add_parser as add_alerts_token_parser

    add_alerts_token_parser(sub)

    from services.grafana.cli import add_parser as add_grafana_parser

    add_grafana_parser(sub)

    schemas = sub.add_parser("schemas", help="JSON Schema files of the native payloads")
    schemas.add_argument("action", choices=["export"])
    schemas.set_defaults(fn=cmd_schemas)

    fuzz = sub.add_parser("fuzz", help="generated payloads against the adapters (must not raise)")
    fuzz.add_argument("--count", type=int, default=100_000, help="payloads to generate")
    fuzz.add_argument("--seed", type=int, default=1, help="same seed, same payloads")
    fuzz.set_defaults(fn=cmd_fuzz)

    test = sub.add_parser("test", help="run the test suite against its own local stack")
    test.add_argument("--keep-stack", action="store_true", help="leave the test stack running")
    test.add_argument("pytest_args", nargs=argparse.REMAINDER)
    test.set_defaults(fn=cmd_test)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        setup_logging(settings.log_level, settings.log_format)
        fn: Callable[[Settings, argparse.Namespace], int] = args.fn
        return fn(settings, args)
    except CityWatchError as exc:
        print(f"citywatch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""`citywatch simulate`: a simulated fleet, or a scenario on its own clock, published to MQTT.

`add_parser` wires the command into the `citywatch` command line (services/cli.py).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from services.common.settings import SERVICE_ID_PREFIX, Settings

if TYPE_CHECKING:
    from simulators import Publisher

__all__ = ["add_parser", "cmd_simulate"]


def _service_client_id(text: str) -> str:
    if not text.startswith(SERVICE_ID_PREFIX):
        raise argparse.ArgumentTypeError(f"{text!r} does not start with {SERVICE_ID_PREFIX!r}")
    return text


def _publisher(settings: Settings, client_id: str) -> Publisher:
    """A publisher on the simulator's own MQTT account (CITYWATCH_MQTT_USERNAME/PASSWORD
    win when set: see `Settings.mqtt_login`)."""
    from simulators import Publisher

    username, password = settings.mqtt_login("citywatch-simulator")
    return Publisher(
        settings.mqtt_services_host,
        settings.mqtt_services_port,
        client_id=client_id,
        username=username,
        password=password,
    )


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    """Publish a fleet: a scenario on its own clock (`--scenario`), or the plain fleet."""
    if args.scenario:
        return _simulate_scenario(settings, args)
    from simulators import Fleet, PublishStats

    fleet = Fleet(
        per_kind=args.per_kind, seed=args.seed, prefix=args.prefix, malformed_share=args.malformed
    )

    def progress(st: PublishStats) -> None:
        print(
            f"  {st.elapsed_s:6.1f}s  sent {st.sent:>8}  acked {st.acked:>8}  "
            f"({st.acked / max(st.elapsed_s, 1e-9):,.0f}/s)",
            flush=True,
        )

    print(
        f"simulating {len(fleet.devices)} devices ({args.per_kind} per kind) -> "
        f"{settings.mqtt_services}, rate {args.rate or 'max'}/s, seed {args.seed}"
    )
    with _publisher(settings, args.client_id) as pub:
        try:
            st = pub.run(
                fleet.messages(),
                count=args.count,
                duration_s=args.duration,
                rate=args.rate,
                progress=progress,
            )
        except KeyboardInterrupt:
            print("interrupted")
            return 130
    print(
        f"done: {st.sent} messages ({st.valid} valid, {st.malformed} malformed "
        f"{dict(st.by_reason)}), {st.acked} acknowledged by the broker, "
        f"{st.rate:,.0f} msg/s over {st.elapsed_s:.1f}s"
    )
    return 0


def _simulate_scenario(settings: Settings, args: argparse.Namespace) -> int:
    import json
    import time
    from collections.abc import Iterator
    from datetime import datetime
    from pathlib import Path

    from schemas.errors import ConfigError
    from simulators import Message, PublishStats
    from simulators.areas import load_city
    from simulators.formats import FORMATS, Format
    from simulators.run import ScenarioRun
    from simulators.scenarios import load_scenario

    scenario = load_scenario(args.scenario)
    formats: Format | dict[Format, float] = (
        {f: 1.0 for f in FORMATS} if args.format == "mixed" else args.format
    )
    try:
        start = datetime.fromisoformat(args.start) if args.start else None
    except ValueError as exc:
        raise ConfigError(f"--start {args.start!r} is not an ISO 8601 time") from exc
    if start is not None and start.tzinfo is None:
        raise ConfigError("--start needs a time zone, e.g. 2026-11-24T13:00:00+07:00")
    run = ScenarioRun(
        scenario,
        devices=args.devices,
        seed=args.seed,
        city=load_city(args.areas or settings.city_file),
        start=start,
        speed=args.speed,
        formats=formats,
        prefix=args.prefix,
        app=args.app,
        fault_scale=args.faults,
    )
    expect_path = Path(
        args.expect or settings.state_dir / "scenarios" / f"{scenario.name}.expected.json"
    )
    expect_path.parent.mkdir(parents=True, exist_ok=True)
    expected = run.expectations()
    expect_path.write_text(
        json.dumps(expected, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    minutes = scenario.duration.total_seconds() / 60
    wall = f"{minutes * 60 / args.speed:,.0f}s" if args.speed else "as fast as possible"
    print(
        f"scenario {scenario.name}: {len(run.devices)} devices in {run.city.name}, "
        f"{minutes:,.0f} min of scenario time from {run.start.isoformat()} at speed "
        f"{args.speed or 'max'} ({wall}), format {args.format}, seed {args.seed} "
        f"-> {settings.mqtt_services}"
    )
    print(f"expectations: {expect_path}", flush=True)

    def progress(st: PublishStats) -> None:
        at = run.stats.scenario_time
        shown = f"{at:%Y-%m-%d %H:%M}Z (+{at - run.start})" if at else "--"
        print(
            f"  {st.elapsed_s:6.1f}s  messages {st.sent:>8}  acked {st.acked:>8}  "
            f"{st.acked / max(st.elapsed_s, 1e-9):8,.0f}/s  scenario time {shown}",
            flush=True,
        )

    def paced() -> Iterator[Message]:
        began = time.monotonic()
        for msg in run.messages():
            if msg.sent_at is not None:
                run.clock.pace(msg.sent_at, began)
            yield msg

    with _publisher(settings, args.client_id) as pub:
        try:
            st = pub.run(paced(), progress=progress)
        except KeyboardInterrupt:
            print("interrupted")
            return 130
    s = run.stats
    print(
        f"done: {st.sent} messages ({st.valid} valid, {st.malformed} to be rejected), "
        f"{st.acked} acknowledged, {st.rate:,.0f} msg/s over {st.elapsed_s:.1f}s; "
        f"{s.readings} readings taken, {s.rows} rows expected"
    )
    print(f"  by kind:   {dict(sorted(s.by_kind.items()))}")
    print(f"  by format: {dict(sorted(s.by_format.items()))}")
    print(f"  faults:    {dict(sorted(s.faults.items()))}")
    for area in expected["flood"]:
        ups = [
            f"{c['level']} {c['time'][11:16]}Z"
            for c in area["crossings"]
            if c["direction"] == "above"
        ]
        if ups:
            print(f"  flood {area['area']:<22} " + ", ".join(ups))
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Wire `citywatch simulate ...` into the command line."""

    def fleet_args(sp: argparse.ArgumentParser, rate: float) -> None:
        sp.add_argument("--per-kind", type=int, default=5, help="devices of each kind")
        sp.add_argument("--rate", type=float, default=rate, help="messages per second (0 = max)")
        sp.add_argument("--seed", type=int, default=1)
        sp.add_argument("--malformed", type=float, default=0.0, help="share of malformed payloads")

    sim = sub.add_parser(
        "simulate",
        help="publish a simulated fleet to MQTT, or a scenario on its own clock",
        description="Without --scenario: --per-kind devices at --rate. With --scenario "
        "(normal-day, monsoon-storm, haze-episode or a YAML file): --devices placed in the "
        "city of --areas, scenario time --speed times faster than real time, and an "
        "expectations file (flood crossings per area) written before publishing.",
    )
    fleet_args(sim, 20.0)
    sim.add_argument("--count", type=int, help="stop after this many messages")
    sim.add_argument("--duration", type=float, help="stop after this many seconds")
    sim.add_argument("--prefix", default="citywatch", help="topic prefix")
    sim.add_argument(
        "--client-id",
        type=_service_client_id,
        default="citywatch-simulator",
        help="MQTT client id; must start with 'citywatch-' (no device can claim those)",
    )
    sim.add_argument("--scenario", help="scenario name or YAML file")
    sim.add_argument("--speed", type=float, default=360.0, help="scenario seconds per second")
    sim.add_argument("--devices", type=int, default=200, help="fleet size of a scenario")
    sim.add_argument(
        "--format",
        default="native",
        choices=["native", "senml", "ttn", "chirpstack", "mixed"],
        help="payload format of every device (mixed: a quarter each)",
    )
    sim.add_argument("--areas", help="city file (default: CITYWATCH_CITY_FILE, Sihanoukville)")
    sim.add_argument(
        "--start", help="scenario start, ISO 8601 with zone (default: fits before now)"
    )
    sim.add_argument(
        "--faults", type=float, default=1.0, help="scale of the fault rates (0 = none)"
    )
    sim.add_argument("--app", default="citywatch", help="LoRaWAN application id")
    sim.add_argument("--expect", help="where to write the expectations JSON")
    sim.set_defaults(fn=cmd_simulate)

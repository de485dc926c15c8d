"""`citywatch demo`: the whole platform on one machine, with a live view.

Starts the local stack (the parts not already running), applies migrations, registers a
simulated Sihanoukville fleet in the device registry (so every device has its area, as an
engineer plugging it in would record), starts the ingest, processor, alerts and read API
services as child processes, and plays the city: first the last `backfill` of its day as
fast as the broker takes it (so charts and rollups have history), then live, each reading
sent when its time comes. A live view shows the flow until Ctrl-C: a full-screen table on a
terminal, a status line every few seconds otherwise (a log file, CI, a service manager).
Then it stops everything it started, in reverse order, and leaves what was running before.

The fleet is `simulators.run.ScenarioRun` (the scenario's weather, tides, haze and device
faults) with every device reporting every `interval` instead of the scenario's minutes, so
that the live view and the map move.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import suppress
from datetime import UTC, datetime, timedelta

from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from schemas.device import DeviceProfile
from services.common import db
from services.common.db import migrate_database
from services.common.lifecycle import stop_like_ctrl_c
from services.common.settings import Settings, load_settings
from services.registry.store import upsert_devices
from services.stack import components
from services.supervisor import ServiceProcess
from simulators import Message, Publisher
from simulators.run import ScenarioRun
from simulators.scenarios import load_scenario

# The demo's city runs for a week of scenario time: long enough for any demo.
DEMO_SPAN = timedelta(days=7)
STATUS_EVERY_S = 5.0  # the status line's period when the output is not a terminal


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    """What `citywatch demo` was asked for (see services/cli.py for the flags)."""

    scenario: str = "normal-day"
    devices: int = 60
    interval_s: float = 10.0
    backfill: timedelta = timedelta(hours=2)
    seed: int = 1
    faults: float = 1.0
    prefix: str = "citywatch"  # MQTT topic prefix of the simulated devices
    id_prefix: str = ""  # device id prefix (two demos side by side, or a test)


def city_run(opts: DemoOptions, now: datetime) -> ScenarioRun:
    """The simulated city: the scenario at the demo's reporting interval, `backfill` before
    `now` to `DEMO_SPAN` after it."""
    scenario = load_scenario(opts.scenario)
    every = timedelta(seconds=opts.interval_s)
    scenario = dataclasses.replace(
        scenario,
        intervals={kind: every for kind in scenario.intervals},
        duration=max(scenario.duration, DEMO_SPAN),
    )
    return ScenarioRun(
        scenario,
        devices=opts.devices,
        seed=opts.seed,
        start=(now - opts.backfill).replace(microsecond=0),
        prefix=opts.prefix,
        id_prefix=opts.id_prefix,
        fault_scale=opts.faults,
    )


def in_real_time(messages: Iterator[Message], stop: threading.Event) -> Iterator[Message]:
    """Each message when its scenario time comes: the past at once (the backfill), the
    future as the wall clock reaches it. Readings never come from the future."""
    for msg in messages:
        if msg.sent_at is not None:
            wait = (msg.sent_at - datetime.now(UTC)).total_seconds()
            if wait > 0 and stop.wait(wait):
                return
        yield msg


async def _register(dsn: str, profiles: list[DeviceProfile]) -> None:
    con = await db.connect(dsn)
    try:
        await upsert_devices(con, profiles)
    finally:
        await con.close()


def run_demo(settings: Settings, opts: DemoOptions) -> int:
    # A closed terminal (SIGHUP) or a service manager's SIGTERM ends the demo the way Ctrl-C
    # does, through the `finally` below: otherwise the services and stack parts it started
    # would be left running without it.
    stop_like_ctrl_c()
    started_parts = []
    for part in components(settings):
        was_up = part.pid() is not None and part.answers()
        print(f"{part.name:<10} {'already up' if was_up else 'starting ...'}", flush=True)
        part.up()
        if not was_up:
            started_parts.append(part)
    settings = settings.reloaded()  # the passwords a first `stack up` just generated
    applied, path = asyncio.run(migrate_database(settings.database_dsn))
    print(f"migrations applied: {', '.join(applied) or 'none (up to date)'}; storage path: {path}")
    run = city_run(opts, datetime.now(UTC))
    asyncio.run(_register(settings.database_dsn, run.device_profiles()))
    print(
        f"fleet: {len(run.devices)} devices in {run.city.name} registered, scenario "
        f"{run.scenario.name}, a reading every {opts.interval_s:g}s each, "
        f"from {run.start:%H:%M}Z ({opts.backfill} of backfill), seed {opts.seed}",
        flush=True,
    )

    log_dir = settings.state_dir / "logs"
    # Malformed payloads and unknown devices are part of the simulation (its faults): the
    # demo's gateway accepts unregistered devices so that they show up as unprovisioned
    # instead of silently missing. Production rejects them (README, "Devices").
    # The pages say the data is simulated (issue 14): a demo is never taken for the city.
    env = {"CITYWATCH_INGEST__UNKNOWN_DEVICES": "accept", "CITYWATCH_API__SIMULATED_DATA": "true"}
    ports = {
        "ingest": settings.ingest.http_port,
        "processor": settings.processor.http_port,
        "alerts": settings.alerts.http_port,
        "api": settings.api.http_port,
    }
    procs = [
        ServiceProcess(name, log_dir=log_dir, port=port, env=env) for name, port in ports.items()
    ]
    stop = threading.Event()

    def simulate() -> None:
        # Settings were read before `stack up` may have generated the service accounts.
        username, password = load_settings().mqtt_login("citywatch-simulator")
        with Publisher(
            settings.mqtt_services_host,
            settings.mqtt_services_port,
            client_id=f"citywatch-demo-{opts.prefix}",
            username=username,
            password=password,
        ) as pub:
            pub.run(in_real_time(run.messages(), stop), stop=stop)

    try:
        for p in procs:
            p.start()
            print(f"{p.name:<10} started, pid {p.pid}, http://127.0.0.1:{p.port}, log {p.log_path}")
        asyncio.run(_wait_ready(procs))
        api = next(p for p in procs if p.name == "api")
        print(
            f"ready. Operations centre: {api.ops_url()}"
            f"   Residents: http://127.0.0.1:{api.port}/residents",
            flush=True,
        )
        sim = threading.Thread(target=simulate, name="simulator", daemon=True)
        sim.start()
        view = _live_view if sys.stdout.isatty() else _status_lines
        view(procs, run, stop)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        with suppress(OSError):  # the terminal may be gone (SIGHUP): clean up regardless
            print("\nstopping: simulator, services (draining), then the stack parts it started")
        for p in reversed(procs):
            p.stop()
        for part in reversed(started_parts):
            part.down()
    return 0


async def _wait_ready(procs: list[ServiceProcess]) -> None:
    await asyncio.gather(*(p.wait_ready(timeout=120) for p in procs))


class _Flow:
    """Messages and rows per second over the last few samples of the services' metrics."""

    def __init__(self) -> None:
        self.history: deque[tuple[float, float, float]] = deque(maxlen=6)

    def sample(self, im: dict[str, float], pm: dict[str, float]) -> tuple[float, float]:
        now = time.monotonic()
        received = im.get("citywatch_ingest_received_total", 0.0)
        stored = pm.get("citywatch_processor_rows_stored_total", 0.0)
        self.history.append((now, received, stored))
        t0, r0, s0 = self.history[0]
        dt = max(now - t0, 1e-9)
        return (received - r0) / dt, (stored - s0) / dt


def _live_view(procs: list[ServiceProcess], run: ScenarioRun, stop: threading.Event) -> None:
    by_name = {p.name: p for p in procs}
    ingest, processor, alerts = by_name["ingest"], by_name["processor"], by_name["alerts"]
    flow = _Flow()
    with Live(refresh_per_second=2, screen=True) as live:
        while not stop.is_set():
            im, pm = ingest.metrics(), processor.metrics()
            msg_rate, row_rate = flow.sample(im, pm)
            live.update(_render(procs, run, im, pm, msg_rate, row_rate, alerts))
            stop.wait(1.0)


def _status_lines(procs: list[ServiceProcess], run: ScenarioRun, stop: threading.Event) -> None:
    """The live view for a log file: one line every STATUS_EVERY_S seconds."""
    by_name = {p.name: p for p in procs}
    flow = _Flow()
    while not stop.wait(STATUS_EVERY_S):
        im, pm = by_name["ingest"].metrics(), by_name["processor"].metrics()
        msg_rate, row_rate = flow.sample(im, pm)
        ready = " ".join(
            f"{p.name}={'up' if p.http('/readyz')[0] == 200 else 'DOWN'}" for p in procs
        )
        at = run.stats.scenario_time
        print(
            f"{datetime.now(UTC):%H:%M:%S}Z  {ready}  {msg_rate:,.1f} msg/s in  "
            f"{row_rate:,.1f} rows/s stored  "
            f"rows {pm.get('citywatch_processor_rows_stored_total', 0):,.0f}  "
            f"city time {f'{at:%H:%M:%S}Z' if at else '--'}",
            flush=True,
        )


def _render(
    procs: list[ServiceProcess],
    run: ScenarioRun,
    im: dict[str, float],
    pm: dict[str, float],
    msg_rate: float,
    row_rate: float,
    alerts: ServiceProcess,
) -> Group:
    health = Table(title="Services", expand=True)
    for col in ("service", "ready", "checks", "pid"):
        health.add_column(col)
    for p in procs:
        status, body = p.http("/readyz")
        checks = ", ".join(
            f"{k}={'ok' if v else 'DOWN'}" for k, v in (body or {}).get("checks", {}).items()
        )
        health.add_row(
            p.name,
            Text("ready", "green") if status == 200 else Text("NOT READY", "red"),
            checks,
            str(p.pid),
        )

    flow = Table(title="Flow", expand=True)
    flow.add_column("measure")
    flow.add_column("value", justify="right")
    at = run.stats.scenario_time
    flow.add_row(
        "devices simulated",
        f"{len(run.devices)} in {run.city.name}, city time {f'{at:%H:%M:%S}Z' if at else '--'}",
    )
    flow.add_row("MQTT messages/s into ingest", f"{msg_rate:,.1f}")
    flow.add_row("rows/s stored", f"{row_rate:,.1f}")
    flow.add_row("messages received", f"{im.get('citywatch_ingest_received_total', 0):,.0f}")
    flow.add_row("readings to Kafka", f"{im.get('citywatch_ingest_readings_total', 0):,.0f}")
    flow.add_row("rows stored", f"{pm.get('citywatch_processor_rows_stored_total', 0):,.0f}")
    flow.add_row("in flight (unacked MQTT)", f"{im.get('citywatch_ingest_in_flight', 0):,.0f}")

    rejected = Table(title="Rejected payloads by reason", expand=True)
    rejected.add_column("reason")
    rejected.add_column("count", justify="right")
    prefix = 'citywatch_ingest_rejected_total{reason="'
    for key, value in sorted(im.items()):
        if key.startswith(prefix):
            rejected.add_row(key[len(prefix) : -2], f"{value:,.0f}")

    active = Table(title="Active alerts", expand=True)
    for col in ("severity", "device", "since", "alert"):
        active.add_column(col)
    _, body = alerts.http("/alerts?state=firing&limit=10")
    for a in (body or {}).get("alerts", []):
        active.add_row(
            a["severity"],
            a["device_id"],
            a["started_at"][11:19] + "Z",
            f"{a['title_en']}\n{a['title_km']}",
        )
    api = next(p for p in procs if p.name == "api")
    footer = Text(
        f"Operations centre: {api.ops_url()}   Residents: http://127.0.0.1:{api.port}/residents"
        "   Ctrl-C stops the demo and everything it started.",
        style="dim",
    )
    return Group(Panel(Group(health, flow)), Panel(Group(rejected, active)), footer)

"""`citywatch demo`: the whole platform on one machine, with a live terminal view.

Starts the local stack (the parts not already running), applies migrations, starts the
ingest, processor and alerts services as child processes, publishes a simulated
Sihanoukville at a steady rate, and shows a live view of the flow until Ctrl-C. Then it
stops everything it started, in reverse order, and leaves what was running before.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque

from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from services.common.db import migrate_database
from services.common.settings import Settings, load_settings
from services.stack import components
from services.supervisor import DEFAULT_PORTS, ServiceProcess
from simulators import Fleet, Publisher


def run_demo(settings: Settings, *, per_kind: int, rate: float, seed: int, malformed: float) -> int:
    started_parts = []
    for part in components(settings):
        was_up = part.pid() is not None and part.answers()
        print(f"{part.name:<10} {'already up' if was_up else 'starting ...'}", flush=True)
        part.up()
        if not was_up:
            started_parts.append(part)
    applied, path = asyncio.run(migrate_database(settings.database_dsn))
    print(f"migrations applied: {', '.join(applied) or 'none (up to date)'}; storage path: {path}")

    log_dir = settings.state_dir / "logs"
    # The simulated city's devices are not registered: the demo accepts unknown devices
    # (the processor records them as unprovisioned). Production rejects them.
    env = {"CITYWATCH_INGEST__UNKNOWN_DEVICES": "accept"}
    procs = [
        ServiceProcess(name, log_dir=log_dir, port=port, env=env)
        for name, port in DEFAULT_PORTS.items()
    ]
    stop = threading.Event()
    fleet = Fleet(per_kind=per_kind, seed=seed, malformed_share=malformed, episodes=True)

    def simulate() -> None:
        # Settings were read before `stack up` may have generated the service accounts.
        username, password = load_settings().mqtt_login("citywatch-simulator")
        with Publisher(
            settings.mqtt_host,
            settings.mqtt_port,
            client_id="citywatch-demo-fleet",
            username=username,
            password=password,
        ) as pub:
            pub.run(fleet.messages(), rate=rate, stop=stop)

    try:
        for p in procs:
            p.start()
            print(f"{p.name:<10} started, pid {p.pid}, http://127.0.0.1:{p.port}, log {p.log_path}")
        asyncio.run(_wait_ready(procs))
        sim = threading.Thread(target=simulate, name="simulator", daemon=True)
        sim.start()
        _live_view(procs, fleet, rate, stop)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        print("\nstopping: simulator, services (draining), then the stack parts the demo started")
        for p in reversed(procs):
            p.stop()
        for part in reversed(started_parts):
            part.down()
    return 0


async def _wait_ready(procs: list[ServiceProcess]) -> None:
    await asyncio.gather(*(p.wait_ready(timeout=120) for p in procs))


def _live_view(
    procs: list[ServiceProcess], fleet: Fleet, rate: float, stop: threading.Event
) -> None:
    by_name = {p.name: p for p in procs}
    ingest, processor, alerts = by_name["ingest"], by_name["processor"], by_name["alerts"]
    history: deque[tuple[float, float, float]] = deque(maxlen=6)
    with Live(refresh_per_second=2, screen=True) as live:
        while not stop.is_set():
            now = time.monotonic()
            im, pm = ingest.metrics(), processor.metrics()
            received = im.get("citywatch_ingest_received_total", 0.0)
            stored = pm.get("citywatch_processor_rows_stored_total", 0.0)
            history.append((now, received, stored))
            t0, r0, s0 = history[0]
            dt = max(now - t0, 1e-9)
            live.update(
                _render(
                    procs, fleet, rate, im, pm, (received - r0) / dt, (stored - s0) / dt, alerts
                )
            )
            stop.wait(1.0)


def _render(
    procs: list[ServiceProcess],
    fleet: Fleet,
    rate: float,
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
    flow.add_row("devices simulated", f"{len(fleet.devices)} (target {rate:g} msg/s)")
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
    footer = Text(
        "Operations centre: http://127.0.0.1:8104/ops   Residents: http://127.0.0.1:8104/residents"
        "   Ctrl-C stops the demo and everything it started.",
        style="dim",
    )
    return Group(Panel(Group(health, flow)), Panel(Group(rejected, active)), footer)

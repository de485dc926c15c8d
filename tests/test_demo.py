"""`citywatch demo` itself, run as a user runs it, with the operations centre page open.

The demo is started as a subprocess against the test stack (it finds Mosquitto, Kafka and
PostgreSQL already up, so it starts and stops none of them), under this test's topics,
groups, MQTT prefix, device ids and HTTP ports. Headless Chromium (tests/test_pages.py
`browser`) then opens the demo's /ops page and checks what the control room relies on:
every device of the running demo on the map, a device redrawn when its next reading
arrives, and an alert the demo's own alerts service raises, under the shipped rules, when
a river gauge reports a dangerous level. SIGTERM (a service manager, or a closed terminal's
SIGHUP, both handled as Ctrl-C) ends the demo and everything it started, with exit 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from schemas.city import load_city
from schemas.device import DeviceProfile
from services.registry.store import upsert_devices
from simulators import Publisher
from tests.fixtures_browser import attr, until
from tests.harness import REPO, Namespace, free_port, wait_until

pytestmark = pytest.mark.stack

DEMO_DEVICES = 12
DEMO_INTERVAL_S = 3  # each device reports this often, so the page has news every few seconds
# A gauge of the test's own at the Prek Toek Sap river mouth, whose shipped danger level
# (deploy/alerts/rules.yaml, area_levels) is 3.0 m.
DANGER_M = 3.4


@pytest.fixture
def demo(ns: Namespace, log_dir: Path) -> Iterator[dict[str, str]]:
    """A running `citywatch demo` under this test's names; SIGTERM at the end must stop it
    and the services it started, with exit 0."""
    ports = {name: free_port() for name in ("ingest", "processor", "alerts", "api")}
    env = {
        **os.environ,
        **ns.env(),
        **{f"CITYWATCH_{name.upper()}__HTTP_PORT": str(port) for name, port in ports.items()},
        "CITYWATCH_STATE_DIR": str(ns.settings.state_dir),
    }
    log_path = log_dir / f"demo-{ns.suffix}.log"
    cmd = [
        sys.executable, "-m", "services.cli", "demo",
        "--devices", str(DEMO_DEVICES), "--interval", str(DEMO_INTERVAL_S),
        "--backfill", "30", "--prefix", ns.prefix, "--id-prefix", ns.device_prefix,
    ]  # fmt: skip
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield {"api": f"http://127.0.0.1:{ports['api']}", "log": str(log_path)}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
            assert code == 0, f"the demo exited {code}: see {log_path}"
            for port in ports.values():  # every service it started is gone with it
                with pytest.raises(OSError):
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


async def test_ops_page_shows_a_running_demo_its_live_readings_and_a_new_alert(
    demo: dict[str, str],
    ns: Namespace,
    dbcon: asyncpg.Connection,
    publisher: Publisher,
    browser: webdriver.Chrome,
) -> None:
    api = demo["api"]

    async def api_ready() -> bool:
        return _ready(api)

    await wait_until(api_ready, timeout=120, what=f"the demo's API ready (log {demo['log']})")
    fleet = [
        r["device_id"]
        for r in await dbcon.fetch(
            "SELECT device_id FROM devices WHERE device_id LIKE $1 AND area IS NOT NULL",
            f"{ns.device_prefix}%",
        )
    ]
    assert len(fleet) == DEMO_DEVICES, "the demo registers its fleet with areas"
    # The gauge is registered by the test before the page loads, as an engineer would, in a
    # flood area where the demo's own fleet has no gauge: flood alerts are per area and a
    # gauge its area's other gauges contradict opens nothing (issue 14, corroboration).
    with_gauges = {
        r["area"]
        for r in await dbcon.fetch(
            "SELECT DISTINCT area FROM devices WHERE device_id LIKE $1 AND kind = 'flood'",
            f"{ns.device_prefix}%",
        )
    }
    # Nor one whose area-wide flood state another run on this database left open: alert
    # state is kept per rule and area (alert_cursors), shared by every alerts deployment
    # on one database, so a stage left at danger opens nothing new here.
    left_open = {
        r["device_id"].removeprefix("area:")
        for r in await dbcon.fetch(
            "SELECT device_id FROM alert_cursors WHERE rule_id = 'flood-level'"
            " AND device_id LIKE 'area:%' AND (state->>'stage')::int > 0"
        )
    }
    city = load_city()
    area = next(
        a for a in city.areas if a.flood_levels is not None and a.id not in with_gauges | left_open
    )
    gauge = f"{ns.device_prefix}area-gauge"
    await upsert_devices(
        dbcon,
        [DeviceProfile(device_id=gauge, kind="flood", area=area.id, lat=area.lat, lon=area.lon)],
    )

    async def backfill_stored() -> bool:
        return await ns.rows(dbcon) > DEMO_DEVICES * 30 * 60 // DEMO_INTERVAL_S

    await wait_until(backfill_stored, timeout=120, what="the demo's 30 minutes of history")

    # The address the demo prints is the one an operator follows: it carries the operator
    # token once, the page then keeps it in a cookie (services/common/http_auth.py).
    printed = re.search(
        r"Operations centre: (\S+)", await asyncio.to_thread(Path(demo["log"]).read_text)
    )
    assert printed is not None and printed[1].startswith(api + "/ops?token="), demo["log"]
    browser.get(printed[1])
    on_map = f'circle[data-device-id^="{ns.device_prefix}"]'

    def all_drawn(d: webdriver.Chrome) -> bool:
        drawn = {
            e.get_attribute("data-device-id") for e in d.find_elements(By.CSS_SELECTOR, on_map)
        }
        return set(fleet) | {gauge} <= drawn

    await until(browser, all_drawn, 30, "every device of the demo on the map")
    states = {e.get_attribute("data-state") for e in browser.find_elements(By.CSS_SELECTOR, on_map)}
    assert states & {"normal", "suspect"}, states  # the demo's devices are reporting

    # Live: the devices keep reporting; one of them is redrawn with a newer reading time
    # without a reload.
    first = fleet[0]
    css = f'circle[data-device-id="{first}"]'

    def drawn_time(d: webdriver.Chrome) -> datetime:
        text = attr(d, css, "data-last-time")
        return datetime.fromisoformat(text) if text else datetime.min.replace(tzinfo=UTC)

    seen = drawn_time(browser)
    await until(
        browser, lambda d: drawn_time(d) > seen, 30, f"a newer reading of {first} drawn live"
    )

    # A river gauge at a dangerous level: the demo's alerts service (shipped rules) raises
    # the flood alert, and the page lists it and colours the gauge, without a reload. Two
    # readings one interval apart: the shipped rules persist (min_readings 2), so one
    # reading opens nothing (issue 14).
    now = datetime.now(UTC).replace(microsecond=0)
    for at in (now - timedelta(seconds=DEMO_INTERVAL_S), now):
        body = {"time": at.isoformat(), "metrics": {"water_level_m": DANGER_M}}
        info = publisher.publish_raw(f"{ns.prefix}/flood/{gauge}/up", json.dumps(body).encode())
        info.wait_for_publish(10)

    area_alert = (
        "SELECT alert_id FROM alerts WHERE rule_id = 'flood-level' AND area = $1"
        " AND device_id IS NULL AND state = 'firing' AND origin = $2"
    )
    group = f"alerts-{ns.suffix}"

    async def alert_stored() -> bool:
        return bool(await dbcon.fetchval(area_alert, area.id, group))

    await wait_until(alert_stored, timeout=60, what=f"the flood alert of {area.id} stored")
    alert_id = str(await dbcon.fetchval(area_alert, area.id, group))
    await until(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, f'#alerts li[data-alert-id="{alert_id}"]'),
        30,
        "the new alert in the side list",
    )
    await until(
        browser,
        lambda d: attr(d, f'circle[data-device-id="{gauge}"]', "data-state") == "alert",
        10,
        "the gauge drawn in alert",
    )

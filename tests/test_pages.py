"""The operations centre page and the residents' page in a real headless Chromium.

Selenium drives Debian's `chromium` through Debian's `chromium-driver` (/usr/bin/chromedriver):
both come from the same source package, so driver and browser versions always match and
nothing is downloaded (Playwright would bring its own Node driver and expects the browser
builds it pins). Data is the simulator's normal day played once per module through the
pipeline (MQTT -> ingest -> Kafka -> processor -> PostgreSQL, see tests/test_api.py `seed`);
the live update comes over the page's own /stream connection.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from selenium.webdriver.common.by import By

from services.common.settings import Settings
from simulators import Publisher
from tests.fixtures_browser import attr, until
from tests.harness import Namespace, Services
from tests.test_api import produce, reading, seed

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
async def site(
    mod_services: Services,
    mod_dbcon: asyncpg.Connection,
    mod_ns: Namespace,
    mod_publisher: Publisher,
) -> dict[str, Any]:
    data = await seed(mod_services, mod_dbcon, mod_ns, mod_publisher)
    (proc,) = await mod_services.start("api")
    return {**data, "base": f"http://127.0.0.1:{proc.port}"}


async def test_ops_page_shows_devices_and_follows_readings_and_alerts_live(
    site, browser, dbcon: asyncpg.Connection
):
    ns = site["ns"]
    browser.get(site["base"] + "/ops")
    air = f'circle[data-device-id="{site["air"]}"]'
    await until(
        browser,
        lambda d: attr(d, air, "data-state") == "normal",
        20,
        "the air sensor drawn, normal",
    )
    assert attr(browser, f'circle[data-device-id="{site["probe"]}"]', "data-state") == "offline"
    assert attr(browser, f'circle[data-device-id="{site["bin"]}"]', "data-state") == "suspect"
    await until(
        browser, lambda d: d.find_element(By.ID, "live").text == "live", 20, "the stream connected"
    )

    # A new reading through Kafka: the page must redraw the device without a reload.
    t = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    await produce(
        ns,
        ns.readings_topic,
        [reading(site["air"], "air", t, site["where"][site["air"]], pm25_ugm3=41.0).to_kafka()],
    )
    await until(
        browser,
        lambda d: (attr(d, air, "data-last-time") or "").startswith(t.isoformat()[:19]),
        20,
        "the new reading's time on the device",
    )
    # Clicking the device shows its latest values.
    # (Other tests' devices may stand on the same spot of the shared database, so the
    # click is dispatched to our device's element rather than to a screen point.)
    browser.execute_script(
        "arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))",
        browser.find_element(By.CSS_SELECTOR, air),
    )
    await until(
        browser,
        lambda d: (
            "41.00" in d.find_element(By.CSS_SELECTOR, '#latest tr[data-metric="pm25_ugm3"]').text
        ),
        10,
        "the latest pm2.5 in the detail table",
    )

    # A new alert: stored by (what the alerts service does) and announced on the alerts topic.
    alert_id = uuid.uuid4()
    await dbcon.execute(
        """INSERT INTO alerts (alert_id, rule_id, device_id, kind, metric, severity, state, value,
                               last_value, threshold, started_at, title_en, title_km)
           VALUES ($1, 'test-pm25', $2, 'air', 'pm25_ugm3', 'warning', 'firing', 41, 41, 35.4,
                   $3, 'Unhealthy air (test)', 'ខ្យល់មិនល្អ (សាកល្បង)')""",
        alert_id,
        site["air"],
        t,
    )
    try:
        event = {
            "event_id": 1,
            "alert_id": str(alert_id),
            "transition": "firing",
            "device_id": site["air"],
            "kind": "air",
            "metric": "pm25_ugm3",
        }
        await produce(ns, ns.alerts_topic, [json.dumps(event).encode()])
        await until(
            browser,
            lambda d: d.find_elements(By.CSS_SELECTOR, f'#alerts li[data-alert-id="{alert_id}"]'),
            20,
            "the alert in the side list",
        )
        await until(browser, lambda d: attr(d, air, "data-state") == "alert", 10, "the device red")
    finally:
        await dbcon.execute(
            "UPDATE alerts SET state = 'resolved', resolved_at = now() WHERE alert_id = $1",
            alert_id,
        )


async def test_residents_page_speaks_khmer_first_and_english_on_request(
    site, browser, settings: Settings
):
    artifacts = settings.state_dir / "test-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(412, 1400)  # a phone's width
    browser.get(site["base"] + "/residents")
    await until(
        browser,
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "1",
        20,
        "areas loaded",
    )
    flood = 'section[data-area="prek-toek-sap-mouth"] dd[data-kind="flood"]'
    assert attr(browser, flood, "data-level") == "danger"
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "km"
    title = browser.find_element(By.ID, "title").text
    assert any("\u1780" <= c <= "\u17ff" for c in title), title  # Khmer script
    assert "ជម្លៀស" in browser.find_element(By.CSS_SELECTOR, flood).text  # "evacuate"
    browser.save_screenshot(str(artifacts / "residents-km.png"))

    switch = browser.find_element(By.ID, "lang")
    assert switch.get_attribute("lang") == "en" and switch.get_attribute("aria-label")
    switch.click()
    await until(
        browser,
        lambda d: d.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en",
        5,
        "English",
    )
    assert "Sihanoukville" in browser.find_element(By.ID, "title").text
    assert "high ground" in browser.find_element(By.CSS_SELECTOR, flood).text
    browser.save_screenshot(str(artifacts / "residents-en.png"))
    for lang in ("km", "en"):
        assert (artifacts / f"residents-{lang}.png").stat().st_size > 5_000

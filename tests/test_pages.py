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
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from services.common.settings import Settings
from simulators import Publisher
from tests.fixtures_browser import attr, open_ops, until
from tests.harness import Namespace, Services
from tests.test_api import get, produce, reading, seed

pytestmark = pytest.mark.stack

KM_MONTHS = "មករា|កុម្ភៈ|មីនា|មេសា|ឧសភា|មិថុនា|កក្កដា|សីហា|កញ្ញា|តុលា|វិច្ឆិកា|ធ្នូ"
KM_UPDATED = rf"[០-៩]{{1,2}} ({KM_MONTHS}) [០-៩]{{4}}, [០-៩]{{2}}:[០-៩]{{2}}$"


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
    open_ops(browser, site["base"])
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


async def test_residents_page_speaks_khmer_first_and_english_on_request_or_by_link(
    site, browser, settings: Settings
):
    artifacts = settings.state_dir / "test-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(412, 1400)  # a phone's width
    await _loaded(browser, site["base"], "/residents")
    flood = 'section[data-area="prek-toek-sap-mouth"] dd[data-kind="flood"]'
    assert attr(browser, flood, "data-level") == "danger"
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "km"
    title = browser.find_element(By.ID, "title").text
    assert any("\u1780" <= c <= "\u17ff" for c in title), title  # Khmer script
    assert "ជម្លៀស" in browser.find_element(By.CSS_SELECTOR, flood).text  # "evacuate"
    # The update time is spelt out, never a locale's d/m order: "12/4/2026, 2:26 PM" on
    # 4 December read as 12 April (a browser without Khmer locale data).
    updated = browser.find_element(By.ID, "updated").text
    assert re.search(KM_UPDATED, updated), updated
    # Numbers in Khmer digits throughout, as the alerts' Khmer texts write them: the sensor
    # counts too ("(១ ក្នុងចំណោម ១ ...)", not "(1 ក្នុងចំណោម 1 ...)").
    counts = browser.find_element(By.CSS_SELECTOR, flood).text
    assert "ក្នុងចំណោម" in counts and not re.search(r"[0-9]", counts), counts
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
    updated = browser.find_element(By.ID, "updated").text
    assert re.search(r"\d{1,2} [A-Z][a-z]+ \d{4}, \d{2}:\d{2}$", updated), updated
    browser.save_screenshot(str(artifacts / "residents-en.png"))
    for lang in ("km", "en"):
        assert (artifacts / f"residents-{lang}.png").stat().st_size > 5_000

    # A shared link names its language, and wins over the choice stored a moment ago.
    await _loaded(browser, site["base"], "/residents?lang=km")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "km"
    assert "ជម្លៀស" in browser.find_element(By.CSS_SELECTOR, flood).text


async def test_ops_page_says_a_refused_device_is_sending_not_silent(
    site, browser, dbcon: asyncpg.Connection
):
    """A device whose every message the gateway refuses (here: a clock hours ahead) reads
    "sending, but refused" with the reason, not only "offline" (services/ingest/refusals.py;
    the gateway's part is tests/test_device_refusals.py)."""
    probe = site["probe"]  # offline: nothing stored from it lately
    await dbcon.execute(
        "INSERT INTO device_refusals (device_id, reason, detail, last_at, count) "
        "VALUES ($1, 'time_in_future', 'is the device clock right?', now(), 42)",
        probe,
    )
    try:
        open_ops(browser, site["base"])
        await until(
            browser,
            lambda d: "sending, but refused" in d.find_element(By.ID, "summary").text,
            20,
            "the summary counting a refused device",
        )
        browser.execute_script(
            "arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))",
            browser.find_element(By.CSS_SELECTOR, f'circle[data-device-id="{probe}"]'),
        )
        await until(
            browser,
            lambda d: "42 messages" in d.find_element(By.ID, "detail-meta").text,
            10,
            "the refusal in the device's panel",
        )
        panel = browser.find_element(By.ID, "detail-meta").text
        assert "time_in_future" in panel and "clock" in panel, panel
    finally:
        await dbcon.execute("DELETE FROM device_refusals WHERE device_id = $1", probe)


def _screens(settings: Settings) -> Path:
    """Where the page tests leave their screenshots, for a person to look at."""
    path = settings.state_dir / "test-artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


async def _open_alert(
    dbcon: asyncpg.Connection,
    device: str,
    *,
    kind: str,
    metric: str | None,
    severity: str,
    rule_type: str,
    title_en: str,
    title_km: str,
    status: str = "Actual",
    audience: str = "public",
) -> uuid.UUID:
    """An open alert as the alerts service stores it (what the pages read), with its rule's
    audience (offline and stuck rules default to `operators`)."""
    alert_id = uuid.uuid4()
    await dbcon.execute(
        """INSERT INTO alerts (alert_id, rule_id, device_id, kind, metric, severity, state,
                               value, last_value, threshold, started_at, title_en, title_km,
                               rule_type, status, audience)
           VALUES ($1, $2, $3, $4, $5, $6, 'firing', 1, 1, 1, now(), $7, $8, $9, $10, $11)""",
        alert_id,
        f"test-{alert_id.hex[:8]}",
        device,
        kind,
        metric,
        severity,
        title_en,
        title_km,
        rule_type,
        status,
        audience,
    )
    return alert_id


async def _loaded(browser: webdriver.Chrome, base: str, path: str) -> None:
    browser.get(base + path)
    await until(
        browser,
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "1",
        20,
        "areas loaded",
    )


async def test_residents_area_status_follows_an_active_flood_danger_and_hides_device_health(
    site, browser, dbcon: asyncpg.Connection, settings: Settings
):
    """Under an active "Flood danger" for Mittapheap, Mittapheap's flooding status is danger
    in both languages although its gauge reads normal; a device-offline alert and an
    operators-audience alert (a crew's task) never reach residents; an Exercise alert says
    so in both languages; water is named for what is measured, never drinking water."""
    tag = uuid.uuid4().hex[:6]
    flood = 'section[data-area="mittapheap"] dd[data-kind="flood"]'
    ids = [
        await _open_alert(
            dbcon, site["flood2"], kind="flood", metric="water_level_m", severity="danger",
            rule_type="levels", title_en=f"Flood danger {tag}", title_km=f"គ្រោះថ្នាក់ទឹកជំនន់ {tag}",
        ),
        await _open_alert(
            dbcon, site["probe"], kind="water", metric=None, severity="advisory",
            rule_type="offline", title_en=f"Device offline {tag}", title_km=f"ឧបករណ៍ដាច់ {tag}",
            audience="operators",
        ),
        await _open_alert(
            dbcon, site["air2"], kind="air", metric="pm25_ugm3", severity="warning",
            rule_type="aqi", title_en=f"Unhealthy air {tag}", title_km=f"ខ្យល់មិនល្អ {tag}",
            status="Exercise",
        ),
        # an environmental metric whose rule is for operators (a crew's task): not shown
        await _open_alert(
            dbcon, site["probe"], kind="water", metric="turbidity_ntu", severity="advisory",
            rule_type="threshold", title_en=f"Crew task {tag}", title_km=f"ការងារក្រុម {tag}",
            audience="operators",
        ),
    ]  # fmt: skip
    try:
        browser.set_window_size(412, 1600)
        await _loaded(browser, site["base"], "/residents")
        assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "km"
        for lang in ("km", "en"):
            if lang == "en":
                browser.find_element(By.ID, "lang").click()
                await until(
                    browser,
                    lambda d: d.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en",
                    5,
                    "English",
                )
            assert attr(browser, flood, "data-level") == "danger"
            assert attr(browser, flood, "data-by-alert") == "1"  # the gauge itself reads normal
            text = browser.find_element(By.CSS_SELECTOR, flood).text
            assert ("high ground" if lang == "en" else "ជម្លៀស") in text, text
            warnings = browser.find_element(By.ID, "warning-list").text
            assert tag in warnings  # the flood and the exercise alerts are listed
            assert f"offline {tag}" not in warnings and f"ដាច់ {tag}" not in warnings
            assert f"task {tag}" not in warnings and f"ក្រុម {tag}" not in warnings
            exercise = browser.find_element(
                By.XPATH, f'//li[@data-status="Exercise"][contains(., "{tag}")]'
            ).text
            assert ("EXERCISE — not a real alert" if lang == "en" else "សមយុទ្ធ") in exercise
            # the site's water (a probe at Mittapheap, not a registered drinking-water point)
            # is named for what it measures; other tests' devices elsewhere in the shared
            # registry may be drinking-water points, so look at this area's section
            here = browser.find_element(By.CSS_SELECTOR, 'section[data-area="mittapheap"]').text
            assert "drinking" not in here.lower() and "ទឹកផឹក" not in here
            browser.save_screenshot(str(_screens(settings) / f"residents-alerts-{lang}.png"))
        water = 'section[data-area="mittapheap"] dd[data-kind="water"]'
        label = browser.find_element(By.CSS_SELECTOR, water).find_element(
            By.XPATH, "preceding-sibling::dt[1]"
        )
        assert label.text == "River water"  # Mittapheap is a district: river water
        # Litter is counted by beach stations on beaches and by booms elsewhere: an estuary
        # boom must not read "The beach is clean" while crews are told to empty it.
        _, body, _ = await get(site["base"] + "/areas", token=False)
        types = {a["id"]: a["type"] for a in body["areas"]}
        seen: dict[bool, int] = {True: 0, False: 0}
        for dd in browser.find_elements(By.CSS_SELECTOR, 'dd[data-kind="litter"]'):
            section = dd.find_element(By.XPATH, "ancestor::section[1]").get_attribute("data-area")
            dt = dd.find_element(By.XPATH, "preceding-sibling::dt[1]").text
            beach = types[section] == "beach"
            seen[beach] += 1
            assert dt == ("Beach litter" if beach else "Litter at the boom"), (section, dt)
            assert beach or "beach" not in dd.text.lower(), (section, dd.text)
        assert seen[False], seen  # the seeded fleet's Mittapheap bin, at least
    finally:
        await dbcon.execute(
            "UPDATE alerts SET state = 'resolved', resolved_at = now() WHERE alert_id = ANY($1)",
            ids,
        )


async def test_ops_map_opens_fitted_to_the_devices_and_lists_alerts_by_name(
    site, browser, dbcon: asyncpg.Connection, settings: Settings
):
    """Every device on the city's sheet is inside the map as it opens; the alerts list names
    the device (its registry name) and never shows "null" (an offline alert has no metric)."""
    tag = uuid.uuid4().hex[:6]
    await dbcon.execute(
        "UPDATE devices SET name = $2 WHERE device_id = $1", site["probe"], f"Probe {tag}"
    )
    offline = await _open_alert(
        dbcon, site["probe"], kind="water", metric=None, severity="advisory",
        rule_type="offline", title_en=f"Device offline {tag}", title_km=f"ឧបករណ៍ដាច់ {tag}",
        status="Exercise", audience="operators",
    )  # fmt: skip
    try:
        browser.set_window_size(1280, 900)
        open_ops(browser, site["base"])
        await until(
            browser,
            lambda d: d.find_element(By.ID, "map").get_attribute("data-fitted"),
            20,
            "the map fitted to the devices",
        )
        item = await until(
            browser,
            lambda d: d.find_elements(By.CSS_SELECTOR, f'#alerts li[data-alert-id="{offline}"]'),
            20,
            "the offline alert listed",
        )
        text = item[0].text
        assert f"Probe {tag}" in text and "EXERCISE" in text, text
        assert "null" not in browser.find_element(By.ID, "alerts").text
        # Day and month name, 24-hour clock: never "12/4/2026, 12:49:01 PM" (4 December).
        assert re.search(r"since \d{1,2} [A-Z][a-z]{2} \d{4}, \d{2}:\d{2}:\d{2}", text), text
        assert browser.find_element(By.ID, "exercise").is_displayed()
        # The map is inside the window: a map taller than the window shows its fitted view
        # only in part (seen in the demo: the top fifth of the city, four devices of sixty).
        overflow = browser.execute_script(
            """const m = document.getElementById('map').getBoundingClientRect();
               return [m.bottom - window.innerHeight, m.right - window.innerWidth];"""
        )
        assert max(overflow) <= 1, overflow
        # Where each of our devices is drawn, against the map's visible rectangle.
        outside = browser.execute_script(
            """const m = document.getElementById('map').getBoundingClientRect();
               return arguments[0].filter((id) => {
                 const c = document.querySelector(`circle[data-device-id="${id}"]`);
                 if (!c) return true;
                 const r = c.getBoundingClientRect();
                 const x = r.left + r.width / 2, y = r.top + r.height / 2;
                 return x < m.left || x > m.right || y < m.top || y > m.bottom;
               });""",
            list(site["where"]),
        )
        assert outside == []
        # ... and the view is the devices' extent, not the whole sheet with them in a corner:
        # the drawn devices span most of the map's width or height.
        span = browser.execute_script(
            """const m = document.getElementById('map').getBoundingClientRect();
               const rs = [...document.querySelectorAll('#devices circle')]
                 .map((c) => c.getBoundingClientRect())
                 .filter((r) => r.left >= m.left && r.right <= m.right
                                && r.top >= m.top && r.bottom <= m.bottom);
               const xs = rs.map((r) => r.left), ys = rs.map((r) => r.top);
               return Math.max((Math.max(...xs) - Math.min(...xs)) / m.width,
                               (Math.max(...ys) - Math.min(...ys)) / m.height);"""
        )
        assert span > 0.5, span
        browser.save_screenshot(str(_screens(settings) / "ops.png"))
    finally:
        await dbcon.execute(
            "UPDATE alerts SET state = 'resolved', resolved_at = now() WHERE alert_id = $1",
            offline,
        )

"""The headless browser the page tests drive, and helpers for opening and reading a live page.

Selenium drives Debian's `chromium` through Debian's `chromium-driver`
(/usr/bin/chromedriver): same source package, so versions match and nothing is
downloaded. Registered from tests/conftest.py (`pytest_plugins`).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from services.common.http_auth import operator_token
from services.common.settings import load_settings


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    profile = tempfile.mkdtemp(prefix="citywatch-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def open_ops(driver: webdriver.Chrome, base: str) -> None:
    """Open the operations centre as an operator does: `/ops?token=` once, which sets the
    page's cookie and redirects to `/ops` (services/common/http_auth.py)."""
    driver.get(f"{base}/ops?token={quote(operator_token(load_settings()), safe='')}")


async def until(
    driver: webdriver.Chrome, cond: Callable[[webdriver.Chrome], Any], timeout: float, what: str
) -> Any:
    """Wait for a DOM condition with a deadline (WebDriverWait polls the page). The live page
    redraws as readings arrive, so an element found during one check may be gone by the time
    it is read: that check simply polls again."""
    wait = WebDriverWait(
        driver, timeout, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)
    )
    return await asyncio.to_thread(wait.until, cond, f"timed out waiting for: {what}")


def attr(driver: webdriver.Chrome, css: str, name: str) -> str | None:
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].get_attribute(name) if found else None

"""The browser for tests/console: Debian's headless chromium through chromium-driver, never a downloaded one.

Nothing here is skipped: without chromium the tests fail and say what to install (`scripts/test` installs it).
With `TAILOR_SCREENSHOTS=1`, `screenshot(browser, page)` saves the page as docs/console/<page>.png.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
WIDTH, HEIGHT = 1280, 900


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    """A headless chromium for the module's tests (each test signs in afresh: cookies are cleared first)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not (p.is_file() and os.access(p, os.X_OK))]
    if missing:
        pytest.fail(
            f"tests/console needs Debian's chromium and its driver: {', '.join(missing)} not found. "
            "Install them with `sudo apt-get install chromium chromium-driver` (scripts/test does).",
            pytrace=False,
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-extensions",
        "--no-first-run",
        "--password-store=basic",
        f"--window-size={WIDTH},{HEIGHT}",
    ):
        options.add_argument(arg)
    # the driver's path is given, so selenium-manager never runs (and never downloads a browser)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: webdriver.Chrome, page: str) -> None:
    """With TAILOR_SCREENSHOTS=1: the whole page (not only the window) as docs/console/<page>.png."""
    if os.environ.get("TAILOR_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    # a viewport as tall as the page (a window that tall is clamped to the headless screen)
    metrics = {"width": WIDTH, "height": max(HEIGHT, height), "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        driver.save_screenshot(str(SCREENSHOTS / f"{page}.png"))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

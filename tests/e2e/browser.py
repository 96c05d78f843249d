"""A real headless Chromium (Debian's chromium + chromium-driver) driven by selenium."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def screenshot_verdict(
    url: str, path: Path, *, width: int = 412, height: int = 915, time_zone: str | None = None
) -> tuple[str, Path]:
    """Open ``url`` at a phone's viewport (in ``time_zone``, when given), wait for the verdict banner,
    save a screenshot; return the banner's rendered text and the screenshot's path. With a time zone,
    also wait until the page's script has sent it (its background request has completed)."""
    profile = tempfile.mkdtemp(prefix="shelfproof-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(30)
        if time_zone:
            driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": time_zone})
        driver.get(url)
        banner = WebDriverWait(driver, 20).until(expected_conditions.visibility_of_element_located((By.ID, "verdict")))
        text = banner.text.strip()
        if time_zone:
            WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.body.dataset.tzSent === '1'"))
        path.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(path))
        return text, path
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)

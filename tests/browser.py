"""Headless Debian chromium driven by selenium through Debian's chromium-driver; nothing is downloaded.

Outside CI a missing browser skips the test with the reason; with CI=true it fails, so CI cannot
pass by skipping the report's browser tests.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser")
INSTALL_HINT = "apt-get install -y chromium chromium-driver"


def missing(reason: str) -> None:
    """Skip with `reason`, or fail under CI (CI=true), where every tool is installed on purpose."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: required here)")
    pytest.skip(reason)


@contextmanager
def headless_chromium(width: int = 1200, height: int = 900):
    """A selenium WebDriver on headless chromium that records the browser console."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium is not installed: pip install '.[test]'")
    browser = next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)
    driver_path = shutil.which("chromedriver")
    if browser is None or driver_path is None:
        missing(f"chromium or chromedriver not found: {INSTALL_HINT}")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={width},{height}", "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()

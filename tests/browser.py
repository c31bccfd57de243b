"""Headless Debian chromium driven by selenium + chromedriver, shared by the browser tests (the leaderboard page,
the run report).

Nothing is downloaded: the browser and the driver are /usr/bin/chromium and /usr/bin/chromedriver
(`bash scripts/browser-deps.sh` installs them and selenium). Without them a browser test FAILS, so that CI
cannot pass it silently; set ORT_BENCH_ALLOW_NO_BROWSER=1 to skip it instead on a machine without one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--window-size=1400,1000")


def missing() -> str | None:
    """What the browser tests lack on this machine, or None."""
    gone = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.isfile(p) and os.access(p, os.X_OK))]
    try:
        import selenium  # noqa: F401
    except ImportError:
        gone.append("the selenium Python package")
    return ", ".join(gone) or None


def chromium(profile: Path) -> Iterator[Any]:
    """A headless chromium WebDriver with its profile in `profile`, quit (and the profile removed) after use;
    fails the test (or skips it, with ORT_BENCH_ALLOW_NO_BROWSER=1) on a machine without one."""
    gone = missing()
    if gone:
        msg = (f"the browser test needs {gone}: run `bash scripts/browser-deps.sh` (Debian chromium, "
               "chromium-driver and selenium)")
        if os.environ.get("ORT_BENCH_ALLOW_NO_BROWSER") == "1":
            pytest.skip(msg + " [skipped: ORT_BENCH_ALLOW_NO_BROWSER=1]")
        pytest.fail(msg, pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def severe_errors(driver: Any) -> list[str]:
    """The browser console's errors since the last call (a CSP violation, a failed load)."""
    return [m["message"] for m in driver.get_log("browser") if m.get("level") == "SEVERE"]

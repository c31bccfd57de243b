"""The leaderboard page in a real browser: Debian's headless chromium driven by selenium + chromedriver
(`tests/browser.py`: nothing downloaded; without the browser this test FAILS, unless
ORT_BENCH_ALLOW_NO_BROWSER=1 skips it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from browser import chromium, severe_errors
from test_leaderboard import EVIL_METHOD, populate  # tests/ is on sys.path: shared builders

from ort_bench.board.leaderboard import build_leaderboard

pytestmark = pytest.mark.usefixtures("v3_unpinned")  # small runs; the pinning: tests/test_pinned.py

@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    yield from chromium(tmp_path_factory.mktemp("chromium-profile"))  # tests/browser.py: shared with the report


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory, v3_unpinned) -> tuple[Path, list[dict]]:
    tmp = tmp_path_factory.mktemp("lb-browser")
    root = tmp / "leaderboards"
    populate(root, tmp)
    out = build_leaderboard(root=root)
    entries = json.loads((Path(out["out"]) / "leaderboard.json").read_text())["entries"]
    return Path(out["out"]) / "index.html", entries


def _names(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [tr.get_attribute("data-name") for tr in driver.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")]


def _header(driver, label: str):
    from selenium.webdriver.common.by import By

    for th in driver.find_elements(By.CSS_SELECTOR, "#leaderboard thead th"):
        if th.text.startswith(label):
            return th
    raise AssertionError(f"no column header {label!r}")


def test_page_rows_sorting_and_escaping_in_chromium(browser, page):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    path, entries = page
    browser.get(path.resolve().as_uri())
    assert "ort-bench leaderboard" in browser.title

    # the rows, in leaderboard order (ORT score, best first), with their numbers
    assert _names(browser) == [e["name"] for e in entries] and len(entries) == 4
    assert _header(browser, "ORT score").get_attribute("aria-sort") == "descending"
    first = browser.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")[0]
    assert first.find_elements(By.TAG_NAME, "td")[1].text == entries[0]["name"]

    # sort by form gap (↓: lower is better): best first, then reversed on a second click
    gap = {e["name"]: e["form_gap"] for e in entries}
    by_gap = sorted(gap, key=lambda n: gap[n])
    th = _header(browser, "Form gap")
    assert "↓" in th.text
    th.click()
    assert th.get_attribute("aria-sort") == "ascending"
    got = _names(browser)
    assert [gap[n] for n in got] == sorted(gap.values()) and set(got) == set(by_gap)
    th.click()
    assert th.get_attribute("aria-sort") == "descending"
    assert [gap[n] for n in _names(browser)] == sorted(gap.values(), reverse=True)

    # sort by a per-form efficacy column (↑: higher is better first)
    eff = {e["name"]: e["forms"]["mcq"]["efficacy"] for e in entries}
    _header(browser, "E mcq").click()
    assert [eff[n] for n in _names(browser)] == sorted(eff.values(), reverse=True)

    # a text column sorts A-Z
    _header(browser, "Name").click()
    assert _names(browser) == sorted(e["name"] for e in entries)

    # user text shows as text: no alert, no injected element, only the page's own script
    weak = browser.find_element(By.CSS_SELECTOR, 'tr[data-name="weak"]')
    assert weak.find_elements(By.TAG_NAME, "td")[2].text == EVIL_METHOD
    assert not browser.find_elements(By.CSS_SELECTOR, "#leaderboard img")
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 1
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018
    assert browser.find_element(By.CSS_SELECTOR, "#heatmap svg").is_displayed()
    errors = severe_errors(browser)
    assert not errors, errors

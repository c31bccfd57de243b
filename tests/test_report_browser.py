"""The run report in a real browser (Debian's headless chromium, `tests/browser.py`): the plots render (a
screenshot of each has many non-white pixels and the plot's own colours), hostile text stays text, and the page
logs no error (a Content-Security-Policy violation would).

`ORT_BENCH_REPORT_PNG=docs/report.png pytest tests/test_report_browser.py` also writes the README's screenshot
(the top of the real v3 NPO entry's report).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import chromium, severe_errors
from test_report import EVIL_FOLDER, EVIL_OUTPUT, EVIL_PROMPT, REAL, make_experiment, make_hostile

from ort_bench.board.report import build_report
from ort_bench.board.report_plots import MEASURED, PLACEBO_BAND, WORST

README_SHOT = os.environ.get("ORT_BENCH_REPORT_PNG")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from chromium(tmp_path_factory.mktemp("chromium-profile"))


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("report-pages")
    return {
        "real": Path(build_report(REAL, out=tmp / "real.html")["out"]),
        "hostile": Path(build_report(make_hostile(tmp), out=tmp / "hostile.html")["out"]),
        "attacks": Path(build_report(make_experiment(tmp) / "unl-eval", out=tmp / "attacks.html")["out"]),
    }


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def plot_pixels(driver: Any, selector: str) -> tuple[Any, dict[tuple[int, int, int], int]]:
    """Screenshot of the plot element (scrolled into view) and the count of each colour in it."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    el = driver.find_element(By.CSS_SELECTOR, selector)
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", el)
    assert el.is_displayed()
    assert el.size["width"] > 300 and el.size["height"] > 120, el.size
    img = Image.open(io.BytesIO(el.screenshot_as_png)).convert("RGB")
    assert img.width > 300 and img.height > 120
    return img, {colour: n for n, colour in img.getcolors(maxcolors=1 << 20)}


def near(colours: dict[tuple[int, int, int], int], target: str, tol: int = 24) -> int:
    want = _rgb(target)
    return sum(n for c, n in colours.items() if max(abs(a - b) for a, b in zip(c, want, strict=True)) <= tol)


def non_white(img: Any, colours: dict[tuple[int, int, int], int]) -> float:
    return 1 - sum(n for c, n in colours.items() if min(c) >= 245) / (img.width * img.height)


def test_forest_plot_renders_in_chromium(browser, pages):
    from selenium.webdriver.common.by import By

    browser.get(pages["real"].resolve().as_uri())
    assert browser.title.startswith("ort-bench report: embedded-npo")
    img, colours = plot_pixels(browser, "#forest svg")
    assert non_white(img, colours) > 0.05, "the plot drew something"
    assert len(colours) > 50, "anti-aliased lines, bands and text: many colours"
    assert near(colours, WORST) > 40, "the worst form's point and interval, in red"
    assert near(colours, MEASURED) > 150, "the other forms' points and intervals, in blue"
    assert near(colours, PLACEBO_BAND, tol=6) > 2000, "the placebo's bands"
    texts = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#forest svg text")]
    assert "cloze (worst)" in texts and "qa_paraphrase" in texts, texts[:20]
    img, colours = plot_pixels(browser, "#gap svg")
    assert non_white(img, colours) > 0.05
    # the worst form's items are open, the others folded; nothing from elsewhere, no script
    open_forms = [d.get_attribute("data-form") for d in browser.find_elements(By.CSS_SELECTOR, "details[open]")]
    assert open_forms == ["cloze"]
    assert browser.execute_script("return document.querySelectorAll('script, img, iframe, link').length") == 0
    assert not severe_errors(browser)
    if README_SHOT:
        _readme_screenshot(browser, Path(README_SHOT))


def _readme_screenshot(driver: Any, out: Path) -> None:
    """The top of the page (headline, worst form, forest plot) as a palette PNG for the README."""
    from PIL import Image

    driver.set_window_size(1180, 1250)
    try:
        driver.execute_script("window.scrollTo(0, 0)")
        img = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    finally:
        driver.set_window_size(1400, 1000)
    img.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    assert out.stat().st_size < 300_000


def test_hostile_text_stays_text_in_chromium(browser, pages):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    browser.get(pages["hostile"].resolve().as_uri())
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018
    assert EVIL_FOLDER in browser.title, "the folder name shows as text"
    assert browser.execute_script("return document.querySelectorAll('script, img, iframe').length") == 0
    pres = browser.execute_script("return Array.from(document.querySelectorAll('pre'), p => p.textContent)")
    assert any(EVIL_PROMPT in p for p in pres) and any(EVIL_OUTPUT in p for p in pres)
    texts = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#forest svg text")]
    assert any("<script>alert('model')</script>" in t for t in texts), "the model spec, as text in the SVG"
    assert "<svg onload=alert(1)>" in texts
    assert not severe_errors(browser)


def test_attack_curves_render_in_chromium(browser, pages):
    browser.get(pages["attacks"].resolve().as_uri())
    img, colours = plot_pixels(browser, "#attack-curves svg")
    assert non_white(img, colours) > 0.03
    assert near(colours, "#000000", tol=40) > 100, "the worst-form curve, black dashes"
    assert near(colours, "#1f77b4") > 20 and near(colours, "#ff7f0e") > 20, "one colour per form"
    assert not severe_errors(browser)

"""report.html in a real browser: headless Chromium (Selenium + ChromeDriver) opens the report of the fixture results
at 800 and 1400 px, takes a screenshot at each (a PNG of the window's width), and finds no console error, no page wider
than the window, a target for every contents link, every plotly figure drawn and no Markdown marker left in the text.

Debian's packages chromium and chromium-driver give /usr/bin/chromium and /usr/bin/chromedriver (scripts/test.sh
installs them in CI); without them the test is skipped, and in CI that skip is a failure (tests/conftest.py)."""

from __future__ import annotations

import base64
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _results_fixtures import full_results, typed, with_steerability

from lens_steer.report.figures import FIGURE_TITLES
from lens_steer.report.html import write_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WIDTHS = (800, 1400)
HEIGHT = 1000
# Chromium's own connections (updates, sync, field trials) are refused on a closed network and log errors: off
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--force-device-scale-factor=1",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
Window = tuple[int, list[dict[str, Any]]]  # the report open at a width: (width, the console's entries)
MARKDOWN_MARKERS = re.compile(r"\*\*|__|`|(?<![\w*])\*[A-Za-z][^*\n]*\*(?![\w*])|(?<!\w)_[A-Za-z][^_\n]*_(?!\w)")


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG, after checking its signature, that its first chunk is IHDR and that chunk's CRC."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    (length,) = struct.unpack(">I", data[8:12])
    kind, body = data[12:16], data[16 : 16 + length]
    (crc,) = struct.unpack(">I", data[16 + length : 20 + length])
    assert kind == b"IHDR" and length == 13 and zlib.crc32(kind + body) == crc, "a damaged PNG header"
    return struct.unpack(">II", body[:8])


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.is_file():
            return f"{path} (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    missing = _missing()
    if missing is not None:
        pytest.skip(f"missing browser: {missing}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield d
    finally:
        d.quit()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """report.html of the fixture results with per-item steerability, so that every figure is drawn."""
    folder = tmp_path_factory.mktemp("report")
    return write_report(typed(with_steerability(full_results(), folder)), folder)["html"]


@pytest.fixture(scope="module", params=WIDTHS, ids=[f"{w}px" for w in WIDTHS])
def window(request: pytest.FixtureRequest, driver: Any, report: Path) -> Window:
    """The report open in a window of each width, every plotly figure drawn: (width, the console's entries)."""
    from selenium.webdriver.support.ui import WebDriverWait

    width = request.param
    driver.set_window_size(width, HEIGHT)
    driver.get(report.as_uri())
    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script(
            "const figs = [...document.querySelectorAll('.plotly-graph-div')];"
            "return document.readyState === 'complete' && figs.length > 0"
            " && figs.every(f => f.querySelector('.main-svg'))"
        )
    )
    return width, driver.get_log("browser")


def test_no_console_error_and_a_screenshot_as_wide_as_the_window(window: Window, driver: Any, report: Path) -> None:
    width, log = window
    assert [e for e in log if e["level"] == "SEVERE"] == []
    assert driver.execute_script("return window.innerWidth") == width
    shot = report.parent / f"report-{width}.png"
    assert driver.save_screenshot(str(shot)) and png_size(shot.read_bytes())[0] == width


def test_nothing_is_wider_than_the_window(window: Window, driver: Any) -> None:
    width, _ = window
    if width == min(WIDTHS):
        assert driver.execute_script("return document.documentElement.scrollWidth") <= width + 1
    boxes = driver.execute_script("return [...document.querySelectorAll('table')].map(t => t.parentElement.className)")
    assert boxes and set(boxes) == {"table-wrap"}  # each table scrolls in its own box
    rights = driver.execute_script(
        "return [...document.querySelectorAll('.plotly-graph-div')].map(f => f.getBoundingClientRect().right)"
    )
    assert rights and max(rights) <= width


def test_the_contents_link_to_every_heading_below_them(window: Window, driver: Any) -> None:
    from selenium.webdriver.common.by import By

    links = [a.get_attribute("href").split("#", 1)[1] for a in driver.find_elements(By.CSS_SELECTOR, "nav.contents a")]
    assert links and all(driver.find_elements(By.ID, anchor) for anchor in links)
    headings = driver.execute_script(
        "const nav = document.querySelector('nav.contents');"
        "return [...document.querySelectorAll('h2[id], h3[id]')]"
        ".filter(h => nav.compareDocumentPosition(h) & Node.DOCUMENT_POSITION_FOLLOWING).map(h => h.id)"
    )
    assert links == headings
    texts = [h.text for h in driver.find_elements(By.CSS_SELECTOR, "h1, h2, h3")]
    assert len(texts) == len(set(texts)), f"a heading twice: {texts}"


def test_what_the_run_can_show_comes_first(window: Window, driver: Any) -> None:
    from selenium.webdriver.common.by import By

    scope = driver.find_element(By.CSS_SELECTOR, "section.scope")
    assert scope.location["y"] < driver.find_element(By.CSS_SELECTOR, "nav.contents").location["y"]
    first_h2 = driver.find_element(By.CSS_SELECTOR, "h2")
    assert first_h2.text == "What this run can show" and "a pipeline check, not a result" in scope.text


def test_every_figure_is_drawn(window: Window, driver: Any) -> None:
    drawn = driver.execute_script(
        "return [...document.querySelectorAll('.plotly-graph-div')].filter(f => f.querySelector('svg.main-svg'))"
        ".map(f => f.id)"
    )
    assert sorted(drawn) == sorted(f"fig-{k}" for k in FIGURE_TITLES)


def test_no_markdown_marker_is_left_in_the_text(window: Window, driver: Any) -> None:
    from selenium.webdriver.common.by import By

    text = driver.find_element(By.TAG_NAME, "body").text
    assert "*held*" not in text and "**" not in text and MARKDOWN_MARKERS.findall(text) == []
    assert driver.find_element(By.CSS_SELECTOR, "p.note em").text == "held"  # the claims rule's emphasis, rendered


def test_a_screenshot_of_the_whole_page(window: Window, driver: Any, report: Path) -> None:
    """Last for each width: capturing beyond the viewport resizes it. The PNG is the page's content width wide."""
    width, _ = window
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    full = driver.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True, "clip": clip})
    page_png = report.parent / f"report-{width}-full.png"
    page_png.write_bytes(base64.b64decode(full["data"]))
    page_width, page_height = png_size(page_png.read_bytes())
    assert width - 20 < page_width == round(size["width"]) <= width and page_height > HEIGHT

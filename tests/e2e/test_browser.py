"""The app in a real browser: every page opens with no exception; the pruning slider changes the
accuracy; a screenshot of each page is saved (README uses them)."""
from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import SHOTS, wait_idle

pytestmark = pytest.mark.browser

PAGES = ["start", "glossary", "model", "weights", "pruning", "quantization", "lowrank", "distillation",
         "transformer_models", "sensitivity", "explain", "tradeoffs", "runs", "export", "cases"]
DEFAULT = "start"  # the page at the app's root URL


def page_url(server: str, name: str) -> str:
    return server if name == DEFAULT else f"{server}/{name}"


METRIC_JS = """(label) => { const m = [...document.querySelectorAll('[data-testid="stMetric"]')].find(
    e => e.querySelector('[data-testid="stMetricLabel"]').innerText.trim() === label);
    return m ? m.querySelector('[data-testid="stMetricValue"]').innerText : null; }"""


def metric_value(page, label: str) -> str | None:
    """The value of the metric whose label is exactly `label`."""
    return page.evaluate(METRIC_JS, label)


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.wait_for_selector('[data-testid="stSidebar"]', timeout=120_000)
    wait_idle(page)
    return page


@pytest.mark.parametrize("name", PAGES)
def test_every_page_opens(server, browser, name):
    page = open_page(browser, page_url(server, name))
    try:
        page.wait_for_selector("h1", timeout=60_000)
        assert page.locator('[data-testid="stException"]').count() == 0
        # the shared navigation is there: reached through app.py, not as a bare script
        assert page.locator('[data-testid="stSidebarNav"]').inner_text().count("Pruning") == 1
        assert "_common" not in page.locator('[data-testid="stSidebar"]').inner_text()
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    finally:
        page.close()


def test_pruning_slider_changes_accuracy(server, browser):
    page = open_page(browser, f"{server}/pruning")
    try:
        page.wait_for_selector('[data-testid="stMetric"]', timeout=60_000)
        before = metric_value(page, "Accuracy")
        slider = page.locator('[data-testid="stSlider"]').first.get_by_role("slider")
        slider.focus()
        for _ in range(40):           # 50% -> 90%
            page.keyboard.press("ArrowRight")
        page.wait_for_function(f"(v) => ({METRIC_JS})('Accuracy') !== v", arg=before, timeout=60_000)
        wait_idle(page)
        after = metric_value(page, "Accuracy")
        assert after != before and re.match(r"\d+\.\d+%", after)
        assert page.locator('[data-testid="stException"]').count() == 0
    finally:
        page.close()

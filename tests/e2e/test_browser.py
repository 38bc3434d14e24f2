"""The app in a real browser: every page opens with no exception, screenshots saved."""
from __future__ import annotations

import pytest

from tests.e2e.conftest import SHOTS, wait_idle

pytestmark = pytest.mark.browser


def metric_value(page, label: str) -> str:
    loc = page.locator('[data-testid="stMetric"]', has_text=label).first
    return loc.locator('[data-testid="stMetricValue"]').inner_text()


def test_model_page_in_browser(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server)
    page.wait_for_selector('[data-testid="stMetric"]', timeout=120_000)
    wait_idle(page)
    assert metric_value(page, "Test accuracy").endswith("%")
    assert page.locator('[data-testid="stException"]').count() == 0
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "model.png"), full_page=True)
    page.close()

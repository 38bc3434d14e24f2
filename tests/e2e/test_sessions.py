"""Several browser sessions at once: each sees only its own model and numbers."""
from __future__ import annotations

import pytest

from compression.models import zoo
from tests.e2e.conftest import wait_idle

pytestmark = pytest.mark.browser


def choose_model(page, title: str) -> None:
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name=title, exact=True).click()
    wait_idle(page)


def params_shown(page) -> str:
    metric = page.locator('[data-testid="stMetric"]', has_text="Parameters").first
    return metric.locator('[data-testid="stMetricValue"]').inner_text()


@pytest.mark.parametrize("n_sessions", [2, 8])
def test_sessions_are_isolated(server, browser, n_sessions):
    names = [zoo.list_models()[i % len(zoo.list_models())] for i in range(n_sessions)]
    contexts = [browser.new_context(viewport={"width": 1200, "height": 900}) for _ in names]
    pages = [c.new_page() for c in contexts]
    try:
        for page in pages:
            page.goto(f"{server}/model")   # the Model & data page shows the parameter count
        for page in pages:
            page.wait_for_selector('[data-testid="stMetric"]', timeout=120_000)
        for page, name in zip(pages, names):   # every session changes its model, interleaved
            choose_model(page, zoo.ZOO[name].title)
        for page, name in zip(pages, names):
            wait_idle(page)
            expected = f"{zoo.zoo_summary()[name]['params']:,}"
            page.wait_for_function(
                "(v) => [...document.querySelectorAll('[data-testid=\"stMetric\"]')]"
                ".some(m => m.innerText.includes('Parameters') && m.innerText.includes(v))",
                arg=expected, timeout=60_000)
            assert params_shown(page) == expected
            assert page.locator('[data-testid="stException"]').count() == 0
    finally:
        for c in contexts:
            c.close()

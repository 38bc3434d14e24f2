"""In a real browser, the model and data chosen in the sidebar stay in use while the user moves
through every page by the navigation: a built-in model, and an uploaded model with uploaded data."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from compression.models import zoo
from compression.data.datasets import load_digits
from tests.e2e.conftest import ROOT, SHOTS, _free_port, start_streamlit, wait_healthy, wait_idle
from tests.e2e.test_browser import DEFAULT, PAGES, open_page

pytestmark = pytest.mark.browser

SIDEBAR = '[data-testid="stSidebar"]'


def active(page) -> str:
    """The sidebar's 'MODEL on DATA' line, e.g. 'demo:resnet on digits'."""
    text = page.locator(SIDEBAR).inner_text()
    match = re.search(r"^(.+ on .+?): scored on \d+ samples", text, re.MULTILINE)
    assert match, text
    return match.group(1)


def wait_active(page, expected: str) -> None:
    page.wait_for_function(
        "(v) => document.querySelector('[data-testid=\"stSidebar\"]').innerText.includes(v + ': scored on ')",
        arg=expected, timeout=60_000)
    wait_idle(page)


def pick(page, label: str, option: str) -> None:
    """Choose `option` in the sidebar selectbox labelled `label`."""
    box = page.locator(f"{SIDEBAR} [data-testid='stSelectbox']").filter(
        has=page.get_by_text(label, exact=True))
    target = page.get_by_role("option", name=option, exact=True)
    for attempt in range(20):          # right after an upload the first click only focuses the box
        if attempt % 5 == 0:
            box.click()
        page.wait_for_timeout(250)
        if target.is_visible():
            break
    target.click()
    wait_idle(page)


def upload(page, label_start: str, path) -> None:
    uploader = page.locator(f"{SIDEBAR} [data-testid='stFileUploader']").filter(has_text=label_start)
    uploader.locator("input[type='file']").set_input_files(str(path))
    wait_idle(page)


def go_to(page, name: str) -> None:
    """Open a page through the sidebar navigation (same session, as a user does)."""
    nav = page.locator('[data-testid="stSidebarNav"]')
    href = "/" if name == DEFAULT else f"/{name}"
    link = nav.locator(f"a[href$='{href}']")
    before = page.locator("h1").first.inner_text()
    link.click()
    page.wait_for_url(re.compile(re.escape(href) + "$"), timeout=60_000)
    page.wait_for_function(      # the new page's title (every page has its own), not the last one's
        "(t) => { const h = document.querySelector('h1'); return h && h.innerText !== t; }",
        arg=before, timeout=60_000)
    wait_idle(page)


def visit_every_page(page, expected: str, shot: str) -> None:
    for name in [*PAGES[1:], PAGES[0]]:     # from the Start page round to it again
        go_to(page, name)
        assert page.locator('[data-testid="stException"]').count() == 0, name
        assert active(page) == expected, name
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / shot), full_page=True)


def test_builtin_model_stays_on_every_page(server, browser):
    page = open_page(browser, server)
    try:
        pick(page, "Model", zoo.ZOO["resnet"].title)
        wait_active(page, "demo:resnet on digits")
        visit_every_page(page, "demo:resnet on digits", "navigation-resnet.png")
        go_to(page, "model")
        params = page.locator('[data-testid="stMetric"]', has_text="Parameters").first
        assert params.locator('[data-testid="stMetricValue"]').inner_text() == "77,754"
    finally:
        page.close()


def test_every_page_is_listed_in_the_navigation(server, browser):
    """All pages are in the sidebar at once (no "View N more"), and the app opens on Start."""
    page = open_page(browser, server)
    try:
        nav = page.locator('[data-testid="stSidebarNav"]')
        assert not re.search(r"View \d+ more", nav.inner_text())
        for name in PAGES:
            href = "/" if name == DEFAULT else f"/{name}"
            assert nav.locator(f"a[href$='{href}']").is_visible(), name
        assert page.locator("h1").first.inner_text() == "Compression Studio"
    finally:
        page.close()


def test_uploaded_model_and_data_stay_on_every_page(server, browser, tmp_path):
    model_file = tmp_path / "mlp_scripted.pt"
    torch.jit.save(torch.jit.script(zoo.load_pretrained("mlp")), str(model_file))
    test = load_digits().test
    data_file = tmp_path / "digits_test.npz"
    np.savez(data_file, X=test.X.numpy().astype(np.float32), y=test.y.numpy())

    page = open_page(browser, server)
    try:
        pick(page, "Model", "Upload a file…")
        upload(page, "Model file", model_file)
        wait_active(page, "mlp_scripted.pt on digits")
        pick(page, "Data", "Upload a file…")
        upload(page, "Data file", data_file)
        wait_active(page, "mlp_scripted.pt on digits_test")
        assert page.locator(f"{SIDEBAR} [data-testid='stAlertContentError']").count() == 0
        visit_every_page(page, "mlp_scripted.pt on digits_test", "navigation-upload.png")
    finally:
        page.close()


def test_first_request_to_a_page_url_runs_through_app_py(browser, tmp_path):
    """A fresh server whose first request is /pruning: the app's navigation and sidebar, not the
    bare page Streamlit's pages-folder mode would run (the ui package ends that mode)."""
    port = _free_port()
    proc = start_streamlit(ROOT / "app.py", port, {"COMPRESSION_STORE": str(tmp_path / "runs.sqlite")})
    try:
        wait_healthy(port)
        for _ in range(2):                 # the first request, then a new session
            page = open_page(browser, f"http://127.0.0.1:{port}/pruning")
            try:
                page.wait_for_selector("h1", timeout=60_000)
                wait_active(page, "demo:mlp on digits")
                nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
                assert "Pruning" in nav and "common" not in nav
                assert page.locator("h1").first.inner_text() == "Pruning"
            finally:
                page.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)

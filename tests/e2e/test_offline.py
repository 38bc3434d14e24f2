"""Nothing leaves localhost: every request the app's pages make in a real browser goes to the app
itself (or is inline data), so it works offline on a fresh machine."""
from __future__ import annotations

from urllib.parse import urlparse

import pytest

from tests.e2e.conftest import wait_idle
from tests.e2e.test_browser import PAGES, page_url

pytestmark = pytest.mark.browser


def test_no_request_leaves_localhost(server, browser):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    try:
        for name in PAGES:
            page.goto(page_url(server, name))
            wait_idle(page)
    finally:
        page.close()
    local = ("127.0.0.1", "localhost")
    outside = sorted({u for u in requests if urlparse(u).scheme not in ("data", "blob")
                      and urlparse(u).hostname not in local})
    assert requests and not outside, outside

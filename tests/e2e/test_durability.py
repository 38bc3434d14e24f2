"""Killing the app mid-work leaves the experiment store readable, with every finished run intact."""
from __future__ import annotations

import os
import signal
import sqlite3

import pytest

from compression.io.store import Store
from tests.e2e.conftest import ROOT, _free_port, start_streamlit, wait_healthy, wait_idle

pytestmark = pytest.mark.browser


def test_sigkill_during_work_keeps_the_store_consistent(browser, tmp_path):
    store_path = tmp_path / "runs.sqlite"
    port = _free_port()
    proc = start_streamlit(ROOT / "app.py", port, {"COMPRESSION_STORE": str(store_path)})
    try:
        wait_healthy(port)
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/pruning")
        page.wait_for_selector('[data-testid="stMetric"]', timeout=120_000)
        wait_idle(page)
        slider = page.locator('[data-testid="stSlider"]').first.get_by_role("slider")
        record = page.get_by_role("button", name="Record in the run store")
        for _ in range(4):              # several results, each recorded as a run
            slider.focus()
            page.keyboard.press("ArrowRight")
            page.wait_for_timeout(400)
            wait_idle(page)
            record.click()
            page.wait_for_timeout(400)
        slider.focus()
        page.keyboard.press("ArrowRight")
        page.wait_for_timeout(150)      # kill while the app is working on the last move
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        page.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    with sqlite3.connect(store_path) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    runs = Store(store_path).list()
    assert len(runs) >= 2
    for run in runs:
        assert run.kind == "prune" and 0 <= run.metrics["accuracy"] <= 1 and "sparsity" in run.config

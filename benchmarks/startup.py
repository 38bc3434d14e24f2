"""Start-up: from `streamlit run app.py` to the first page showing its metrics in a browser,
against the same measurement of a trivial app that imports torch and shows one st.metric."""
from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Iterator

from benchmarks.common import main, print_table

ROOT = Path(__file__).resolve().parents[1]
TRIVIAL = 'import streamlit as st\nimport torch\n\nst.metric("Trivial", f"{torch.ones(1).item():.0f}")\n'


def time_to_metric(browser, script: Path, timeout_s: float = 120.0) -> float:
    """Seconds from spawning `streamlit run script` to a rendered st.metric in the browser."""
    from tests.e2e.conftest import _free_port, start_streamlit

    port = _free_port()
    t0 = time.perf_counter()
    proc = start_streamlit(script, port)
    try:
        page = browser.new_page()
        deadline = time.time() + timeout_s
        while True:
            try:
                page.goto(f"http://127.0.0.1:{port}", timeout=5_000)
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        page.wait_for_selector('[data-testid="stMetricValue"]', timeout=timeout_s * 1000)
        elapsed = time.perf_counter() - t0
        page.close()
        return elapsed
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextlib.contextmanager
def browser_and_trivial_app() -> Iterator[tuple[object, Path]]:
    """A headless Debian chromium, and the trivial app's script in a temporary folder."""
    from playwright.sync_api import sync_playwright

    from tests.e2e.conftest import CHROMIUM, LAUNCH_ARGS

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        trivial = Path(tmp) / "trivial_app.py"
        trivial.write_text(TRIVIAL)
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield browser, trivial
        finally:
            browser.close()


def run(quick: bool = False) -> dict:
    repeats = 1 if quick else 3
    with browser_and_trivial_app() as (browser, trivial):
        ours, ref = [], []
        for _ in range(repeats):  # interleaved, so drift hits both alike
            ref.append(time_to_metric(browser, trivial))
            ours.append(time_to_metric(browser, ROOT / "app.py"))
    result = {"startup_s": statistics.median(ours), "ref_startup_s": statistics.median(ref)}
    result["startup_ratio"] = result["startup_s"] / result["ref_startup_s"]
    print_table("start-up to first metric in a browser (median of %d)" % repeats,
                [{"app": "compression studio", "seconds": result["startup_s"]},
                 {"app": "trivial (torch + st.metric)", "seconds": result["ref_startup_s"]},
                 {"app": "ratio (target <= 1.3)", "seconds": result["startup_ratio"]}])
    return result


if __name__ == "__main__":
    main(run)

"""AppTest of the Export page: every model format, the report, the CSV and the recipe."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from compression.io.export import available_formats

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture
def at() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=180).run()
    app.switch_page("pages/pruning.py").run()
    app.slider(key="prune_sparsity").set_value(80).run()
    app.button(key="prune_keep").click().run()
    app.switch_page("pages/export.py").run()
    assert not app.exception
    return app


def test_every_format_prepares_a_download(at):
    for fmt in available_formats():
        at.selectbox(key="export_format").select(fmt).run()
        at.button(key="export_prepare").click().run()
        assert not at.exception and not at.error, fmt
        payload, name, _ = at.session_state["export_file"]
        assert len(payload) > 100 and name.startswith("model")


def test_report_csv_and_recipe(at):
    at.button(key="export_report").click().run()
    assert not at.exception and not at.error
    html = at.session_state["export_report_html"]
    assert "<html" in html.lower() and "plotly" in html.lower()
    code = " ".join(c.value for c in at.code)
    assert "kind: prune" in code and "sparsity: 0.8" in code

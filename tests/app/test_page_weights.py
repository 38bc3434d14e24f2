"""AppTest of the Weights page on the default model: the first layer's inputs (pixels) get grids
that clip none of their values under min-max, and the page says why the three grids coincide."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def test_first_layer_input_grids():
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.switch_page("pages/weights.py").run()
    assert not at.exception and not at.error
    assert at.slider(key="weights_bits").value == 4
    stats, weights, inputs = (d.value for d in at.dataframe)    # statistics, weight grids, input grids
    assert list(weights["calibration"]) == list(inputs["calibration"]) == ["minmax", "percentile", "mse"]
    table = inputs.set_index("calibration")
    assert table.loc["minmax", "clipped"] == 0.0           # was 9.86%: every saturated pixel
    assert any("give the same grid here" in c.value and "distinct values" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 2

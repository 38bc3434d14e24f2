"""AppTest: after a sweep the Sensitivity page says why its most and least sensitive layers are so,
with a link to each layer's weights."""
from __future__ import annotations

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def test_sweep_explains_the_extreme_layers_and_links_to_their_weights():
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["model_source"] = "demo:resnet"
    at.switch_page("pages/sensitivity.py").run()
    at.multiselect(key="sens_levels_prune").set_value([0.9]).run()
    at.checkbox(key="sens_proxies").uncheck().run()
    at.button(key="sens_run").click().run()
    deadline = time.monotonic() + 90
    while not at.session_state["sens_job"].done and time.monotonic() < deadline:
        time.sleep(0.3)
    assert at.session_state["sens_job"].done and at.session_state["sens_job"].error is None
    at.run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    most, least = metrics["Most sensitive layer"], metrics["Least sensitive layer"]
    notes = [m.value for m in at.markdown if "was measured the" in m.value]
    assert notes[0].startswith(f"**{most}** (") and "was measured the most sensitive layer" in notes[0]
    assert notes[1].startswith(f"**{least}** (") and "was measured the least sensitive layer" in notes[1]
    assert all(" weights" in n and "% of the model's 77,754 parameters" in n for n in notes)
    weights = [p.proto for p in at.get("page_link") if p.proto.page == "weights"]
    assert [p.label for p in weights] == [f"See {most}'s weights", f"See {least}'s weights"]

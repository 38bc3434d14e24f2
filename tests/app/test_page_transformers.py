"""AppTest of the Transformers page: a tiny demo transformer made offline, methods applied, fidelity
metrics rendered, errors shown as messages (never a traceback)."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
APP, PAGE = ROOT / "app.py", ROOT / "pages" / "transformer_models.py"


def metric(at: AppTest, prefix: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(prefix))


@pytest.fixture
def page() -> AppTest:
    """The page through the app's navigation once app.py lists it, else the page file alone."""
    if "pages/transformer_models.py" in APP.read_text():
        at = AppTest.from_file(str(APP), default_timeout=120).run()
        at.switch_page("pages/transformer_models.py").run()
    else:
        at = AppTest.from_file(str(PAGE), default_timeout=120).run()
    assert not at.exception
    return at


def test_demo_encoder_prune_then_heads(page):
    at = page
    assert any("create a tiny random demo" in i.value for i in at.info)
    at.button(key="hf_demo").click().run()
    assert not at.exception and not at.error
    at.selectbox(key="hf_method").select("prune").run()
    at.slider(key="hf_sparsity").set_value(0.8).run()
    at.button(key="FormSubmitter:hf_form-Apply and measure").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    heavy = float(metric(at, "Fidelity"))
    assert 0 < heavy < 1 and metric(at, "Latency").endswith("ms")
    assert metric(at, "Top-5 neighbour agreement").endswith("%")
    at.button(key="hf_export").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(b.label.startswith("Download model.zip") for b in at.get("download_button"))
    at.selectbox(key="hf_method").select("heads").run()
    at.button(key="FormSubmitter:hf_form-Apply and measure").click().run()
    assert not at.exception and not at.error
    assert float(metric(at, "Fidelity")) <= 1.0
    assert at.metric[2].delta.startswith("-")  # fewer parameters
    at.button(key="hf_export").click().run()  # heads removed: the config cannot say so
    assert not at.exception and any("Cannot export this model" in e.value for e in at.error)
    from compression.io.store import Store

    assert {r.kind for r in Store().list()} >= {"hf_prune", "hf_heads"}
    at.button(key="FormSubmitter:hf_form-Apply and measure").click().run()
    assert not at.exception and not at.error  # the page works on after the refusal
    at.button(key="hf_sens").click().run()
    assert not at.exception and not at.error


def test_demo_decoder_int8_and_target(page):
    at = page
    at.selectbox(key="hf_demo_kind").select("decoder").run()
    at.button(key="hf_demo").click().run()
    at.selectbox(key="hf_method").select("int8").run()
    at.button(key="FormSubmitter:hf_form-Apply and measure").click().run()
    assert not at.exception and not at.error
    assert 0 < float(metric(at, "Fidelity")) <= 1.0 and metric(at, "KL divergence")
    at.button(key="hf_sweep_int8").click().run()
    assert not at.exception and not at.error
    assert at.success or at.warning


def test_bad_folder_is_a_message(page, tmp_path):
    at = page
    at.text_input(key="hf_folder").input(str(tmp_path)).run()
    at.button(key="hf_load").click().run()
    assert not at.exception
    assert any("No config.json" in e.value for e in at.error)

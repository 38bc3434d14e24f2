"""The Explain page on a working model whose inputs are quantized (the activation fake-quant
passes gradients straight through, so captum's attributions work)."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from compression.data.datasets import load_digits
from compression.methods.quantization import QuantConfig, quantize
from compression.models import zoo
from compression.models.model import Model

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def test_explain_page_with_a_quantized_working_model():
    """The Explain page compares the original with a working model whose inputs are quantized."""
    float_model = zoo.load_pretrained("lenet5")
    q, _ = quantize(float_model, QuantConfig(bits=8, activations=True), load_digits())
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["model_source"] = at.session_state["base_source"] = "demo:lenet5"
    at.session_state["original"] = Model(float_model, "demo", "demo:lenet5", "demo:lenet5", "lenet5")
    at.session_state["base"] = Model(q, "compressed", "demo:lenet5 → int8 w+a", "demo:lenet5|int8wa", "lenet5")
    at.switch_page("pages/explain.py").run()
    assert not at.exception and not at.error, (at.exception, at.error)
    assert at.radio(key="ex_source").value == "working"
    m = {x.label: x.value for x in at.metric}
    assert 0.8 < float(m["Mean similarity"]) <= 1.0
    assert len(at.get("plotly_chart")) == 1
    at.selectbox(key="ex_method").set_value("saliency").run()
    assert not at.exception and not at.error
    assert 0.5 < float({x.label: x.value for x in at.metric}["Mean similarity"]) <= 1.0

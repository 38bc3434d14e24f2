"""AppTest of the compression pages: sliders move the numbers, nothing raises."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def number(text: str) -> float:
    return float(text.replace(",", "").replace("%", "").split()[0])


@pytest.fixture
def page():
    def open_page(path: str) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=180).run()
        at.switch_page(path).run()
        assert not at.exception
        return at
    return open_page


def test_pruning_slider_moves_numbers(page):
    at = page("pages/pruning.py")
    at.slider(key="prune_sparsity").set_value(10).run()
    low = number(metric(at, "Non-zero params"))
    at.slider(key="prune_sparsity").set_value(90).run()
    assert not at.exception and not at.error
    assert number(metric(at, "Non-zero params")) < low
    assert any(m.label == "Compressed accuracy" for m in at.metric)  # sidebar shows the last result


def test_channel_pruning_and_keep(page):
    at = page("pages/pruning.py")
    at.selectbox(key="prune_method").select("channel").run()
    at.slider(key="prune_sparsity").set_value(50).run()
    assert not at.exception and not at.error
    assert number(metric(at, "Non-zero params")) < 50610
    assert metric(at, "Latency").endswith("ms")  # measured after accuracy and size, still shown
    assert any("paired measurement" in c.value for c in at.caption)
    at.button(key="prune_keep").click().run()
    at.switch_page("pages/model.py").run()
    assert not at.exception and number(metric(at, "Parameters")) < 50610  # the kept model stays


def test_quantization_bits_and_int8(page):
    at = page("pages/quantization.py")
    at.slider(key="quant_bits").set_value(8).run()
    high = number(metric(at, "Accuracy"))
    at.slider(key="quant_bits").set_value(2).run()
    assert number(metric(at, "Accuracy")) < high
    assert not at.exception and not at.error
    assert metric(at, "int8 latency (batch 64)").endswith("ms")


def test_lowrank_params_fall_with_ratio(page):
    at = page("pages/lowrank.py")
    at.slider(key="lowrank_ratio").set_value(0.8).run()
    big = number(metric(at, "Parameters"))
    at.slider(key="lowrank_ratio").set_value(0.2).run()
    assert not at.exception and number(metric(at, "Parameters")) < big


def test_weights_page(page):
    at = page("pages/weights.py")
    at.slider(key="weights_bits").set_value(3).run()
    at.selectbox(key="weights_layer").select("fc2").run()
    assert not at.exception and not at.error


def test_fine_tune_job_runs_in_the_background(page):
    import time

    at = page("pages/pruning.py")
    at.slider(key="prune_sparsity").set_value(90).run()
    at.number_input(key="prune_job_epochs").set_value(1).run()
    at.button(key="prune_job_start").click().run()
    deadline = time.time() + 60
    while not at.session_state["prune_job"].done and time.time() < deadline:
        time.sleep(0.2)
    at.run()
    assert not at.exception and not at.error
    assert any("Fine-tuned" in s.value for s in at.success)


def test_compressed_model_is_made_once_per_config(page):
    at = page("pages/pruning.py")
    at.selectbox(key="prune_method").select("taylor").run()  # gradients on calibration batches
    first = at.session_state["compressed_copy"][1]
    at.toggle(key="prune_log_y").set_value(False).run()  # a rerun that changes no setting
    assert not at.exception and at.session_state["compressed_copy"][1] is first
    at.slider(key="prune_sparsity").set_value(70).run()
    assert at.session_state["compressed_copy"][1] is not first


def test_a_result_at_chance_says_so(page):
    at = page("pages/pruning.py")
    at.slider(key="prune_sparsity").set_value(50).run()
    assert not any("at chance" in w.value for w in at.warning)
    at.slider(key="prune_sparsity").set_value(99).run()          # the MLP at 99%: ~6% on 10 classes
    assert not at.exception
    assert any("at chance (10% for 10 classes)" in w.value for w in at.warning)


def test_sidebar_result_is_this_runs_result(page):
    at = page("pages/pruning.py")
    for level in (30, 90, 60):
        at.slider(key="prune_sparsity").set_value(level).run()
        shown = next(m.value for m in at.sidebar.metric if m.label == "Compressed accuracy")
        assert shown == next(m.value for m in at.main.metric if m.label == "Accuracy"), level   # no lag

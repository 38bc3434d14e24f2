"""The run store keeps what the user chooses (issue 21, item 6): slider positions are not runs; a
recorded result lands once; Trade-offs compares the current model on the current data by default."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from compression.io.store import Store

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def _open(path: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.switch_page(path).run()
    assert not at.exception
    return at


def test_slider_moves_record_nothing_and_a_recorded_result_lands_once():
    at = _open("pages/pruning.py")
    for value in (30, 60, 90):
        at.slider(key="prune_sparsity").set_value(value).run()
    assert not at.exception and len(Store()) == 0                    # three results on screen, no runs
    at.button(key="pr_record").click().run()
    at.button(key="pr_record").click().run()                         # twice: still one run
    runs = Store().list()
    assert len(runs) == 1 and runs[0].metrics["label"] == "prune: magnitude 90% layer"
    assert any("Recorded as run" in c.value for c in at.caption)


def test_keeping_a_model_records_it():
    at = _open("pages/pruning.py")
    at.slider(key="prune_sparsity").set_value(50).run()
    at.button(key="prune_keep").click().run()
    assert not at.exception
    assert [r.metrics["label"] for r in Store().list()] == ["prune: magnitude 50% layer"]


def test_tradeoffs_shows_this_model_and_data_by_default():
    store = Store()
    store.record("prune", ("other.pt", "f00d"), ("digits", "beef"), {"kind": "prune"},
                 {"accuracy": 0.5, "size_bytes": 1000, "label": "someone else's run"})
    at = _open("pages/pruning.py")
    at.slider(key="prune_sparsity").set_value(40).run()
    at.button(key="pr_record").click().run()
    at.switch_page("pages/tradeoffs.py").run()
    assert not at.exception
    labels = list(at.dataframe[0].value["label"])
    assert "someone else's run" not in labels
    assert labels.count("prune: magnitude 40% layer") == 1            # the session row and its store run: once
    at.checkbox(key="to_same_setup").uncheck().run()
    assert "someone else's run" in list(at.dataframe[0].value["label"])


def test_the_same_setting_on_two_models_is_two_results():
    at = _open("pages/pruning.py")
    at.slider(key="prune_sparsity").set_value(70).run()
    at.selectbox(key="model_source").select("demo:resnet").run()
    at.slider(key="prune_sparsity").set_value(70).run()
    assert not at.exception
    results = at.session_state["results"]
    assert [r["model"] for r in results if r["label"] == "prune: magnitude 70% layer"] == ["demo:mlp", "demo:resnet"]

"""AppTest: the analysis pages (distillation, sensitivity, explain, trade-offs, runs) open, run their
background jobs to the end with tiny budgets, and show their numbers without a traceback."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from compression.io import store as store_mod
from compression.models import zoo
from compression.models.model import Model

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def open_page(page: str, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for key, value in state.items():
        at.session_state[key] = value
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def metrics(at: AppTest) -> dict[str, tuple[str, str]]:
    return {m.label: (m.value, m.delta) for m in at.metric}


def wait_for_job(at: AppTest, key: str, budget_s: float = 60.0) -> None:
    """Rerun the page until the background job in session_state[key] has finished (bounded)."""
    deadline = time.monotonic() + budget_s
    while time.monotonic() < deadline:
        job = at.session_state[key]
        if job.done:
            break
        time.sleep(0.3)
    assert at.session_state[key].done, "job did not finish in time"
    assert at.session_state[key].error is None, at.session_state[key].error_trace
    at.run()  # draw the finished result
    assert not at.exception, at.exception


def pct(value: str) -> float:
    return float(value.rstrip("%")) / 100


RESULT = {"key": ("p50", "x"), "label": "prune 50%", "config": {"kind": "prune", "sparsity": 0.5},
          "model": "demo:mlp", "metrics": {"accuracy": 0.97, "size_bytes": 10_000, "latency_ms": 0.01}}


def test_tradeoffs_empty_then_one_result():
    at = open_page("pages/tradeoffs.py", to_store=False)
    assert any("No results yet" in i.value for i in at.info)
    at.session_state["results"] = [RESULT]
    at.run()
    assert not at.exception and not at.error
    m = metrics(at)
    assert m["Results"][0] == "1"
    assert m["On the size Pareto front"][0] == "1"
    assert m["Smallest within tolerance"][0] == f"{10_000 / 1024:.1f} KiB"
    assert m["Smallest within tolerance"][1].startswith("-")   # smaller than the baseline
    assert len(at.get("plotly_chart")) == 2


def test_distillation_trains_in_the_background_and_keeps_the_student():
    at = open_page("pages/distillation.py")
    assert not at.error
    at.number_input(key="kd_epochs").set_value(1).run()
    at.button(key="kd_train").click().run()
    assert not at.exception and not at.error
    wait_for_job(at, "kd_job")
    m = metrics(at)
    distilled, without = pct(m["Distilled student accuracy"][0]), pct(m["Student without teacher"][0])
    assert 0.0 < distilled <= 1.0 and 0.0 < without <= 1.0
    assert m["Distilled student accuracy"][1].endswith("pts")          # delta against the baseline student
    assert pct(m["Teacher accuracy"][0]) > 0.9
    assert m["Student size"][1].startswith("-")                         # smaller than the teacher
    assert len(at.get("plotly_chart")) == 2                             # accuracy and loss curves
    assert len(at.session_state["results"]) == 2                        # both students on Trade-offs
    at.button(key="kd_keep").click().run()
    assert not at.exception
    assert at.session_state["base"].origin == "compressed"
    assert at.session_state["original"].name == "demo:mlp"


def test_distillation_stop_button_ends_the_job_early():
    at = open_page("pages/distillation.py")
    at.number_input(key="kd_epochs").set_value(100).run()              # far more than the test waits for
    at.button(key="kd_train").click().run()
    at.button(key="kd_job_stop").click().run()                          # the job panel's Stop button
    wait_for_job(at, "kd_job", budget_s=30)
    result = at.session_state["kd_job"].result
    assert result["baseline"] is None                                   # stopped before the second run
    assert at.session_state["kd_job"].message == "stopped"
    if result["distilled"] is None:
        assert any("Stopped before" in i.value for i in at.info)
    else:
        assert metrics(at)["Student without teacher"][0] == "–"


def test_sensitivity_sweep_proxies_and_allocator():
    at = open_page("pages/sensitivity.py")
    at.multiselect(key="sens_levels_prune").set_value([0.5, 0.9]).run()
    at.button(key="sens_run").click().run()
    assert not at.exception and not at.error
    wait_for_job(at, "sens_job")
    sweep = at.session_state["sens_job"].result["sweep"]
    assert len(sweep) == 6 and set(sweep["layer"]) == {"fc1", "fc2", "fc3"}
    m = metrics(at)
    assert m["Most sensitive layer"][0] in {"fc1", "fc2", "fc3"}
    assert m["Best proxy"][1].startswith("Spearman ρ")
    assert len(at.get("plotly_chart")) == 4                             # lines, heatmap, proxies, correlations
    at.slider(key="sens_target").set_value(0.5).run()
    at.button(key="sens_allocate").click().run()
    assert not at.exception and not at.error
    m = metrics(at)
    assert 0.0 < pct(m["Plan: measured"][0]) <= 1.0 and 0.0 < pct(m["Uniform: measured"][0]) <= 1.0
    assert m["Plan: measured"][1].endswith("pts")


def test_sensitivity_quantize_sweep_and_bit_allocation():
    at = open_page("pages/sensitivity.py")
    at.radio(key="sens_kind").set_value("quantize").run()
    at.multiselect(key="sens_levels_quantize").set_value([2, 8]).run()
    at.checkbox(key="sens_proxies").uncheck().run()
    at.button(key="sens_run").click().run()
    wait_for_job(at, "sens_job")
    assert not at.error
    result = at.session_state["sens_job"].result
    assert result["proxies"] is None and sorted(set(result["sweep"]["level"])) == [2, 8]
    assert len(at.get("plotly_chart")) == 2                             # lines and heatmap only
    at.select_slider(key="sens_target_bits").set_value(5).run()
    at.button(key="sens_allocate").click().run()
    assert not at.exception and not at.error
    m = metrics(at)
    assert 0.0 < pct(m["Plan: measured"][0]) <= 1.0 and 0.0 < pct(m["Uniform: measured"][0]) <= 1.0


def test_explain_compares_working_model_with_original():
    original = Model(zoo.load_pretrained("mlp"), "demo", "demo:mlp", "demo:mlp", "mlp")
    model = zoo.load_pretrained("mlp")
    model.fc1.weight.data *= model.fc1.weight.data.abs() > 0.05      # a crude prune of the first layer
    # named like the sidebar's choice, so the sidebar keeps it as this session's base model
    working = Model(model, "compressed", "demo:mlp", "demo:mlp|test-prune", "mlp")
    at = open_page("pages/explain.py", original=original, base=working)
    assert not at.error
    m = metrics(at)
    assert 0.5 < float(m["Mean similarity"][0]) <= 1.0
    assert m["Same prediction"][0].endswith("/3")
    assert len(at.get("plotly_chart")) == 1
    at.selectbox(key="ex_method").set_value("saliency").run()
    assert not at.exception and 0.0 < float(metrics(at)["Mean similarity"][0]) <= 1.0
    at.multiselect(key="ex_indices").set_value([]).run()
    assert any("at least one" in i.value for i in at.info)


def test_explain_uses_a_model_kept_after_a_visit():
    """Explain, visited before anything was kept, then a model is kept on the Pruning page: back on
    Explain the kept model is compared with the original, whatever the page showed before."""
    at = open_page("pages/explain.py")
    at.switch_page("pages/pruning.py").run()
    at.slider(key="prune_sparsity").set_value(90).run()
    at.button(key="prune_keep").click().run()
    at.session_state["ex_source"] = "prune"                         # a choice left over from before the keep
    at.switch_page("pages/explain.py").run()
    assert not at.exception and not at.error
    assert at.radio(key="ex_source").value == "working" and len(at.radio(key="ex_source").options) == 2
    assert "prune" in at.session_state["base"].name
    assert float(metrics(at)["Mean similarity"][0]) < 1.0           # the kept 90% prune, not the original
    at.radio(key="ex_source").set_value("prune").run()              # the user's own choice then stays
    at.switch_page("pages/model.py").run()
    at.session_state["ex_source"] = "prune"
    at.switch_page("pages/explain.py").run()
    assert at.radio(key="ex_source").value == "prune"


def test_explain_quick_prune():
    at = open_page("pages/explain.py")
    assert len(at.radio) == 0                              # no kept model yet: no choice, the quick prune
    assert any(m.value.startswith("**Compared:** a quick magnitude prune") for m in at.markdown)
    at.slider(key="ex_sparsity").set_value(0.0).run()
    assert not at.exception and not at.error
    assert float(metrics(at)["Mean similarity"][0]) == pytest.approx(1.0, abs=1e-3)
    at.slider(key="ex_sparsity").set_value(0.95).run()
    assert float(metrics(at)["Mean similarity"][0]) < 1.0


@pytest.fixture
def store(tmp_path, monkeypatch):
    path = tmp_path / "runs.sqlite"
    monkeypatch.setenv("COMPRESSION_STORE", str(path))
    s = store_mod.Store(path)
    ids = [s.record("prune", ("demo:mlp", "demo:mlp"), "digits", {"kind": "prune", "sparsity": sp},
                    {"accuracy": acc, "size_bytes": size, "latency_ms": 0.05})
           for sp, acc, size in ((0.5, 0.96, 60_000), (0.9, 0.90, 30_000))]
    ids.append(s.record("quantize", ("demo:lenet5", "demo:lenet5"), "digits", {"kind": "quantize", "bits": 4},
                        {"accuracy": 0.97, "size_bytes": 20_000, "latency_ms": 0.04}))
    return s, ids


def test_runs_filter_compare_delete(store):
    s, ids = store
    at = open_page("pages/runs.py")
    assert not at.error
    m = metrics(at)
    assert m["Runs in the store"][0] == "3" and m["Shown"][0] == "3"
    assert m["Best accuracy shown"][0] == "97.00%"
    assert len(at.get("plotly_chart")) == 2
    at.multiselect(key="runs_filter_kind").set_value(["prune"]).run()
    m = metrics(at)
    assert m["Shown"][0] == "2" and m["Best accuracy shown"][0] == "96.00%"
    at.multiselect(key="runs_pick").set_value(ids[:2]).run()
    assert not at.exception
    compare = at.dataframe[1].value                                     # the side-by-side table
    assert set(compare.columns) == set(ids[:2])
    at.checkbox(key="runs_confirm").check().run()
    at.button(key="runs_delete").click().run()
    assert not at.exception and not at.error
    assert len(s) == 1 and s.list()[0].id == ids[2]
    assert metrics(at)["Runs in the store"][0] == "1"


def test_tradeoffs_includes_the_store(store):
    at = open_page("pages/tradeoffs.py", results=[RESULT])
    assert not at.error
    assert metrics(at)["Results"][0] == "1"     # by default only runs of this model on this data (none here)
    at.checkbox(key="to_same_setup").uncheck().run()
    m = metrics(at)
    assert m["Results"][0] == "4"                                       # 1 session + 3 store runs
    at.multiselect(key="to_models").set_value(["demo:mlp"]).run()
    assert metrics(at)["Results"][0] == "3"

"""Figure builders of the analysis pages: trace counts, axis titles, plotted values, and the Pareto
front on hand-made cases."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from compression.figures import analysis as fa
from compression.io import store as store_mod


@pytest.fixture
def points() -> pd.DataFrame:
    # A hand case: b dominates c (smaller and more accurate); a, b, d trade off; e misses a size.
    return pd.DataFrame({
        "label": ["a", "b", "c", "d", "e"],
        "source": ["session", "session", "store", "store", "session"],
        "accuracy": [0.99, 0.95, 0.90, 0.80, 1.0],
        "size_bytes": [4096, 2048, 3072, 1024, None],
        "latency_ms": [2.0, 1.0, 0.5, 3.0, 0.1],
        "config": [{"kind": "prune", "sparsity": s} for s in (0.1, 0.5, 0.6, 0.9, 0.0)],
    })


def test_pareto_front_hand_case(points):
    assert fa.pareto_front(points, "size_bytes").tolist() == [True, True, False, True, False]
    # on latency: e (0.1 ms, 1.0 accuracy) beats everything
    assert fa.pareto_front(points, "latency_ms").tolist() == [False, False, False, False, True]


def test_pareto_front_ties_and_duplicates():
    df = pd.DataFrame({"size_bytes": [1.0, 1.0, 2.0, 2.0], "accuracy": [0.5, 0.5, 0.5, 0.7]})
    # identical points do not dominate each other; (2, 0.5) is dominated by (1, 0.5)
    assert fa.pareto_front(df, "size_bytes").tolist() == [True, True, False, True]


def test_pareto_front_keeps_index(points):
    shuffled = points.sample(frac=1.0, random_state=0)
    front = fa.pareto_front(shuffled, "size_bytes")
    assert front.index.equals(shuffled.index)
    assert sorted(shuffled.loc[front, "label"]) == ["a", "b", "d"]


def test_tradeoff_figure_traces_axes_and_front(points):
    fig = fa.tradeoff_figure(points, "size_bytes")
    names = [t.name for t in fig.data]
    assert names == ["session", "store", "Pareto front"]
    assert fig.layout.xaxis.title.text == "Size (KiB)"
    assert fig.layout.yaxis.title.text == "Accuracy (%)" and fig.layout.yaxis.tickformat.endswith("%")
    assert fig.layout.title.text == "Accuracy vs size"
    front = fig.data[-1]
    assert list(front.x) == [1.0, 2.0, 4.0]          # KiB, sorted by size
    assert list(front.y) == [0.80, 0.95, 0.99]
    session = fig.data[0]
    assert list(session.x) == [4.0, 2.0]             # e has no size: not drawn
    assert "sparsity" in session.hovertext[0] and "<b>a</b>" in session.hovertext[0]


def test_tradeoff_figure_latency_axis(points):
    fig = fa.tradeoff_figure(points, "latency_ms")
    assert fig.layout.xaxis.title.text == "Latency (ms)"
    assert list(fig.data[-1].x) == [0.1] and list(fig.data[-1].y) == [1.0]
    assert sum(len(t.x) for t in fig.data[:-1]) == 5


def test_results_frame_and_store_frame():
    results = [{"label": "prune 50%", "config": {"kind": "prune", "sparsity": 0.5}, "model": "demo:mlp",
                "metrics": {"accuracy": 0.9, "size_bytes": 1000, "latency_ms": 0.2}}]
    df = fa.results_frame(results)
    assert list(df.columns) == fa.TRADEOFF_COLUMNS
    assert df.loc[0, "method"] == "prune" and df.loc[0, "accuracy"] == 0.9
    assert json.loads(df.loc[0, "config"]) == {"kind": "prune", "sparsity": 0.5}
    store = pd.DataFrame({"id": ["r1", "r2"], "kind": ["quantize", "prune"], "model_id": ["m", "m"],
                          "config": ['{"bits": 4}', '{"sparsity": 0.7}'],
                          "metrics": ['{"accuracy": 0.8, "size_bytes": 500}', {"accuracy": 0.7}]})
    rows = fa.store_frame(store)
    assert rows["accuracy"].tolist() == [0.8, 0.7]
    assert rows.loc[0, "size_bytes"] == 500 and rows.loc[0, "source"] == "store"
    flat = fa.store_frame(pd.DataFrame({"run_id": [1], "method": ["lowrank"], "accuracy": [0.5],
                                        "size_bytes": [10.0], "latency_ms": [np.nan]}))
    assert flat.loc[0, "method"] == "lowrank" and flat.loc[0, "size_bytes"] == 10.0
    assert flat.loc[0, "latency_ms"] is None


def test_store_frame_from_a_real_store(tmp_path):
    store = store_mod.Store(tmp_path / "runs.sqlite")
    first = store.record("prune", ("demo:mlp", "demo:mlp"), ("digits", "abc"), {"kind": "prune", "sparsity": 0.5},
                         {"accuracy": 0.95, "size_bytes": 2048, "latency_ms": 0.1, "baseline": {"accuracy": 0.97}})
    store.record("quantize", ("demo:mlp", "x"), "digits", {"kind": "quantize", "bits": 4}, {"accuracy": 0.9})
    rows = fa.store_frame(store.dataframe())
    assert rows["method"].tolist() == ["quantize", "prune"]            # newest first
    prune = rows.iloc[1]
    assert prune["label"] == f"prune {first[:8]}" and prune["model"] == "demo:mlp"
    assert prune["accuracy"] == 0.95 and prune["size_bytes"] == 2048  # not the baseline's accuracy
    assert json.loads(prune["config"]) == {"kind": "prune", "sparsity": 0.5}
    assert rows.iloc[0]["size_bytes"] is None or np.isnan(rows.iloc[0]["size_bytes"])
    assert fa.pareto_front(rows, "size_bytes").tolist() == [False, True]


def test_curve_figure_one_line_per_run():
    rows = [{"run": r, "epoch": e, "val_accuracy": a, "val_loss": 1 - a}
            for r, off in (("distilled", 0.1), ("baseline", 0.0)) for e, a in ((2, 0.6 + off), (1, 0.5 + off))]
    fig = fa.curve_figure(rows, "val_accuracy")
    assert [t.name for t in fig.data] == ["distilled", "baseline"]
    assert list(fig.data[0].x) == [1, 2] and list(fig.data[0].y) == pytest.approx([0.6, 0.7])
    assert fig.data[1].line.dash == "dot"
    assert fig.layout.xaxis.title.text == "Epoch"
    assert fig.layout.yaxis.title.text == "Validation accuracy (%)" and fig.layout.yaxis.tickformat.endswith("%")
    assert len(fa.curve_figure([], "val_loss").data) == 0


@pytest.fixture
def sweep() -> pd.DataFrame:
    return pd.DataFrame({"layer": ["fc1"] * 3 + ["fc2"] * 3,
                         "level": [0.9, 0.5, 0.1] * 2,
                         "accuracy": [0.5, 0.9, 0.95, 0.8, 0.94, 0.95],
                         "loss": [2.0, 0.5, 0.2, 0.8, 0.25, 0.2]})


def test_sweep_lines_figure(sweep):
    fig = fa.sweep_lines_figure(sweep, level_title="sparsity", baseline=0.96)
    assert [t.name for t in fig.data] == ["fc1", "fc2"]
    assert list(fig.data[0].x) == [0.1, 0.5, 0.9] and list(fig.data[0].y) == [0.95, 0.9, 0.5]
    assert fig.layout.xaxis.title.text == "Sparsity (%)" and fig.layout.yaxis.title.text == "Accuracy (%)"
    assert fig.layout.xaxis.tickformat.endswith("%") and fig.layout.yaxis.tickformat.endswith("%")
    assert fig.layout.shapes[0].y0 == 0.96
    assert fig.data[0].line.color != fig.data[1].line.color


def test_sweep_heatmap_figure(sweep):
    fig = fa.sweep_heatmap_figure(sweep, level_title="sparsity")
    (heat,) = fig.data
    assert list(heat.y) == ["fc1", "fc2"] and list(heat.x) == ["0.1", "0.5", "0.9"]
    assert np.asarray(heat.z).tolist() == [[0.95, 0.9, 0.5], [0.95, 0.94, 0.8]]
    assert fig.layout.xaxis.title.text == "Sparsity (%)" and fig.layout.yaxis.title.text == "Layer"
    assert list(fig.layout.xaxis.ticktext) == ["10%", "50%", "90%"]
    assert heat.texttemplate == "%{z:.1%}" and heat.colorbar.title.text == "Accuracy (%)"


def test_proxy_and_correlation_figures():
    table = pd.DataFrame({"layer": ["a", "b", "c"], "magnitude": [1.0, 3.0, 2.0], "hessian": [5.0, 5.0, 5.0]})
    fig = fa.proxy_figure(table, ["magnitude", "hessian"])
    assert [t.name for t in fig.data] == ["magnitude", "hessian"]
    assert list(fig.data[0].y) == [0.0, 1.0, 0.5]          # min-max scaled
    assert list(fig.data[1].y) == [0.5, 0.5, 0.5]          # constant proxy: centred, not NaN
    assert list(fig.data[0].customdata) == [1.0, 3.0, 2.0]  # raw values on hover
    corr = fa.correlation_figure({"magnitude": 0.8, "hessian": -0.2})
    assert list(corr.data[0].x) == ["magnitude", "hessian"] and list(corr.data[0].y) == [0.8, -0.2]
    assert corr.layout.yaxis.title.text == "Spearman ρ"


def test_allocation_figure():
    layers = pd.DataFrame({"layer": ["fc1", "fc2"], "planned": [0.8, 0.2], "uniform": [0.5, 0.5]})
    fig = fa.allocation_figure(layers, "sparsity")
    assert [t.name for t in fig.data] == ["planned", "uniform"]
    assert list(fig.data[0].y) == [0.8, 0.2] and fig.layout.yaxis.title.text == "Sparsity (%)"
    assert fig.data[0].marker.color != fig.data[1].marker.color


def test_sweep_lines_tell_20_layers_apart_and_label_them():
    layers = [f"layers.{i // 2}.conv{i % 2 + 1}" for i in range(20)]
    sweep = pd.DataFrame([{"layer": n, "level": lv, "accuracy": 0.9} for n in layers for lv in (0.5, 0.9)])
    fig = fa.sweep_lines_figure(sweep, level_title="sparsity")
    colors = [t.line.color for t in fig.data]
    assert len(colors) == 20 and len(set(colors)) == 20     # plotly's default colours repeat after 10
    assert [t.marker.color for t in fig.data] == colors
    assert fig.layout.legend.title.text == "Layer"


def test_layer_bars_slant_many_labels():
    layers = [f"features.{i}.conv" for i in range(12)]
    table = pd.DataFrame({"layer": layers, "magnitude": np.arange(12.0)})
    for fig in (fa.proxy_figure(table, ["magnitude"]),
                fa.allocation_figure(table.rename(columns={"magnitude": "planned"}), "bits")):
        assert fig.layout.xaxis.tickangle == -45 and fig.layout.xaxis.automargin


def test_attribution_figure_grid():
    inputs = [np.arange(64.0).reshape(1, 8, 8), np.ones((1, 8, 8))]
    maps = {"original": [np.full((1, 8, 8), 2.0), -np.ones((1, 8, 8))],
            "compressed": [np.ones((8, 8)), np.zeros((1, 8, 8))]}
    fig = fa.attribution_figure(inputs, maps, row_titles=["#3 label 1", "#7 label 2"])
    assert len(fig.data) == 6                              # 2 rows x (input + 2 maps)
    assert np.asarray(fig.data[0].z).shape == (8, 8)
    assert fig.data[1].zmax == 2.0 and fig.data[1].zmin == -2.0   # one symmetric scale per row
    assert fig.data[2].zmax == 2.0
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["#3 label 1", "original", "compressed", "#7 label 2", "original", "compressed"]
    bars = [t for t in fig.data if t.showscale]
    assert [fig.data.index(t) for t in bars] == [2, 5]          # one colour bar per row, beside its last map
    assert not fig.data[0].showscale and not fig.data[1].showscale
    first, second = (t.colorbar for t in bars)
    assert list(first.tickvals) == [-2.0, 0.0, 2.0] and "towards" in first.ticktext[2]
    assert list(second.tickvals) == [-1.0, 0.0, 1.0]           # the second row's own scale
    assert first.y > second.y and first.len < 0.5             # beside its row, as tall as it


def test_same_setup_keeps_one_model_on_one_data_set():
    runs = pd.DataFrame({"model_fingerprint": ["a", "a", "b"], "data_fingerprint": ["d", "e", "d"], "id": [1, 2, 3]})
    assert list(fa.same_setup(runs, "a", "d")["id"]) == [1]
    assert fa.same_setup(pd.DataFrame(), "a", "d").empty


def test_unique_results_keeps_the_session_row_of_a_recorded_result():
    row = {"label": "prune 50%", "model": "demo:mlp", "method": "prune", "accuracy": 0.9, "size_bytes": 100,
           "latency_ms": None, "config": ""}
    rows = pd.DataFrame([{**row, "source": "store"}, {**row, "source": "session"},
                         {**row, "label": "prune 60%", "source": "store"}])
    out = fa.unique_results(rows)
    assert list(zip(out["label"], out["source"])) == [("prune 50%", "session"), ("prune 60%", "store")]

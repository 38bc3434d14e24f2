"""Each case study runs on its quick budget and shows the shape the published result has."""
from __future__ import annotations

import json
import threading

import plotly.graph_objects as go
import pytest
import torch

from compression.workflows import cases
from compression.cli import main
from compression.models import zoo
from compression.models.compact import to_bytes
from compression.core.errors import ConfigError
from compression.figures.cases import case_figures
from compression.io.store import Store


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The models are tiny: one thread is faster than two contending ones."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def quick():
    """Factory: the quick result of a case, run once per module, with its progress events."""
    done: dict = {}

    def get(name: str):
        if name not in done:
            events = []
            result = cases.run_case(name, quick=True, progress=lambda d, t, m: events.append((d, t, m)))
            done[name] = (result, events)
        return done[name]

    return get


def test_pruning_retraining_12x_and_retraining_matters(quick):
    result, events = quick("pruning-retraining")
    assert result.param_reduction >= 12.0
    assert result.oneshot_accuracy_drop >= 20.0                      # one-shot at ~93% sparsity falls apart
    assert result.accuracy_drop <= result.oneshot_accuracy_drop / 10  # retraining keeps nearly all of it
    assert result.holds["at_least_12x"] and result.holds["oneshot_loses_much_more"]
    steps = result.steps
    assert [s["sparsity"] for s in steps] == sorted(s["sparsity"] for s in steps)
    assert steps[-1]["sparsity"] == pytest.approx(0.93)
    assert events[-1][0] == events[-1][1] and all(d <= t for d, t, _ in events)


def test_deep_compression_30x_measured_file(quick):
    result, _ = quick("deep-compression")
    assert {m["model"] for m in result.models} == {"mlp", "lenet5"}
    for m in result.models:
        assert m["ratio"] >= 30
        assert m["fp32_bytes"] == 4 * sum(p.numel() for p in zoo.load_pretrained(m["model"]).parameters())
        assert m["compact_bytes"] * 30 <= m["fp32_bytes"]
    stages = {(s["model"], s["stage"]): s["bytes"] for s in result.stages}
    assert stages["mlp", "fp32 compact"] == len(to_bytes(zoo.load_pretrained("mlp")))   # a real file's bytes
    assert stages["mlp", "pruned + quantized"] < stages["mlp", "pruned"] < stages["mlp", "fp32 compact"]
    assert result.holds["ratio_at_least_30x"]


def test_distillation_beats_the_student_alone(quick):
    result, _ = quick("distillation")
    assert len(result.per_seed) == 3
    assert result.student_distilled > result.student_alone
    assert result.teacher > result.student_alone
    assert [c["temperature"] for c in result.temperature_curve] == [1.0, 4.0]
    assert all(0 < c["accuracy"] <= 1 and c["runs"] == 3 for c in result.temperature_curve)


def test_quantization_granularity_ordering_and_collapse(quick):
    result, _ = quick("quantization-granularity")
    acc = {(r["bits"], r["scheme"]): r["accuracy"] for r in result.rows}
    assert acc[4, "per-channel symmetric"] >= acc[4, "per-tensor symmetric"]
    assert acc[4, "per-channel asymmetric"] >= acc[4, "per-tensor asymmetric"]
    collapsed = [c for c in result.collapse if c["collapse_bits"] is not None]
    assert collapsed and min(c["collapse_bits"] for c in collapsed) <= 3
    assert all(r["drop"] <= 1.0 for r in result.rows if r["bits"] == 8)
    assert result.holds["some_scheme_collapses"] and result.holds["per_channel_ge_per_tensor_at_4_bits_on_some_cnn"]


def test_layer_sensitivity_allocation_beats_uniform(quick):
    result, _ = quick("layer-sensitivity")
    assert result.allocated_accuracy >= result.uniform_accuracy
    assert {a["kind"] for a in result.allocations} == {"prune", "quantize"}
    ranks = [r["rank"] for r in result.layers if r["kind"] == "prune"]
    assert sorted(ranks) == list(range(1, len(ranks) + 1))


@pytest.mark.parametrize("name", cases.CASES)
def test_results_are_json_safe_with_figures_and_tables(quick, name):
    result, _ = quick(name)
    d = result.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["case"] == name and d["quick"] is True and set(d["holds"]) == set(result.holds)
    figs = case_figures(name, d)
    assert figs and all(isinstance(f, go.Figure) and f.data for f in figs)
    assert len(result.table()) and len(cases.published_table(name))
    assert cases.summary(result).keys() >= {"case", "holds"}


def test_stop_flag_ends_a_case_early():
    stop = threading.Event()
    stop.set()
    result = cases.run_case("distillation", quick=True, stop=stop)
    assert result.stopped and result.per_seed == ()


def test_unknown_case_and_bad_seeds():
    with pytest.raises(ConfigError):
        cases.run_case("nope")
    with pytest.raises(ConfigError):
        cases.run_case("distillation", seeds=0)


def test_cli_prints_one_json_object_and_records_the_run(capsys):
    assert main(["cases", "layer-sensitivity", "--quick", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["allocated_accuracy"] >= out["uniform_accuracy"]
    runs = Store().list(kind="case")
    assert len(runs) == 1 and runs[0].id == out["run_id"]
    assert runs[0].config["case"] == "layer-sensitivity"
    assert main(["cases", "layer-sensitivity", "--quick", "--json", "--no-store"]) == 0
    assert "run_id" not in json.loads(capsys.readouterr().out) and len(Store()) == 1


def test_cli_store_path_records_there_even_when_empty(tmp_path, capsys):
    path = tmp_path / "cases.sqlite"
    assert main(["cases", "layer-sensitivity", "--quick", "--json", "--store", str(path)]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    assert [r.id for r in Store(path).list()] == [run_id] and len(Store()) == 0


def test_a_stopped_case_has_no_figures_but_a_table():
    stop = threading.Event()
    stop.set()
    result = cases.run_case("distillation", quick=True, stop=stop)
    assert case_figures("distillation", result.to_dict()) == []
    assert len(result.table()) == 3

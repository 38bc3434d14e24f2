"""`evaluate`, `prune`, `quantize` and `lowrank` on a Hugging Face folder: loaded like any model, scored by
its task; what does not take transformers yet says so in one line."""
from __future__ import annotations

import json
import math

import pytest

from compression.core.errors import ModelDataMismatch
from compression.core.registry import compress
from compression.data.text import load_text_data
from compression.io.store import Store
from compression.methods.pruning import PruneConfig
from compression.metrics.text import fidelity, text_scores
from compression.models.hf import KINDS, load_hf_folder
from compression.models.hf_demo import make_demo_folder
from compression.models.loading import load_model
from compression.models.model import Model, linear_names
from tests.compression.cli.clitools import run_cli


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf-eval")
    return {kind: make_demo_folder(root / kind, kind) for kind in KINDS}


def _evaluate(capsys, *argv):
    code, out, err = run_cli(capsys, "evaluate", *argv, "--json", "--no-store")
    assert code == 0, err
    return json.loads(out)


def test_load_model_takes_a_folder_as_the_one_model_type(folders, digits):
    loaded = load_model(folders["encoder"])
    assert isinstance(loaded, Model) and loaded.is_text and loaded.task == "encoder"
    assert loaded.fingerprint == load_hf_folder(folders["encoder"]).fingerprint
    with pytest.raises(ModelDataMismatch, match="takes texts"):
        load_model(folders["encoder"], data=digits)


def test_each_task_gets_its_own_numbers(capsys, folders, tmp_path):
    enc = _evaluate(capsys, "--model", str(folders["encoder"]), "--no-latency")
    assert enc["task"] == "encoder" and enc["embedding_dim"] == 32 and enc["texts"] == 200
    dec = _evaluate(capsys, "--model", str(folders["decoder"]))
    assert dec["task"] == "decoder" and 1 < dec["perplexity"] < math.inf and dec["latency_ms"] > 0
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("text,label\n" + "".join(f"sentence number {i},{i % 2}\n" for i in range(20)))
    cls = _evaluate(capsys, "--model", str(folders["classifier"]), "--data", str(labelled), "--no-latency")
    assert cls["task"] == "classifier" and cls["classes"] == 2 and cls["texts"] == 20 and 0 <= cls["accuracy"] <= 1


def test_perplexity_agrees_with_the_fidelity_metrics(folders):
    hf, data = load_model(folders["decoder"]), load_text_data(None)
    assert text_scores(hf, data)["perplexity"] == pytest.approx(fidelity(hf, hf, data)["perplexity_original"])


def test_a_text_evaluation_is_recorded_under_the_folder(capsys, folders, tmp_path):
    store = tmp_path / "runs.sqlite"
    code, _, err = run_cli(capsys, "evaluate", "--model", str(folders["decoder"]), "--no-latency", "--json",
                           "--store", str(store))
    assert code == 0, err
    (run,) = Store(store).list()
    assert run.kind == "evaluate" and run.model == "decoder" and run.data == "sample sentences"
    assert run.metrics["perplexity"] > 1


@pytest.mark.parametrize("argv, message", [
    (["distill", "--teacher", "demo:encoder", "--student", "demo:student"], "hf --folder demo:encoder"),
    (["sensitivity", "--model", "demo:encoder", "--activations"], "Not on transformers yet"),
    (["prune", "--model", "demo:encoder", "--sparsity", "0.5", "--method", "taylor"], "Not on transformers yet"),
    (["quantize", "--model", "demo:decoder", "--activations"], "Not on transformers yet"),
    (["evaluate", "--model", "demo:decoder", "--device", "cuda"], "on the CPU"),
])
def test_what_is_not_there_yet_says_so_in_one_line(capsys, argv, message):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_folder_that_is_not_a_model_is_refused_in_one_line(capsys, tmp_path):
    code, _, err = run_cli(capsys, "evaluate", "--model", str(tmp_path), "--json")
    assert code == 2 and "config.json" in err and len(err.strip().splitlines()) == 1


FIDELITY = {"encoder": "cosine", "classifier": "agreement", "decoder": "agreement"}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("argv, method, simulated", [
    (["prune", "--sparsity", "0.5"], "hf_prune", False),
    (["quantize", "--bits", "4"], "hf_quantize", True),
    (["quantize", "--int8"], "hf_int8", False),
    (["lowrank", "--rank-ratio", "0.25"], "hf_lowrank", False),
])
def test_the_methods_take_a_folder_and_report_the_tasks_metrics(capsys, folders, kind, argv, method, simulated):
    code, out, err = run_cli(capsys, *argv, "--model", str(folders[kind]), "--no-latency", "--no-store", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["task"] == kind and result["method"] == method and result["simulated"] is simulated
    assert 0 < result[FIDELITY[kind]] <= 1 + 1e-6 and result["params_before"] > 0
    if method == "hf_prune":
        assert result["nonzero_after"] < result["nonzero_before"]
    if kind == "decoder":
        assert result["perplexity_original"] > 1 and result["perplexity"] > 1


def test_a_pruned_folder_saves_and_evaluates_to_the_same_perplexity(capsys, folders, tmp_path):
    saved = tmp_path / "pruned"
    code, out, err = run_cli(capsys, "prune", "--model", str(folders["decoder"]), "--sparsity", "0.5",
                             "--exclude", "lm_head", "--save", str(saved), "--no-latency", "--no-store", "--json")
    assert code == 0, err
    pruned = json.loads(out)
    assert pruned["saved_format"] == "huggingface"
    again = _evaluate(capsys, "--model", str(saved), "--no-latency")
    assert again["perplexity"] == pytest.approx(pruned["perplexity"], rel=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_sensitivity_sweeps_every_linear_layer_by_block_and_role(capsys, folders, kind):
    code, out, err = run_cli(capsys, "sensitivity", "--model", str(folders[kind]), "--kind", "prune",
                             "--levels", "0.5,0.9", "--json")
    assert code == 0, err
    result = json.loads(out)
    linears = linear_names(load_model(folders[kind]).model)
    assert result["task"] == kind and result["points"] == 2 * len(linears)
    assert [r["layer"] for r in result["rows"][::2]] == linears
    groups = {r["group"] for r in result["rows"]}
    assert {"ffn.in", "ffn.out"} <= groups and groups & {"attention.q", "attention.qkv"}
    assert {(g["group"], g["level"]) for g in result["by_group"]} == {(r["group"], r["level"]) for r in result["rows"]}


def test_a_sweep_point_equals_pruning_that_layer_alone(capsys, folders):
    """The sweep against the plain way: prune one layer with the library's method, measure fidelity."""
    hf, data = load_model(folders["decoder"]), load_text_data(None)
    layer = linear_names(hf.model)[1]
    code, out, _ = run_cli(capsys, "sensitivity", "--model", str(folders["decoder"]), "--kind", "prune",
                           "--levels", "0.5", "--layers", layer, "--json")
    (row,) = json.loads(out)["rows"]
    alone, _ = compress(hf, PruneConfig(sparsity=0.0, overrides={layer: 0.5}))
    expected = fidelity(hf, alone, data, max_texts=128)
    assert row["agreement"] == pytest.approx(expected["agreement"]) and row["kl_divergence"] == pytest.approx(
        expected["kl_divergence"], rel=1e-4)


def test_hf_takes_the_layer_selection_granularity_and_records_the_run(capsys, folders, tmp_path):
    store = tmp_path / "runs.sqlite"
    code, out, err = run_cli(capsys, "hf", "--folder", str(folders["encoder"]), "--method", "quantize", "--bits", "4",
                             "--granularity", "tensor", "--exclude", "pooler.*", "--no-latency", "--json",
                             "--store", str(store))
    assert code == 0, err
    result = json.loads(out)
    assert result["report"]["config"]["granularity"] == "tensor" and "pooler.dense" not in {
        r["layer"] for r in result["report"]["layers"]}
    (run,) = Store(store).list()
    assert run.id == result["run_id"] and run.kind == "hf_quantize" and run.config["exclude"] == ["pooler.*"]

"""The command line: JSON output, keys, and one-line errors with exit status 2."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from compression.models import zoo
from tests.compression.cli.clitools import run_cli

ROOT = Path(__file__).resolve().parents[3]
EVAL_KEYS = {"accuracy", "loss", "params", "nonzero_params", "fp32_bytes", "size_bytes", "macs",
             "latency_ms", "batch_size"}


def test_models_json(capsys):
    code, out, _ = run_cli(capsys, "models", "--json")
    names = [m["name"] for m in json.loads(out)]
    assert code == 0 and names == zoo.list_models()


def test_evaluate_json_keys(capsys):
    code, out, _ = run_cli(capsys, "evaluate", "--model", "demo:mlp", "--json")
    result = json.loads(out)
    assert code == 0 and EVAL_KEYS <= set(result)
    assert 0.95 <= result["accuracy"] <= 1 and result["params"] == 50610
    assert result["latency_ms"] > 0 and result["batch_size"] == 64


def test_evaluate_state_dict_with_arch_and_npz_data(capsys, tmp_path, digits):
    weights = tmp_path / "w.pt"
    torch.save(zoo.load_pretrained("lenet5").state_dict(), weights)
    data = tmp_path / "d.npz"
    X = digits.test.X.numpy() * digits.std + digits.mean
    np.savez(data, X=X, y=digits.test.y.numpy())
    # the file holds the digits' raw values (0..16); the built-in LeNet expects them standardised
    given = f"{digits.mean},{digits.std}"
    code, out, err = run_cli(capsys, "evaluate", "--model", str(weights), "--arch", "demo:lenet5",
                             "--data", str(data), "--preprocess", given, "--json", "--no-latency")
    assert code == 0, err
    assert json.loads(out)["accuracy"] == pytest.approx(0.98, abs=0.02)
    assert (json.loads(out)["split"], json.loads(out)["n_samples"]) == ("all", len(digits.test))
    code, out, err = run_cli(capsys, "evaluate", "--model", str(weights), "--arch", "demo:lenet5",
                             "--data", str(data), "--json", "--no-latency")
    as_stored = json.loads(out)
    assert as_stored["accuracy"] < 0.88 and "--preprocess standardize" in as_stored["warning"]


@pytest.mark.parametrize("argv,phrase", [
    (["evaluate", "--model", "demo:nope"], "Unknown built-in model"),
    (["evaluate", "--model", "/no/such/file.pt"], "No model file"),
    (["evaluate", "--model", "demo:mlp", "--data", "/no/such.npz"], "No file at"),
])
def test_errors_are_one_line_exit_2(capsys, argv, phrase):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and phrase in err and err.count("\n") == 1


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "compression", "evaluate", "--model", "demo:student",
                           "--json", "--no-latency"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["params"] == zoo.zoo_summary()["student"]["params"]


def test_prune_save_then_quantize_the_saved_file(capsys, tmp_path):
    pruned = tmp_path / "pruned.bin"
    code, out, err = run_cli(capsys, "prune", "--model", "demo:mlp", "--sparsity", "0.8", "--scope", "global",
                             "--save", str(pruned), "--json", "--no-latency")
    assert code == 0, err
    first = json.loads(out)
    assert EVAL_KEYS <= set(first) and abs(first["sparsity"] - 0.8) < 1e-3
    assert first["size_bytes"] < first["fp32_bytes"] / 3 and first["saved_bytes"] == pruned.stat().st_size
    code, out, err = run_cli(capsys, "quantize", "--model", str(pruned), "--bits", "4", "--json", "--no-latency")
    assert code == 0, err
    second = json.loads(out)
    assert second["bits"] == 4 and second["simulated"] is True and "sqnr_db" in second
    assert second["nonzero_params"] == first["nonzero_params"]  # sparsity kept through the chain
    assert second["size_bytes"] < first["size_bytes"]


def test_int8_lowrank_channel_and_distill_commands(capsys):
    code, out, _ = run_cli(capsys, "quantize", "--model", "demo:mlp", "--int8", "--json", "--no-latency")
    int8 = json.loads(out)
    assert code == 0 and int8["simulated"] is False and "real int8" in int8["label"]
    code, out, _ = run_cli(capsys, "lowrank", "--model", "demo:mlp", "--rank-ratio", "0.25", "--json", "--no-latency")
    assert code == 0 and json.loads(out)["params"] < 50610
    code, out, _ = run_cli(capsys, "prune", "--model", "demo:lenet5", "--sparsity", "0.5", "--method", "channel",
                           "--json", "--no-latency")
    assert code == 0 and json.loads(out)["params"] < 42794
    code, out, _ = run_cli(capsys, "distill", "--teacher", "demo:teacher", "--student", "demo:student", "--fresh",
                           "--epochs", "1", "--json", "--no-latency")
    result = json.loads(out)
    assert code == 0 and 0 < result["student_accuracy"] <= 1 and result["params"] == 18154


def test_bad_method_values_exit_2(capsys):
    code, out, err = run_cli(capsys, "prune", "--model", "demo:mlp", "--sparsity", "1.5")
    assert code == 2 and "sparsity" in err and out == ""
    code, _, err = run_cli(capsys, "quantize", "--model", "demo:mlp", "--bits", "1")
    assert code == 2 and "bits" in err


def test_runs_are_recorded_in_the_store(capsys, tmp_path):
    store = tmp_path / "store.sqlite"
    code, out, _ = run_cli(capsys, "prune", "--model", "demo:mlp", "--sparsity", "0.5", "--json", "--no-latency",
                           "--store", str(store))
    run_id = json.loads(out)["run_id"]
    code, out, _ = run_cli(capsys, "runs", "--store", str(store), "--json")
    runs = json.loads(out)
    assert code == 0 and [r["id"] for r in runs] == [run_id]
    assert runs[0]["kind"] == "prune" and runs[0]["config"]["sparsity"] == 0.5
    assert abs(runs[0]["metrics"]["sparsity"] - 0.5) < 1e-3
    code, out, _ = run_cli(capsys, "evaluate", "--model", "demo:mlp", "--json", "--no-latency", "--no-store")
    assert "run_id" not in json.loads(out)


def test_unavailable_device_is_a_one_line_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, out, err = run_cli(capsys, "evaluate", "--model", "demo:mlp", "--device", "cuda", "--no-store")
    assert code == 2 and "not available" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "sensitivity", "--model", "demo:mlp", "--device", "cuda", "--levels", "0.5")
    assert code == 2 and "not available" in err

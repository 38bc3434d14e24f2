"""The command line: JSON output, keys, and one-line errors with exit status 2."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from compression import zoo
from compression.cli import main

ROOT = Path(__file__).resolve().parents[2]
EVAL_KEYS = {"accuracy", "loss", "params", "nonzero_params", "fp32_bytes", "size_bytes", "macs",
             "latency_ms", "batch_size"}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


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
    code, out, err = run_cli(capsys, "evaluate", "--model", str(weights), "--arch", "demo:lenet5",
                             "--data", str(data), "--json", "--no-latency")
    assert code == 0, err
    assert json.loads(out)["accuracy"] > 0.9


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

"""The public API (`import compression as cs`): one load, compress and evaluate for every model kind."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import compression as cs
from compression.cli import main as cli_main


def test_every_public_name_resolves():
    for name in cs.__all__:
        assert getattr(cs, name) is not None, name
    with pytest.raises(AttributeError):
        cs.no_such_name  # noqa: B018


def test_import_is_cheap():
    """`import compression` loads no torch: names import on first use."""
    code = "import sys, compression; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_image_model_through_the_public_api_leaves_the_original_alone():
    model, data = cs.load_model("demo:mlp"), cs.load_data("digits")
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    small, result = cs.compress(model, cs.PruneConfig(sparsity=0.5), data)
    assert isinstance(small, cs.Model) and isinstance(result, cs.Result)
    row = cs.evaluate(small, data, reference=model, latency=False)
    base = cs.evaluate(model, data, latency=False)
    assert row["nonzero_params"] < 0.6 * base["nonzero_params"]
    assert 0.5 < row["agreement"] <= 1.0 and base["accuracy"] > 0.9
    assert all(torch.equal(v, model.model.state_dict()[k]) for k, v in before.items())


def test_transformer_through_the_public_api():
    model, texts = cs.load_model("demo:decoder"), cs.load_text_data()
    small, _ = cs.compress(model, cs.config_from_dict({"kind": "hf_prune", "sparsity": 0.5}), texts)
    row = cs.evaluate(small, texts, reference=model, latency=False)
    assert row["task"] == "decoder" and row["perplexity"] > 1
    assert row["perplexity_original"] == pytest.approx(cs.evaluate(model, texts, latency=False)["perplexity"])
    assert 0 < row["agreement"] < 1


def test_evaluate_refuses_a_model_with_the_other_kind_of_data():
    with pytest.raises(cs.CompressionError, match="takes texts"):
        cs.evaluate(cs.load_model("demo:decoder"), cs.load_data("digits"))
    with pytest.raises(cs.CompressionError, match="not texts"):
        cs.evaluate(cs.load_model("demo:mlp"), cs.load_text_data())
    with pytest.raises(cs.CompressionError, match="CPU"):
        cs.evaluate(cs.load_model("demo:encoder"), cs.load_text_data(), device="cuda")


@pytest.mark.parametrize("spec", ["demo:mlp", "demo:encoder"])
def test_cli_evaluate_prints_what_the_public_evaluate_returns(spec, capsys):
    assert cli_main(["evaluate", "--model", spec, "--no-latency", "--no-store", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    model = cs.load_model(spec)
    data = cs.load_text_data() if model.is_text else cs.load_data("digits")
    row = cs.evaluate(model, data, latency=False)
    assert {k: printed[k] for k in row if k != "per_class_accuracy"} == \
        pytest.approx({k: v for k, v in row.items() if k != "per_class_accuracy"})

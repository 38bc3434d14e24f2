"""A safetensors export of a model with quantized inputs loads back with them (its metadata says
at how many bits); a state dict with input quantizers but no such record is refused, not dropped."""
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from compression.models import zoo
from compression.data.datasets import load_digits
from compression.core.errors import ModelLoadError
from compression.io.export import export_model
from compression.models.loading import load_model
from compression.methods.quantization import QuantConfig, quantize


@pytest.fixture(scope="module")
def quantized():
    data = load_digits()
    model, _ = quantize(zoo.load_pretrained("lenet5"), QuantConfig(bits=4, activations=True, act_bits=4), data)
    return model, data


def test_safetensors_with_quantized_inputs_round_trips(quantized, tmp_path):
    model, data = quantized
    result = export_model(model, "safetensors", tmp_path / "q.safetensors", data.val.X[:1])
    assert "act_quant" in result.note
    with safe_open(str(tmp_path / "q.safetensors"), "pt") as f:
        record = json.loads(f.metadata()["act_quant"])
    assert record and all(v["bits"] == 4 for v in record.values())
    back = load_model(tmp_path / "q.safetensors", arch="demo:lenet5", data=data).model
    x = data.test.X
    assert torch.equal(back(x), model(x))                       # every input quantizer restored
    plain = load_model(tmp_path / "q.safetensors", arch="demo:lenet5")
    assert sum(hasattr(m, "act_bits") for m in plain.model.modules()) == len(record)


def test_state_dict_with_input_quantizers_but_no_record_is_refused(quantized, tmp_path):
    model, data = quantized
    export_model(model, "safetensors", tmp_path / "q.safetensors", data.val.X[:1])
    save_file(load_file(str(tmp_path / "q.safetensors")), str(tmp_path / "bare.safetensors"))  # metadata gone
    with pytest.raises(ModelLoadError, match="does not say at how many bits"):
        load_model(tmp_path / "bare.safetensors", arch="demo:lenet5")


def test_the_readme_snippet_restores_the_quantized_inputs(quantized, tmp_path, monkeypatch):
    model, data = quantized
    export_model(model, "safetensors", tmp_path / "model.safetensors", data.val.X[:1])
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    block = readme.split("rather than silently dropped. Outside this project:\n\n", 1)[1].split("\n\n", 1)[0]
    snippet = "\n".join(line[4:] for line in block.splitlines())        # the indented code block, as written
    monkeypatch.chdir(tmp_path)
    scope = {"model": zoo.load_pretrained("lenet5")}                   # a plain model, no input quantizers
    exec(snippet, scope)
    assert torch.allclose(scope["model"](data.test.X), model(data.test.X), atol=1e-5)

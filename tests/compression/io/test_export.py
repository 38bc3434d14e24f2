"""Export: every format loads back and computes what the model computes, with plain torch in a
fresh interpreter that never imports this project (TorchScript, torch.export, ONNX through onnx's
reference runtime) and with our own loader."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.utils import prune

from compression.core.errors import ConfigError
from compression.core.modules import copy_model, effective_weights
from compression.data.datasets import load_digits
from compression.io.export import ExportError, available_formats, export_model
from compression.methods import quantization
from compression.models import zoo
from compression.models.loading import load_model

PLAIN_LOADER = """
import json, sys, torch
x = torch.load(sys.argv[1])
out = {}
for fmt, path in json.loads(sys.argv[2]).items():
    if fmt == "torchscript":
        m = torch.jit.load(path)
    else:
        m = torch.export.load(path).module()
    with torch.no_grad():
        out[fmt] = m(x).tolist()
print(json.dumps(out))
assert not any(name == "compression" or name.startswith("compression.") for name in sys.modules)
"""


def pruned_mlp() -> torch.nn.Module:
    model = zoo.load_pretrained("mlp")
    for layer in (model.fc1, model.fc2):
        prune.l1_unstructured(layer, "weight", amount=0.6)
    return model


def quantized_lenet() -> torch.nn.Module:
    """4-bit weights and fake-quantized inputs (forward pre-hooks), if quantization exists."""
    cfg = quantization.QuantConfig(bits=4, activations=True)
    return quantization.quantize(zoo.load_pretrained("lenet5"), cfg, load_digits())[0]


MODELS = {"pruned_mlp": pruned_mlp, "resnet": lambda: zoo.load_pretrained("resnet"),
          "quantized_lenet": quantized_lenet}


@pytest.fixture(params=list(MODELS))
def model_case(request):
    return request.param, MODELS[request.param]()


def _plain_outputs(x: torch.Tensor, files: dict[str, Path], tmp_path: Path) -> dict[str, torch.Tensor]:
    torch.save(x, tmp_path / "x.pt")
    proc = subprocess.run([sys.executable, "-I", "-c", PLAIN_LOADER, str(tmp_path / "x.pt"),
                           json.dumps({k: str(v) for k, v in files.items()})],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {k: torch.tensor(v) for k, v in json.loads(proc.stdout).items()}


def test_traced_and_exported_load_with_plain_torch(model_case, digits, tmp_path):
    name, model = model_case
    before = {k: v.clone() for k, v in model.state_dict().items()}
    files = {fmt: export_model(model, fmt, tmp_path / f"{name}.{fmt}", digits.test.X[:1]).path
             for fmt in ("torchscript", "exported")}
    x = digits.test.X[:5]  # a batch size that was never traced: the batch dimension is dynamic
    with torch.no_grad():
        ref = model.eval()(x)
    for fmt, out in _plain_outputs(x, files, tmp_path).items():
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5, msg=f"{fmt} differs")
    for fmt, path in files.items():
        loaded = load_model(path, data=digits)
        assert loaded.origin == fmt
        torch.testing.assert_close(loaded.model(digits.test.X), model(digits.test.X), atol=1e-5, rtol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # caller's model unchanged
    assert prune.is_pruned(model) == (name == "pruned_mlp")


def test_safetensors_folds_masks(digits, tmp_path):
    from safetensors.torch import load_file

    model = pruned_mlp()
    result = export_model(model, "safetensors", tmp_path / "m.safetensors", digits.test.X[:1])
    state = load_file(str(result.path))
    assert set(state) == {k for k in zoo.load_pretrained("mlp").state_dict()}  # no *_orig / *_mask
    assert float((state["fc1.weight"] == 0).float().mean()) == pytest.approx(0.6, abs=1e-3)
    loaded = load_model(result.path, arch="demo:mlp", data=digits)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(digits.test.X), model(digits.test.X), atol=1e-6, rtol=1e-6)
    assert result.size_bytes == result.path.stat().st_size > 0


def test_compact_round_trip(model_case, digits, tmp_path):
    name, model = model_case
    result = export_model(model, "compact", tmp_path / f"{name}.bin", digits.test.X[:1])
    loaded = load_model(result.path, data=digits)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(digits.test.X), model(digits.test.X), atol=1e-5, rtol=1e-5)


def test_onnx_matches_when_available(model_case, digits, tmp_path):
    if "onnx" not in available_formats():
        with pytest.raises(ExportError, match="pip install onnx"):
            export_model(model_case[1], "onnx", tmp_path / "m.onnx", digits.test.X[:1])
        assert not (tmp_path / "m.onnx").exists()
        return
    from onnx import load
    from onnx.reference import ReferenceEvaluator

    name, model = model_case
    result = export_model(model, "onnx", tmp_path / f"{name}.onnx", digits.test.X[:1])
    x = digits.test.X[:7]
    out = ReferenceEvaluator(load(str(result.path))).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), model(x), atol=1e-4, rtol=1e-4)


def test_onnx_matches_onnxruntime(model_case, digits, tmp_path):
    """An independent runtime runs the exported graph: its logits equal the model's."""
    if "onnx" not in available_formats():
        pytest.skip("onnx is not installed (pip install -r requirements.txt installs it)")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (requirements.txt has it)")
    name, model = model_case
    result = export_model(model, "onnx", tmp_path / f"{name}.onnx", digits.test.X[:1])
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = digits.test.X[:33]                               # a batch size the export never saw
    (out,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), model(x), atol=1e-4, rtol=1e-4)


def test_folded_copy_and_errors(digits, tmp_path):
    model = pruned_mlp()
    folded = copy_model(model, fold=True).eval()
    assert not prune.is_pruned(folded) and prune.is_pruned(model)
    assert all(torch.equal(effective_weights(model)[k], v) for k, v in folded.state_dict().items())
    with pytest.raises(ConfigError, match="Unknown export format"):
        export_model(model, "keras", tmp_path / "m", digits.test.X[:1])

    class Branchy(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :10] if float(x.sum()) > 0 else x.flatten(1)[:, 10:20]

    with pytest.raises(ExportError, match="could not be exported as exported"):
        export_model(Branchy(), "exported", tmp_path / "b.pt2", digits.test.X[:1])
    assert not (tmp_path / "b.pt2").exists()


def test_onnx_is_optional(monkeypatch, digits, tmp_path):
    import compression.io.export as export

    monkeypatch.setattr(export, "onnx_available", lambda: False)
    assert "onnx" not in export.available_formats() and "torchscript" in export.available_formats()
    with pytest.raises(ExportError, match="pip install onnx"):
        export_model(pruned_mlp(), "onnx", tmp_path / "m.onnx", digits.test.X[:1])

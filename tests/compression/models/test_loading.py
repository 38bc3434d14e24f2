"""Loading: every accepted format, refused unsafe pickles, and model/data mismatches."""
from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from compression.models import zoo
from compression.core.errors import ModelDataMismatch, ModelLoadError
from compression.models.loading import check_model, load_model, load_model_bytes


class _Evil:
    """Unpickling this would create a file: the loader must never let that happen."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (Path.write_text, (Path(self.target), "pwned"))


def _outputs_equal(a: nn.Module, b: nn.Module, x: torch.Tensor) -> bool:
    with torch.inference_mode():
        return torch.equal(a(x), b(x))


def test_demo_model_loads_and_checks(digits):
    loaded = load_model("demo:lenet5", data=digits)
    assert loaded.origin == "demo" and loaded.arch == "lenet5"
    assert loaded.model(digits.test.X[:4]).shape == (4, 10)


def test_unknown_demo_name_is_clear():
    with pytest.raises(ModelLoadError, match="Choose one of"):
        load_model("demo:nope")


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_state_dict_with_arch(tmp_path, digits, fmt):
    ref = zoo.load_pretrained("mlp")
    path = tmp_path / f"w.{fmt}"
    if fmt == "safetensors":
        save_file(ref.state_dict(), str(path))
    else:
        torch.save(ref.state_dict(), path)
    loaded = load_model(path, arch="demo:mlp", data=digits)
    assert loaded.origin == "state_dict"
    assert _outputs_equal(loaded.model, ref, digits.test.X[:16])


def test_state_dict_without_arch_asks_for_it(tmp_path, digits):
    path = tmp_path / "w.safetensors"
    save_file(zoo.load_pretrained("mlp").state_dict(), str(path))
    with pytest.raises(ModelLoadError, match="architecture"):
        load_model(path, data=digits)


def test_torchscript_and_exported_program(tmp_path, digits):
    ref = zoo.load_pretrained("resnet")
    ts, pt2 = tmp_path / "m.ts", tmp_path / "m.whatever"  # recognised by content, not name
    torch.jit.save(torch.jit.script(ref), str(ts))
    batch = torch.export.Dim.DYNAMIC
    torch.export.save(torch.export.export(ref, (digits.test.X[:2],), dynamic_shapes=({0: batch},)), str(pt2))
    x = digits.test.X[:5]
    for path, kind in ((ts, "torchscript"), (pt2, "exported")):
        loaded = load_model(path, data=digits)
        assert loaded.origin == kind
        with torch.inference_mode():
            assert torch.allclose(loaded.model(x), ref(x), atol=1e-5)


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_malicious_pickle_never_runs(tmp_path, digits, writer):
    target = tmp_path / "side_effect.txt"
    path = tmp_path / "evil.pt"
    payload = {"fc1.weight": _Evil(target)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    with pytest.raises(ModelLoadError, match="Refused"):
        load_model(path, arch="demo:mlp", data=digits)
    assert not target.exists()


def test_fixed_batch_export_gets_a_hint(tmp_path, digits):
    path = tmp_path / "fixed.pt2"
    torch.export.save(torch.export.export(zoo.load_pretrained("mlp"), (digits.test.X[:2],)), str(path))
    with pytest.raises(ModelDataMismatch, match="dynamic batch"):
        load_model(path, data=digits)


def test_malicious_pickle_inside_exported_program_never_runs(tmp_path, digits):
    """torch.export.load would fall back to full unpickling for a 'pickled' weight: we refuse."""
    good = tmp_path / "good.pt2"
    torch.export.save(torch.export.export(zoo.load_pretrained("mlp"), (digits.test.X[:2],)), str(good))
    target = tmp_path / "side_effect.txt"
    evil_bytes = io.BytesIO()
    torch.save(_Evil(target), evil_bytes)
    bad = tmp_path / "bad.pt2"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                first = next(iter(config["config"].values()))
                first["use_pickle"] = True
                evil_name = first["path_name"]
                data = json.dumps(config).encode()
            zout.writestr(info, data)
    with zipfile.ZipFile(bad, "a") as z:  # overwrite the weight's payload with the evil pickle
        names = [n for n in z.namelist() if n.endswith("/" + evil_name)]
    rebuilt = tmp_path / "bad2.pt2"
    with zipfile.ZipFile(bad) as zin, zipfile.ZipFile(rebuilt, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, evil_bytes.getvalue() if info.filename in names else zin.read(info))
    with pytest.raises(ModelLoadError):
        load_model(rebuilt, data=digits)
    assert not target.exists()


@pytest.mark.parametrize("content,match", [
    (b"", "empty"),
    (b"\x00\x01garbage" * 100, "Unknown model format"),
])
def test_bad_files(tmp_path, content, match):
    path = tmp_path / "m.pt"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=match):
        load_model(path)


def test_zip_that_is_not_a_model(tmp_path):
    path = tmp_path / "m.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(ModelLoadError, match="not a model"):
        load_model(path)


def test_truncated_torchscript(tmp_path, digits):
    path = tmp_path / "m.ts"
    torch.jit.save(torch.jit.script(zoo.load_pretrained("mlp")), str(path))
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ModelLoadError):
        load_model(path, data=digits)


def test_wrong_architecture_lists_keys(tmp_path, digits):
    path = tmp_path / "w.safetensors"
    save_file(zoo.load_pretrained("lenet5").state_dict(), str(path))
    with pytest.raises(ModelLoadError, match="missing keys") as info:
        load_model(path, arch="demo:mlp", data=digits)
    assert "unexpected keys" in str(info.value)


def test_misshaped_state_dict(tmp_path, digits):
    state = zoo.load_pretrained("mlp").state_dict()
    state["fc2.weight"] = torch.zeros(100, 299)
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    with pytest.raises(ModelLoadError, match="mis-shaped: fc2.weight"):
        load_model(path, arch="demo:mlp", data=digits)


def test_model_data_mismatch(digits):
    wrong = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with pytest.raises(ModelDataMismatch, match="10 classes"):
        check_model(wrong, digits)
    with pytest.raises(ModelDataMismatch, match="does not run"):
        check_model(nn.Sequential(nn.Flatten(), nn.Linear(100, 10)), digits)


def test_nan_weights_refused(digits):
    model = zoo.load_pretrained("mlp")
    with torch.no_grad():
        model.fc1.weight[0, 0] = float("nan")
    with pytest.raises(ModelLoadError, match="NaN"):
        check_model(model, digits)


class _DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = zoo.load_pretrained("mlp")

    def forward(self, x):
        return {"features": x.flatten(1), "logits": self.net(x)}


class _TupleOut(_DictOut):
    def forward(self, x):
        return self.net(x), x.flatten(1)


class _Ambiguous(_DictOut):
    def forward(self, x):
        out = self.net(x)
        return out, out * 2


def test_dict_and_tuple_outputs(digits):
    for cls in (_DictOut, _TupleOut):
        wrapped = check_model(cls(), digits)
        assert wrapped(digits.test.X[:3]).shape == (3, 10)
    with pytest.raises(ModelDataMismatch, match="no unambiguous logits"):
        check_model(_Ambiguous(), digits)


def test_upload_bytes_name_is_never_a_path(tmp_path, digits):
    buf = io.BytesIO()
    torch.save(zoo.load_pretrained("mlp").state_dict(), buf)
    loaded = load_model_bytes("../../etc/passwd", buf.getvalue(), arch="mlp", data=digits)
    assert loaded.name == "passwd"
    assert not (tmp_path / "passwd").exists()

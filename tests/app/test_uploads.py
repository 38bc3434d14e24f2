"""Hostile and broken uploads in the app: each gives a clear message and the app keeps working."""
from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save
from streamlit.testing.v1 import AppTest
from torch import nn

from compression.models import zoo

APP = str(Path(__file__).resolve().parents[2] / "app.py")
SIDE_EFFECT = Path("/tmp/compression-studio-pwned-by-upload.txt")


class _Evil:
    def __reduce__(self):
        return (Path.write_text, (SIDE_EFFECT, "pwned"))


class _Raises(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        raise RuntimeError("boom inside forward")


def _ts(model: nn.Module, example=None) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(model) if example is None else torch.jit.trace(model, example), buf)
    return buf.getvalue()


def _torch_save(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _nan_state() -> dict:
    state = zoo.load_pretrained("mlp").state_dict()
    state["fc1.weight"][0, 0] = float("nan")
    return state


def _zip_not_model() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("notes.txt", "hello")
    return buf.getvalue()


class _CustomOp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        torch.ops.profiler._record_function_enter_new("x", None)
        return self.fc(x.flatten(1))


def _with_native_library() -> bytes:
    """A torch.export program archive with a native library entry added."""
    buf, out = io.BytesIO(), io.BytesIO()
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    torch.export.save(torch.export.export(net, (torch.randn(2, 1, 8, 8),),
                                          dynamic_shapes=({0: torch.export.Dim("b", max=4096)},)), buf)
    with zipfile.ZipFile(buf) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
        zout.writestr(zin.namelist()[0].split("/")[0] + "/data/aotinductor/model.so", b"\x7fELF")
    return out.getvalue()


BAD_MODELS = {
    "empty": (b"", None, "empty"),
    "random bytes": (np.random.default_rng(0).bytes(4096), None, "Unknown model format"),
    "truncated torchscript": (_ts(zoo.load_pretrained("mlp"))[:1500], None, "Could not load"),
    "zip, not a model": (_zip_not_model(), None, "not a model"),
    "malicious pickle": (pickle.dumps({"fc1.weight": _Evil()}), "mlp", "Refused"),
    "malicious torch.save": (_torch_save({"fc1.weight": _Evil()}), "mlp", "Refused"),
    "wrong input shape": (_ts(nn.Sequential(nn.Flatten(), nn.Linear(100, 10))), None, "does not run"),
    "wrong class count": (_ts(nn.Sequential(nn.Flatten(), nn.Linear(64, 3))), None, "10 classes"),
    "wrong architecture": (st_save(zoo.load_pretrained("lenet5").state_dict()), "mlp", "missing keys"),
    "nan weights": (st_save(_nan_state()), "mlp", "NaN"),
    "forward raises": (_ts(_Raises()), None, "boom inside forward"),
    "state dict without architecture": (st_save(zoo.load_pretrained("mlp").state_dict()), None, "architecture"),
    "custom operator in TorchScript": (_ts(_CustomOp()), None, "profiler"),
    "native library in a program": (_with_native_library(), None, "native libraries"),
}


def _app_on_upload() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["model_source"] = "Upload a file…"
    at.switch_page("pages/model.py").run()  # the Model & data page: its numbers show the model in use
    assert not at.exception
    return at


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_bad_model_upload_is_a_clear_message(case):
    payload, arch, phrase = BAD_MODELS[case]
    SIDE_EFFECT.unlink(missing_ok=True)
    at = _app_on_upload()
    if arch:
        at.session_state["upload_arch"] = arch
    at.file_uploader(key="model_upload").upload("model.pt", payload)
    at.run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "Could not load the model" in errors and phrase in errors, errors
    assert not SIDE_EFFECT.exists()
    # the app still works: the previous (built-in) model's numbers are shown
    assert any(m.label == "Test accuracy" for m in at.metric)


def test_good_state_dict_upload_becomes_the_model():
    at = _app_on_upload()
    at.session_state["upload_arch"] = "lenet5"
    at.file_uploader(key="model_upload").upload("w.safetensors", st_save(zoo.load_pretrained("lenet5").state_dict()))
    at.run()
    assert not at.exception and not at.error
    assert next(m.value for m in at.metric if m.label == "Parameters") == "42,794"


@pytest.mark.parametrize("payload,phrase", [
    (b"", "empty"),
    (b"a,b,label\n", "header"),
    (b"\xff\xfe\x00garbage", ""),
])
def test_bad_data_upload_is_a_clear_message(payload, phrase):
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["data_source"] = "Upload a file…"
    at.switch_page("pages/model.py").run()
    at.file_uploader(key="data_upload").upload("data.csv", payload)
    at.run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "Could not use that data" in errors and phrase in errors
    assert any(m.label == "Test accuracy" for m in at.metric)

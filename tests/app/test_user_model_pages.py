"""Every page on a user's own architecture (a torch.export program and a TorchScript module the
zoo does not have) with its own data file: no exception, and no error box other than a stated
refusal of a method the format cannot carry."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from streamlit.testing.v1 import AppTest
from torch import nn

from compression.data.datasets import load_digits
from tests.e2e.test_browser import PAGES

APP = str(Path(__file__).resolve().parents[2] / "app.py")
UPLOAD = "Upload a file…"


class OwnNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.gn = nn.Conv2d(1, 8, 3, padding=1), nn.GroupNorm(2, 8)
        self.head = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        return self.head(F.max_pool2d(F.hardswish(self.gn(self.stem(x))), 2).flatten(1))


def _files(fmt: str) -> tuple[bytes, bytes]:
    torch.manual_seed(0)
    net, raw = OwnNet().eval(), load_digits("none", "test").scored
    x = raw.X / 16.0
    model, data = io.BytesIO(), io.BytesIO()
    if fmt == "pt2":
        torch.export.save(torch.export.export(net, (x[:2],), dynamic_shapes=({0: torch.export.Dim("b", max=4096)},)),
                          model)
    else:
        torch.jit.save(torch.jit.script(net), model)
    np.savez(data, X=x.numpy(), y=raw.y.numpy())
    return model.getvalue(), data.getvalue()


@pytest.mark.parametrize("fmt", ["pt2", "pt"])
def test_every_page_runs_on_a_user_model(fmt):
    model, data = _files(fmt)
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.selectbox(key="model_source").select(UPLOAD).run()
    at.file_uploader(key="model_upload").upload(f"own.{fmt}", model).run()
    at.selectbox(key="data_source").select(UPLOAD).run()
    at.file_uploader(key="data_upload").upload("own_data.npz", data).run()
    assert not at.exception and not at.error
    problems = {}
    for name in PAGES:
        at.switch_page(f"pages/{name}.py").run()
        assert not at.exception, (name, at.exception)
        errors = [e.value for e in at.error if "torch.export" not in e.value]  # refusals name the way out
        if errors:
            problems[name] = errors
    assert not problems, problems

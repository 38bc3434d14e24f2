"""AppTest: the model, data and settings chosen in the sidebar stay in use on every page, and
uploads survive page changes and a trip of the pickers away and back."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from compression.models import zoo
from compression.data.datasets import load_digits

APP = str(Path(__file__).resolve().parents[2] / "app.py")
UPLOAD = "Upload a file…"
PAGES = ["start", "glossary", "model", "weights", "pruning", "quantization", "lowrank", "distillation",
         "transformer_models", "sensitivity", "explain", "tradeoffs", "runs", "export", "cases"]


def active(at: AppTest) -> str:
    """The sidebar's line naming the model and data in use: '**NAME** on **DATA**: ...'."""
    return next(c.value for c in at.sidebar.caption if " on **" in c.value)


def sidebar_text(at: AppTest) -> str:
    return " ".join(e.value for e in [*at.sidebar.caption, *at.sidebar.error, *at.sidebar.success])


def scripted_mlp() -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(zoo.load_pretrained("mlp")), buf)
    return buf.getvalue()


def digits_npz() -> bytes:
    test = load_digits().test
    buf = io.BytesIO()
    np.savez(buf, X=test.X.numpy().astype(np.float32), y=test.y.numpy())
    return buf.getvalue()


@pytest.fixture
def at() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=60).run()
    assert not app.exception
    return app


def visit_every_page(at: AppTest, expected: str) -> None:
    for name in PAGES:
        at.switch_page(f"pages/{name}.py").run()
        assert not at.exception, (name, at.exception)
        assert active(at).startswith(expected), (name, active(at))


def test_chosen_model_is_used_on_every_page(at):
    at.selectbox(key="model_source").select("demo:resnet").run()
    assert active(at).startswith("**demo:resnet** on **digits**")
    visit_every_page(at, "**demo:resnet** on **digits**")
    at.switch_page("pages/model.py").run()
    assert next(m.value for m in at.metric if m.label == "Parameters") == "77,754"
    assert at.selectbox(key="model_source").value == "demo:resnet"


def test_uploaded_model_and_data_are_used_on_every_page(at):
    at.selectbox(key="model_source").select(UPLOAD).run()
    at.file_uploader(key="model_upload").upload("mlp_scripted.pt", scripted_mlp()).run()
    at.selectbox(key="data_source").select(UPLOAD).run()
    at.file_uploader(key="data_upload").upload("digits_test.npz", digits_npz()).run()
    assert not at.exception and not at.error
    expected = "**mlp_scripted.pt** on **digits_test**"
    assert active(at).startswith(expected)
    visit_every_page(at, expected)


def test_back_to_upload_reuses_the_last_upload(at):
    at.selectbox(key="model_source").select(UPLOAD).run()
    at.file_uploader(key="model_upload").upload("mlp_scripted.pt", scripted_mlp()).run()
    at.selectbox(key="model_source").select("demo:resnet").run()
    assert active(at).startswith("**demo:resnet**")
    at.switch_page("pages/pruning.py").run()
    at.selectbox(key="model_source").select(UPLOAD).run()
    assert not at.exception and not at.error
    assert active(at).startswith("**mlp_scripted.pt**")
    assert "Using upload mlp_scripted.pt; upload another to replace it" in sidebar_text(at)


def test_back_to_uploaded_data_reuses_it(at):
    at.selectbox(key="data_source").select(UPLOAD).run()
    at.file_uploader(key="data_upload").upload("digits_test.npz", digits_npz()).run()
    at.selectbox(key="data_source").select("digits (bundled)").run()
    assert " on **digits**:" in active(at)
    at.switch_page("pages/weights.py").run()
    at.selectbox(key="data_source").select(UPLOAD).run()
    assert not at.exception and not at.error
    assert " on **digits_test**:" in active(at)
    assert "Using upload digits_test; upload another to replace it" in sidebar_text(at)


def test_failed_upload_names_the_model_still_in_use(at):
    at.selectbox(key="model_source").select(UPLOAD).run()
    at.file_uploader(key="model_upload").upload("bad.pt", b"not a model").run()
    assert not at.exception
    assert "Could not load the model" in sidebar_text(at)
    assert "Still using demo:mlp" in sidebar_text(at)
    at.switch_page("pages/quantization.py").run()      # the bad file is still in the uploader
    assert "Could not load the model" in sidebar_text(at) and "Still using demo:mlp" in sidebar_text(at)
    assert active(at).startswith("**demo:mlp**")


def test_failed_upload_after_a_good_one_keeps_the_good_one(at):
    at.selectbox(key="model_source").select(UPLOAD).run()
    at.file_uploader(key="model_upload").upload("mlp_scripted.pt", scripted_mlp()).run()
    at.file_uploader(key="model_upload").upload("bad.pt", b"not a model").run()
    assert "Could not load the model" in sidebar_text(at)
    assert "Still using mlp_scripted.pt" in sidebar_text(at)
    assert active(at).startswith("**mlp_scripted.pt**")


def test_hidden_architecture_choice_comes_back(at):
    at.selectbox(key="model_source").select(UPLOAD).run()
    at.selectbox(key="upload_arch").select("lenet5").run()
    at.selectbox(key="model_source").select("demo:lenet5").run()   # the picker is not drawn now
    at.switch_page("pages/lowrank.py").run()
    at.selectbox(key="model_source").select(UPLOAD).run()
    assert at.selectbox(key="upload_arch").value == "lenet5"

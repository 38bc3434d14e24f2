"""The data panel: an uploaded file reaches the model as stored unless the user chooses a
preprocessing; the samples scored are stated; a mismatch is said in one line."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from streamlit.testing.v1 import AppTest

from compression.models import zoo
from compression.data.datasets import load_digits

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def _uploads() -> tuple[bytes, bytes, float]:
    """The built-in MLP as TorchScript (it expects standardised digits), the digits' raw values
    (0..16) as an .npz, and the MLP's accuracy on the whole file once standardised."""
    mlp, raw = zoo.load_pretrained("mlp"), load_digits("none", "all").scored
    model, data = io.BytesIO(), io.BytesIO()
    torch.jit.save(torch.jit.script(mlp), model)
    np.savez(data, X=raw.X.numpy(), y=raw.y.numpy())
    standard = load_digits("standardize", "all")
    with torch.no_grad():
        accuracy = (mlp(standard.scored.X).argmax(1) == standard.scored.y).float().mean().item()
    return model.getvalue(), data.getvalue(), accuracy


def _metric(at: AppTest, label: str):
    return next(m for m in at.metric if m.label == label)


def test_uploaded_data_is_scored_as_stored_then_as_chosen():
    model, data, standard_accuracy = _uploads()
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["model_source"] = "Upload a file…"
    at.session_state["data_source"] = "Upload a file…"
    at.switch_page("pages/model.py").run()
    at.file_uploader(key="model_upload").upload("mlp.pt", model)
    at.file_uploader(key="data_upload").upload("raw_digits.npz", data)
    at.run()
    assert not at.exception and not at.error
    caption = " ".join(c.value for c in at.sidebar.caption)
    assert "scored on 1797 samples (the whole file)" in caption and "values as stored" in caption
    as_stored = float(_metric(at, "Baseline accuracy").value.rstrip("%")) / 100
    assert as_stored < standard_accuracy - 0.1
    assert any("preprocessing standardize" in w.value for w in at.warning)       # the mismatch is said

    at.selectbox(key="data_preprocess").set_value("standardize").run()
    assert not at.exception and not at.error and not at.warning
    assert float(_metric(at, "Baseline accuracy").value.rstrip("%")) / 100 == \
        np.float64(standard_accuracy).round(4)
    at.selectbox(key="data_split").set_value("test").run()
    assert "scored on 360 samples (the held-out test split (20%))" in " ".join(c.value for c in at.sidebar.caption)
    assert _metric(at, "Test accuracy").value.endswith("%")                     # the Model & data page


def test_bad_custom_preprocessing_is_a_message_and_the_data_stays():
    _, data, _ = _uploads()
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["data_source"] = "Upload a file…"
    at.run()
    at.file_uploader(key="data_upload").upload("raw_digits.npz", data)
    at.run()
    at.selectbox(key="data_preprocess").set_value("custom").run()
    at.text_input(key="data_preprocess_custom").set_value("0.5").run()
    assert not at.exception
    assert any("Unknown preprocessing" in e.value for e in at.error)
    assert "Still using raw_digits" in " ".join(c.value for c in at.sidebar.caption)

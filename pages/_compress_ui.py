"""UI helpers shared by the method pages (weights, pruning, quantization, low-rank): cached calls
into `compression` keyed by the model and data fingerprints, and small `*_ui()` panels. Any model
work happens in the library; this module only calls it and draws."""
from __future__ import annotations

from typing import Callable

import streamlit as st
import torch

from compression.data.datasets import Dataset
from pages._common import (add_result, compressed_result, current_base, current_data, keep_as_working, show_error,
                           training_controls, with_latency)


def intro(text: str, title: str) -> None:
    """The page's plain-language explanation, open on arrival."""
    with st.expander(title, expanded=True):
        st.write(text)


@st.cache_data(max_entries=16, show_spinner="Reading weights and activations…")
def _weights_inputs(_model: torch.nn.Module, model_id: str, _data: Dataset, data_id: str,
                    n: int) -> tuple[dict, dict]:
    from compression.workflows.curves import layer_inputs, weight_arrays

    return weight_arrays(_model), layer_inputs(_model, _data.train.X[:n])


def weights_and_inputs(n: int = 256) -> tuple[dict, dict]:
    """({layer: flat weights}, {layer: flat inputs on `n` training samples}) of the current model."""
    base, data = current_base(), current_data()
    return _weights_inputs(base.model, base.fingerprint, data, data.fingerprint, n)


@st.cache_data(max_entries=16, show_spinner="Real int8: quantizing and measuring the kernels…")
def _real_int8(_model: torch.nn.Module, model_id: str, _data: Dataset, data_id: str) -> dict:
    from compression.workflows.slider import real_int8 as make

    return make(_model, _data)


def real_int8() -> dict:
    """The current model on PyTorch's dynamic int8 kernels: compression.workflows.slider.real_int8's
    {"metrics", "report"}, whose latency is one paired measurement against the fp32 original at
    the batch size of every other result. Once per (model, data)."""
    base, data = current_base(), current_data()
    return _real_int8(base.model, base.fingerprint, data, data.fingerprint)


def compressed_copy(cfg) -> torch.nn.Module:
    """The compressed model object (for histograms, fine-tuning and keeping), made once per
    (model, data, config) in this session: reruns that change none of them reuse it. Nothing
    changes it afterwards (fine-tuning trains a copy; keeping makes it the new base model)."""
    base, data = current_base(), current_data()
    key = (base.fingerprint, data.fingerprint, cfg.to_json())
    held = st.session_state.get("compressed_copy")
    if held is None or held[0] != key:
        from compression.core.registry import compress

        held = (key, compress(base.model, cfg, data, measure_latency=False)[0])
        st.session_state["compressed_copy"] = held
    return held[1]


def tune_ui(key: str, title: str, button: str, cfg, label: str,
            train: Callable[[int, object], tuple[torch.nn.Module, object]]) -> None:
    """Epochs, a button that runs `train(epochs, job) -> (model, Report)` in the background (with
    progress and Stop), and, once it has finished for the current `cfg`: the fine-tuned model
    evaluated against the original, added as a result, and a button to keep it."""
    base, data = current_base(), current_data()

    def work(epochs: int, job) -> dict:
        from compression.metrics.evaluate import evaluate

        model, report = train(epochs, job)
        metrics = evaluate(model, data, reference=base.model, latency=False).to_dict(full=True)
        return {"for": (base.fingerprint, data.fingerprint, cfg.to_json()), "model": model,
                "report": report.to_dict(), "metrics": metrics,
                "epochs": len(report.metrics.get("history", [])) or epochs}

    c1, c2, c3 = st.columns(3)
    done = training_controls(key, title, button, c1, c2, work)
    if done is None:
        return
    if done["for"] != (base.fingerprint, data.fingerprint, cfg.to_json()):
        st.caption(f"The last {title.lower()} was for another model or other settings; run it again for these.")
        return
    r = done["report"]["metrics"]
    m = with_latency(done["metrics"], cfg, compressed_result(cfg)["report"])  # same architecture, same latency
    tuned = f"{label} + {title.lower()} ({done['epochs']} ep)"
    add_result(tuned, cfg.to_dict(), m)
    st.success(f"Fine-tuned ({title}, {done['epochs']} epochs): test accuracy {m['accuracy']:.2%}; validation "
               f"{r['accuracy_before']:.2%} before → {r['accuracy_after']:.2%} after.")
    if c3.button("Keep the fine-tuned model", key=f"{key}_keep"):
        try:
            keep_as_working(done["model"], tuned)
        except Exception as exc:
            show_error(exc, "Could not keep the model")
            return
        st.rerun()

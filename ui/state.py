"""This session's state: the base model, the working (kept) model, the data, the device and the
results, in st.session_state; and the cached results of the current model on the current data.

The keys the app shares between pages (pages read them through the functions here, never by name):
    base: Model              the model every page starts from (a kept compressed model, once kept)
    base_source: str               the sidebar choice it came from ("demo:NAME" or UPLOAD)
    original: Model          the model before the first Keep (absent until then)
    kept_steps: list[dict]         the configs kept, in order (the recipe the Export page offers)
    working: dict                  the latest result on screen: {label, config, metrics}
    results: list[dict]            this session's results for Trade-offs: {key, label, config, metrics, model}
    recorded: dict[str, str]       results recorded in the run store: identity -> run id
    data_obj: Dataset | None       an uploaded data set (None: the bundled digits)
    device: str                    "cpu" or a CUDA device the sidebar offers
    model_source: str              the sidebar's model choice (a widget key)
Widget keys and page-local keys (a page's job, its last setup) belong to their page.
"""
from __future__ import annotations

import streamlit as st
import torch

from compression.core.devices import available_devices
from compression.core.registry import compress
from compression.data.datasets import Dataset
from compression.io.store import Store
from compression.models import zoo
from compression.models.model import Model
from compression.workflows.slider import LATENCY_FIELDS, speed_note
from ui.cache import (baseline_metrics, cached_compressed, cached_curve, cached_latency, cached_real_int8,
                      cached_weights_inputs, own_demo_model, shared_digits)
from ui.errors import show_error


def current_device() -> str:
    """The device this session runs evaluation, latency, sweeps and training on ('cpu' unless
    the sidebar's Device picker chose a GPU)."""
    device = st.session_state.get("device", "cpu")
    return device if device in available_devices() else "cpu"


def current_data() -> Dataset:
    return st.session_state.get("data_obj") or shared_digits()


def current_base() -> Model:
    """This session's base model (loaded on first use: the first built-in model)."""
    base = st.session_state.get("base")
    if base is None:
        name = st.session_state.get("model_source", "demo:" + zoo.list_models()[0])
        name = name if name != UPLOAD else "demo:" + zoo.list_models()[0]
        base = demo_loaded(name.split(":", 1)[1])
        set_base(base, name)
    return base


def demo_loaded(name: str) -> Model:
    return Model(own_demo_model(name), "demo", f"demo:{name}", f"demo:{name}", name)


def base_metrics() -> dict:
    base, data = current_base(), current_data()
    return baseline_metrics(base.model, base.fingerprint, data, data.fingerprint, current_device())


def set_base(loaded: Model, source: str) -> None:
    """Make `loaded` this session's base model; what was compressed from the previous one goes."""
    st.session_state["base"], st.session_state["base_source"] = loaded, source
    st.session_state.pop("working", None)
    st.session_state.pop("original", None)


def use_data(data: Dataset | None) -> None:
    """Make `data` this session's data set (None: the bundled digits)."""
    if st.session_state.get("data_obj") is not data:
        st.session_state["data_obj"] = data
        st.session_state.pop("working", None)


def compressed_result(cfg) -> dict:
    """Compress this session's base model with `cfg` (a MethodConfig) and evaluate accuracy and
    size against the base, timing nothing (see `compressed_latency`). Computed once per (model,
    config, data); reruns and other users hit the cache.
    Returns {"metrics": EvalResult dict, "report": Result dict}."""
    base, data = current_base(), current_data()
    return cached_compressed(base.model, base.fingerprint, cfg.to_json(), data, data.fingerprint, current_device())


def compressed_latency(cfg) -> dict:
    """The measured latency of the base model compressed with `cfg`, once per (model, config,
    data): compression.workflows.slider.compressed_latency's dict."""
    base, data = current_base(), current_data()
    return cached_latency(base.model, base.fingerprint, cfg.to_json(), data, data.fingerprint, current_device())


def compressed_model(cfg) -> torch.nn.Module:
    """The compressed model itself (for histograms, keeping, export); not cached: a new object."""
    return compress(current_base().model, cfg, current_data())[0]


def add_result(label: str, config: dict, metrics: dict, record: bool = False) -> None:
    """Remember a result for this session's Trade-offs page (once per model, data, label and config:
    the same setting on another model is another result) and show it in
    the sidebar. It goes into the experiment store only when asked (`record`, or record_result):
    a slider position is not a run the user meant to keep."""
    results = st.session_state.setdefault("results", [])
    base, data = current_base(), current_data()
    key = (base.fingerprint, data.fingerprint, label, repr(sorted(config.items())))
    if not any(r["key"] == key for r in results):
        results.append({"key": key, "label": label, "config": config, "metrics": metrics, "model": base.name})
    st.session_state["working"] = {"label": label, "metrics": metrics, "config": config}
    if record:
        record_result(label, config, metrics)


def record_result(label: str, config: dict, metrics: dict) -> str | None:
    """Record a result in the experiment store once per session (a second call returns the first
    run's id); None when the store cannot take it (the page says why, and keeps the result)."""
    recorded = st.session_state.setdefault("recorded", {})
    base, data = current_base(), current_data()
    key = repr((base.fingerprint, data.fingerprint, label, sorted(config.items())))
    if key in recorded:
        return recorded[key]
    flat = {k: v for k, v in metrics.items() if k not in ("confusion", "per_class_accuracy")}
    try:
        run_id = Store().record(config.get("kind", "result"), (base.name, base.fingerprint),
                                (data.name, data.fingerprint), config, {**flat, "label": label})
    except Exception as exc:  # the store is a convenience here: the session keeps the result anyway
        st.caption(f"Not recorded in the experiment store: {exc}")
        return None
    recorded[key] = run_id
    return run_id


def keep_as_working(model: torch.nn.Module, label: str) -> None:
    """Make a compressed model this session's base model (the original stays in 'original')."""
    base = current_base()
    st.session_state.setdefault("original", base)
    working = st.session_state.get("working") or {}
    if working.get("config"):
        st.session_state.setdefault("kept_steps", []).append(working["config"])
        record_result(working["label"], working["config"], working["metrics"])  # kept on purpose: recorded
    st.session_state["base"] = base.replace(model, label, origin="compressed")
    st.session_state.pop("working", None)


def curve(configs: dict, x: str):
    """cached_curve for this session's base model and data."""
    import json

    base, data = current_base(), current_data()
    payload = json.dumps({str(k): c.to_dict() for k, c in configs.items()}, sort_keys=True)
    return cached_curve(base.model, base.fingerprint, data, data.fingerprint, payload, x)


def baseline_or_none() -> dict | None:
    try:
        return base_metrics()
    except Exception as exc:
        show_error(exc, "Could not evaluate the model")
        return None


def weights_and_inputs(n: int = 256) -> tuple[dict, dict]:
    """({layer: flat weights}, {layer: flat inputs on `n` training samples}) of the current model."""
    base, data = current_base(), current_data()
    return cached_weights_inputs(base.model, base.fingerprint, data, data.fingerprint, n)


def real_int8() -> dict:
    """The current model on PyTorch's dynamic int8 kernels: compression.workflows.slider.real_int8's
    {"metrics", "report"}, whose latency is one paired measurement against the fp32 original at
    the batch size of every other result. Once per (model, data)."""
    base, data = current_base(), current_data()
    return cached_real_int8(base.model, base.fingerprint, data, data.fingerprint)


def compressed_copy(cfg) -> torch.nn.Module:
    """The compressed model object (for histograms, fine-tuning and keeping), made once per
    (model, data, config) in this session: reruns that change none of them reuse it. Nothing
    changes it afterwards (fine-tuning trains a copy; keeping makes it the new base model)."""
    base, data = current_base(), current_data()
    key = (base.fingerprint, data.fingerprint, cfg.to_json())
    held = st.session_state.get("compressed_copy")
    if held is None or held[0] != key:
        held = (key, compress(base.model, cfg, data, measure_latency=False)[0])
        st.session_state["compressed_copy"] = held
    return held[1]


def with_latency(m: dict, cfg, report: dict) -> dict:
    """`m` with the paired latency of `cfg`'s result filled in (measured once per model and config),
    or with its latency fields cleared when the result cannot change speed (simulated, unstructured):
    such a result carries no latency to any chart."""
    if speed_note(report):
        return {**m, **{k: None for k in LATENCY_FIELDS if k not in ("batch_size", "threads")}}
    return {**m, **{k: v for k, v in compressed_latency(cfg).items() if k in LATENCY_FIELDS}}


UPLOAD = "Upload a file…"


BUNDLED = "digits (bundled)"


def original_model() -> Model | None:
    """The model before the first Keep, or None when nothing was kept."""
    return st.session_state.get("original")


def kept_steps() -> list[dict]:
    """The configs kept so far, in order."""
    return list(st.session_state.get("kept_steps", []))


def session_results() -> list[dict]:
    """This session's results (see add_result), oldest first."""
    return list(st.session_state.get("results", []))


def choose_model(source: str) -> None:
    """Make the sidebar's model choice `source` ('demo:NAME'); it loads on the next run."""
    st.session_state["model_source"] = source

"""Shared UI helpers for app.py and the pages: cached shared resources, per-session state, the
sidebar, and error display. Pages import this module; they never import each other."""
from __future__ import annotations

import pandas as pd
import streamlit as st
import torch

from compression import zoo
from compression.data import Dataset, load_digits
from compression.errors import CompressionError
from compression.jobs import Job
from compression.loading import LoadedModel, check_model, load_model_bytes

UPLOAD = "Upload a file…"


@st.cache_resource(show_spinner=False)
def shared_digits() -> Dataset:
    """The bundled data set: immutable, shared by every session."""
    return load_digits()


@st.cache_resource(show_spinner=False)
def shared_demo_weights(name: str) -> dict[str, torch.Tensor]:
    """A built-in model's weights: immutable, shared; each session copies them into its own model."""
    return {k: v.clone() for k, v in zoo.load_pretrained(name).state_dict().items()}


def own_demo_model(name: str) -> torch.nn.Module:
    """A new model object for this session, filled from the shared weights (copied)."""
    model = zoo.build(name)
    model.load_state_dict(shared_demo_weights(name))
    return model.eval()


@st.cache_data(show_spinner="Measuring the baseline…", max_entries=64)
def baseline_metrics(_model: torch.nn.Module, model_id: str, _data: Dataset, data_id: str,
                     device: str = "cpu") -> dict:
    """Full evaluation of a model on `device`, computed once per (model, data, device)."""
    from compression.evaluate import evaluate

    return evaluate(_model, _data, macs=False, device=device).to_dict(full=True)


def current_device() -> str:
    """The device this session runs evaluation, latency, sweeps and training on ('cpu' unless
    the sidebar's Device picker chose a GPU)."""
    from compression.devices import available_devices

    device = st.session_state.get("device", "cpu")
    return device if device in available_devices() else "cpu"


def show_error(exc: Exception, what: str = "That did not work") -> None:
    """A short message, never a traceback. Unexpected errors are named, not dumped."""
    if isinstance(exc, CompressionError):
        st.error(f"{what}: {exc}")
    elif isinstance(exc, MemoryError):
        st.error(f"{what}: out of memory. Try a smaller model, data file or batch.")
    else:
        st.error(f"{what}: unexpected {type(exc).__name__}: {str(exc)[:300]}")


def current_data() -> Dataset:
    return st.session_state.get("data_obj") or shared_digits()


def current_base() -> LoadedModel:
    """This session's base model (loaded on first use: the first built-in model)."""
    base = st.session_state.get("base")
    if base is None:
        name = st.session_state.get("model_source", "demo:" + zoo.list_models()[0])
        name = name if name != UPLOAD else "demo:" + zoo.list_models()[0]
        base = demo_loaded(name.split(":", 1)[1])
        st.session_state["base"], st.session_state["base_source"] = base, name
    return base


def demo_loaded(name: str) -> LoadedModel:
    return LoadedModel(own_demo_model(name), "demo", f"demo:{name}", f"demo:{name}", name)


def base_metrics() -> dict:
    base, data = current_base(), current_data()
    return baseline_metrics(base.model, base.fingerprint, data, data.fingerprint, current_device())


def _sync_model_choice() -> None:
    """Load the chosen built-in model when the choice differs from this session's base model."""
    source = st.session_state.get("model_source")
    base = st.session_state.get("base")
    if source and source != UPLOAD and (base is None or st.session_state.get("base_source") != source):
        st.session_state["base"] = demo_loaded(source.split(":", 1)[1])
        st.session_state["base_source"] = source
        st.session_state.pop("working", None)
        st.session_state.pop("original", None)


def _load_upload(upload, arch: str | None) -> None:
    key = (upload.file_id, arch, current_data().fingerprint)
    if st.session_state.get("upload_key") == key:
        return
    st.session_state["upload_key"] = key
    try:
        loaded = load_model_bytes(upload.name, upload.getvalue(), arch=arch, data=current_data())
    except Exception as exc:  # any failure: a message, the previous model stays
        show_error(exc, "Could not load the model")
        return
    st.session_state["base"] = loaded
    st.session_state["base_source"] = UPLOAD
    st.session_state.pop("working", None)
    st.session_state.pop("original", None)
    st.success(f"Loaded {loaded.name} ({loaded.kind}).")


def _device_sidebar() -> None:
    """Where evaluation, latency, sweeps and training run; the GPU is offered only when present."""
    from compression.devices import available_devices

    devices = available_devices()
    st.selectbox("Device", devices, key="device", disabled=len(devices) == 1,
                 help="Latency is measured on this device too. " + (
                     "No GPU on this machine: CPU only." if len(devices) == 1 else "CUDA is available."))


def _data_sidebar() -> None:
    choice = st.selectbox("Data", ["digits (bundled)", UPLOAD], key="data_source",
                          help="The data set that calibrates, fine-tunes and evaluates.")
    if choice == UPLOAD:
        upload = st.file_uploader("Data file (.npz, .zip of class folders, .csv)", key="data_upload",
                                  help="Recognised by content; validated before use.")
        if upload is not None and st.session_state.get("data_key") != upload.file_id:
            st.session_state["data_key"] = upload.file_id
            try:
                from compression.datafiles import load_data_bytes

                data = load_data_bytes(upload.name, upload.getvalue())
                check_model(current_base().model, data)
            except Exception as exc:
                show_error(exc, "Could not use that data")
                return
            st.session_state["data_obj"] = data
            st.session_state.pop("working", None)
    elif st.session_state.get("data_obj") is not None:
        st.session_state["data_obj"] = None
        st.session_state.pop("working", None)


def sidebar() -> None:
    """Model and data pickers, and the current model's headline numbers."""
    with st.sidebar:
        options = [f"demo:{n}" for n in zoo.list_models()] + [UPLOAD]
        st.selectbox("Model", options, key="model_source",
                     format_func=lambda o: zoo.ZOO[o[5:]].title if o.startswith("demo:") else o)
        _sync_model_choice()
        if st.session_state.get("model_source") == UPLOAD:
            upload = st.file_uploader("Model file (TorchScript, .pt2, state dict, compact)", key="model_upload",
                                      help="Recognised by content, whatever its name. Never unpickled.")
            arch = st.selectbox("Architecture (for a bare state dict)", [None] + zoo.list_models(),
                                key="upload_arch", format_func=lambda a: "none" if a is None else a)
            if upload is not None:
                _load_upload(upload, arch)
        _data_sidebar()
        _device_sidebar()
        base, data = current_base(), current_data()
        st.caption(f"**{base.name}** on **{data.name}** ({len(data.test)} test samples)")
        try:
            metrics = base_metrics()
        except Exception as exc:
            show_error(exc, "Could not evaluate the model")
            return
        st.metric("Baseline accuracy", f"{metrics['accuracy']:.2%}")
        working = st.session_state.get("working")
        if working:
            m = working["metrics"]
            st.metric("Compressed accuracy", f"{m['accuracy']:.2%}",
                      delta=f"{(m['accuracy'] - metrics['accuracy']) * 100:+.2f} pts")
            st.caption(f"{working['label']}: {m['size_bytes'] / 1024:.1f} KiB "
                       f"(baseline {metrics['size_bytes'] / 1024:.1f} KiB)")


# ---- compressed results, cached once per (model, config, data) -------------------------------

@st.cache_data(max_entries=16, show_spinner=False)
def _reference_logits(_model: torch.nn.Module, model_id: str, _data: Dataset, data_id: str) -> torch.Tensor:
    from compression.evaluate import predict_logits

    return predict_logits(_model, _data.test.X)


@st.cache_data(max_entries=512, show_spinner=False)
def _compressed(_model: torch.nn.Module, model_id: str, cfg_json: str, _data: Dataset, data_id: str,
                device: str) -> dict:
    from compression.config import config_from_json
    from compression.evaluate import compress_and_evaluate

    ref = _reference_logits(_model, model_id, _data, data_id)
    return compress_and_evaluate(_model, config_from_json(cfg_json), _data, latency=False, reference_logits=ref,
                                 device=device)


@st.cache_data(max_entries=512, show_spinner=False)
def _latency(_model: torch.nn.Module, model_id: str, cfg_json: str, _data: Dataset, data_id: str,
             device: str) -> dict:
    from compression.config import config_from_json
    from compression.evaluate import compressed_latency as measure

    return measure(_model, config_from_json(cfg_json), _data, device=device)


def compressed_result(cfg) -> dict:
    """Compress this session's base model with `cfg` (a MethodConfig) and evaluate accuracy and
    size against the base, timing nothing (see `compressed_latency`). Computed once per (model,
    config, data); reruns and other users hit the cache.
    Returns {"metrics": EvalResult dict, "report": Report dict}."""
    base, data = current_base(), current_data()
    return _compressed(base.model, base.fingerprint, cfg.to_json(), data, data.fingerprint, current_device())


def compressed_latency(cfg) -> dict:
    """The measured latency of the base model compressed with `cfg`, once per (model, config,
    data): compression.evaluate.compressed_latency's dict."""
    base, data = current_base(), current_data()
    return _latency(base.model, base.fingerprint, cfg.to_json(), data, data.fingerprint, current_device())


def compressed_model(cfg) -> torch.nn.Module:
    """The compressed model itself (for histograms, keeping, export); not cached: a new object."""
    from compression.config import compress

    return compress(current_base().model, cfg, current_data())[0]


def add_result(label: str, config: dict, metrics: dict) -> None:
    """Remember a result for the Trade-offs page (once per label+config) and show it in the sidebar."""
    results = st.session_state.setdefault("results", [])
    key = (label, repr(sorted(config.items())))
    if not any(r["key"] == key for r in results):
        results.append({"key": key, "label": label, "config": config, "metrics": metrics,
                        "model": current_base().name})
        _record_run(label, config, metrics)
    st.session_state["working"] = {"label": label, "metrics": metrics, "config": config}


def _record_run(label: str, config: dict, metrics: dict) -> None:
    """Record a result in the experiment store (never breaks the page if the store cannot)."""
    from compression.store import Store

    base, data = current_base(), current_data()
    flat = {k: v for k, v in metrics.items() if k not in ("confusion", "per_class_accuracy")}
    try:
        Store().record(config.get("kind", "result"), (base.name, base.fingerprint), (data.name, data.fingerprint),
                       config, {**flat, "label": label})
    except Exception as exc:  # the store is a convenience here: the session keeps the result anyway
        st.caption(f"Not recorded in the experiment store: {exc}")


def keep_as_working(model: torch.nn.Module, label: str) -> None:
    """Make a compressed model this session's base model (the original stays in 'original')."""
    base = current_base()
    st.session_state.setdefault("original", base)
    working = st.session_state.get("working") or {}
    if working.get("config"):
        st.session_state.setdefault("kept_steps", []).append(working["config"])
    st.session_state["base"] = LoadedModel(model, "compressed", f"{base.name} → {label}",
                                           f"{base.fingerprint}|{label}", base.arch)
    st.session_state.pop("working", None)


# ---- long work: progress, stop, and the rest of the app stays usable -------------------------

def job_panel(key: str, title: str) -> Job | None:
    """Progress bar, message and Stop button for the background job in session_state[key].
    Polls once a second while the job runs (a fragment, so the rest of the page is not redrawn),
    and reruns the page once when it ends. Returns the job (or None)."""
    job = st.session_state.get(key)
    if job is None:
        return None

    @st.fragment(run_every=1.0 if not job.done else None)
    def _panel() -> None:
        current = st.session_state.get(key)
        if current is None:
            return
        st.progress(current.fraction, text=f"{title}: {current.message}")
        if not current.done:
            if st.button("Stop", key=f"{key}_stop", type="secondary"):
                current.stop.set()
        elif not st.session_state.get(f"{key}_seen_done"):
            st.session_state[f"{key}_seen_done"] = True
            st.rerun()
        if current.error is not None:
            show_error(current.error, f"{title} failed")

    _panel()
    return job


def start_background(key: str, name: str, work) -> None:
    """Start `work(job)` in a background thread, unless a job under `key` is still running."""
    from compression.jobs import start_job

    job = st.session_state.get(key)
    if job is not None and not job.done:
        st.warning(f"{name} is already running: stop it first.")
        return
    st.session_state[f"{key}_seen_done"] = False
    st.session_state[key] = start_job(name, work)


def metric_row(m: dict, base: dict, latency_note: str = "", cfg=None) -> dict:
    """Accuracy, non-zero parameters, size and measured latency, with deltas against the baseline.
    The first three draw at once; with `cfg`, latency is then measured (once per model and
    config) and drawn. Returns `m` with the latency fields filled in, for add_result."""
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Accuracy", f"{m['accuracy']:.2%}", delta=f"{(m['accuracy'] - base['accuracy']) * 100:+.2f} pts")
    c2.metric("Non-zero params", f"{m['nonzero_params']:,}",
              delta=f"{m['nonzero_params'] - base['nonzero_params']:+,}", delta_color="inverse")
    c3.metric("Size", f"{m['size_bytes'] / 1024:.1f} KiB", help=m["size_method"],
              delta=f"{base['size_bytes'] / max(m['size_bytes'], 1):.1f}x smaller", delta_color="off")
    if m.get("latency_ms") is None and cfg is not None:
        from compression.evaluate import LATENCY_FIELDS

        with c4, st.spinner("Measuring latency…"):
            try:
                lat = compressed_latency(cfg)
                m = {**m, **{k: lat[k] for k in LATENCY_FIELDS}}
            except Exception as exc:  # accuracy and size are still right; say why latency is missing
                st.caption(f"Latency not measured: {exc}")
    reference = m.get("baseline_latency_ms") or base.get("latency_ms")
    if m.get("latency_ms") is not None and reference:
        paired = "the original timed alongside, in alternating rounds" if m.get("baseline_latency_ms") else \
            "the original's baseline measurement"
        c4.metric("Latency", f"{m['latency_ms']:.3f} ms", delta=f"{m['latency_ms'] / reference:.2f}x original",
                  delta_color="off", help=f"measured on {current_device()} after accuracy and size: median after "
                                          f"warm-up, batch {m['batch_size']}, {m['threads']} threads; compared with "
                                          f"{paired} ({reference:.3f} ms). {latency_note}")
    if m.get("agreement") is not None:
        st.caption(f"Agreement with the original: {m['agreement']:.2%} top-1 · KL divergence {m['kl_divergence']:.4f}")
    return m


@st.cache_data(max_entries=64, show_spinner="Computing the curve…")
def cached_curve(_model: torch.nn.Module, model_id: str, _data: Dataset, data_id: str, configs_json: str,
                 x: str) -> pd.DataFrame:
    """A curve of accuracy against one config value, once per (model, data, configs)."""
    import json

    from compression.config import config_from_dict
    from compression.curves import sweep_configs

    configs = {float(k): config_from_dict(v) for k, v in json.loads(configs_json).items()}
    return sweep_configs(_model, _data, configs, x)


def curve(configs: dict, x: str):
    """cached_curve for this session's base model and data."""
    import json

    base, data = current_base(), current_data()
    payload = json.dumps({str(k): c.to_dict() for k, c in configs.items()}, sort_keys=True)
    return cached_curve(base.model, base.fingerprint, data, data.fingerprint, payload, x)


def epoch_callback(job: Job, total: int):
    """A training callback that reports progress (and per-epoch rows) into a background job."""
    return lambda p: job.report(p.fraction, f"epoch {p.epoch + 1}/{total}", p.__dict__ if p.phase == "epoch" else None)


def training_controls(key: str, title: str, button: str, epochs_col, button_col, train):
    """Epochs input + a button that runs `train(epochs, job) -> result` in the background, with
    the job's progress and Stop. Returns the finished result, or None."""
    epochs = int(epochs_col.number_input(f"{title} epochs", 1, 50, 2, key=f"{key}_epochs"))
    if button_col.button(button, key=f"{key}_start"):
        start_background(key, title, lambda job: train(epochs, job))
    job = job_panel(key, title)
    return job.result if job is not None and job.done and job.result is not None else None

"""Shared UI helpers for app.py and the pages: cached shared resources, per-session state, the
sidebar, and error display. Pages import this module; they never import each other."""
from __future__ import annotations

import pandas as pd
import streamlit as st
import torch
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner import get_script_run_ctx

from compression.models import zoo
from compression.data.datasets import Dataset, load_digits
from compression.core.errors import CompressionError
from compression.core.glossary import help_for
from compression.core.jobs import Job
from compression.models.loading import LoadedModel, check_model, load_model_bytes
from compression.metrics.summary import chance_note, size_change

UPLOAD = "Upload a file…"
BUNDLED = "digits (bundled)"


def _leave_pages_folder_mode() -> None:
    """Streamlit treats an app with a folder named pages/ as an old-style multipage app until
    st.navigation first runs. If a server's first request is a page's URL, that page then runs
    bare, without app.py (no sidebar, a navigation listing every file), and so does every later
    request until one opens the root URL. Every page imports this module, so it ends that mode
    on first import and reruns, this time through app.py. (Streamlit 1.67, pinned.)"""
    if PagesManager.uses_pages_directory and get_script_run_ctx() is not None:
        PagesManager.uses_pages_directory = False
        st.rerun()


_leave_pages_folder_mode()


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
    from compression.metrics.evaluate import evaluate

    return evaluate(_model, _data, macs=False, device=device).to_dict(full=True)


def current_device() -> str:
    """The device this session runs evaluation, latency, sweeps and training on ('cpu' unless
    the sidebar's Device picker chose a GPU)."""
    from compression.core.devices import available_devices

    device = st.session_state.get("device", "cpu")
    return device if device in available_devices() else "cpu"


def error_message(exc: Exception, what: str = "That did not work") -> str:
    """A short message, never a traceback. Unexpected errors are named, not dumped."""
    if isinstance(exc, CompressionError):
        return f"{what}: {exc}"
    if isinstance(exc, MemoryError):
        return f"{what}: out of memory. Try a smaller model, data file or batch."
    return f"{what}: unexpected {type(exc).__name__}: {str(exc)[:300]}"


def show_error(exc: Exception, what: str = "That did not work") -> None:
    """error_message(exc, what) as an error box."""
    st.error(error_message(exc, what))


def current_data() -> Dataset:
    return st.session_state.get("data_obj") or shared_digits()


def current_base() -> LoadedModel:
    """This session's base model (loaded on first use: the first built-in model)."""
    base = st.session_state.get("base")
    if base is None:
        name = st.session_state.get("model_source", "demo:" + zoo.list_models()[0])
        name = name if name != UPLOAD else "demo:" + zoo.list_models()[0]
        base = demo_loaded(name.split(":", 1)[1])
        _set_base(base, name)
    return base


def demo_loaded(name: str) -> LoadedModel:
    return LoadedModel(own_demo_model(name), "demo", f"demo:{name}", f"demo:{name}", name)


def accuracy_label(data: Dataset) -> str:
    """'Test accuracy', 'Accuracy (whole file)', ...: what an accuracy on `data` was scored on."""
    return {"test": "Test accuracy", "all": "Accuracy (whole file)"}.get(
        data.eval_split, f"Accuracy ({data.eval_split} split)")


def base_metrics() -> dict:
    base, data = current_base(), current_data()
    return baseline_metrics(base.model, base.fingerprint, data, data.fingerprint, current_device())


def _set_base(loaded: LoadedModel, source: str) -> None:
    """Make `loaded` this session's base model; what was compressed from the previous one goes."""
    st.session_state["base"], st.session_state["base_source"] = loaded, source
    st.session_state.pop("working", None)
    st.session_state.pop("original", None)


def _kept_selectbox(label: str, options: list, key: str, **kwargs):
    """A sidebar selectbox whose value is also kept under a session key of its own ('chosen_' + key)
    and restored from it when Streamlit has dropped the widget's state (a widget that is not drawn
    in a run loses it, e.g. the architecture picker while a built-in model is chosen)."""
    own = "chosen_" + key
    if key not in st.session_state and own in st.session_state and st.session_state[own] in options:
        st.session_state[key] = st.session_state[own]
    value = st.selectbox(label, options, key=key, **kwargs)
    st.session_state[own] = value
    return value


def _sync_model_choice() -> None:
    """Load the chosen built-in model when the choice differs from this session's base model."""
    source = st.session_state.get("model_source")
    base = st.session_state.get("base")
    if source and source != UPLOAD and (base is None or st.session_state.get("base_source") != source):
        _set_base(demo_loaded(source.split(":", 1)[1]), source)


def _load_upload(upload, arch: str | None) -> None:
    """Load a newly uploaded model file (once per file, architecture and data). On success it
    becomes the base model and the session's last good upload; on failure the message is kept
    in session_state['upload_error'] for as long as the uploader holds that file."""
    key = (upload.file_id, arch, current_data().fingerprint)
    if st.session_state.get("upload_key") == key:
        return
    st.session_state["upload_key"], st.session_state["upload_error"] = key, None
    try:
        loaded = load_model_bytes(upload.name, upload.getvalue(), arch=arch, data=current_data())
    except Exception as exc:  # any failure: a message, the previous model stays
        st.session_state["upload_error"] = error_message(exc, "Could not load the model")
        return
    st.session_state["uploaded_model"] = loaded
    _set_base(loaded, UPLOAD)
    st.success(f"Loaded {loaded.name} ({loaded.kind}).")


def _upload_status(error: str | None, uploaded, in_use: str, what: str) -> None:
    """Under an uploader: the failed upload's message and what stays in use, or what is in use."""
    if error:
        st.error(error)
        st.caption(f"Still using {in_use}")
    elif uploaded is not None:
        st.caption(f"Using upload {uploaded.name}; upload another to replace it")
    else:
        st.caption(f"No {what} uploaded yet: still using {in_use}")


def _model_upload_sidebar() -> None:
    """The model file uploader. The last model uploaded without error stays in use across page
    changes and when the Model picker comes back to 'Upload a file…'; a failed upload says which
    model stays active."""
    upload = st.file_uploader("Model file (TorchScript, .pt2, state dict, compact)", key="model_upload",
                              help="Recognised by content, whatever its name. Never unpickled.")
    arch = _kept_selectbox("Architecture (for a bare state dict)", [None] + zoo.list_models(), "upload_arch",
                           format_func=lambda a: "none" if a is None else a)
    if upload is not None:
        _load_upload(upload, arch)
    uploaded = st.session_state.get("uploaded_model")
    if uploaded is not None and st.session_state.get("base_source") != UPLOAD:
        _set_base(uploaded, UPLOAD)
    _upload_status(st.session_state.get("upload_error") if upload is not None else None, uploaded,
                   current_base().name, "model")


def _model_sidebar() -> None:
    options = [f"demo:{n}" for n in zoo.list_models()] + [UPLOAD]
    source = _kept_selectbox("Model", options, "model_source",
                             format_func=lambda o: zoo.ZOO[o[5:]].title if o.startswith("demo:") else o)
    if source == UPLOAD:
        _model_upload_sidebar()
    else:
        _sync_model_choice()


def _device_sidebar() -> None:
    """Where evaluation, latency, sweeps and training run; the GPU is offered only when present."""
    from compression.core.devices import available_devices

    devices = available_devices()
    _kept_selectbox("Device", devices, "device", disabled=len(devices) == 1,
                    help="Latency is measured on this device too. " + (
                        "No GPU on this machine: CPU only." if len(devices) == 1 else "CUDA is available."))


def _use_data(data: Dataset | None) -> None:
    """Make `data` this session's data set (None: the bundled digits)."""
    if st.session_state.get("data_obj") is not data:
        st.session_state["data_obj"] = data
        st.session_state.pop("working", None)


PREPROCESSING = {"none": "none: values as stored", "standardize": "standardize: training split's mean and std",
                 "custom": "custom mean and std"}
SCORED = {"all": "the whole file", "test": "the held-out test split (20%)"}


def _data_options() -> tuple[str, str]:
    """The uploaded data's preprocessing spec and scored split, as chosen in the data panel."""
    kind = _kept_selectbox("Preprocessing", list(PREPROCESSING), "data_preprocess", format_func=PREPROCESSING.get,
                           help="What is done to the file's values before the model sees them: choose what "
                                "your model was trained on. Recorded with every run.")
    spec = kind
    if kind == "custom":
        spec = st.text_input("Mean,std (per channel: M1,M2,M3/S1,S2,S3)", "0.5,0.25", key="data_preprocess_custom")
    split = _kept_selectbox("Scored on", list(SCORED), "data_split", format_func=SCORED.get,
                            help="The samples every accuracy is computed on. Calibration, Taylor scores and "
                                 "fine-tuning use the seeded 60% training part.")
    return spec, split


def _data_sidebar() -> None:
    """The data picker and uploader. The last data file uploaded without error stays in use across
    page changes and when the picker comes back to 'Upload a file…'; a failed upload says which data
    stays active."""
    choice = _kept_selectbox("Data", [BUNDLED, UPLOAD], "data_source",
                             help="The data set that calibrates, fine-tunes and evaluates.")
    if choice != UPLOAD:
        _use_data(None)
        return
    upload = st.file_uploader("Data file (.npz, .zip of class folders, .csv)", key="data_upload",
                              help="Recognised by content; validated before use.")
    preprocess, split = _data_options()
    if upload is not None and st.session_state.get("data_key") != (upload.file_id, preprocess, split):
        st.session_state["data_key"], st.session_state["data_error"] = (upload.file_id, preprocess, split), None
        try:
            from compression.data.files import load_data_bytes

            data = load_data_bytes(upload.name, upload.getvalue(), preprocess=preprocess, split=split)
            check_model(current_base().model, data)
        except Exception as exc:  # any failure: a message, the previous data stays
            st.session_state["data_error"] = error_message(exc, "Could not use that data")
        else:
            st.session_state["uploaded_data"] = data
    uploaded = st.session_state.get("uploaded_data")
    if uploaded is not None:
        _use_data(uploaded)
    _upload_status(st.session_state.get("data_error") if upload is not None else None, uploaded,
                   current_data().name, "data")


def sidebar():
    """Model, data and device pickers, and the current model's headline numbers. Drawn once per
    run by app.py, before the page, so its widgets are the same on every page. Returns the sidebar
    slot for `last_result` (None when the model could not be evaluated)."""
    with st.sidebar:
        _model_sidebar()
        _data_sidebar()
        _device_sidebar()
        base, data = current_base(), current_data()
        st.caption(f"**{base.name}** on **{data.name}**: scored on {len(data.scored)} samples "
                   f"({SCORED.get(data.eval_split, data.eval_split + ' split')}); preprocessing "
                   f"{data.preprocess.label}")
        try:
            metrics = base_metrics()
        except Exception as exc:
            show_error(exc, "Could not evaluate the model")
            return
        st.metric("Baseline accuracy", f"{metrics['accuracy']:.2%}",
                  help=help_for("accuracy", note=f"{metrics['split']} split, {metrics['n_samples']} samples."))
        warning = _plausibility(base.model, base.fingerprint, data, data.fingerprint)
        if warning:
            st.warning(warning.replace("--preprocess ", "preprocessing "))
        return st.empty()  # the last result, filled by last_result() once the page has run


def last_result(slot) -> None:
    """The page's latest result in the sidebar slot `sidebar()` left, drawn after the page ran, so
    it shows this run's result rather than the previous one's."""
    working = st.session_state.get("working")
    if slot is None or not working:
        return
    base, data = base_metrics(), current_data()
    m = working["metrics"]
    with slot.container():
        st.metric("Compressed accuracy", f"{m['accuracy']:.2%}",
                  delta=f"{(m['accuracy'] - base['accuracy']) * 100:+.2f} pts",
                  help="The latest result computed on a page (not yet kept: Keep makes it the working model).")
        st.caption(f"{working['label']}: {m['size_bytes'] / 1024:.1f} KiB "
                   f"(baseline {base['size_bytes'] / 1024:.1f} KiB)")
        note = data.scoring_note()
        if note:
            st.caption(note[0].upper() + note[1:].split(";")[0] + ".")


@st.cache_data(max_entries=64, show_spinner=False)
def _plausibility(_model: torch.nn.Module, model_id: str, _data: Dataset, data_id: str) -> str | None:
    from compression.metrics.evaluate import plausibility_warning

    return plausibility_warning(_model, _data)


# ---- compressed results, cached once per (model, config, data) -------------------------------

@st.cache_data(max_entries=16, show_spinner=False)
def _reference_logits(_model: torch.nn.Module, model_id: str, _data: Dataset, data_id: str) -> torch.Tensor:
    from compression.metrics.evaluate import predict_logits

    return predict_logits(_model, _data.scored.X)


@st.cache_data(max_entries=512, show_spinner=False)
def _compressed(_model: torch.nn.Module, model_id: str, cfg_json: str, _data: Dataset, data_id: str,
                device: str) -> dict:
    from compression.core.registry import config_from_json
    from compression.workflows.slider import compress_and_evaluate

    ref = _reference_logits(_model, model_id, _data, data_id)
    return compress_and_evaluate(_model, config_from_json(cfg_json), _data, latency=False, reference_logits=ref,
                                 device=device)


@st.cache_data(max_entries=512, show_spinner=False)
def _latency(_model: torch.nn.Module, model_id: str, cfg_json: str, _data: Dataset, data_id: str,
             device: str) -> dict:
    from compression.core.registry import config_from_json
    from compression.workflows.slider import compressed_latency as measure

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
    data): compression.workflows.slider.compressed_latency's dict."""
    base, data = current_base(), current_data()
    return _latency(base.model, base.fingerprint, cfg.to_json(), data, data.fingerprint, current_device())


def compressed_model(cfg) -> torch.nn.Module:
    """The compressed model itself (for histograms, keeping, export); not cached: a new object."""
    from compression.core.registry import compress

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
    from compression.io.store import Store

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
    from compression.core.jobs import start_job

    job = st.session_state.get(key)
    if job is not None and not job.done:
        st.warning(f"{name} is already running: stop it first.")
        return
    st.session_state[f"{key}_seen_done"] = False
    st.session_state[key] = start_job(name, work)


def latency_metric(col, m: dict, label: str = "Latency", note: str = "") -> None:
    """One paired latency in `col`: the compressed model's median, its ratio to the original timed
    alongside (or 'no measurable change (lo-hi)' when the rounds cannot tell them apart), and the
    setting it was measured at (batch, threads, device, rounds) written beside it."""
    from compression.metrics.latency import MIN_CHANGE, PairedLatency, ratio_text, setting_text

    if m.get("latency_ratios") is None:  # not a paired measurement: no ratio against a cold baseline
        col.metric(label, f"{m['latency_ms']:.3f} ms", help=help_for("latency", note=note))
        col.caption(f"Not paired with the original: batch {m['batch_size']}, {m['threads']} threads")
        return
    p = PairedLatency.from_dict(m)
    col.metric(label, f"{p.compressed_ms:.3f} ms", delta=ratio_text(p), delta_color="off",
               help=help_for("latency", note=(
                   f"Measured after accuracy and size, paired: the original ({p.original_ms:.3f} ms) and this "
                   f"model timed in {len(p.ratios)} alternating rounds of {p.repeats} runs, medians; the range "
                   f"is the per-round ratios'. A change within the rounds' spread, or under {MIN_CHANGE:.0%}, is "
                   f"reported as no measurable change. {note}")))
    col.caption(f"{setting_text(p)}; original {p.original_ms:.3f} ms")


def no_speed_metric(col, reason: str) -> None:
    """In place of a latency: why this result cannot be faster than the original (no number)."""
    col.metric("Latency", "no speed-up", help=reason)
    col.caption(reason[0].upper() + reason[1:])


def with_latency(m: dict, cfg, report: dict) -> dict:
    """`m` with the paired latency of `cfg`'s result filled in (measured once per model and config),
    or with its latency fields cleared when the result cannot change speed (simulated, unstructured):
    such a result carries no latency to any chart."""
    from compression.workflows.slider import LATENCY_FIELDS, speed_note

    if speed_note(report):
        return {**m, **{k: None for k in LATENCY_FIELDS if k not in ("batch_size", "threads")}}
    return {**m, **{k: v for k, v in compressed_latency(cfg).items() if k in LATENCY_FIELDS}}


def metric_row(m: dict, base: dict, latency_note: str = "", cfg=None, report: dict | None = None) -> dict:
    """Accuracy, non-zero parameters, size and latency, with deltas against the baseline. The first
    three draw at once; with `cfg`, the paired latency is then measured (once per model and config)
    and drawn, unless `report` (the result's Report dict) says the result cannot change speed:
    then no number at all, only why. Returns `m` with the latency fields filled in, for add_result."""
    from compression.workflows.slider import speed_note

    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Accuracy", f"{m['accuracy']:.2%}", delta=f"{(m['accuracy'] - base['accuracy']) * 100:+.2f} pts",
              help=help_for("accuracy", note="Delta: percentage points against the baseline."))
    c2.metric("Non-zero params", f"{m['nonzero_params']:,}",
              delta=f"{m['nonzero_params'] - base['nonzero_params']:+,}", delta_color="inverse",
              help=help_for("non-zero parameters", "sparsity"))
    c3.metric("Size", f"{m['size_bytes'] / 1024:.1f} KiB", help=m["size_method"],
              delta=size_change(base["size_bytes"], m["size_bytes"]), delta_color="off")
    warning = chance_note(m["accuracy"], current_data().num_classes, base["accuracy"])
    if warning:
        st.warning(warning)
    reason = speed_note(report or {})
    if reason:
        no_speed_metric(c4, reason)
        m = with_latency(m, cfg, report)
    elif m.get("latency_ms") is None and cfg is not None:
        with c4, st.spinner("Measuring latency…"):
            try:
                m = with_latency(m, cfg, report or {})
            except Exception as exc:  # accuracy and size are still right; say why latency is missing
                st.caption(f"Latency not measured: {exc}")
    if not reason and m.get("latency_ms") is not None:
        latency_metric(c4, m, note=latency_note)
    if m.get("agreement") is not None:
        st.caption(f"Agreement with the original: {m['agreement']:.2%} top-1 · KL divergence {m['kl_divergence']:.4f}",
                   help=help_for("top-1 agreement", "KL divergence"))
    return m


@st.cache_data(max_entries=64, show_spinner="Computing the curve…")
def cached_curve(_model: torch.nn.Module, model_id: str, _data: Dataset, data_id: str, configs_json: str,
                 x: str) -> pd.DataFrame:
    """A curve of accuracy against one config value, once per (model, data, configs)."""
    import json

    from compression.core.registry import config_from_dict
    from compression.workflows.curves import sweep_configs

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

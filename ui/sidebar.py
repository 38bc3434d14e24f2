"""The shared sidebar, drawn once per run by app.py: model, data, preprocessing and device choices."""
from __future__ import annotations

import streamlit as st

from compression.core.devices import available_devices
from compression.core.glossary import help_for
from compression.data.files import load_data_bytes
from compression.models import zoo
from compression.models.loading import check_model, load_model_bytes
from ui.cache import cached_plausibility
from ui.errors import error_message, show_error
from ui.state import BUNDLED, UPLOAD, base_metrics, current_base, current_data, demo_loaded, set_base, use_data


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
        set_base(demo_loaded(source.split(":", 1)[1]), source)


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
    set_base(loaded, UPLOAD)
    st.success(f"Loaded {loaded.name} ({loaded.origin}).")


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
        set_base(uploaded, UPLOAD)
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
    devices = available_devices()
    _kept_selectbox("Device", devices, "device", disabled=len(devices) == 1,
                    help="Latency is measured on this device too. " + (
                        "No GPU on this machine: CPU only." if len(devices) == 1 else "CUDA is available."))


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
        use_data(None)
        return
    upload = st.file_uploader("Data file (.npz, .zip of class folders, .csv)", key="data_upload",
                              help="Recognised by content; validated before use.")
    preprocess, split = _data_options()
    if upload is not None and st.session_state.get("data_key") != (upload.file_id, preprocess, split):
        st.session_state["data_key"], st.session_state["data_error"] = (upload.file_id, preprocess, split), None
        try:
            data = load_data_bytes(upload.name, upload.getvalue(), preprocess=preprocess, split=split)
            check_model(current_base().model, data)
        except Exception as exc:  # any failure: a message, the previous data stays
            st.session_state["data_error"] = error_message(exc, "Could not use that data")
        else:
            st.session_state["uploaded_data"] = data
    uploaded = st.session_state.get("uploaded_data")
    if uploaded is not None:
        use_data(uploaded)
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
        warning = cached_plausibility(base.model, base.fingerprint, data, data.fingerprint)
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

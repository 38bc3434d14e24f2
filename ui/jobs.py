"""Long work in the background: a job panel with progress and Stop, training controls, live events."""
from __future__ import annotations

from typing import Callable

import streamlit as st
import torch

from compression.core.jobs import Job, start_job
from compression.metrics.evaluate import evaluate
from ui.errors import show_error
from ui.state import add_result, compressed_result, current_base, current_data, keep_as_working, with_latency


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
    job = st.session_state.get(key)
    if job is not None and not job.done:
        st.warning(f"{name} is already running: stop it first.")
        return
    st.session_state[f"{key}_seen_done"] = False
    st.session_state[key] = start_job(name, work)


def epoch_callback(job: Job, total: int):
    """A training callback that reports progress (and per-epoch rows) into a background job."""
    return lambda p: job.update(p.fraction, f"epoch {p.epoch + 1}/{total}", p.__dict__ if p.phase == "epoch" else None)


def training_controls(key: str, title: str, button: str, epochs_col, button_col, train):
    """Epochs input + a button that runs `train(epochs, job) -> result` in the background, with
    the job's progress and Stop. Returns the finished result, or None."""
    epochs = int(epochs_col.number_input(f"{title} epochs", 1, 50, 2, key=f"{key}_epochs"))
    if button_col.button(button, key=f"{key}_start"):
        start_background(key, title, lambda job: train(epochs, job))
    job = job_panel(key, title)
    return job.result if job is not None and job.done and job.result is not None else None


def live_events(key: str, draw: Callable[[list], None]) -> None:
    """Draw `draw(events)` from the job in session_state[key]; while the job runs this panel
    reruns alone every second (a fragment), so curves grow epoch by epoch without a page rerun."""
    job = st.session_state.get(key)
    if job is None:
        return

    @st.fragment(run_every=1.0 if not job.done else None)
    def _live() -> None:
        current = st.session_state.get(key)
        if current is not None:
            draw(current.snapshot_events())

    _live()


def finished_result(key: str):
    """The result of the finished, successful job in session_state[key], else None."""
    job = st.session_state.get(key)
    if job is None or not job.done or job.error is not None:
        return None
    return job.result


def tune_ui(key: str, title: str, button: str, cfg, label: str,
            train: Callable[[int, object], tuple[torch.nn.Module, object]]) -> None:
    """Epochs, a button that runs `train(epochs, job) -> (model, Result)` in the background (with
    progress and Stop), and, once it has finished for the current `cfg`: the fine-tuned model
    evaluated against the original, added as a result, and a button to keep it."""
    base, data = current_base(), current_data()

    def work(epochs: int, job) -> dict:
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

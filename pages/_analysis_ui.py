"""UI helpers shared by the analysis pages (distillation, sensitivity, explain, trade-offs, runs):
small `*_ui()` functions that draw widgets or panels and return values. No model work here."""
from __future__ import annotations

from typing import Callable

import pandas as pd
import streamlit as st

from pages._common import base_metrics, show_error


def intro(text: str, title: str = "What this page does and how to read it") -> None:
    """The page's plain-language explanation, folded away."""
    with st.expander(title, expanded=False):
        st.write(text)


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


def baseline_or_none() -> dict | None:
    try:
        return base_metrics()
    except Exception as exc:
        show_error(exc, "Could not evaluate the model")
        return None


def metric_delta(col, label: str, value: float | None, ref: float | None, pct: bool = True,
                 fmt: str = "{:.2f}", unit: str = "", inverse: bool = False, help: str | None = None) -> None:
    """A large st.metric with its delta against `ref` (points for percentages)."""
    if value is None:
        col.metric(label, "–")
        return
    shown = f"{value:.2%}" if pct else fmt.format(value) + unit
    delta = None
    if ref is not None:
        delta = f"{(value - ref) * 100:+.2f} pts" if pct else fmt.format(value - ref) + unit
        if not pct and not delta.startswith(("-", "+")):
            delta = "+" + delta
    col.metric(label, shown, delta=delta, delta_color="inverse" if inverse else "normal", help=help)


def filter_frame(df: pd.DataFrame, key: str, columns: list[str]) -> pd.DataFrame:
    """Multiselect filters over the given text columns, and a free-text search over all of them."""
    cols = st.columns(len(columns) + 1)
    out = df
    for col, name in zip(cols, columns):
        if name not in df:
            continue
        options = sorted(str(v) for v in df[name].dropna().unique())
        picked = col.multiselect(name, options, key=f"{key}_{name}")
        if picked:
            out = out[out[name].astype(str).isin(picked)]
    text = cols[-1].text_input("Search", key=f"{key}_search", placeholder="any text")
    if text:
        mask = out.astype(str).apply(lambda c: c.str.contains(text, case=False, regex=False)).any(axis=1)
        out = out[mask]
    return out

"""Widgets the pages share: the page intro, the metric row of a result with its deltas and latency."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from compression.core.glossary import help_for
from compression.data.datasets import Dataset
from compression.metrics.latency import MIN_CHANGE, PairedLatency, ratio_text, setting_text
from compression.metrics.summary import chance_note, size_change
from compression.workflows.slider import speed_note
from ui.state import current_data, record_result, with_latency


def accuracy_label(data: Dataset) -> str:
    """'Test accuracy', 'Accuracy (whole file)', ...: what an accuracy on `data` was scored on."""
    return {"test": "Test accuracy", "all": "Accuracy (whole file)"}.get(
        data.eval_split, f"Accuracy ({data.eval_split} split)")


def latency_metric(col, m: dict, label: str = "Latency", note: str = "") -> None:
    """One paired latency in `col`: the compressed model's median, its ratio to the original timed
    alongside (or 'no measurable change (lo-hi)' when the rounds cannot tell them apart), and the
    setting it was measured at (batch, threads, device, rounds) written beside it."""
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


def metric_row(m: dict, base: dict, latency_note: str = "", cfg=None, report: dict | None = None) -> dict:
    """Accuracy, non-zero parameters, size and latency, with deltas against the baseline. The first
    three draw at once; with `cfg`, the paired latency is then measured (once per model and config)
    and drawn, unless `report` (the result's Result dict) says the result cannot change speed:
    then no number at all, only why. Returns `m` with the latency fields filled in, for add_result."""
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


def intro(text: str, title: str = "What this page does and how to read it", expanded: bool = False) -> None:
    """The page's plain-language explanation: folded away, or open on arrival (the method pages)."""
    with st.expander(title, expanded=expanded):
        st.write(text)


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


def record_button(label: str, config: dict, metrics: dict, key: str) -> None:
    """'Record in the run store' for the result on screen (the store keeps what you choose: runs
    you record, keep, train or run from the command line; not every slider position)."""
    recorded = st.session_state.get("recorded", {})
    if st.button("Record in the run store", key=key, help="Adds this result to the experiment store, where the "
                 "Runs and Trade-offs pages and reports find it. Keeping a model records it too."):
        run_id = record_result(label, config, metrics)
        if run_id:
            st.caption(f"Recorded as run {run_id[:8]} (Runs page).")
    elif len(recorded):
        st.caption(f"{len(recorded)} result(s) of this session recorded in the run store.")

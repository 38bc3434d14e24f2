"""Figure builders and small array summaries for the Weights, Pruning, Quantization and Low-rank
pages: pure functions of numpy arrays, dicts and DataFrames (no streamlit, no model work).
The general builders (histograms, curves, bars, quantization grids) live in compression.figures.common."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from compression.figures.common import PCT_TICKS, category_ticks, quant_grid_figure

STATS_COLUMNS = ["layer", "count", "zeros", "mean |w|", "std", "min", "max", "kurtosis", "outliers > 3 std"]


def array_stats(values: np.ndarray) -> dict[str, float]:
    """Distribution summary of one flat array: fraction of exact zeros, mean |w|, std, range,
    excess kurtosis (0 for a Gaussian; large = heavy tails) and the share beyond 3 std."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return {c: float("nan") for c in STATS_COLUMNS[2:]}
    std = float(v.std())
    z = (v - v.mean()) / (std or 1.0)
    return {"zeros": float((v == 0).mean()), "mean |w|": float(np.abs(v).mean()), "std": std,
            "min": float(v.min()), "max": float(v.max()), "kurtosis": float((z ** 4).mean() - 3.0),
            "outliers > 3 std": float((np.abs(z) > 3).mean())}


def weight_stats(arrays: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """One row per layer (in the given order) with `array_stats` and the value count."""
    rows = [{"layer": name, "count": int(np.asarray(v).size), **array_stats(v)} for name, v in arrays.items()]
    return pd.DataFrame(rows, columns=STATS_COLUMNS)


def subsample(values: np.ndarray, limit: int = 50_000, seed: int = 0) -> np.ndarray:
    """At most `limit` values drawn without replacement (seeded): enough for a histogram, small
    enough to send to the browser."""
    v = np.asarray(values).ravel()
    if v.size <= limit:
        return v
    return np.random.default_rng(seed).choice(v, size=limit, replace=False)


def grid_table(values: np.ndarray, grids: Mapping[str, tuple[np.ndarray, float, float]]) -> pd.DataFrame:
    """What each quantization grid does to `values`: its clipping range, step, the share of values
    clipped, and the RMS error of rounding every value to its nearest level.

    Args:
        grids: {calibration: (levels, low, high)} as compression.workflows.curves.quant_grid returns: `low`
            and `high` are where clipping starts (half a step beyond the end levels).
    Returns:
        one row per grid; 'clipped' counts the values beyond the clipping range, those the
        quantizer moves further than half a step (a value within half a step of an end level
        rounds to it like any other).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    rows = []
    for name, (levels, lo, hi) in grids.items():
        lv = np.sort(np.asarray(levels, dtype=np.float64))
        idx = np.clip(np.searchsorted(lv, v), 1, max(len(lv) - 1, 1))
        left, right = lv[idx - 1], lv[np.minimum(idx, len(lv) - 1)]
        nearest = np.where(v - left <= right - v, left, right)  # clipped values land on an end level
        step = float(np.diff(lv).mean()) if len(lv) > 1 else 0.0
        tol = 1e-4 * step  # float32 scales: a value at the range's end is not clipped by a rounding bit
        rows.append({"calibration": name, "low": float(lo), "high": float(hi), "step": step,
                     "clipped": float(((v < lo - tol) | (v > hi + tol)).mean()),
                     "rms error": float(np.sqrt(((v - nearest) ** 2).mean()))})
    return pd.DataFrame(rows, columns=["calibration", "low", "high", "step", "clipped", "rms error"])


def same_grid_note(values: np.ndarray, grids: Mapping[str, tuple[np.ndarray, float, float]]) -> str | None:
    """Why several calibration methods drew one grid, or None when they differ. Percentile and MSE
    only clip when it pays: on values piled up at their ends (pixels at black and at full
    intensity) the percentile points are the min and max, and clipping the pile at the top costs
    more error than the finer step saves."""
    if len(grids) < 2:
        return None
    ranges = [np.asarray([lo, hi], dtype=np.float64) for _, lo, hi in grids.values()]
    if any(not np.allclose(r, ranges[0], rtol=1e-6, atol=1e-9) for r in ranges[1:]):
        return None
    v = np.asarray(values, dtype=np.float64).ravel()
    at_min, at_max = float((v == v.min()).mean()), float((v == v.max()).mean())
    distinct = np.unique(v).size
    piles = (f"{at_min:.1%} of them at the minimum and {at_max:.1%} at the maximum" if max(at_min, at_max) >= 1e-3
             else "no value far enough out to be worth clipping")
    kind = f"only {distinct} distinct values" if distinct <= 256 else f"{distinct:,} distinct values"
    return (f"{', '.join(grids)} give the same grid here: these {v.size:,} values take {kind}, {piles}. "
            "Clipping either end would move more values further than the finer step saves, so the percentile "
            "points are the min and max and the MSE search keeps the full range.")


def activation_grid_figure(values: np.ndarray, grids: Mapping[str, tuple[np.ndarray, float, float]],
                           title: str, log_y: bool = False) -> go.Figure:
    """compression.figures.common.quant_grid_figure for a layer's inputs: the histogram named 'inputs'."""
    fig = quant_grid_figure(values, dict(grids), title, log_y, xaxis="Input value")
    fig.data[0].name = "inputs"
    return fig


def layer_pruning_figure(rows: pd.DataFrame, title: str = "Per layer") -> go.Figure:
    """Grouped bars per layer: requested vs achieved sparsity (unstructured report rows with
    'requested'/'achieved'), or channels before vs after (structured rows with
    'channels_before'/'channels_after')."""
    structured = "channels_before" in rows.columns
    pairs = (("channels_before", "before"), ("channels_after", "after")) if structured else (
        ("requested", "requested"), ("achieved", "achieved"))
    fig = go.Figure([go.Bar(x=rows["layer"], y=rows[col], name=name) for col, name in pairs])
    fig.update_layout(title=title, barmode="group", xaxis_title="Layer",
                      yaxis_title="Output channels" if structured else "Sparsity (%)",
                      height=320, margin=dict(l=40, r=10, t=40, b=40))
    category_ticks(fig, rows["layer"])
    if not structured:
        fig.update_yaxes(tickformat=PCT_TICKS, range=[0, 1])
    return fig


def ideal_sqnr_db(bits: int) -> float:
    """SQNR of a `bits`-bit uniform quantizer on a signal spread uniformly over its whole range:
    20 log10(2^bits) = 6.02 dB per bit. Heavy tails and outliers push real layers below it."""
    return 20.0 * np.log10(2.0) * bits


def sqnr_figure(rows: pd.DataFrame, bits: int | None = None, title: str = "SQNR per layer (dB)") -> go.Figure:
    """Bars of each layer's weight SQNR (dB; higher = less quantization noise) with, for a given
    bit-width, a dotted line at what a uniform signal with no outliers would get (6.02 dB/bit)."""
    y = rows["sqnr_db"].replace([np.inf, -np.inf], np.nan)
    fig = go.Figure(go.Bar(x=rows["layer"], y=y, name="weights", hovertext=rows.get("type"),
                           hovertemplate="%{x}: %{y:.1f} dB<extra>%{hovertext}</extra>"))
    if bits is not None:
        fig.add_hline(y=ideal_sqnr_db(bits), line_dash="dot",
                      annotation_text=f"uniform signal at {bits} bits ({ideal_sqnr_db(bits):.1f} dB)")
    fig.update_layout(title=title, xaxis_title="Layer", yaxis_title="SQNR (dB)", height=320,
                      margin=dict(l=40, r=10, t=40, b=40))
    category_ticks(fig, rows["layer"])
    return fig


VARIANTS = ("fp32 baseline", "simulated (fake quantization)", "real int8 kernels")


def sim_vs_real_figure(baseline: Mapping, simulated: Mapping, real: Mapping,
                       simulated_note: str | None = None) -> go.Figure:
    """Three panels (accuracy %, size KiB, latency ms), one bar per variant: the fp32 baseline,
    the simulated quantization and the real int8 model. Each mapping needs 'accuracy' and
    'size_bytes'. The latency panel is one paired measurement: the real int8 model's
    'latency_ms' and the fp32 original timed alongside it ('baseline_latency_ms' of `real`), at
    `real`'s 'batch_size'. The simulated model never has a latency bar (it runs in fp32, so its
    timing says nothing about quantized speed): `simulated_note` says so in that panel. A missing
    latency is a gap."""
    paired = real.get("baseline_latency_ms")
    latencies = (paired, None, real.get("latency_ms") if paired is not None else None)
    batch = f", batch {real['batch_size']}" if paired is not None and real.get("batch_size") else ""
    fig = make_subplots(rows=1, cols=3, subplot_titles=("Accuracy (%)", "Size (KiB)", f"Latency (ms{batch})"))
    colors = ("#7f7f7f", "#1f77b4", "#ff7f0e")
    for name, m, latency, color in zip(VARIANTS, (baseline, simulated, real), latencies, colors):
        values = (m["accuracy"] * 100, m["size_bytes"] / 1024, latency)
        for col, value in enumerate(values, start=1):
            fig.add_trace(go.Bar(x=[name], y=[value], name=name, marker_color=color, legendgroup=name,
                                 showlegend=col == 1), row=1, col=col)
    if simulated_note:
        fig.add_annotation(text=simulated_note.replace(": ", ":<br>"), xref="x3 domain", yref="y3 domain",
                           x=0.5, y=0.98, showarrow=False, font=dict(size=10))
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(title="fp32 vs simulated vs real int8", height=330, barmode="group",
                      margin=dict(l=40, r=10, t=60, b=20), legend=dict(orientation="h", y=-0.05))
    return fig

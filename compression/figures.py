"""Figure builders: pure functions from DataFrames / arrays to plotly figures (no streamlit)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go


def confusion_figure(confusion: Sequence[Sequence[int]], class_names: Sequence[str],
                     title: str = "Confusion matrix (test split)") -> go.Figure:
    """Heatmap with true classes on rows and predicted classes on columns, counts as text."""
    z = np.asarray(confusion)
    fig = go.Figure(go.Heatmap(z=z, x=list(class_names), y=list(class_names), colorscale="Blues",
                               text=z, texttemplate="%{text}", hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="predicted", yaxis_title="true",
                      yaxis_autorange="reversed", xaxis_type="category",
                      yaxis_type="category", height=420, margin=dict(l=40, r=10, t=40, b=40))
    return fig


def layer_share_figure(df, value: str = "params", title: str | None = None) -> go.Figure:
    """Bar chart of a layer table column (params or macs) per layer."""
    fig = go.Figure(go.Bar(x=df["layer"], y=df[value], hovertext=df["type"], name=value))
    fig.update_layout(title=title or f"{value} per layer", xaxis_title="layer", yaxis_title=value,
                      height=320, margin=dict(l=40, r=10, t=40, b=80))
    return fig


def histogram_figure(series: dict[str, np.ndarray], title: str, log_y: bool = False, bins: int = 80,
                     xaxis: str = "value") -> go.Figure:
    """Overlaid histograms, one trace per named array (e.g. 'before' / 'after')."""
    fig = go.Figure()
    for name, values in series.items():
        fig.add_trace(go.Histogram(x=np.asarray(values).ravel(), name=name, nbinsx=bins, opacity=0.6))
    fig.update_layout(title=title, barmode="overlay", xaxis_title=xaxis, yaxis_title="count",
                      yaxis_type="log" if log_y else "linear", height=330, margin=dict(l=40, r=10, t=40, b=40))
    return fig


def quant_grid_figure(values: np.ndarray, grids: dict[str, tuple[np.ndarray, float, float]], title: str,
                      log_y: bool = False) -> go.Figure:
    """A weight histogram with, per calibration method, its clipping range (dashed lines) and
    its quantization levels (ticks along the bottom)."""
    fig = histogram_figure({"weights": values}, title, log_y)
    colors = ["#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    for (name, (levels, lo, hi)), color in zip(grids.items(), colors):
        for x in (lo, hi):
            fig.add_vline(x=float(x), line_dash="dash", line_color=color)
        fig.add_trace(go.Scatter(x=levels, y=np.zeros_like(levels), mode="markers", name=f"{name} grid",
                                 marker=dict(symbol="line-ns-open", size=14, color=color)))
    return fig


def curve_figure(df, x: str, y: str, title: str, color: str | None = None, marker_x: float | None = None,
                 baseline: float | None = None) -> go.Figure:
    """A line per `color` group of y against x, with an optional marker at the current x and a
    dotted baseline."""
    fig = go.Figure()
    groups = df.groupby(color) if color else [("", df)]
    for name, part in groups:
        fig.add_trace(go.Scatter(x=part[x], y=part[y], mode="lines+markers", name=str(name) or y))
    if baseline is not None:
        fig.add_hline(y=baseline, line_dash="dot", annotation_text="baseline")
    if marker_x is not None:
        fig.add_vline(x=marker_x, line_color="gray")
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, height=330, margin=dict(l=40, r=10, t=40, b=40))
    return fig


def bar_figure(df, x: str, y: str, title: str, hover: str | None = None) -> go.Figure:
    fig = go.Figure(go.Bar(x=df[x], y=df[y], hovertext=df[hover] if hover else None))
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, height=320, margin=dict(l=40, r=10, t=40, b=80))
    return fig

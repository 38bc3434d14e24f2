"""Figure builders: pure functions from DataFrames / arrays to plotly figures (no streamlit), and the
vocabulary every builder shares: human axis titles for the library's column names, fractions
(accuracy, sparsity, ...) drawn as percentages as the metrics show them, a qualitative palette that
tells ~20 layers apart, and log axes with one labelled tick per decade."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.express as px
import plotly.graph_objects as go

AXIS_TITLES = {
    "accuracy": "Accuracy (%)", "val_accuracy": "Validation accuracy (%)", "train_accuracy": "Training accuracy (%)",
    "agreement": "Agreement with the original (%)", "loss": "Training loss", "val_loss": "Validation loss",
    "epoch": "Epoch", "size_bytes": "Size (KiB)", "latency_ms": "Latency (ms)", "sparsity": "Sparsity (%)",
    "bits": "Bit-width (bits)", "rank_ratio": "Rank (share of full)", "energy_kept": "Energy kept (%)",
    "macs": "MACs (multiply-accumulates)", "params": "Parameters", "layer": "Layer", "level": "Level",
    "fidelity": "Fidelity", "fidelity_mean": "Mean fidelity", "where": "Block role @ bit-width",
    "k": "Layers kept in fp32", "sqnr_db": "SQNR (dB)",
}
# columns holding a fraction 0..1 that the app's metrics show as a percentage
PERCENT = {"accuracy", "val_accuracy", "train_accuracy", "agreement", "sparsity", "energy_kept"}
PCT_TICKS = ".1~%"       # 0.9 -> 90%, 0.975 -> 97.5%
PCT_HOVER = ".2%"        # as the metrics print them
PALETTE = px.colors.qualitative.Dark24  # 24 colours, the first 20 at least 29 CIE76 apart on white
GRID_COLORS = ("#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")


def axis_title(name: str) -> str:
    """The axis title for a column name: 'energy_kept' -> 'Energy kept (%)'; unknown names are
    written out ('mean_drop' -> 'Mean drop')."""
    if name in AXIS_TITLES:
        return AXIS_TITLES[name]
    text = str(name).replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def is_percent(name: str) -> bool:
    """True for a column of fractions drawn as percentages (accuracy, sparsity, energy kept...)."""
    return name in PERCENT


def percent_axis(fig: go.Figure, name: str, axis: str = "y") -> None:
    """Percent ticks on `axis` ('x' or 'y', every subplot) when `name` holds fractions."""
    if is_percent(name):
        (fig.update_yaxes if axis == "y" else fig.update_xaxes)(tickformat=PCT_TICKS)


def value_format(name: str) -> str:
    """A plotly hover format for a column: '.2%' for fractions, '.4g' otherwise."""
    return PCT_HOVER if is_percent(name) else ".4g"


def palette(n: int) -> list[str]:
    """`n` qualitative colours, distinct up to len(PALETTE) (24), then repeating."""
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def log_ticks(fig: go.Figure, axis: str = "y", decades: bool = True) -> None:
    """A log `axis` without the small digit labels plotly puts between powers of ten: one tick per
    decade (decades=True), or full-size 1-2-5 ticks for an axis that spans only a decade or two."""
    update = fig.update_yaxes if axis == "y" else fig.update_xaxes
    if decades:
        update(type="log", dtick=1, minor=dict(showgrid=False, ticks=""))
        return
    values = [m * 10.0 ** k for k in range(-3, 7) for m in (1, 2, 5)]
    update(type="log", tickmode="array", tickvals=values, ticktext=[f"{v:g}" for v in values],
           minor=dict(showgrid=False, ticks=""))


def category_ticks(fig: go.Figure, labels: Sequence[str]) -> None:
    """Category labels on x that never overlap: slanted once there are many or long ones, and a
    margin that grows to fit them."""
    labels = [str(s) for s in labels]
    long = len(labels) > 6 or sum(len(s) for s in labels) > 40
    fig.update_xaxes(tickangle=-45 if long else 0, automargin=True)


def confusion_figure(confusion: Sequence[Sequence[int]], class_names: Sequence[str],
                     title: str = "Confusion matrix (test split)") -> go.Figure:
    """Heatmap with true classes on rows and predicted classes on columns, counts as text."""
    z = np.asarray(confusion)
    fig = go.Figure(go.Heatmap(z=z, x=list(class_names), y=list(class_names), colorscale="Blues",
                               text=z, texttemplate="%{text}", colorbar=dict(title="Samples"),
                               hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="Predicted class", yaxis_title="True class",
                      yaxis_autorange="reversed", xaxis_type="category",
                      yaxis_type="category", height=420, margin=dict(l=40, r=10, t=40, b=40))
    return fig


def layer_share_figure(df, value: str = "params", title: str | None = None) -> go.Figure:
    """Bar chart of a layer table column (params or macs) per layer."""
    fig = go.Figure(go.Bar(x=df["layer"], y=df[value], hovertext=df["type"], name=axis_title(value)))
    fig.update_layout(title=title or f"{axis_title(value)} per layer", xaxis_title="Layer",
                      yaxis_title=axis_title(value), height=320, margin=dict(l=40, r=10, t=40, b=40))
    category_ticks(fig, df["layer"])
    return fig


def _shared_bins(series: dict[str, np.ndarray], bins: int) -> np.ndarray:
    """Bin edges over every array's finite values (one bin around a constant)."""
    finite = [v[np.isfinite(v)] for v in series.values()]
    finite = [v for v in finite if v.size]
    if not finite:
        return np.array([-0.5, 0.5])
    lo, hi = min(float(v.min()) for v in finite), max(float(v.max()) for v in finite)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def histogram_figure(series: dict[str, np.ndarray], title: str, log_y: bool = False, bins: int = 80,
                     xaxis: str = "Weight value") -> go.Figure:
    """Overlaid histograms on shared bins, one trace per named array (e.g. 'before' / 'after').
    The y-range always shows a bin of one value: from 0.5 on a log axis (ticks at 1, 10, 100...),
    from 0 on a linear one."""
    arrays = {name: np.asarray(v, dtype=np.float64).ravel() for name, v in series.items()}
    edges = _shared_bins(arrays, bins)
    centers, width = (edges[:-1] + edges[1:]) / 2, float(edges[1] - edges[0])
    fig, top = go.Figure(), 1
    for name, values in arrays.items():
        counts, _ = np.histogram(values[np.isfinite(values)], bins=edges)
        top = max(top, int(counts.max(initial=0)))
        fig.add_trace(go.Bar(x=centers, y=counts, width=width, name=name, opacity=0.6,
                             hovertemplate="%{x:.4g}: %{y} values<extra>" + name + "</extra>"))
    fig.update_layout(title=title, barmode="overlay", bargap=0, xaxis_title=xaxis, yaxis_title="Count",
                      height=330, margin=dict(l=40, r=10, t=40, b=40))
    if log_y:
        log_ticks(fig)
        fig.update_yaxes(range=[np.log10(0.5), np.log10(top * 2.0)])
    else:
        fig.update_yaxes(range=[0, top * 1.05])
    return fig


def quant_grid_figure(values: np.ndarray, grids: dict[str, tuple[np.ndarray, float, float]], title: str,
                      log_y: bool = False, xaxis: str = "Weight value") -> go.Figure:
    """A histogram with, per calibration method, its clipping range (dashed lines over the whole
    height) and its quantization levels as ticks, one row per method in a strip below the
    histogram (so identical grids are still told apart, and log axes never hide them)."""
    fig = histogram_figure({"weights": values}, title, log_y, xaxis=xaxis)
    names = list(grids)
    for row, (name, (levels, lo, hi)) in enumerate(grids.items()):
        color = GRID_COLORS[row % len(GRID_COLORS)]
        for x in (lo, hi):
            fig.add_shape(type="line", x0=float(x), x1=float(x), xref="x", y0=0, y1=1, yref="paper",
                          line=dict(dash="dash", color=color, width=1.5))
        fig.add_trace(go.Scatter(x=np.asarray(levels), y=[row] * len(levels), yaxis="y2", mode="markers",
                                 name=f"{name} grid", marker=dict(symbol="line-ns-open", size=12, color=color),
                                 hovertemplate=f"{name} level %{{x:.4g}}<extra></extra>"))
    strip = min(0.08 * max(len(names), 1), 0.3)
    fig.update_layout(
        height=330 + 20 * len(names), showlegend=False,  # the strip names each grid, in its colour
        yaxis=dict(domain=[strip + 0.06, 1.0]),
        yaxis2=dict(domain=[0.0, strip], range=[max(len(names), 1) - 0.4, -0.6], tickvals=list(range(len(names))),
                    ticktext=names, showgrid=False, zeroline=False, fixedrange=True),  # first method on top
        xaxis=dict(anchor="y2"))
    return fig


def curve_figure(df, x: str, y: str, title: str, color: str | None = None, marker_x: float | None = None,
                 baseline: float | None = None) -> go.Figure:
    """A line per `color` group of y against x, with an optional marker at the current x and a
    dotted baseline. Fractions (accuracy, sparsity) are drawn as percentages."""
    fig = go.Figure()
    groups = df.groupby(color) if color else [("", df)]
    hover = f"{axis_title(x)} %{{x:{value_format(x)}}}: %{{y:{value_format(y)}}}<extra></extra>"
    for name, part in groups:
        fig.add_trace(go.Scatter(x=part[x], y=part[y], mode="lines+markers", name=str(name) or axis_title(y),
                                 hovertemplate=hover))
    if baseline is not None:
        fig.add_hline(y=baseline, line_dash="dot", annotation_text="baseline")
    if marker_x is not None:
        fig.add_vline(x=marker_x, line_color="gray")
    fig.update_layout(title=title, xaxis_title=axis_title(x), yaxis_title=axis_title(y), height=330,
                      margin=dict(l=40, r=10, t=40, b=40))
    percent_axis(fig, x, "x")
    percent_axis(fig, y, "y")
    return fig


def bar_figure(df, x: str, y: str, title: str, hover: str | None = None) -> go.Figure:
    """Bars of y per x (categories), with an optional hover column."""
    fig = go.Figure(go.Bar(x=df[x], y=df[y], hovertext=df[hover] if hover else None,
                           hovertemplate=f"%{{x}}: %{{y:{value_format(y)}}}"
                                         + ("<br>%{hovertext}" if hover else "") + "<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=axis_title(x), yaxis_title=axis_title(y), height=320,
                      margin=dict(l=40, r=10, t=40, b=40))
    percent_axis(fig, y, "y")
    category_ticks(fig, df[x])
    return fig

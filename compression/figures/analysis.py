"""Figure builders and small glue for the analysis pages (distillation, sensitivity, explain,
trade-offs, runs): pure functions from DataFrames / dicts / arrays to plotly figures. No streamlit
import: the pages only draw what these return (the jobs that compute them: workflows.background)."""
from __future__ import annotations

import json
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from compression.figures.common import (PCT_TICKS, axis_title, category_ticks, is_percent, palette, percent_axis,
                                 value_format)

MARGIN = dict(l=50, r=10, t=40, b=50)
SCALE = {"size_bytes": 1 / 1024}  # plotted unit = stored unit * scale (bytes -> KiB)
TRADEOFF_COLUMNS = ["label", "source", "model", "method", "accuracy", "size_bytes", "latency_ms", "config"]


# ---- trade-offs and Pareto fronts -------------------------------------------------------------

def pareto_front(df: pd.DataFrame, x: str, y: str = "accuracy") -> pd.Series:
    """True for the rows no other row beats: smaller-or-equal `x` and larger-or-equal `y`, one of
    them strictly. Rows with a missing x or y are never on the front. Index-aligned with `df`."""
    xs, ys = pd.to_numeric(df[x], errors="coerce"), pd.to_numeric(df[y], errors="coerce")
    ok = xs.notna() & ys.notna()
    on = pd.Series(False, index=df.index)
    X, Y = xs[ok].to_numpy(float), ys[ok].to_numpy(float)
    for i, idx in enumerate(xs[ok].index):
        dominated = (X <= X[i]) & (Y >= Y[i]) & ((X < X[i]) | (Y > Y[i]))
        on[idx] = not dominated.any()
    return on


def _config_text(config: Any) -> str:
    if isinstance(config, str):
        return config
    try:
        return json.dumps(config, sort_keys=True, default=str)
    except TypeError:
        return str(config)


def tradeoff_figure(df: pd.DataFrame, x: str = "size_bytes", y: str = "accuracy",
                    title: str | None = None) -> go.Figure:
    """Scatter of `y` against `x`, one trace per `source` (e.g. session, store, baseline), and the
    Pareto front (smaller x, higher y) as a line through its points. Hover shows label and config.
    Sizes are plotted in KiB."""
    fig = go.Figure()
    point = f"%{{hovertext}}<br>{axis_title(x)} %{{x:.3g}}, {axis_title(y)} %{{y:{value_format(y)}}}<extra></extra>"
    data = df.copy()
    data[x] = pd.to_numeric(data[x], errors="coerce")
    data = data[data[x].notna() & pd.to_numeric(data[y], errors="coerce").notna()]
    scale = SCALE.get(x, 1.0)
    sources = data["source"] if "source" in data else pd.Series("results", index=data.index)
    for source in dict.fromkeys(sources):
        part = data[sources == source]
        hover = [f"<b>{lab}</b><br>{_config_text(cfg)[:300]}" for lab, cfg in
                 zip(part.get("label", part.index.astype(str)), part.get("config", [""] * len(part)))]
        fig.add_trace(go.Scatter(x=part[x] * scale, y=part[y], mode="markers", name=str(source),
                                 marker=dict(size=10, symbol="diamond" if source == "baseline" else "circle"),
                                 hovertext=hover, hovertemplate=point))
    front = data[pareto_front(data, x, y)].sort_values(x)
    fig.add_trace(go.Scatter(x=front[x] * scale, y=front[y], mode="lines+markers", name="Pareto front",
                             line=dict(color="crimson", dash="dash"),
                             marker=dict(size=14, symbol="circle-open", color="crimson"),
                             hovertext=list(front.get("label", front.index.astype(str))),
                             hovertemplate="Pareto: %{hovertext}<extra></extra>"))
    fig.update_layout(title=title or f"{_plain(y)} vs {_plain(x).lower()}",
                      xaxis_title=axis_title(x), yaxis_title=axis_title(y), height=420, margin=MARGIN)
    percent_axis(fig, y)
    return fig


def _plain(name: str) -> str:
    """An axis title without its unit, for a chart title: 'Accuracy (%)' -> 'Accuracy'."""
    return axis_title(name).split(" (")[0]


def results_frame(results: Iterable[Mapping], source: str = "session") -> pd.DataFrame:
    """Session results ({label, config, metrics, model}) as rows with TRADEOFF_COLUMNS."""
    rows = []
    for r in results:
        m, cfg = r.get("metrics", {}) or {}, r.get("config", {}) or {}
        rows.append({"label": r.get("label", "?"), "source": source, "model": r.get("model", ""),
                     "method": cfg.get("kind", cfg.get("method", "")) if isinstance(cfg, Mapping) else "",
                     "accuracy": m.get("accuracy"), "size_bytes": m.get("size_bytes"),
                     "latency_ms": m.get("latency_ms"), "config": _config_text(cfg)})
    return pd.DataFrame(rows, columns=TRADEOFF_COLUMNS)


def _pick(row: Mapping, *names: str) -> Any:
    for name in names:
        value = row.get(name)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return value
    return None


def store_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A store's run table (compression.io.store.runs_frame: run fields, metrics flattened into columns
    and also kept as a 'metrics' dict or JSON) as rows with TRADEOFF_COLUMNS, source 'store'."""
    rows = []
    for _, row in df.iterrows():
        row = row.to_dict()
        metrics = row.get("metrics")
        if isinstance(metrics, str):
            try:
                metrics = json.loads(metrics)
            except ValueError:
                metrics = None
        flat = {**(metrics if isinstance(metrics, Mapping) else {}), **row}
        kind = _pick(flat, "kind", "method") or "run"
        run_id = str(_pick(flat, "id", "run_id") or "")
        label = _pick(flat, "label") or f"{kind} {run_id[:8]}".strip()
        rows.append({"label": str(label), "source": "store", "model": _pick(flat, "model", "model_id") or "",
                     "method": kind, "accuracy": _pick(flat, "accuracy"), "size_bytes": _pick(flat, "size_bytes"),
                     "latency_ms": _pick(flat, "latency_ms"), "config": _config_text(row.get("config", ""))})
    return pd.DataFrame(rows, columns=TRADEOFF_COLUMNS)


def same_setup(df: pd.DataFrame, model_fingerprint: str, data_fingerprint: str) -> pd.DataFrame:
    """The store's runs (runs_frame rows) of one model on one data set, by fingerprint: what the
    Trade-offs page compares by default (another model's or data set's numbers are not comparable)."""
    if df.empty or "model_fingerprint" not in df or "data_fingerprint" not in df:
        return df.iloc[0:0] if not df.empty else df
    return df[(df["model_fingerprint"].astype(str) == model_fingerprint)
              & (df["data_fingerprint"].astype(str) == data_fingerprint)]


def unique_results(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows with each result once: a session result that was also recorded in the store keeps its
    session row (same label, model, method, accuracy and size); the first of exact repeats stays."""
    if rows.empty:
        return rows
    keys = ["label", "model", "method", "accuracy", "size_bytes"]
    order = rows["source"].map({"baseline": 0, "session": 1}).fillna(2)
    ranked = rows.assign(_order=order).sort_values(by="_order", kind="stable")
    return ranked.drop_duplicates(subset=keys).sort_index().drop(columns="_order")


# ---- training curves (distillation) -----------------------------------------------------------

def curve_figure(rows: Sequence[Mapping] | pd.DataFrame, value: str, title: str | None = None) -> go.Figure:
    """One line per `run` of `value` against `epoch` (rows: {run, epoch, value, ...})."""
    df = pd.DataFrame(rows)
    fig = go.Figure()
    if not df.empty and value in df:
        for run, part in df.groupby("run", sort=False):
            part = part.sort_values("epoch")
            fig.add_trace(go.Scatter(x=part["epoch"], y=part[value], mode="lines+markers", name=str(run),
                                     line=dict(dash="dot" if "baseline" in str(run) else "solid"),
                                     hovertemplate=f"epoch %{{x}}: %{{y:{value_format(value)}}}<extra>{run}</extra>"))
    fig.update_layout(title=title or _plain(value), xaxis_title=axis_title("epoch"),
                      yaxis_title=axis_title(value), height=340, margin=MARGIN)
    fig.update_xaxes(dtick=1)
    percent_axis(fig, value)
    return fig


# ---- sensitivity sweeps ---------------------------------------------------------------------

def sweep_lines_figure(sweep: pd.DataFrame, value: str = "accuracy", level_title: str = "level",
                       baseline: float | None = None) -> go.Figure:
    """One line per layer: `value` against the sweep level; the baseline as a dotted line."""
    fig = go.Figure()
    groups = list(sweep.groupby("layer", sort=False))
    hover = f" at {level_title} %{{x:{value_format(level_title)}}}: %{{y:{value_format(value)}}}<extra></extra>"
    for (layer, part), color in zip(groups, palette(len(groups))):
        part = part.sort_values("level")
        fig.add_trace(go.Scatter(x=part["level"], y=part[value], mode="lines+markers", name=str(layer),
                                 line=dict(color=color), marker=dict(color=color),
                                 hovertemplate=str(layer) + hover))
    if baseline is not None:
        fig.add_hline(y=baseline, line_dash="dot", line_color="grey", annotation_text="baseline")
    fig.update_layout(title=f"{_plain(value)} per layer", xaxis_title=axis_title(level_title),
                      yaxis_title=axis_title(value), height=400, margin=MARGIN, legend_title_text="Layer")
    percent_axis(fig, value)
    percent_axis(fig, level_title, "x")
    return fig


def sweep_heatmap_figure(sweep: pd.DataFrame, value: str = "accuracy", level_title: str = "level") -> go.Figure:
    """Layer x level heatmap of `value` (layers in sweep order on rows, levels on columns)."""
    grid = sweep.pivot_table(index="layer", columns="level", values=value, sort=False)
    grid = grid[sorted(grid.columns)]
    z = grid.to_numpy(float)
    pct = is_percent(value)
    ticks = [f"{c:.0%}" if is_percent(level_title) else f"{c:g}" for c in grid.columns]
    fig = go.Figure(go.Heatmap(z=z, x=[str(c) for c in grid.columns], y=[str(i) for i in grid.index],
                               colorscale="RdYlGn", texttemplate="%{z:.1%}" if pct else "%{z:.3g}",
                               colorbar=dict(title=axis_title(value), tickformat=PCT_TICKS if pct else None),
                               hovertemplate=f"%{{y}} at {level_title} %{{x}}: %{{z:{value_format(value)}}}"
                                             "<extra></extra>"))
    fig.update_layout(title=f"{_plain(value)}: layer x {level_title}", xaxis_title=axis_title(level_title),
                      yaxis_title="Layer", xaxis_type="category", yaxis_type="category", yaxis_autorange="reversed",
                      height=max(260, 40 * len(grid) + 120), margin=MARGIN)
    fig.update_xaxes(tickvals=[str(c) for c in grid.columns], ticktext=ticks)
    fig.update_yaxes(automargin=True)
    return fig


def proxy_figure(table: pd.DataFrame, proxies: Sequence[str], layer: str = "layer") -> go.Figure:
    """Grouped bars, one trace per proxy: each proxy min-max scaled to 0-1 across layers, so
    proxies on different scales sit side by side."""
    fig = go.Figure()
    for name, color in zip(proxies, palette(len(proxies))):
        values = pd.to_numeric(table[name], errors="coerce").astype(float)
        span = values.max() - values.min()
        scaled = (values - values.min()) / span if span and np.isfinite(span) else values * 0 + 0.5
        fig.add_trace(go.Bar(x=table[layer].astype(str), y=scaled, name=name, customdata=values, marker_color=color,
                             hovertemplate=f"{name} %{{x}}: %{{customdata:.4g}}<extra></extra>"))
    fig.update_layout(title="Proxies per layer (scaled 0-1)", barmode="group", xaxis_title="Layer",
                      yaxis_title="Scaled value (0 = lowest layer, 1 = highest)", height=380, margin=MARGIN)
    category_ticks(fig, table[layer])
    return fig


def correlation_figure(correlations: Mapping[str, float]) -> go.Figure:
    """Bar per proxy of its Spearman rank correlation with the measured sensitivity (-1..1)."""
    names = list(correlations)
    values = [float(correlations[n]) if correlations[n] is not None else float("nan") for n in names]
    colors = ["seagreen" if v >= 0.5 else "orange" if v >= 0 else "crimson" for v in np.nan_to_num(values)]
    fig = go.Figure(go.Bar(x=names, y=values, marker_color=colors, text=[f"{v:+.2f}" for v in values],
                           textposition="outside"))
    fig.update_traces(cliponaxis=False)
    fig.update_layout(title="Spearman rank correlation with the sweep", xaxis_title="Proxy",
                      yaxis_title="Spearman ρ", yaxis_range=[-1.25, 1.25], height=360, margin=MARGIN)
    return fig


def allocation_figure(layers: pd.DataFrame, level_title: str = "level", columns: Sequence[str] = ()) -> go.Figure:
    """Per-layer bars of the level each plan gives a layer (e.g. 'planned' vs 'uniform')."""
    fig = go.Figure()
    names = list(columns or [c for c in layers.columns if c != "layer"])
    for name, color in zip(names, palette(len(names))):
        fig.add_trace(go.Bar(x=layers["layer"].astype(str), y=layers[name], name=str(name), marker_color=color,
                             hovertemplate=f"%{{x}}: %{{y:{value_format(level_title)}}}<extra>{name}</extra>"))
    fig.update_layout(title=f"{_plain(level_title)} per layer", barmode="group", xaxis_title="Layer",
                      yaxis_title=axis_title(level_title), height=340, margin=MARGIN)
    percent_axis(fig, level_title)
    category_ticks(fig, layers["layer"])
    return fig


# ---- attributions ---------------------------------------------------------------------------

def _image(a: Any) -> np.ndarray:
    """An attribution or input as a 2-D array: channels summed, batch of one squeezed."""
    arr = np.asarray(a.detach().cpu().numpy() if hasattr(a, "detach") else a, dtype=float)
    while arr.ndim > 2:
        arr = arr.sum(0) if arr.shape[0] <= 4 else arr.reshape(arr.shape[0], -1)
    return arr if arr.ndim == 2 else arr.reshape(1, -1)


def _colorbar(fig: go.Figure, row: int, bound: float) -> dict:
    """A colour bar beside subplot row `row` (1-based), as tall as the row, reading its scale."""
    lo, hi = fig.get_subplot(row, 1).yaxis.domain
    return dict(title=dict(text="attribution", side="right"), len=hi - lo, y=(lo + hi) / 2, yanchor="middle",
                thickness=12, x=1.0, xpad=6, tickvals=[-bound, 0.0, bound],
                ticktext=[f"−{bound:.2g} against", "0", f"+{bound:.2g} towards"])


def attribution_figure(inputs: Sequence[Any], columns: Mapping[str, Sequence[Any]],
                       row_titles: Sequence[str] = ()) -> go.Figure:
    """A grid with one row per sample: the input image, then one heatmap per entry of `columns`
    (e.g. {'original': maps, 'compressed': maps}). Attribution maps share one symmetric colour
    scale per row (red: towards the target class, blue: against), drawn as a colour bar beside the
    row, so original and compressed can be compared by eye; rows are not on a common scale."""
    names = ["input", *columns]
    n = len(inputs)
    titles = [(row_titles[r] if r < len(row_titles) else f"#{r}") if c == "input" else c
              for r in range(n) for c in names]
    fig = make_subplots(rows=max(n, 1), cols=len(names), subplot_titles=titles,
                        horizontal_spacing=0.03, vertical_spacing=0.08 if n > 1 else 0.1)
    for r in range(n):
        fig.add_trace(go.Heatmap(z=_image(inputs[r]), colorscale="gray_r", showscale=False,
                                 hovertemplate="pixel (%{x}, %{y}): %{z:.2f}<extra>input</extra>"), r + 1, 1)
        maps = [_image(columns[c][r]) for c in columns]
        bound = max((float(np.abs(m).max()) for m in maps), default=1.0) or 1.0
        for c, (name, z) in enumerate(zip(columns, maps)):
            last = c == len(maps) - 1
            fig.add_trace(go.Heatmap(z=z, colorscale="RdBu_r", zmin=-bound, zmax=bound, showscale=last,
                                     colorbar=_colorbar(fig, r + 1, bound) if last else None,
                                     hovertemplate=f"pixel (%{{x}}, %{{y}}): %{{z:.3g}}<extra>{name}</extra>"),
                          r + 1, c + 2)
    fig.update_yaxes(autorange="reversed", showticklabels=False, scaleanchor=None)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(height=max(260, 230 * n), margin=dict(l=10, r=10, t=40, b=10))
    return fig

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

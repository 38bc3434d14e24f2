"""Figure builders of compression/figures.py: traces, axes and values."""
from __future__ import annotations

import numpy as np
import pandas as pd

from compression.curves import quant_grid
from compression.figures import (bar_figure, confusion_figure, curve_figure, histogram_figure, layer_share_figure,
                                 quant_grid_figure)


def test_confusion_figure_values_and_axes():
    fig = confusion_figure([[3, 1], [0, 4]], ["a", "b"])
    assert fig.data[0].z.tolist() == [[3, 1], [0, 4]] and list(fig.data[0].x) == ["a", "b"]
    assert fig.layout.xaxis.title.text == "predicted" and fig.layout.yaxis.title.text == "true"


def test_histogram_and_grid_overlay():
    values = np.random.default_rng(0).normal(size=1000).astype(np.float32)
    fig = histogram_figure({"before": values, "after": values * 0}, "w", log_y=True)
    assert [t.name for t in fig.data] == ["before", "after"] and fig.layout.yaxis.type == "log"
    levels, lo, hi = quant_grid(values, 3, "minmax")
    assert len(levels) == 8 and lo == levels.min() and hi == levels.max()
    grid = quant_grid_figure(values, {"minmax": (levels, lo, hi)}, "g")
    assert len(grid.data) == 2 and len(grid.data[1].x) == 8
    assert len(grid.layout.shapes) == 2  # the clipping range


def test_curve_bar_and_share_figures():
    df = pd.DataFrame({"bits": [2, 4, 8], "accuracy": [0.2, 0.9, 0.98], "layer": ["a", "b", "c"],
                       "params": [10, 20, 30], "type": ["Linear"] * 3})
    fig = curve_figure(df, "bits", "accuracy", "c", marker_x=4, baseline=0.99)
    assert list(fig.data[0].y) == [0.2, 0.9, 0.98] and fig.layout.xaxis.title.text == "bits"
    assert len(fig.layout.shapes) == 2
    assert list(bar_figure(df, "layer", "params", "p").data[0].y) == [10, 20, 30]
    assert list(layer_share_figure(df).data[0].x) == ["a", "b", "c"]

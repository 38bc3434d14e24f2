"""Figure builders of compression/figures/common.py: traces, axes and values; the quantization grids the
Weights page draws and tabulates, checked against the quantizer itself."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from plotly.colors import hex_to_rgb

from compression.workflows.curves import quant_grid
from compression.figures.common import (PALETTE, axis_title, bar_figure, confusion_figure, curve_figure, histogram_figure,
                                 layer_share_figure, log_ticks, palette, quant_grid_figure)
from compression.figures.compress import activation_grid_figure, grid_table, same_grid_note
from compression.methods.quantization import compute_qparams, fake_quantize

CALIBRATIONS = ("minmax", "percentile", "mse")


def _lab(color: str) -> np.ndarray:
    """CIE L*a*b* of an sRGB hex colour (D65)."""
    c = np.asarray(hex_to_rgb(color), float) / 255
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ c
    f = np.cbrt(xyz / np.array([0.95047, 1.0, 1.08883]))
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def pixels(n: int = 16384, seed: int = 0) -> np.ndarray:
    """Like the digits' first-layer inputs: 17 standardised intensities, half of them at black and
    about 10% at full intensity (the largest value)."""
    rng = np.random.default_rng(seed)
    codes = np.where(rng.random(n) < 0.5, 0, np.where(rng.random(n) < 0.2, 16, rng.integers(1, 16, n)))
    return ((codes - 4.9) / 6.0).astype(np.float32)


def test_axis_titles_are_words_with_units():
    assert axis_title("energy_kept") == "Energy kept (%)"
    assert axis_title("rank_ratio") == "Rank (share of full)"
    assert axis_title("macs") == "MACs (multiply-accumulates)"
    assert axis_title("accuracy") == "Accuracy (%)" and axis_title("mean_drop") == "Mean drop"


def test_confusion_figure_values_and_axes():
    fig = confusion_figure([[3, 1], [0, 4]], ["a", "b"])
    assert fig.data[0].z.tolist() == [[3, 1], [0, 4]] and list(fig.data[0].x) == ["a", "b"]
    assert fig.layout.xaxis.title.text == "Predicted class" and fig.layout.yaxis.title.text == "True class"


def test_log_histogram_has_decade_ticks_and_shows_single_values():
    values = np.concatenate([np.zeros(10_000), [5.0]])  # one bin of 10,000 values, one of a single value
    fig = histogram_figure({"before": values, "after": values * 0}, "w", log_y=True)
    assert [t.name for t in fig.data] == ["before", "after"] and fig.layout.yaxis.type == "log"
    assert fig.layout.yaxis.dtick == 1                     # 1, 10, 100...: no 2 and 5 between decades
    assert sum(fig.data[0].y) == values.size and list(fig.data[0].x) == list(fig.data[1].x)  # shared bins
    lo, hi = fig.layout.yaxis.range
    assert 10 ** lo < 1 and 10 ** hi > 10_000               # the bar of one value is drawn, the tallest fits
    linear = histogram_figure({"w": values}, "w")
    assert linear.layout.yaxis.type != "log" and linear.layout.yaxis.range[0] == 0


def test_short_log_axis_gets_full_size_1_2_5_ticks():
    fig = curve_figure(pd.DataFrame({"x": [1.5, 14.0], "y": [1, 2]}), "x", "y", "t")
    log_ticks(fig, "x", decades=False)
    assert fig.layout.xaxis.type == "log" and {1, 2, 5, 10, 20} <= set(fig.layout.xaxis.tickvals)


def test_grid_overlay_draws_every_grid_below_the_histogram():
    values = np.random.default_rng(0).normal(size=1000).astype(np.float32)
    grids = {c: quant_grid(values, 3, c) for c in CALIBRATIONS}
    fig = quant_grid_figure(values, grids, "g", log_y=True)
    assert len(fig.data) == 4 and all(len(t.x) == 8 for t in fig.data[1:])
    assert [t.yaxis for t in fig.data[1:]] == ["y2"] * 3   # their own strip: a log axis cannot hide y = 0
    assert [set(t.y) for t in fig.data[1:]] == [{0}, {1}, {2}]
    assert len(fig.layout.shapes) == 6 and all(s.yref == "paper" for s in fig.layout.shapes)
    assert fig.layout.yaxis.domain[0] > fig.layout.yaxis2.domain[1]
    acts = activation_grid_figure(values, grids, "a")
    assert acts.data[0].name == "inputs" and acts.layout.xaxis.title.text == "Input value"


def test_quant_grid_range_is_where_the_quantizer_starts_to_clip():
    values = np.random.default_rng(1).normal(size=1000).astype(np.float32)
    levels, lo, hi = quant_grid(values, 3, "minmax")
    step = levels[1] - levels[0]
    assert len(levels) == 8 and np.allclose(np.diff(levels), step)
    assert lo == pytest.approx(levels[0] - step / 2) and hi == pytest.approx(levels[-1] + step / 2)
    assert hi == pytest.approx(np.abs(values).max(), rel=1e-6)  # symmetric min-max: max|x| at the top end


@pytest.mark.parametrize("symmetric", [True, False])
def test_minmax_clips_none_of_the_values_it_calibrated_on(symmetric):
    # The digits' first-layer inputs: min-max used to report 9.86% clipped at 4 bits (every saturated
    # pixel) because the table counted values beyond the top level, half a step below max|x|.
    values = pixels()
    table = grid_table(values, {"minmax": quant_grid(values, 4, "minmax", symmetric)})
    assert table.loc[0, "clipped"] == 0.0
    assert table.loc[0, "low"] <= values.min() and table.loc[0, "high"] >= values.max() * (1 - 1e-6)


@pytest.mark.parametrize("symmetric", [True, False])
def test_grid_table_clipping_is_what_the_quantizer_does(symmetric):
    """The table's 'clipped' share equals the share the real quantizer moves by more than half a
    step, and its RMS error equals the quantizer's, for every method."""
    values = np.random.default_rng(2).standard_t(2.0, size=20_000).astype(np.float32)
    grids = {c: quant_grid(values, 4, c, symmetric) for c in CALIBRATIONS}
    table = grid_table(values, grids).set_index("calibration")
    t = torch.from_numpy(values)
    for c in CALIBRATIONS:
        info = compute_qparams(t, 4, symmetric, None, c)
        err = (fake_quantize(t, info) - t).abs().double()
        clipped = float((err > float(info.scale) / 2 * (1 + 1e-4)).double().mean())
        assert table.loc[c, "clipped"] == pytest.approx(clipped, abs=1e-9), c
        assert table.loc[c, "rms error"] == pytest.approx(float(err.pow(2).mean().sqrt()), rel=1e-4), c


def test_three_methods_give_three_grids_on_heavy_tails():
    values = np.random.default_rng(3).standard_t(2.0, size=20_000).astype(np.float32)
    for symmetric in (True, False):
        grids = {c: quant_grid(values, 4, c, symmetric) for c in CALIBRATIONS}
        highs = [grids[c][2] for c in CALIBRATIONS]
        assert highs[0] > highs[1] > highs[2], highs       # min-max widest, MSE tightest on t(2) tails
        assert same_grid_note(values, grids) is None
        assert grid_table(values, grids)["clipped"].tolist()[0] == 0.0


def test_identical_grids_are_explained():
    values = pixels()
    grids = {c: quant_grid(values, 4, c) for c in CALIBRATIONS}
    assert len({(lo, hi) for _, lo, hi in grids.values()}) == 1  # piled-up ends: no method gains by clipping
    note = same_grid_note(values, grids)
    assert note and "17 distinct values" in note and "at the maximum" in note


def test_qualitative_palette_tells_20_layers_apart():
    colors = palette(20)
    assert len(set(colors)) == 20 and colors == list(PALETTE[:20])
    closest = min(np.linalg.norm(_lab(a) - _lab(b)) for a, b in itertools.combinations(colors, 2))
    assert closest > 25                                    # CIE76: plotly's default 10 colours repeat at 11


def test_curve_bar_and_share_figures():
    df = pd.DataFrame({"bits": [2, 4, 8], "accuracy": [0.2, 0.9, 0.98], "layer": ["a", "b", "c"],
                       "params": [10, 20, 30], "macs": [1, 2, 3], "type": ["Linear"] * 3})
    fig = curve_figure(df, "bits", "accuracy", "c", marker_x=4, baseline=0.99)
    assert list(fig.data[0].y) == [0.2, 0.9, 0.98] and fig.layout.xaxis.title.text == "Bit-width (bits)"
    assert fig.layout.yaxis.title.text == "Accuracy (%)" and fig.layout.yaxis.tickformat.endswith("%")
    assert "%{y:.2%}" in fig.data[0].hovertemplate       # as the metrics print it
    assert len(fig.layout.shapes) == 2
    assert list(bar_figure(df, "layer", "params", "p").data[0].y) == [10, 20, 30]
    share = layer_share_figure(df, "macs")
    assert list(share.data[0].x) == ["a", "b", "c"] and share.layout.yaxis.title.text == "MACs (multiply-accumulates)"
    ratio = curve_figure(df.assign(rank_ratio=[0.1, 0.5, 1.0]), "rank_ratio", "accuracy", "r")
    assert ratio.layout.xaxis.title.text == "Rank (share of full)" and not ratio.layout.xaxis.tickformat
    energy = bar_figure(df.assign(energy_kept=[0.5, 0.9, 1.0]), "layer", "energy_kept", "e", hover="params")
    assert energy.layout.yaxis.title.text == "Energy kept (%)" and energy.layout.yaxis.tickformat.endswith("%")


def test_many_layer_labels_are_slanted_and_get_room():
    df = pd.DataFrame({"layer": [f"layers.{i}.conv1" for i in range(12)], "params": range(12), "type": ["c"] * 12})
    fig = layer_share_figure(df)
    assert fig.layout.xaxis.tickangle == -45 and fig.layout.xaxis.automargin
    short = pd.DataFrame({"layer": ["fc1", "fc2", "fc3"], "params": [1, 2, 3], "type": ["Linear"] * 3})
    assert layer_share_figure(short).layout.xaxis.tickangle == 0

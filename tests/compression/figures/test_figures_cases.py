"""Figure builders of the case studies: human axis titles, accuracies as percentages, log axes
with full-size ticks, every facet titled."""
from __future__ import annotations

import pandas as pd

from compression.figures import cases as fc


def test_pruning_figure_axes():
    steps = pd.DataFrame({"param_reduction": [1.5, 3.0, 14.0], "retrained_accuracy": [0.97, 0.96, 0.9]})
    fig = fc.pruning_figure(steps, baseline=0.97)
    assert fig.layout.xaxis.type == "log" and {2, 5, 10} <= set(fig.layout.xaxis.tickvals)
    assert fig.layout.yaxis.title.text == "Test accuracy (%)" and fig.layout.yaxis.tickformat.endswith("%")
    assert "Parameter reduction" in fig.layout.xaxis.title.text


def test_facets_are_all_titled_in_words():
    rows = pd.DataFrame([{"model": m, "bits": b, "scheme": s, "accuracy": 0.9}
                         for m in ("lenet5", "resnet") for b in (2, 8) for s in ("a", "b")])
    fig = fc.granularity_figure(rows)
    assert fig.layout.xaxis.title.text == fig.layout.xaxis2.title.text == "Bit-width (bits)"
    layers = pd.DataFrame([{"model": m, "kind": k, "position": i, "layer": f"l{i}", "sensitivity": 1.0}
                           for m in ("lenet5", "resnet") for k in ("prune", "quantize") for i in range(3)])
    sens = fc.sensitivity_figure(layers)
    assert sens.layout.xaxis.tickangle == -45 and sens.layout.xaxis2.automargin
    assert sens.layout.yaxis.title.text == "Accuracy drop (points)"


def test_deep_compression_sizes_have_decade_ticks():
    stages = pd.DataFrame({"model": ["mlp"] * 2, "stage": ["fp32", "compact"], "bytes": [200_000, 5_000]})
    fig = fc.deep_compression_figure(stages)
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis.dtick == 1

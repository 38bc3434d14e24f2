"""Proxies: weight statistics by hand, captum importance without leftover hooks, Spearman
correlation on hand cases, and the proxy table with its progress and Stop."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from compression.analysis import proxies as P
from compression.analysis.attribution import module_hooks
from compression.core.errors import ConfigError


def test_weight_stats_by_hand():
    model = nn.Sequential(nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -1.0], [1.0, -1.0]]))
    row = P.weight_stats(model).iloc[0]
    assert list(P.weight_stats(model).columns) == P.STAT_COLUMNS
    assert (row["layer"], row["type"], row["params"]) == ("0", "Linear", 4)
    assert (row["mean_abs"], row["std"], row["min"], row["max"], row["range"]) == (1.0, 1.0, -1.0, 1.0, 2.0)
    assert row["kurtosis"] == pytest.approx(-2.0) and row["outlier_frac"] == 0.0
    spiky = torch.zeros(1000)
    spiky[0] = 100.0
    stats = P.tensor_stats(spiky)
    assert stats["outlier_frac"] == pytest.approx(0.001) and stats["kurtosis"] > 100


def test_importance_leaves_no_hooks_and_no_change(digits, pretrained):
    model = pretrained("resnet")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for method in P.IMPORTANCE_METHODS:
        scores = P.layer_importance(model, digits, method, n=16, layers=["stem.0", "layers.2.conv2", "fc"])
        assert list(scores) == ["stem.0", "layers.2.conv2", "fc"] and all(v > 0 for v in scores.values())
    channels = P.channel_importance(model, digits, "layers.1.conv1", n=16)
    assert channels.shape == (32,) and (channels >= 0).all()
    assert channels.sum().item() == pytest.approx(
        P.layer_importance(model, digits, "gradxact", n=16, layers=["layers.1.conv1"])["layers.1.conv1"], rel=1e-5)
    assert module_hooks(model) == {}
    assert all(len(m._forward_hooks) == len(m._backward_hooks) == len(m._forward_pre_hooks) == 0
               for m in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ConfigError):
        P.layer_importance(model, digits, "nope", n=4)


def test_gradxact_is_activation_times_gradient(tiny):
    """Independent reference for one Linear layer: |sum_j a_j * dlogit_y/da_j| per sample."""
    model, data = tiny
    x, y = data.val.X[:8], data.val.y[:8]
    act = model[0](x).detach().requires_grad_(True)                        # (8, 5)
    logit = model[2](model[1](act)).gather(1, y[:, None]).sum()
    (grad,) = torch.autograd.grad(logit, act)
    expected = (act * grad).abs().mean(0).detach()                           # (5,)
    got = P.channel_importance(model, data, "0", n=8)
    assert torch.allclose(got, expected, atol=1e-6)


def test_spearman_hand_cases():
    assert P.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert P.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert P.spearman([1, 2, 3, 4], [1, 4, 9, 16.5]) == pytest.approx(1.0)   # monotone, not linear
    a, b = [1, 2, 2, 3, 5, 4], [2, 1, 3, 3, 6, 5]
    assert P.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)
    assert math.isnan(P.spearman([1, 1, 1], [1, 2, 3])) and math.isnan(P.spearman([1, 2], [1, 2]))
    assert math.isnan(P.spearman([1, 2, float("nan")], [1, 2, 3]))


def sweep_frame() -> pd.DataFrame:
    sweep = pd.DataFrame({"layer": ["a"] * 3 + ["b"] * 3 + ["c"] * 3, "level": [0.0, 0.5, 0.9] * 3,
                          "accuracy": [1.0, 0.9, 0.5, 1.0, 1.0, 0.9, 1.0, 0.6, 0.2],
                          "loss": [0.1, 0.3, 1.0, 0.1, 0.1, 0.2, 0.1, 0.8, 2.0]})
    sweep.attrs["baseline_accuracy"], sweep.attrs["baseline_loss"] = 1.0, 0.1
    return sweep


def test_measured_sensitivity_and_rank_correlation():
    sweep = sweep_frame()
    at = P.measured_sensitivity(sweep, level=0.9)
    assert at.to_dict() == pytest.approx({"a": 0.5, "b": 0.1, "c": 0.8})
    area = P.measured_sensitivity(sweep)   # trapezoid area / span 0.9
    assert area["a"] == pytest.approx((0.5 * 0.1 / 2 + 0.4 * (0.1 + 0.5) / 2) / 0.9)
    assert list(area.sort_values().index) == ["b", "a", "c"]
    assert P.rank_correlation({"a": 2.0, "b": 1.0, "c": 3.0}, sweep) == pytest.approx(1.0)
    assert P.rank_correlation({"a": 2.0, "b": 3.0, "c": 1.0}, sweep, level=0.9) == pytest.approx(-1.0)
    assert P.rank_correlation({"a": 2.0, "b": 1.0, "c": 3.0, "zzz": 9.0}, sweep, value="loss") == pytest.approx(1.0)
    with pytest.raises(ConfigError):
        P.measured_sensitivity(sweep, level=0.3)


def test_proxy_table(digits, pretrained, monkeypatch):
    model = pretrained("lenet5")
    layers = ["conv1", "conv2", "fcs.0", "fcs.1", "fcs.2"]
    sweep = pd.DataFrame({"layer": layers, "level": [0.9] * 5, "accuracy": [0.5, 0.6, 0.97, 0.9, 0.7],
                          "loss": [1.0] * 5})
    sweep.attrs["baseline_accuracy"] = 0.98
    table, corr = P.proxy_table(model, digits, sweep, hessian_samples=4, importance_samples=16)
    assert table["layer"].tolist() == layers
    expected = ["layer", "sensitivity", "params", "mean_abs", "std", "kurtosis", "outlier_frac", "range",
                "hessian_trace", "hessian_trace_se", "hessian_per_param", "obd_saliency", "gradxact", "conductance"]
    assert list(table.columns) == expected and list(corr) == [c for c in expected[2:] if c != "hessian_trace_se"]
    assert (table["hessian_trace_se"] > 0).all()
    assert table["sensitivity"].tolist() == pytest.approx([0.48, 0.38, 0.01, 0.08, 0.28])
    assert corr["params"] == pytest.approx(P.spearman(table["params"], table["sensitivity"]))
    assert all(-1 <= v <= 1 for v in corr.values() if not math.isnan(v))
    assert module_hooks(model) == {}


# ---- progress and Stop ---------------------------------------------------------------------------

def lenet_sweep() -> pd.DataFrame:
    layers = ["conv1", "conv2", "fcs.0", "fcs.1", "fcs.2"]
    sweep = pd.DataFrame({"layer": layers, "level": [0.9] * 5, "accuracy": [0.5, 0.6, 0.97, 0.9, 0.7],
                          "loss": [1.0] * 5})
    sweep.attrs["baseline_accuracy"] = 0.98
    return sweep


def test_proxy_table_reports_progress(digits, pretrained):
    calls = []
    table, corr = P.proxy_table(pretrained("lenet5"), digits, lenet_sweep(), hessian_samples=16,
                                importance_samples=16, callback=lambda *a: calls.append(a))
    total = 5 * (1 + len(P.IMPORTANCE_METHODS))
    assert {t for _, t, _ in calls} == {total} and calls[-1][0] == total
    done = [d for d, _, _ in calls]
    assert done == sorted(done) and set(range(1, total + 1)) <= set(done)   # every step, in order
    assert any("vectors" in m and d == 0 for d, _, m in calls)              # messages within a layer
    assert table.attrs["stopped"] is False and table.attrs["incomplete"] == []
    assert set(table.attrs["hessian_vectors"]) == set(table["layer"])
    assert not any(math.isnan(corr[c]) for c in ("hessian_trace", "gradxact", "conductance"))


@pytest.mark.parametrize("after", [3, 8])   # during the Hessian / during the first importance method
def test_proxy_table_stops_with_what_it_has(digits, pretrained, after):
    import threading

    stop, calls = threading.Event(), []

    def callback(done: int, total: int, message: str) -> None:
        calls.append(done)
        if done >= after:
            stop.set()

    model = pretrained("lenet5")
    table, corr = P.proxy_table(model, digits, lenet_sweep(), hessian_samples=16, importance_samples=16,
                                callback=callback, stop=stop, workers=1)
    assert max(calls) == after and table.attrs["stopped"] is True
    assert table["layer"].tolist() == ["conv1", "conv2", "fcs.0", "fcs.1", "fcs.2"]
    assert not table["params"].isna().any() and not math.isnan(corr["params"])   # weight statistics: all there
    methods = list(P.IMPORTANCE_METHODS)
    expected = [*P.HESSIAN_COLUMNS, *methods] if after < 5 else methods
    assert table.attrs["incomplete"] == expected
    assert all(math.isnan(corr[c]) for c in expected if c in corr)
    if after < 5:
        assert table["hessian_trace"].isna().sum() == 5 - after and table[methods].isna().all().all()
    else:
        assert not table["hessian_trace"].isna().any() and not math.isnan(corr["hessian_trace"])
        assert table["gradxact"].isna().sum() == 5 - (after - 5)
    assert module_hooks(model) == {}


def test_layer_importance_progress_and_stop(digits, pretrained):
    model, calls = pretrained("lenet5"), []
    scores = P.layer_importance(model, digits, n=8, callback=lambda *a: calls.append(a))
    assert [c[0] for c in calls] == list(range(1, len(scores) + 1)) and calls[-1][1] == len(scores)
    assert P.layer_importance(model, digits, n=8, stop=lambda: True) == {}
    assert module_hooks(model) == {}

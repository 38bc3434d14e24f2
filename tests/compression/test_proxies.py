"""Proxies: weight statistics by hand, Hutchinson's trace against the exact Hessian, captum
importance without leftover hooks, and Spearman correlation on hand cases."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn
from torch.func import functional_call

from compression.analysis import proxies as P
from compression.analysis.attribution import module_hooks
from compression.data.datasets import make_dataset
from compression.core.errors import ConfigError


@pytest.fixture(scope="module")
def tiny():
    """A tiny tanh MLP (6-5-3) and 60 seeded samples of 6 features."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 6)).astype(np.float32)
    data = make_dataset("tiny6", X, rng.integers(0, 3, 100), num_classes=3)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).eval(), data


def exact_hessian_diag(model: nn.Module, name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Diagonal of the exact Hessian of the mean cross-entropy w.r.t. one layer's weight (numel,)."""
    w0 = model.get_submodule(name).weight.detach()
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(w: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(functional_call(model, {**params, f"{name}.weight": w.view_as(w0)}, (x,)), y)

    return torch.autograd.functional.hessian(loss, w0.flatten()).diagonal()


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


def test_hutchinson_matches_the_exact_hessian(tiny):
    model, data = tiny
    x, y = data.train.X, data.train.y
    est = P.hutchinson(model, data, n_samples=3000, batches=1, batch_size=len(y), seed=0, rtol=0)
    for name in ("0", "2"):
        diag = exact_hessian_diag(model, name, x, y)
        trace, diag_est = est[name]
        assert trace == pytest.approx(diag.sum().item(), rel=0.05)
        assert (diag_est.flatten() - diag).abs().max() < 0.05 * diag.abs().max() + 0.02
    traces = P.hessian_trace(model, data, n_samples=3000, batches=1, batch_size=len(y), seed=0, rtol=0)
    assert traces == {n: t for n, (t, _) in est.items()}
    assert P.hessian_trace(model, data, n_samples=8, seed=3) == P.hessian_trace(model, data, n_samples=8, seed=3)
    with pytest.raises(ConfigError):
        P.hessian_trace(model, data, n_samples=0)


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

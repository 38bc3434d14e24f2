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


# ---- speed without a change of numbers: folded BatchNorm, one thread; progress and Stop ----------

RESNET_TRACES = {  # hutchinson(resnet, n_samples=16, batches=1, batch_size=64, rtol=0, seed=0) before
    "stem.0": 3.387018, "layers.0.conv1": 21.778279, "layers.0.conv2": 11.693662,  # folding and one thread
    "layers.1.conv1": 5.72549, "layers.1.conv2": 4.178735, "layers.1.shortcut.0": 0.811763,
    "layers.2.conv1": 2.316006, "layers.2.conv2": 0.505056, "layers.2.shortcut.0": 0.162656, "fc": 0.429343}


@pytest.fixture(scope="module")
def conv_bn(tiny_data):
    """Conv -> BatchNorm (seeded, non-trivial running statistics) -> ReLU -> Linear, on 1x8x8 images."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 4))
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.2, 3.0)
        model[1].weight.uniform_(0.5, 2.0)
        model[1].bias.uniform_(-0.5, 0.5)
    return model.eval(), tiny_data


def test_folded_batchnorm_gives_the_same_hessian(conv_bn):
    model, data = conv_bn
    x = data.train.X[:8]
    m, params, scales = P._grad_model(model, ["0", "4"], x)
    assert set(scales) == {"0"} and not any(isinstance(mod, nn.BatchNorm2d) for mod in m.modules())
    kw = dict(n_samples=32, batches=1, batch_size=64, rtol=0, seed=1)
    folded, plain = P.hutchinson(model, data, **kw), P.hutchinson(model, data, fold_batchnorm=False, **kw)
    for name in ("0", "4"):
        assert folded[name].trace == pytest.approx(plain[name].trace, rel=1e-5)
        assert torch.allclose(folded[name].diag, plain[name].diag, rtol=1e-4, atol=1e-6)
        assert folded[name].n_vectors == plain[name].n_vectors == 32
    x, y = data.train.X[:64], data.train.y[:64]                      # and against the exact Hessian
    exact = P.hutchinson(model, data, ["0"], n_samples=2000, batches=1, batch_size=64, rtol=0)["0"]
    assert exact.trace == pytest.approx(exact_hessian_diag(model, "0", x, y).sum().item(), rel=0.05)


def test_hutchinson_unchanged_on_the_resnet(digits, pretrained):
    """Same vectors, same numbers as before folding and one thread (float rounding apart), and
    torch's thread count is restored."""
    threads = torch.get_num_threads()
    est = P.hutchinson(pretrained("resnet"), digits, n_samples=16, batches=1, batch_size=64, rtol=0, seed=0)
    assert torch.get_num_threads() == threads
    assert {n: e.trace for n, e in est.items()} == pytest.approx(RESNET_TRACES, rel=1e-5)
    assert all(e.n_vectors == 16 for e in est.values())


def test_hutchinson_workers_change_nothing_but_the_time(digits, pretrained):
    import threading

    model, kw = pretrained("resnet"), dict(n_samples=32, batches=1, batch_size=64, rtol=0.2, min_samples=4)
    calls = []
    one = P.hutchinson(model, digits, workers=1, **kw)
    three = P.hutchinson(model, digits, workers=3, callback=lambda *a: calls.append(a), **kw)
    assert list(three) == list(one)                                    # layer order, whoever finished first
    for name, e in one.items():
        assert (three[name].trace, three[name].stderr, three[name].n_vectors) == (e.trace, e.stderr, e.n_vectors)
        assert torch.equal(three[name].diag, e.diag)
    finished = [d for d, _, m in calls if "vectors)" in m]
    assert finished == list(range(1, len(one) + 1)) and all(t == len(one) for _, t, _ in calls)
    stop = threading.Event()

    def stop_after_two(done: int, total: int, message: str) -> None:
        if done >= 2:
            stop.set()

    part = P.hutchinson(model, digits, workers=3, callback=stop_after_two, stop=stop, **kw)
    assert 2 <= len(part) < len(one) and all(part[n].trace == one[n].trace for n in part)


def test_hutchinson_on_a_model_fx_cannot_trace(tiny):
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            return self.fc(x) if x.sum() > -1e9 else -self.fc(x)   # data-dependent: fx refuses

    model, data = tiny
    branchy = Branchy().eval()
    est = P.hutchinson(branchy, data, n_samples=4, rtol=0)
    assert list(est) == ["fc"] and est["fc"].n_vectors == 4


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

"""Low-rank factorisation: exact at full rank, smaller as the rank falls, original untouched."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from compression.core.errors import ConfigError
from compression.core.modules import count_params
from compression.core.registry import compress, config_from_json
from compression.methods.lowrank import LowRankConfig, choose_rank, factorise, layer_svd, lowrank
from compression.metrics.latency import LATENCY_BATCH


@pytest.mark.parametrize("layer, shape", [
    (nn.Linear(20, 12), (5, 20)),
    (nn.Linear(7, 30, bias=False), (5, 7)),
    (nn.Conv2d(3, 8, 3, stride=2, padding=1, dilation=2), (5, 3, 9, 9)),
    (nn.Conv2d(4, 6, (3, 1), padding=(1, 0), bias=False, padding_mode="reflect"), (5, 4, 9, 9)),
], ids=["linear", "linear-no-bias", "conv-stride-dilation", "conv-rect-reflect"])
def test_full_rank_factors_reproduce_the_layer(layer, shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    full = layer_svd(layer)[1].numel()
    pair = factorise(layer, full)
    assert [type(m) for m in pair] == [type(layer)] * 2 and (pair[1].bias is None) == (layer.bias is None)
    with torch.no_grad():
        assert torch.allclose(pair(x), layer(x), atol=1e-5)


def test_full_rank_is_never_smaller_so_every_layer_is_skipped(pretrained, digits):
    model = pretrained("mlp")
    new, report = lowrank(model, LowRankConfig(rank_ratio=1.0), digits, measure_latency=False)
    assert not report.layers and {n for n, _ in report.skipped} == {"fc1", "fc2", "fc3"}
    assert all("would not have fewer parameters" in reason for _, reason in report.skipped)
    x = digits.test.X[:16]
    assert torch.equal(new(x), model(x))


def test_params_fall_with_rank(pretrained, digits):
    model = pretrained("mlp")
    sizes = []
    for ratio in (0.5, 0.25, 0.1):
        new, report = lowrank(model, LowRankConfig(rank_ratio=ratio), digits, measure_latency=False)
        sizes.append(count_params(new))
        assert report.metrics["params_after"] == sizes[-1] and report.metrics["params_before"] == count_params(model)
        assert report.metrics["macs_after"] < report.metrics["macs_before"]
        for row in report.layers:
            layer = getattr(new, row["layer"])
            assert row["rank"] == layer[0].out_features
            assert row["params_after"] == layer[0].weight.numel() + layer[1].weight.numel()
    assert count_params(model) > sizes[0] > sizes[1] > sizes[2]


def test_energy_picks_the_smallest_rank_that_keeps_it(pretrained):
    model = pretrained("mlp")
    new, report = lowrank(model, LowRankConfig(energy=0.9), measure_latency=False)
    row = next(r for r in report.layers if r["layer"] == "fc2")
    S = layer_svd(model.fc2)[1].double()
    energy = torch.cumsum(S ** 2, 0) / (S ** 2).sum()
    assert energy[row["rank"] - 1] >= 0.9 > energy[row["rank"] - 2]
    assert row["energy_kept"] == pytest.approx(float(energy[row["rank"] - 1]))
    # Eckart-Young: the relative error of the best rank-r approximation is sqrt(1 - energy kept)
    with torch.no_grad():
        W, approx = model.fc2.weight, new.fc2[1].weight @ new.fc2[0].weight
        error = float(torch.linalg.norm(W - approx) / torch.linalg.norm(W))
    assert error == pytest.approx((1 - row["energy_kept"]) ** 0.5, rel=1e-3)


def test_rank_ratio_is_a_ceiling_of_the_full_rank():
    S = torch.linspace(10, 1, 10)
    assert [choose_rank(S, LowRankConfig(rank_ratio=r)) for r in (0.3, 0.31, 0.01, 1.0)] == [3, 4, 1, 10]


def test_runs_on_every_builtin_and_original_untouched(any_builtin, digits):
    name, model = any_builtin
    before = {k: v.clone() for k, v in model.state_dict().items()}
    new, report = lowrank(model, LowRankConfig(rank_ratio=0.3, include_conv=True), digits, measure_latency=False)
    assert new(digits.test.X[:4]).shape == (4, 10)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(isinstance(m, nn.Sequential) and len(m) == 2 and isinstance(m[0], nn.Linear)
                   for m in model.modules())  # the original got no factors
    assert report.metrics["params_after"] < report.metrics["params_before"]
    if name == "mobilenet":
        assert any("depthwise" in reason for _, reason in report.skipped)


def test_convolutions_only_with_include_conv(pretrained, digits):
    _, report = lowrank(pretrained("lenet5"), LowRankConfig(rank_ratio=0.3), digits, measure_latency=False)
    assert {n for n, r in report.skipped if "include_conv" in r} == {"conv1", "conv2"}


def test_latency_and_registry(pretrained, digits):
    new, report = compress(pretrained("mlp"), LowRankConfig(rank_ratio=0.25), digits)
    m = report.metrics
    assert m["latency_batch"] == LATENCY_BATCH and m["latency_before_ms"] > 0 and m["latency_after_ms"] > 0
    assert report.method == "lowrank" and report.config["rank_ratio"] == 0.25


def test_config_validation_and_json():
    for bad in ({"rank_ratio": 0.5, "energy": 0.9}, {"rank_ratio": 1.5}, {"energy": 0.0}, {"rank_ratio": True},
                {"exclude": "fc3"}):
        with pytest.raises(ConfigError):
            LowRankConfig(**bad)
    for cfg in (LowRankConfig(rank_ratio=0.3, include_conv=True, exclude=("fc3",)), LowRankConfig(energy=0.95),
                LowRankConfig()):
        assert config_from_json(cfg.to_json()) == cfg
    assert LowRankConfig().rank_ratio == 0.5
    with pytest.raises(ConfigError, match="Unknown layer"):
        lowrank(nn.Linear(2, 2), LowRankConfig(exclude=("nope",)), measure_latency=False)

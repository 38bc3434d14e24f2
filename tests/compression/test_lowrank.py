"""Low-rank factorisation: exact at full rank, smaller as the rank falls, original untouched."""
from __future__ import annotations

import pytest
import torch

from compression.config import config_from_dict
from compression.errors import ConfigError
from compression.evaluate import count_params
from compression.lowrank import LowRankConfig, lowrank


def test_full_rank_reproduces_outputs(pretrained, digits):
    model = pretrained("teacher")
    # full rank of fc layers is never smaller: use energy 1.0 on a wide layer set to force factors
    new, report = lowrank(model, LowRankConfig(rank_ratio=1.0), digits, measure_latency=False)
    assert all("would not have fewer" in reason for _, reason in report.skipped if "fcs" in _)
    x = digits.test.X[:16]
    assert torch.allclose(new(x), model(x), atol=1e-5)


def test_params_fall_with_rank(pretrained, digits):
    model = pretrained("mlp")
    sizes = [count_params(lowrank(model, LowRankConfig(rank_ratio=r), digits, measure_latency=False)[0])
             for r in (0.5, 0.25, 0.1)]
    assert sizes[0] > sizes[1] > sizes[2] and sizes[0] < count_params(model)


def test_factors_approximate_the_layer(pretrained):
    model = pretrained("mlp")
    new, report = lowrank(model, LowRankConfig(energy=0.9), measure_latency=False)
    assert "fc2" in {r["layer"] for r in report.layers}
    W = model.fc2.weight
    approx = new.fc2[1].weight @ new.fc2[0].weight
    # Eckart-Young: the relative error of the best rank-r approximation is sqrt(1 - energy kept)
    kept = next(r["energy_kept"] for r in report.layers if r["layer"] == "fc2")
    assert kept >= 0.9
    assert float(torch.linalg.norm(W - approx) / torch.linalg.norm(W)) == pytest.approx((1 - kept) ** 0.5, rel=1e-3)


def test_runs_on_every_builtin_and_original_untouched(any_builtin, digits):
    _, model = any_builtin
    before = {k: v.clone() for k, v in model.state_dict().items()}
    new, report = lowrank(model, LowRankConfig(rank_ratio=0.3, include_conv=True), digits, measure_latency=False)
    assert new(digits.test.X[:4]).shape == (4, 10)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert report.metrics["params_after"] < report.metrics["params_before"]


def test_config_validation_and_json():
    with pytest.raises(ConfigError):
        LowRankConfig(rank_ratio=0.5, energy=0.9)
    with pytest.raises(ConfigError):
        LowRankConfig(rank_ratio=1.5)
    cfg = LowRankConfig(rank_ratio=0.3, include_conv=True, skip=("fc3",))
    assert config_from_dict(cfg.to_dict()) == cfg

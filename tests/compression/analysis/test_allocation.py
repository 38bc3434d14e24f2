"""Budget allocation: the knapsack against brute force, plans that meet their targets, and a
measured win over uniform pruning at 90% sparsity."""
from __future__ import annotations

import itertools

import pandas as pd
import pytest
import torch
from torch import nn

from compression.analysis import allocation as A
from compression.analysis import sensitivity as S
from compression.core.errors import ConfigError


def test_knapsack_equals_brute_force():
    gen = torch.Generator().manual_seed(0)
    for trial in range(20):
        options = [[(int(u), float(c)) for u, c in zip(torch.randint(0, 30, (4,), generator=gen),
                                                       torch.rand(4, generator=gen))] for _ in range(3)]
        capacity, at_least = 15 + trial, trial % 2 == 0
        def used(ks) -> int:
            return sum(options[l][k][0] for l, k in enumerate(ks))

        feasible = [(sum(options[l][k][1] for l, k in enumerate(ks)), ks)
                    for ks in itertools.product(range(4), repeat=3)
                    if (used(ks) >= capacity if at_least else used(ks) <= capacity)]
        if not feasible:
            with pytest.raises(ConfigError):
                A.knapsack(options, capacity, at_least)
            continue
        picks = A.knapsack(options, capacity, at_least)
        assert used(picks) >= capacity if at_least else used(picks) <= capacity
        assert sum(options[l][k][1] for l, k in enumerate(picks)) == pytest.approx(min(c for c, _ in feasible))


class Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.big, self.small = nn.Linear(30, 30, bias=False), nn.Linear(10, 10, bias=False)  # 900 and 100


def hand_sweep(kind: str) -> pd.DataFrame:
    """'big' barely cares, 'small' is sensitive."""
    if kind == "prune":
        levels = [0.0, 0.5, 0.9, 0.95]
        acc = {"big": [0.9, 0.9, 0.88, 0.85], "small": [0.9, 0.7, 0.3, 0.2]}
    else:
        levels = [2, 4, 8]
        acc = {"big": [0.85, 0.9, 0.9], "small": [0.2, 0.8, 0.9]}
    rows = [{"layer": n, "level": lv, "accuracy": a, "loss": 1.0 - a} for n in acc for lv, a in zip(levels, acc[n])]
    sweep = pd.DataFrame(rows)
    sweep.attrs.update(baseline_accuracy=0.9, baseline_loss=0.1)
    return sweep


def test_allocate_sparsity_meets_the_target_and_spares_the_sensitive_layer():
    model, sweep = Two(), hand_sweep("prune")
    sizes = A.layer_sizes(model, ["big", "small"])
    for target in (0.5, 0.8, 0.9):
        plan = A.allocate_sparsity(sweep, model, target)
        assert A.overall(plan, sizes) == pytest.approx(target, abs=1e-3)
        assert plan["big"] > plan["small"]
    plan = A.allocate_sparsity(sweep, model, 0.855)   # big at 0.95 removes 855 of 1000
    assert plan == pytest.approx({"big": 0.95, "small": 0.0})
    assert A.predict_drop(sweep, plan) == pytest.approx(0.05)
    with pytest.raises(ConfigError):
        A.allocate_sparsity(sweep, model, 0.97)   # above every swept level


def test_allocate_bits_fits_the_budget():
    model, sweep = Two(), hand_sweep("quantize")
    plan = A.allocate_bits(sweep, model, target_avg_bits=4)
    assert plan == {"big": 2, "small": 8}            # 2600 bits of 4000; big4+small4 would cost 0.1
    assert A.allocate_bits(sweep, model, target_bytes=1000) == {"big": 8, "small": 8}   # ties: more bits
    assert A.allocate_bits(sweep, model, target_bytes=(900 * 2 + 100 * 4) / 8) == {"big": 2, "small": 4}
    with pytest.raises(ConfigError):
        A.allocate_bits(sweep, model, target_avg_bits=1)
    with pytest.raises(ConfigError):
        A.allocate_bits(sweep, model)


@pytest.fixture(scope="module")
def lenet_sweep(digits):
    from compression.models import zoo

    model = zoo.load_pretrained("lenet5")
    return model, S.prune_sweep(model, digits)


def test_plan_beats_uniform_at_90_percent(digits, lenet_sweep):
    model, sweep = lenet_sweep
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = A.plan_and_apply(model, digits, sweep, 0.9, "prune")
    assert res.achieved == pytest.approx(0.9, abs=0.005)
    assert res.uniform_achieved == pytest.approx(0.9, abs=0.005)
    assert res.measured_accuracy > res.uniform_accuracy + 0.05
    assert res.predicted_accuracy > res.uniform_predicted_accuracy
    frame = res.layers_frame()
    assert list(frame.columns) == ["layer", "planned", "uniform"] and (frame["uniform"] == 0.9).all()
    d = res.to_dict()
    assert {"plan", "uniform", "predicted_accuracy", "measured_accuracy", "uniform_accuracy"} <= set(d)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_plan_and_apply_quantize(digits, lenet_sweep):
    model, _ = lenet_sweep
    sweep = S.quant_sweep(model, digits, (2, 3, 4, 8))
    res = A.plan_and_apply(model, digits, sweep, 3, "quantize")
    assert res.achieved <= 3.0 and set(res.uniform.values()) == {3}
    assert set(res.plan.values()) <= {2, 3, 4, 8}
    assert res.measured_accuracy >= res.uniform_accuracy - 0.02
    with pytest.raises(ConfigError):
        A.plan_and_apply(model, digits, sweep, 3, "lowrank")
    with pytest.raises(ConfigError):
        A.plan_and_apply(model, digits, sweep, 0.5, "prune")   # a quantize sweep cannot plan pruning

"""Spend a whole-model compression budget where the sensitivity sweep says it hurts least.

Each layer's sweep curve gives the predicted cost of a level (the drop of validation accuracy, or
rise of loss, when only that layer is compressed); costs are taken as additive across layers,
made monotone (more compression never predicted to help), and the levels are chosen by a
multiple-choice knapsack (dynamic programming over the removed weights or the bits used). A
pruning plan then moves one layer's sparsity continuously so the parameter-weighted target is met
exactly. `plan_and_apply` applies the plan and a uniform plan of the same size and measures both.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd
from torch import nn

from compression.core.errors import ConfigError
from compression.core.modules import get_module
from compression.data.datasets import Dataset
from compression.methods.pruning import PruneConfig, prune
from compression.methods.quantization import QuantConfig, quantize
from compression.metrics.evaluate import accuracy_and_loss

MAX_UNITS = 200_000   # capacity axis of the knapsack; larger budgets are scaled down (conservatively)


# ---- cost curves ---------------------------------------------------------------------------------

def layer_sizes(model: nn.Module, layers: Iterable[str]) -> dict[str, int]:
    """Number of weights of each named layer."""
    return {n: get_module(model, n).weight.numel() for n in layers}


def cost_curves(sweep: pd.DataFrame, value: str = "loss", kind: str = "prune") -> dict[str, pd.Series]:
    """Per layer, the predicted cost of each swept level (index: level): the drop of accuracy
    ('accuracy') or rise of loss ('loss') from the baseline, clipped at 0 and made monotone
    (non-decreasing in sparsity, non-increasing in bits). Pruning curves start at (0, 0)."""
    if value not in ("accuracy", "loss"):
        raise ConfigError(f"value must be 'accuracy' or 'loss'; got {value!r}.")
    if not len(sweep) or "level" not in sweep.columns:
        raise ConfigError("The sweep is empty or has no 'level' column: run a prune or quantize sweep first.")
    base = sweep.attrs.get(f"baseline_{value}")
    if base is None:
        base = sweep[value].max() if value == "accuracy" else sweep[value].min()
    curves = {}
    for layer, part in sweep.groupby("layer", sort=False):
        s = part.groupby("level")[value].mean().sort_index()
        cost = (base - s if value == "accuracy" else s - base).clip(lower=0.0)
        if kind == "prune":
            cost = pd.concat([pd.Series({0.0: 0.0}), cost]) if 0.0 not in cost.index else cost
            cost = cost.sort_index().cummax()
        else:
            cost = cost[::-1].cummax()[::-1]
        curves[layer] = cost
    return curves


def interp_cost(curve: pd.Series, level: float) -> float:
    """Linear interpolation of a cost curve (index: level) at `level`."""
    return float(np.interp(level, curve.index.to_numpy(float), curve.to_numpy(float)))


def predict_drop(sweep: pd.DataFrame, plan: dict[str, float], kind: str = "prune", value: str = "accuracy") -> float:
    """Predicted total drop of `value` for a per-layer plan (sum of the single-layer drops)."""
    curves = cost_curves(sweep, value, kind)
    return sum(interp_cost(curves[n], lv) for n, lv in plan.items() if n in curves)


# ---- the knapsack --------------------------------------------------------------------------------

def knapsack(options: list[list[tuple[int, float]]], capacity: int, at_least: bool) -> list[int]:
    """Multiple-choice knapsack by dynamic programming: options[l] = [(units, cost), ...]; pick
    one option per layer minimising the summed cost subject to summed units >= capacity
    (`at_least`; units beyond the capacity count as the capacity) or <= capacity.

    Returns:
        the chosen option index per layer. Raises ConfigError when no choice is feasible.
    """
    dp = np.full(capacity + 1, math.inf)   # (capacity + 1,) least cost per units used
    dp[0] = 0.0
    steps = []
    idx = np.arange(capacity + 1)
    for opts in options:
        new = np.full(capacity + 1, math.inf)
        pick, parent = np.full(capacity + 1, -1), np.full(capacity + 1, -1)
        for k, (units, cost) in enumerate(opts):
            cand, src = np.full(capacity + 1, math.inf), idx - units      # reached j from j - units
            if units <= capacity:
                cand[units:] = dp[:capacity + 1 - units] + cost
            if at_least:                                                # overshoot lands on capacity
                lo = max(capacity - units, 0)
                best = lo + int(np.argmin(dp[lo:]))
                if dp[best] + cost < cand[capacity]:
                    cand[capacity], src[capacity] = dp[best] + cost, best
            better = cand < new
            new[better], pick[better], parent[better] = cand[better], k, src[better]
        steps.append((pick, parent))
        dp = new
    # at most: among the least costly totals take the largest (more bits at the same predicted cost)
    j = capacity if at_least else int(np.flatnonzero(dp <= dp.min() + 1e-12)[-1])
    if not np.isfinite(dp[j]):
        raise ConfigError("The target cannot be met with the swept levels: sweep a wider range of levels.")
    picks = []
    for pick, parent in reversed(steps):
        picks.append(int(pick[j]))
        j = int(parent[j])
    return picks[::-1]


def scaled_knapsack(units: list[list[int]], costs: list[list[float]], capacity: int, at_least: bool) -> list[int]:
    """`knapsack` on exact integer units (weights removed, or bits used), scaled down to at most
    MAX_UNITS by rounding that never breaks the constraint (down for >=, up for <=)."""
    f = max(1.0, capacity / MAX_UNITS)
    if f > 1.0:
        rnd = math.floor if at_least else math.ceil
        units = [[int(rnd(u / f)) for u in row] for row in units]
        capacity = int(math.ceil(capacity / f)) if at_least else int(math.floor(capacity / f))
    options = [list(zip(u, c)) for u, c in zip(units, costs)]
    return knapsack(options, capacity, at_least)


# ---- plans ---------------------------------------------------------------------------------------

def overall(plan: dict[str, float], sizes: dict[str, int]) -> float:
    """Parameter-weighted mean of a per-layer plan (overall sparsity, or mean bits)."""
    total = sum(sizes[n] for n in plan)
    return sum(plan[n] * sizes[n] for n in plan) / max(total, 1)


def _meet_exactly(plan: dict[str, float], curves: dict[str, pd.Series], sizes: dict[str, int],
                  need: float) -> dict[str, float]:
    """Lower sparsities continuously until exactly `need` weights are removed, each time taking
    the reduction that saves the most predicted cost."""
    plan = dict(plan)
    excess = sum(plan[n] * sizes[n] for n in plan) - need
    while excess > 0.5:
        best, best_gain, best_level = None, -math.inf, 0.0
        for n, level in plan.items():
            new = max(level - excess / sizes[n], 0.0)
            restored = max((level - new) * sizes[n], 1e-12)   # weights given back
            gain = (interp_cost(curves[n], level) - interp_cost(curves[n], new)) / restored
            if level > 0 and gain > best_gain:
                best, best_gain, best_level = n, gain, new
        if best is None:
            break
        excess -= (plan[best] - best_level) * sizes[best]
        plan[best] = best_level
    return plan


def allocate_sparsity(sweep: pd.DataFrame, model: nn.Module, target_sparsity: float,
                      value: str = "loss") -> dict[str, float]:
    """Per-layer sparsities over the swept layers whose parameter-weighted mean is
    `target_sparsity`, choosing among the swept levels the combination with the least predicted
    cost (the summed single-layer rise of loss, or drop of accuracy, read from the sweep), then
    meeting the target exactly by lowering one layer's sparsity between swept levels."""
    if not 0.0 <= target_sparsity < 1.0:
        raise ConfigError(f"target_sparsity must be in [0, 1); got {target_sparsity!r}.")
    curves = cost_curves(sweep, value, "prune")
    names = list(curves)
    sizes = layer_sizes(model, names)
    need = target_sparsity * sum(sizes.values())
    if need <= 0:
        return {n: 0.0 for n in names}
    units = [[round(lv * sizes[n]) for lv in curves[n].index] for n in names]
    costs = [list(curves[n].to_numpy(float)) for n in names]
    picks = scaled_knapsack(units, costs, int(math.ceil(need)), at_least=True)
    plan = {n: float(curves[n].index[k]) for n, k in zip(names, picks)}
    return _meet_exactly(plan, curves, sizes, need)


def allocate_bits(quant_sweep: pd.DataFrame, model: nn.Module, target_bytes: float | None = None,
                  target_avg_bits: float | None = None, value: str = "loss") -> dict[str, int]:
    """Per-layer bit-widths (among the swept ones) over the swept layers, with the least
    predicted cost whose weights fit in `target_bytes` (weights only: sum numel * bits / 8) or
    whose parameter-weighted mean bit-width is at most `target_avg_bits`."""
    if (target_bytes is None) == (target_avg_bits is None):
        raise ConfigError("Give exactly one of target_bytes and target_avg_bits.")
    curves = cost_curves(quant_sweep, value, "quantize")
    names = list(curves)
    sizes = layer_sizes(model, names)
    budget = target_bytes * 8 if target_bytes is not None else target_avg_bits * sum(sizes.values())
    if not budget > 0:
        raise ConfigError(f"The budget must be positive; got {target_bytes or target_avg_bits!r}.")
    units = [[int(b) * sizes[n] for b in curves[n].index] for n in names]
    costs = [list(curves[n].to_numpy(float)) for n in names]
    picks = scaled_knapsack(units, costs, int(math.floor(budget + 1e-9)), at_least=False)
    return {n: int(curves[n].index[k]) for n, k in zip(names, picks)}


# ---- apply and measure -------------------------------------------------------------------------

@dataclass(frozen=True)
class AllocationResult:
    """A plan and a uniform plan of the same size, each applied and measured on `split`.

    Predicted accuracies are the baseline's measured accuracy on `split` minus the summed
    single-layer drops the sweep measured (on its own split) at each layer's level, floored at 0
    (summed drops can exceed the baseline when many layers are hurt at once).
    `achieved` is the overall sparsity (prune) or mean bit-width (quantize) over the planned layers.
    """

    kind: str
    target: float
    plan: dict[str, float]
    uniform: dict[str, float]
    baseline_accuracy: float
    predicted_accuracy: float
    measured_accuracy: float
    measured_loss: float
    uniform_predicted_accuracy: float
    uniform_accuracy: float
    uniform_loss: float
    achieved: float
    uniform_achieved: float
    split: str = "test"
    reports: dict = field(default_factory=dict, repr=False)

    def layers_frame(self) -> pd.DataFrame:
        """One row per layer: layer, planned, uniform."""
        return pd.DataFrame({"layer": list(self.plan), "planned": list(self.plan.values()),
                             "uniform": [self.uniform[n] for n in self.plan]})

    def to_dict(self) -> dict:
        return asdict(self)


def _measure(model: nn.Module, data: Dataset, split: str) -> tuple[float, float]:
    return accuracy_and_loss(model, data.split(split))


def achieved_sparsity(model: nn.Module, layers: Iterable[str]) -> float:
    """Fraction of zeros over the given layers' weights, masks applied."""
    zeros = total = 0
    for n in layers:
        w = get_module(model, n).weight.detach()
        zeros, total = zeros + int((w == 0).sum()), total + w.numel()
    return zeros / max(total, 1)


def _apply(model: nn.Module, plan: dict, kind: str, data: Dataset, sweep: pd.DataFrame):
    """Compress a copy of `model` with a per-layer plan through the library's own methods."""
    if kind == "prune":
        cfg = PruneConfig(method="magnitude", sparsity=0.0, scope="layer", overrides=plan)
        return prune(model, cfg, data)
    a = sweep.attrs
    extra = {"percentile": a["percentile"]} if a.get("percentile") is not None else {}
    cfg = QuantConfig(bits=max(plan.values()), granularity=a.get("granularity", "channel"),
                      symmetric=a.get("symmetric", True), calibration=a.get("calibration", "minmax"),
                      activations=a.get("activations", False), overrides=plan, **extra)
    return quantize(model, cfg, data)


def plan_and_apply(model: nn.Module, data: Dataset, sweep: pd.DataFrame, target: float, kind: str = "prune",
                   split: str | None = None, value: str = "loss") -> AllocationResult:
    """Plan a whole-model `target` (overall sparsity for 'prune', mean bits for 'quantize') from
    the sweep, apply it and a uniform plan of the same size (pruning.prune / quantization.quantize
    on copies), and measure both on `split` (default: the data set's eval_split). The caller's model is not changed."""
    if kind not in ("prune", "quantize"):
        raise ConfigError(f"kind must be 'prune' or 'quantize'; got {kind!r}.")
    if sweep.attrs.get("kind", kind) != kind:
        raise ConfigError(f"This is a {sweep.attrs['kind']} sweep; a {kind} plan needs a {kind} sweep.")
    if kind == "prune":
        plan = allocate_sparsity(sweep, model, float(target), value)
        uniform = {n: float(target) for n in plan}
    else:
        plan = allocate_bits(sweep, model, target_avg_bits=float(target), value=value)
        uniform = {n: int(math.floor(target + 1e-9)) for n in plan}
    sizes = layer_sizes(model, plan)
    split = split or data.eval_split
    base_acc, _ = _measure(model, data, split)
    results = {}
    for name, p in (("plan", plan), ("uniform", uniform)):
        compressed, report = _apply(model, p, kind, data, sweep)
        acc, loss = _measure(compressed, data, split)
        achieved = achieved_sparsity(compressed, p) if kind == "prune" else overall(p, sizes)
        results[name] = (acc, loss, achieved, report)
    return AllocationResult(
        kind=kind, target=float(target), plan=plan, uniform=uniform, baseline_accuracy=base_acc,
        predicted_accuracy=max(0.0, base_acc - predict_drop(sweep, plan, kind)),
        measured_accuracy=results["plan"][0], measured_loss=results["plan"][1],
        uniform_predicted_accuracy=max(0.0, base_acc - predict_drop(sweep, uniform, kind)),
        uniform_accuracy=results["uniform"][0], uniform_loss=results["uniform"][1],
        achieved=results["plan"][2], uniform_achieved=results["uniform"][2], split=split,
        reports={k: r[3].to_dict() if hasattr(r[3], "to_dict") else r[3] for k, r in results.items()})

"""Case study 5: layer sensitivity and allocation (Han et al. 2015, HAQ, HAWQ): per-layer sweeps of
each built-in CNN, the layers ranked by accuracy drop, and a sensitivity-aware plan against a
uniform one of the same size.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
import torch

from compression.analysis.allocation import plan_and_apply
from compression.analysis.proxies import measured_sensitivity
from compression.analysis.sensitivity import prune_sweep, quant_sweep
from compression.analysis.sweep_setup import sweep_layers
from compression.data.datasets import load_digits
from compression.methods.training import StopFlag, is_stopped
from compression.models import zoo
from compression.workflows.case_base import ONE_SAMPLE, CaseResult, Progress, Ticker, mean_or_nan


@dataclass(frozen=True)
class SensitivityResult(CaseResult):
    layers: tuple                 # {model, kind, layer, position (0 = first), sensitivity (mean drop, points), rank}
    allocations: tuple            # {model, kind, target, allocated_accuracy, uniform_accuracy, achieved,
                                  #  uniform_achieved, plan}
    allocated_accuracy: float     # mean over models and kinds
    uniform_accuracy: float

    def first_or_last_share(self, top: int = 2) -> float:
        """Share of (model, kind) sweeps with the first or the last layer among the `top` most sensitive."""
        sweeps = {(r["model"], r["kind"]) for r in self.layers}
        hits = {(r["model"], r["kind"]) for r in self.layers if r["rank"] <= top and r["first_or_last"]}
        return len(hits) / len(sweeps) if sweeps else float("nan")

    @property
    def holds(self) -> dict[str, bool]:
        return {"allocated_ge_uniform": self.allocated_accuracy >= self.uniform_accuracy,
                "allocated_ge_uniform_each": all(a["allocated_accuracy"] >= a["uniform_accuracy"] - ONE_SAMPLE - 1e-9
                                                 for a in self.allocations),
                "first_or_last_in_top_2_mostly": self.first_or_last_share(2) > 0.5}

    def table(self) -> pd.DataFrame:
        rows = []
        for a in self.allocations:
            top = [r["layer"] for r in self.layers if r["model"] == a["model"] and r["kind"] == a["kind"]
                   and r["rank"] <= 2]
            rows.append({"model": a["model"], "kind": a["kind"], "most sensitive": ", ".join(top),
                         "target": a["target"], "allocated": a["allocated_accuracy"], "uniform": a["uniform_accuracy"]})
        return pd.DataFrame(rows)


SENSITIVITY_TARGETS = {"prune": 0.8, "quantize": 3}


def layer_sensitivity(quick: bool = False, seeds: int | None = None, progress: Progress = None,
                      stop: StopFlag = None, models: tuple = ("lenet5", "mobilenet", "resnet"),
                      targets: dict | None = None) -> SensitivityResult:
    """Per-layer pruning and quantization sweeps (validation split) of each built-in CNN, the layers
    ranked by mean accuracy drop, then `allocation.plan_and_apply` at each target (overall sparsity;
    mean bits) against a uniform plan of the same size, measured on the test split."""
    start, data = time.perf_counter(), load_digits()
    models = ("lenet5",) if quick else tuple(models)
    targets = targets or SENSITIVITY_TARGETS
    levels = {"prune": (0.5, 0.8, 0.9, 0.95) if quick else (0.3, 0.5, 0.7, 0.8, 0.9, 0.95),
              "quantize": (2, 3, 4) if quick else (2, 3, 4, 5, 6, 8)}
    tick = Ticker(len(models) * len(targets) * 2, progress)
    layers, allocations = [], []
    for name in models:
        torch.manual_seed(0)
        model = zoo.load_pretrained(name)
        order = list(sweep_layers(model))
        for kind, target in targets.items():
            if is_stopped(stop):
                break
            sweep = (prune_sweep(model, data, levels[kind], stop=stop) if kind == "prune"
                     else quant_sweep(model, data, levels[kind], stop=stop))
            tick(f"{name}: {kind} sweep")
            scores = measured_sensitivity(sweep).sort_values(ascending=False)
            for rank, (layer, score) in enumerate(scores.items(), 1):
                pos = order.index(layer)
                layers.append({"model": name, "kind": kind, "layer": layer, "position": pos, "rank": rank,
                               "sensitivity": float(score) * 100, "first_or_last": pos in (0, len(order) - 1)})
            res = plan_and_apply(model, data, sweep, target, kind)
            allocations.append({"model": name, "kind": kind, "target": target,
                                "allocated_accuracy": res.measured_accuracy, "uniform_accuracy": res.uniform_accuracy,
                                "baseline_accuracy": res.baseline_accuracy, "achieved": res.achieved,
                                "uniform_achieved": res.uniform_achieved, "plan": res.plan})
            tick(f"{name}: {kind} plan against uniform")
    return SensitivityResult(
        case="layer-sensitivity", quick=quick, seeds=(0,), seconds=time.perf_counter() - start,
        stopped=is_stopped(stop), layers=tuple(layers), allocations=tuple(allocations),
        allocated_accuracy=mean_or_nan([a["allocated_accuracy"] for a in allocations]),
        uniform_accuracy=mean_or_nan([a["uniform_accuracy"] for a in allocations]))

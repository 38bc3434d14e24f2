"""Case study 1: pruning with retraining (Han et al., Learning both Weights and Connections, NeurIPS
2015): iterative global magnitude pruning with retraining against one-shot pruning at the same sparsity.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import torch
from torch import nn

from compression.core.modules import count_params, fold_masks_
from compression.data.datasets import Dataset, load_digits
from compression.methods.pruning import finetune, prune, PruneConfig
from compression.methods.training import StopFlag, TrainConfig, is_stopped
from compression.metrics.evaluate import count_nonzero_params
from compression.models import zoo
from compression.workflows.case_base import CaseResult, Progress, Ticker, mean_or_nan, scored_accuracy, spread


def geometric_schedule(final: float, steps: int) -> list[float]:
    """Sparsities whose kept fraction shrinks by the same factor each step, ending at `final`."""
    return [1 - (1 - final) ** ((i + 1) / steps) for i in range(steps)]


def iterative_prune(model: nn.Module, data: Dataset, final: float, steps: int, train: TrainConfig,
                    tick: Callable[[str], None] = lambda _: None,
                    stop: StopFlag = None) -> tuple[nn.Module, list[dict]]:
    """Han et al.'s loop on a copy of `model`: prune (global magnitude) to the next sparsity of a
    geometric schedule, retrain with the masks fixed, fold the masks, repeat. Weights pruned
    once stay zero (they are the smallest at the next step). Returns (model, one row per step)."""
    current, rows, params = model, [], count_params(model)
    for sparsity in geometric_schedule(final, steps):
        if is_stopped(stop):
            break
        pruned, _ = prune(current, PruneConfig(sparsity=sparsity, scope="global"))
        before = scored_accuracy(pruned, data)
        tuned, _ = finetune(pruned, data, train, stop=stop)
        current = fold_masks_(tuned)
        rows.append({"sparsity": sparsity, "param_reduction": params / count_nonzero_params(current),
                     "pruned_accuracy": before, "retrained_accuracy": scored_accuracy(current, data)})
        tick(f"pruned to {sparsity:.1%}, retrained")
    return current, rows


@dataclass(frozen=True)
class PruningRetrainingResult(CaseResult):
    model: str
    baseline_accuracy: float
    sparsity: float
    param_reduction: float
    accuracy: float               # mean over seeds, after iterative pruning and retraining
    accuracy_spread: float
    accuracy_drop: float          # points
    oneshot_accuracy: float       # one-shot at the same sparsity, no retraining
    oneshot_accuracy_drop: float  # points
    per_seed: tuple               # {seed, accuracy, param_reduction}
    steps: tuple                  # seed 0's schedule: {sparsity, param_reduction, pruned/retrained/oneshot accuracy}

    @property
    def holds(self) -> dict[str, bool]:
        return {"at_least_12x": self.param_reduction >= 12.0,
                "drop_at_most_0.5_points": self.accuracy_drop <= 0.5,
                "oneshot_loses_much_more": self.oneshot_accuracy_drop >= max(5.0, 4 * self.accuracy_drop)}

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([
            {"quantity": f"parameters ({self.model}, digits)",
             "measured": f"{self.param_reduction:.1f}x fewer non-zeros"},
            {"quantity": "top-1 error before -> after",
             "measured": f"{1 - self.baseline_accuracy:.2%} -> {1 - self.accuracy:.2%} "
                         f"(drop {self.accuracy_drop:+.2f} pts, ±{self.accuracy_spread * 100:.2f} "
                         f"over {len(self.seeds)} seeds)"},
            {"quantity": "one-shot, same sparsity, no retraining",
             "measured": f"error {1 - self.oneshot_accuracy:.2%} (drop {self.oneshot_accuracy_drop:+.2f} pts)"}])


def pruning_retraining(quick: bool = False, seeds: int | None = None, progress: Progress = None,
                       stop: StopFlag = None, model: str = "mlp", final: float = 0.93,
                       steps: int | None = None, epochs: int | None = None) -> PruningRetrainingResult:
    """LeNet-300-100 -> the built-in MLP: iterative global magnitude pruning to `final` sparsity with
    retraining (Adam, weight decay 1e-4, masks fixed), against one-shot pruning without retraining."""
    start, data = time.perf_counter(), load_digits()
    seeds = seeds or (1 if quick else 3)
    steps, epochs = steps or (4 if quick else 8), epochs or (8 if quick else 30)
    base = zoo.load_pretrained(model)
    base_acc = scored_accuracy(base, data)
    tick = Ticker(seeds * steps + 1, progress)
    runs, schedule = [], []
    for seed in range(seeds):
        if is_stopped(stop):
            break
        torch.manual_seed(seed)
        train = TrainConfig(epochs=epochs, lr=1e-3, batch_size=32, weight_decay=1e-4, seed=seed)
        pruned, rows = iterative_prune(base, data, final, steps, train, tick, stop)
        if len(rows) < steps:
            break
        runs.append({"seed": seed, "accuracy": scored_accuracy(pruned, data),
                     "param_reduction": count_params(pruned) / count_nonzero_params(pruned)})
        schedule = schedule or rows
    for row in schedule:   # one-shot at each step's sparsity, no retraining (deterministic)
        row["oneshot_accuracy"] = scored_accuracy(fold_masks_(prune(base, PruneConfig(
            sparsity=row["sparsity"], scope="global"))[0]), data)
    oneshot = fold_masks_(prune(base, PruneConfig(sparsity=final, scope="global"))[0])
    tick("one-shot pruning")
    accs = [r["accuracy"] for r in runs]
    acc = mean_or_nan(accs)
    oneshot_acc = scored_accuracy(oneshot, data)
    return PruningRetrainingResult(
        case="pruning-retraining", quick=quick, seeds=tuple(range(seeds)), seconds=time.perf_counter() - start,
        stopped=len(runs) < seeds, model=model, baseline_accuracy=base_acc, sparsity=final,
        param_reduction=min((r["param_reduction"] for r in runs), default=float("nan")),
        accuracy=acc, accuracy_spread=spread(accs), accuracy_drop=(base_acc - acc) * 100,
        oneshot_accuracy=oneshot_acc, oneshot_accuracy_drop=(base_acc - oneshot_acc) * 100,
        per_seed=tuple(runs), steps=tuple(schedule))

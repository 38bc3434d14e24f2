"""Case study 3: distillation (Hinton et al., Distilling the Knowledge in a Neural Network, 2015):
the built-in student trained alone against distilled from the built-in teacher, over temperatures.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
import torch

from compression.data.datasets import load_digits
from compression.methods.distillation import DistillConfig, distill
from compression.methods.training import StopFlag, is_stopped
from compression.models import zoo
from compression.workflows.case_base import (TEST_IMAGES, CaseResult, Progress, Ticker, mean_or_nan, scored_accuracy,
                                             spread)


@dataclass(frozen=True)
class DistillationResult(CaseResult):
    teacher: float
    student_alone: float
    student_distilled: float
    student_alone_spread: float
    student_distilled_spread: float
    gap_closed: float             # (distilled - alone) / (teacher - alone)
    temperature: float
    alpha: float
    epochs: int
    per_seed: tuple               # {seed, student_alone, student_distilled}
    temperature_curve: tuple      # {temperature, accuracy, spread}

    @property
    def holds(self) -> dict[str, bool]:
        return {"distilled_beats_alone": self.student_distilled > self.student_alone,
                "closes_most_of_the_gap": self.gap_closed >= 0.5}

    def table(self) -> pd.DataFrame:
        n = TEST_IMAGES
        fmt = lambda a, s: f"{(1 - a) * n:.1f} test errors of {n} ({a:.2%} ± {s * 100:.2f} pts)"
        return pd.DataFrame([
            {"quantity": "small net trained alone", "measured": fmt(self.student_alone, self.student_alone_spread)},
            {"quantity": "teacher", "measured": fmt(self.teacher, 0.0)},
            {"quantity": f"small net distilled (T = {self.temperature:g})",
             "measured": fmt(self.student_distilled, self.student_distilled_spread)
                         + f"; {self.gap_closed:.0%} of the gap closed"}])


def distillation(quick: bool = False, seeds: int | None = None, progress: Progress = None,
                 stop: StopFlag = None, temperature: float = 4.0, alpha: float = 0.9,
                 temperatures: tuple = (1.0, 2.0, 4.0, 8.0, 20.0), epochs: int | None = None,
                 lr: float = 3e-3) -> DistillationResult:
    """The built-in student from random weights (same start per seed), trained on the labels alone
    and distilled from the built-in teacher at `temperature`; then the distilled accuracy over
    `temperatures` (same seeds)."""
    start, data = time.perf_counter(), load_digits()
    seeds = seeds or 3
    epochs = epochs or (8 if quick else 30)
    temperatures = (1.0, 4.0) if quick else tuple(temperatures)
    teacher = zoo.load_pretrained("teacher")
    teacher_acc = scored_accuracy(teacher, data)
    tick = Ticker(seeds * (1 + len(temperatures)), progress)
    per_seed, curve = [], {t: [] for t in temperatures}
    for seed in range(seeds):
        if is_stopped(stop):
            break
        torch.manual_seed(seed)
        fresh = zoo.build("student")
        cfg = DistillConfig(temperature=temperature, alpha=alpha, epochs=epochs, lr=lr, seed=seed)
        _, report = distill(teacher, fresh, data, cfg, stop=stop, baseline=True)
        if report.metrics["stopped"] or "baseline_accuracy" not in report.metrics:
            break
        per_seed.append({"seed": seed, "student_alone": report.metrics["baseline_accuracy"],
                         "student_distilled": report.metrics["student_accuracy"]})
        tick(f"seed {seed}: alone and distilled at T={temperature:g}")
        for t in temperatures:
            if t == temperature:
                curve[t].append(report.metrics["student_accuracy"])
            else:
                _, rep = distill(teacher, fresh, data, DistillConfig(temperature=t, alpha=alpha, epochs=epochs,
                                                                     lr=lr, seed=seed), stop=stop)
                if not rep.metrics["stopped"]:
                    curve[t].append(rep.metrics["student_accuracy"])
            tick(f"seed {seed}: distilled at T={t:g}")
    alone = [r["student_alone"] for r in per_seed]
    distilled = [r["student_distilled"] for r in per_seed]
    gap = teacher_acc - mean_or_nan(alone)
    return DistillationResult(
        case="distillation", quick=quick, seeds=tuple(range(seeds)), seconds=time.perf_counter() - start,
        stopped=len(per_seed) < seeds, teacher=teacher_acc, student_alone=mean_or_nan(alone),
        student_distilled=mean_or_nan(distilled), student_alone_spread=spread(alone),
        student_distilled_spread=spread(distilled),
        gap_closed=(mean_or_nan(distilled) - mean_or_nan(alone)) / gap if gap > 0 else float("nan"),
        temperature=temperature, alpha=alpha, epochs=epochs, per_seed=tuple(per_seed),
        temperature_curve=tuple({"temperature": t, "accuracy": mean_or_nan(v), "spread": spread(v), "runs": len(v)}
                                for t, v in curve.items() if v))

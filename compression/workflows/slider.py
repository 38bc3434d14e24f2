"""What one slider move computes: compress a copy with a config, evaluate it against the original
at once (accuracy and size), then the paired latency afterwards."""
from __future__ import annotations

import statistics

import torch
from torch import nn

from compression.core.devices import on_device
from compression.core.modules import fold_masks_
from compression.core.registry import compress
from compression.data.datasets import Dataset
from compression.metrics.evaluate import evaluate, latency_batch, measure_latency


def compress_and_evaluate(model: nn.Module, cfg, data: Dataset, latency: bool = True,
                          repeats: int = 10, reference_logits: torch.Tensor | None = None,
                          device: str | None = None) -> dict:
    """What one slider move computes: compress a copy of `model` with `cfg`, then evaluate it
    against the original (on the data set's scored split). With `latency=False` nothing is timed, neither
    here nor inside the method (channel pruning and low-rank otherwise make paired latency
    measurements): the app shows accuracy and size at once and measures latency afterwards with
    `compressed_latency`. With `device`, the compressed copy is evaluated there.
    Returns {"metrics": full EvalResult dict, "report": Report dict}."""
    compressed, report = compress(model, cfg, data, measure_latency=latency)
    fold_masks_(compressed)  # measure what would be deployed: masks folded, no per-forward hook
    metrics = evaluate(compressed, data, reference=model, latency=latency, repeats=repeats,
                       reference_logits=reference_logits, device=device)
    return {"metrics": metrics.to_dict(full=True), "report": report.to_dict()}


LATENCY_FIELDS = ("latency_ms", "latency_iqr_ms", "baseline_latency_ms", "batch_size", "threads")


def compressed_latency(model: nn.Module, cfg, data: Dataset, repeats: int = 10,
                       batch_size: int = 64, device: str | None = None, rounds: int = 3) -> dict:
    """The measured half of a slider move, done after accuracy and size are on screen: compress
    a copy of `model` with `cfg` (with the method's own paired measurements, if it makes any)
    and time it at `batch_size` like `evaluate` does, in `rounds` alternating with the original
    so both see the same machine state (a baseline timed minutes earlier, cold, is not comparable).

    Returns:
        {"latency_ms", "latency_iqr_ms" (the compressed model: medians over the rounds),
        "baseline_latency_ms" (the original, timed alongside), "batch_size", "threads",
        "report": the method's metrics (e.g. latency_before_ms/after_ms)}.
    """
    compressed, report = compress(model, cfg, data, measure_latency=True)
    fold_masks_(compressed)
    compressed, original = on_device(compressed, device), on_device(model, device)
    batch = latency_batch(data.scored.X, batch_size)
    ours, base = [], []
    for _ in range(rounds):
        base.append(measure_latency(original, batch, repeats=repeats))
        ours.append(measure_latency(compressed, batch, repeats=repeats))
    return {"latency_ms": statistics.median(t.median_ms for t in ours),
            "latency_iqr_ms": statistics.median(t.iqr_ms for t in ours),
            "baseline_latency_ms": statistics.median(t.median_ms for t in base),
            "batch_size": batch_size, "threads": ours[0].threads, "report": report.metrics}

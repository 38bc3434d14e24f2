"""What one slider move computes: compress a copy with a config, evaluate it against the original
at once (accuracy and size), then the paired latency afterwards."""
from __future__ import annotations

import torch
from torch import nn

from compression.core.devices import on_device
from compression.core.modules import fold_masks_
from compression.core.registry import compress
from compression.data.datasets import Dataset
from compression.methods.int8 import quantize_int8
from compression.metrics.evaluate import evaluate
from compression.metrics.latency import LATENCY_BATCH, LATENCY_ROUNDS, PairedLatency, paired_on_data


def compress_and_evaluate(model: nn.Module, cfg, data: Dataset, latency: bool = True,
                          repeats: int = 10, reference_logits: torch.Tensor | None = None,
                          device: str | None = None) -> dict:
    """What one slider move computes: compress a copy of `model` with `cfg`, then evaluate it
    against the original (on the data set's scored split). With `latency=False` nothing is timed, neither
    here nor inside the method (channel pruning and low-rank otherwise make paired latency
    measurements): the app shows accuracy and size at once and measures latency afterwards with
    `compressed_latency`. With `device`, the compressed copy is evaluated there.
    Returns {"metrics": full EvalResult dict, "report": Result dict}."""
    compressed, report = compress(model, cfg, data, measure_latency=latency)
    fold_masks_(compressed)  # measure what would be deployed: masks folded, no per-forward hook
    metrics = evaluate(compressed, data, reference=model, latency=latency, repeats=repeats,
                       reference_logits=reference_logits, device=device)
    return {"metrics": metrics.to_dict(full=True), "report": report.to_dict()}


LATENCY_FIELDS = ("latency_ms", "latency_iqr_ms", "baseline_latency_ms", "batch_size", "threads",
                  "latency_ratio", "latency_ratio_low", "latency_ratio_high", "latency_ratios", "latency_rounds",
                  "latency_repeats", "latency_measurable", "latency_device")

# methods whose result runs the same dense fp32 kernels as the original: no speed to measure
NO_SPEED_CHANGE = {
    "prune": "unstructured zeros: no speed change expected (dense kernels still multiply them)",
}
SIMULATED_SPEED = "simulated: no speed change expected (runs in fp32)"


def speed_note(report: dict) -> str | None:
    """Why a result (a Result dict) cannot run faster than its original, or None when it can and
    its paired latency means something: simulated results (fake quantization) run in fp32, and
    unstructured masks are multiplied densely."""
    if report.get("simulated"):
        return SIMULATED_SPEED
    return NO_SPEED_CHANGE.get(report.get("method", ""))


def _as_method_timing(paired: PairedLatency) -> dict:
    """The paired measurement under the keys the methods use for their own before/after timing, so
    a page that reads the method's metrics shows the same numbers as the latency metric."""
    return {"latency_before_ms": paired.original_ms, "latency_after_ms": paired.compressed_ms,
            "latency_ratio": paired.ratio, "latency_batch": paired.batch_size}


def compressed_latency(model: nn.Module, cfg, data: Dataset, repeats: int = 10,
                       batch_size: int = LATENCY_BATCH, device: str | None = None,
                       rounds: int = LATENCY_ROUNDS) -> dict:
    """The measured half of a slider move, done after accuracy and size are on screen: compress
    a copy of `model` with `cfg` and time it against the original with
    compression.metrics.latency.paired_latency at `batch_size`, in `rounds` alternating rounds
    (a baseline timed minutes earlier, cold, is not comparable). The method's own timing is not
    run: this is the one latency of the result.

    Returns:
        PairedLatency.to_dict() (latency_ms, baseline_latency_ms, latency_ratio and its per-round
        range, latency_measurable, batch_size, threads, ...) and "report": the method's metrics
        with latency_before_ms/after_ms/latency_ratio/latency_batch being this same measurement.
    """
    compressed, report = compress(model, cfg, data, measure_latency=False)
    fold_masks_(compressed)
    compressed, original = on_device(compressed, device), on_device(model, device)
    paired = paired_on_data(original, compressed, data.scored.X, batch_size, rounds=rounds, repeats=repeats)
    return {**paired.to_dict(), "report": {**report.metrics, **_as_method_timing(paired)}}


def real_int8(model: nn.Module, data: Dataset, repeats: int = 10, batch_size: int = LATENCY_BATCH,
              rounds: int = LATENCY_ROUNDS) -> dict:
    """The model on PyTorch's dynamic int8 kernels (CPU), evaluated like a slider result, with one
    paired latency against the fp32 original at `batch_size` on the data's samples, the same
    measurement `compressed_latency` makes.

    Returns:
        {"metrics": EvalResult dict whose latency fields are the paired measurement's, "report":
        quantize_int8's Result dict whose fp32_latency_ms / int8_latency_ms / speedup /
        speedup_min / speedup_max / latency_batch / latency_rounds are that same measurement}.
    """
    q, report = quantize_int8(model, measure=False)
    metrics = evaluate(q, data, reference=model, latency=False).to_dict(full=True)
    paired = paired_on_data(model, q, data.scored.X, batch_size, rounds=rounds, repeats=repeats)
    speedups = [1 / r for r in paired.ratios]
    report.metrics.update({"fp32_latency_ms": paired.original_ms, "int8_latency_ms": paired.compressed_ms,
                           "speedup": 1 / paired.ratio, "speedup_min": min(speedups),
                           "speedup_max": max(speedups), "latency_rounds": rounds, "latency_batch": batch_size})
    return {"metrics": {**metrics, **paired.to_dict()}, "report": report.to_dict()}

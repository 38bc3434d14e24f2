"""Case study 2: deep compression (Han et al., Deep Compression, ICLR 2016): iterative pruning, then
quantization of the survivors, written as the compact file whose bytes give the ratio.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
import torch

from compression.core.modules import count_params
from compression.data.datasets import load_digits
from compression.methods.quantization import QuantConfig, quantize
from compression.methods.training import StopFlag, TrainConfig, is_stopped
from compression.models import zoo
from compression.models.compact import to_bytes
from compression.workflows.case_base import CaseResult, Progress, Ticker, scored_accuracy
from compression.workflows.case_pruning import iterative_prune


@dataclass(frozen=True)
class DeepCompressionResult(CaseResult):
    models: tuple   # {model, fp32_bytes, compact_bytes, ratio, baseline/pruned/accuracy, accuracy_drop, bits, sparsity}
    stages: tuple   # {model, stage, bytes, accuracy}

    @property
    def holds(self) -> dict[str, bool]:
        return {"ratio_at_least_30x": bool(self.models) and all(m["ratio"] >= 30 for m in self.models),
                "drop_at_most_1_point": bool(self.models) and all(m["accuracy_drop"] <= 1.0 for m in self.models)}

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([{"quantity": f"{m['model']} size",
                              "measured": f"{m['fp32_bytes'] / 1000:.0f} KB -> {m['compact_bytes'] / 1000:.1f} KB "
                                          f"({m['ratio']:.0f}x), error {1 - m['baseline_accuracy']:.2%} -> "
                                          f"{1 - m['accuracy']:.2%}"} for m in self.models])


# Han et al. 2016 kept 8 bits for LeNet-5's convolutions and 5-6 bits for fully connected layers
DEEP_COMPRESSION = {"mlp": {"sparsity": 0.95, "bits": 5},
                    "lenet5": {"sparsity": 0.95, "bits": 5, "layer_bits": {"conv1": 8, "conv2": 8}}}


def deep_compression(quick: bool = False, seeds: int | None = None, progress: Progress = None,
                     stop: StopFlag = None, plans: dict | None = None) -> DeepCompressionResult:
    """Prune (iteratively, with retraining), quantize the survivors (symmetric, one scale per layer,
    as Han's per-layer codebooks), and write the compact file (positions + bit-packed codes + zlib,
    standing in for Huffman coding); the ratio is the fp32 model's bytes over the file's."""
    start, data = time.perf_counter(), load_digits()
    plans = plans or DEEP_COMPRESSION
    steps, epochs = (4, 8) if quick else (6, 20)
    tick = Ticker(len(plans) * (steps + 1), progress)
    models, stages = [], []
    for name, plan in plans.items():
        if is_stopped(stop):
            break
        torch.manual_seed(0)
        base = zoo.load_pretrained(name)
        train = TrainConfig(epochs=epochs, lr=1e-3, batch_size=32, weight_decay=1e-4, seed=0)
        pruned, rows = iterative_prune(base, data, plan["sparsity"], steps, train, tick, stop)
        if len(rows) < steps:
            break
        quantized, _ = quantize(pruned, QuantConfig(bits=plan["bits"], granularity="tensor", symmetric=True,
                                                    overrides=plan.get("layer_bits", {})))
        fp32 = count_params(base) * 4
        sizes = {"fp32": fp32, "fp32 compact": len(to_bytes(base)), "pruned": len(to_bytes(pruned)),
                 "pruned + quantized": len(to_bytes(quantized))}
        accs = {"fp32": scored_accuracy(base, data), "pruned": scored_accuracy(pruned, data),
                "pruned + quantized": scored_accuracy(quantized, data)}
        accs["fp32 compact"] = accs["fp32"]
        stages += [{"model": name, "stage": s, "bytes": b, "accuracy": accs[s]} for s, b in sizes.items()]
        models.append({"model": name, "sparsity": plan["sparsity"], "bits": plan["bits"],
                       "layer_bits": plan.get("layer_bits", {}), "fp32_bytes": fp32,
                       "compact_bytes": sizes["pruned + quantized"], "ratio": fp32 / sizes["pruned + quantized"],
                       "baseline_accuracy": accs["fp32"], "pruned_accuracy": accs["pruned"],
                       "accuracy": accs["pruned + quantized"],
                       "accuracy_drop": (accs["fp32"] - accs["pruned + quantized"]) * 100})
        tick(f"{name}: quantized to {plan['bits']} bits and written")
    return DeepCompressionResult(case="deep-compression", quick=quick, seeds=(0,), seconds=time.perf_counter() - start,
                                 stopped=len(models) < len(plans), models=tuple(models), stages=tuple(stages))

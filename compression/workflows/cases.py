"""Case studies: published compression results re-run end to end on the bundled digits data.

    python -m compression cases [NAME] --json [--quick] [--seeds N] [--store PATH | --no-store]

NAME is one of CASES (default: all of them, one JSON object keyed by name). Each case is seeded,
reports progress as progress(done, total, message), stops on a flag (a threading.Event or a
callable, as `training.fit`), never changes the bundled models (each is loaded fresh), and
returns a frozen result with `to_dict()` (JSON-safe), `table()` (the measured numbers), and
`holds` (the shape the case must show, each check True or False). The papers used MNIST or
ImageNet; the digits are 8x8 and 360 test images (one image = 0.28 points), so what must hold
is the shape of each published result, not its numbers. PUBLISHED holds the papers' numbers.

One module per case (case_pruning, case_deep_compression, case_distillation, case_quantization,
case_sensitivity), sharing case_base; this module names them and runs one by name.
"""
from __future__ import annotations

from typing import Callable

import pandas as pd

from compression.core.errors import ConfigError
from compression.methods.training import StopFlag
from compression.workflows.case_base import CaseResult, Progress
from compression.workflows.case_deep_compression import deep_compression
from compression.workflows.case_distillation import distillation
from compression.workflows.case_pruning import pruning_retraining
from compression.workflows.case_quantization import quantization_granularity
from compression.workflows.case_sensitivity import layer_sensitivity

CASES = ("pruning-retraining", "deep-compression", "distillation", "quantization-granularity",
         "layer-sensitivity")

PUBLISHED: dict[str, list[dict]] = {
    "pruning-retraining": [
        {"quantity": "parameters (LeNet-300-100, MNIST)", "published": "267K -> 22K (12x)"},
        {"quantity": "top-1 error before -> after", "published": "1.64% -> 1.59% (no loss)"},
        {"quantity": "method", "published": "iterative magnitude pruning + retraining"},
        {"source": "Han et al., Learning both Weights and Connections, NeurIPS 2015, Table 1"}],
    "deep-compression": [
        {"quantity": "LeNet-300-100 size", "published": "1070 KB -> 27 KB (40x), error 1.64% -> 1.58%"},
        {"quantity": "LeNet-5 size", "published": "1720 KB -> 44 KB (39x), error 0.80% -> 0.74%"},
        {"quantity": "method", "published": "pruning + trained quantization + Huffman coding"},
        {"source": "Han et al., Deep Compression, ICLR 2016, Table 1"}],
    "distillation": [
        {"quantity": "small net trained alone", "published": "146 test errors (MNIST, 10,000 images)"},
        {"quantity": "teacher", "published": "67 test errors"},
        {"quantity": "small net distilled (T = 20)", "published": "74 test errors"},
        {"source": "Hinton et al., Distilling the Knowledge in a Neural Network, 2015, section 3"}],
    "quantization-granularity": [
        {"quantity": "8-bit per-tensor", "published": "74.90 (ResNet-50 top-1, fp32 76.13)"},
        {"quantity": "8-bit per-channel", "published": "75.15"},
        {"quantity": "8-bit asymmetric per-channel, clipping", "published": "75.99"},
        {"quantity": "6-bit symmetric per-tensor", "published": "36.12 (collapses)"},
        {"quantity": "6-bit asymmetric per-channel", "published": "74.49 (holds)"},
        {"source": "Distiller, post-training quantization of ResNet-50 (weights and activations)"}],
    "layer-sensitivity": [
        {"quantity": "most sensitive layers", "published": "typically the first and the last"},
        {"quantity": "sensitivity-aware allocation", "published": "beats uniform compression at the same size"},
        {"source": "Han et al. 2015 (Fig. 6), HAQ (Wang et al. 2019), HAWQ (Dong et al. 2019)"}],
}


# ---- running, recording, command line ----------------------------------------------------------

RUNNERS: dict[str, Callable[..., CaseResult]] = {
    "pruning-retraining": pruning_retraining, "deep-compression": deep_compression,
    "distillation": distillation, "quantization-granularity": quantization_granularity,
    "layer-sensitivity": layer_sensitivity}


def run_case(name: str, quick: bool = False, seeds: int | None = None, progress: Progress = None,
             stop: StopFlag = None) -> CaseResult:
    """Run one case by name (see CASES)."""
    if name not in RUNNERS:
        raise ConfigError(f"Unknown case {name!r}. Choose one of: {', '.join(CASES)}.")
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise ConfigError(f"seeds must be a positive integer; got {seeds!r}.")
    return RUNNERS[name](quick=quick, seeds=seeds, progress=progress, stop=stop)


def published_table(name: str) -> pd.DataFrame:
    """The paper's numbers for a case (quantity, published), without the source row."""
    return pd.DataFrame([r for r in PUBLISHED[name] if "quantity" in r])


def source(name: str) -> str:
    return next(r["source"] for r in PUBLISHED[name] if "source" in r)


def summary(result: CaseResult) -> dict:
    """The keys the command line promises for each case, then the full result."""
    d = result.to_dict()
    keys = {"pruning-retraining": ("param_reduction", "accuracy_drop", "oneshot_accuracy_drop"),
            "deep-compression": ("models",), "distillation": ("teacher", "student_alone", "student_distilled",
                                                              "temperature_curve"),
            "quantization-granularity": ("rows",), "layer-sensitivity": ("allocated_accuracy", "uniform_accuracy")}
    return {k: d[k] for k in keys[result.case]} | d

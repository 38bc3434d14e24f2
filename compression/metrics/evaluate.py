"""Evaluation: accuracy, loss, confusion, agreement with a reference, size, MACs and measured latency."""
from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compression.core.devices import model_device, on_device
from compression.core.errors import CompressionError
from compression.core.modules import count_params, effective_weights, set_training
from compression.data.datasets import Dataset, Preprocess, Split
from compression.metrics.latency import LATENCY_BATCH, latency_batch, measure_latency, paired_latency
from compression.models.compact import HOW as COMPACT_HOW, to_bytes

EVAL_BATCH = 512


@torch.inference_mode()
def predict_logits(model: nn.Module, X: torch.Tensor, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """Logits (N, classes) of a model in eval mode, in batches. Restores the model's train flag."""
    was_training = model.training
    set_training(model, False)
    device = model_device(model)
    try:
        outs = [model(X[i:i + batch_size].to(device)).float().cpu() for i in range(0, X.shape[0], batch_size)]
    finally:
        set_training(model, was_training)
    return torch.cat(outs)


def accuracy_and_loss(model: nn.Module, split: Split) -> tuple[float, float]:
    """Top-1 accuracy (0-1) and mean cross-entropy on a split."""
    logits = predict_logits(model, split.X)
    acc = (logits.argmax(1) == split.y).float().mean().item()
    return acc, F.cross_entropy(logits, split.y).item()


def topk_accuracy(logits: torch.Tensor, y: torch.Tensor, k: int) -> float:
    topk = logits.topk(min(k, logits.shape[1]), dim=1).indices  # (N, k)
    return (topk == y[:, None]).any(1).float().mean().item()


def confusion_matrix(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    flat = y.long() * num_classes + pred.long()
    return torch.bincount(flat, minlength=num_classes ** 2).reshape(num_classes, num_classes).numpy()


def agreement(logits: torch.Tensor, ref_logits: torch.Tensor) -> tuple[float, float]:
    """Top-1 agreement (0-1) and mean KL(reference || model) of the softmax outputs."""
    agree = (logits.argmax(1) == ref_logits.argmax(1)).float().mean().item()
    kl = F.kl_div(F.log_softmax(logits, 1), F.log_softmax(ref_logits, 1), log_target=True,
                  reduction="batchmean").item()
    return agree, max(kl, 0.0)


def count_nonzero_params(model: nn.Module) -> int:
    """Non-zero entries among the model's parameters, masks applied."""
    names = {n.removesuffix("_orig") for n, _ in model.named_parameters()}
    dense = sum(int(torch.count_nonzero(t)) for k, t in effective_weights(model).items()
                if k in names and isinstance(t, torch.Tensor))
    packed = sum(int(torch.count_nonzero(m.weight().int_repr()))
                 + (int(torch.count_nonzero(m.bias())) if m.bias() is not None else 0)
                 for m in model.modules() if hasattr(m, "_packed_params") and callable(getattr(m, "weight", None)))
    return dense + packed


def serialized_size(model: nn.Module) -> tuple[int, str]:
    """Bytes of the model as actually written, and how they were counted."""
    return compact_size(model)


def safetensors_size(model: nn.Module) -> int:
    """Bytes of the effective state dict written as safetensors (dense fp32)."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().clone() for k, v in effective_weights(model).items()}
    return len(save(tensors))


INT8_LINEAR_OPS = ("linear_dynamic", "linear_relu_dynamic", "linear", "linear_relu")  # torch.ops.quantized.*
MAC_KERNELS = ("all", "int8")


def _int8_linear_flops(x_shape, _packed_weight, *_, out_shape=None, **__) -> int:
    """FLOPs of a quantized::linear* call from its shapes, as the counter counts aten.mm:
    2 * rows (every dimension but the last, batch included) * in_features * out_features."""
    return 2 * math.prod(x_shape) * out_shape[-1]  # x: (..., in), out: (..., out)


def count_macs(model: nn.Module, example: torch.Tensor, kernels: str = "all") -> tuple[int, dict[str, int]]:
    """Multiply-accumulates of one forward pass on `example` (batch of 1 recommended), counted by
    torch.utils.flop_counter (FLOPs / 2), total and per module name. The counter has no formula
    for PyTorch's int8 kernels (quantized::linear_dynamic of torch.ao.nn.quantized.dynamic.Linear
    and its static / fused-ReLU variants): they are counted from their shapes like a Linear.

    Args:
        kernels: "all" (every counted op), or "int8": only the MACs run by those int8 kernels.
    """
    from torch.utils.flop_counter import FlopCounterMode

    if kernels not in MAC_KERNELS:
        raise ValueError(f"kernels must be one of {MAC_KERNELS}, got {kernels!r}")
    int8_ops = {getattr(torch.ops.quantized, name): _int8_linear_flops for name in INT8_LINEAR_OPS}
    was_training = model.training
    set_training(model, False)
    counter = FlopCounterMode(display=False, custom_mapping=int8_ops)
    try:
        with torch.inference_mode(), counter:
            model(example)
    finally:
        set_training(model, was_training)
    per_module, total = {}, 0
    for name, ops in counter.get_flop_counts().items():
        macs = int(sum(f for op, f in ops.items() if kernels == "all" or op in int8_ops) // 2)
        if name == "Global":
            total = macs
        elif macs or kernels == "all":
            # keys are '<RootClass>.<qualified.name>'; keep the qualified module name ('' = root)
            per_module[name.partition(".")[2]] = macs
    return total, per_module


@dataclass(frozen=True)
class EvalResult:
    """Everything `evaluate` measures. `to_dict` gives the flat JSON/DataFrame row."""

    accuracy: float
    top5: float | None
    loss: float
    params: int
    nonzero_params: int
    fp32_bytes: int
    size_bytes: int
    size_method: str
    macs: int | None
    latency_ms: float | None
    latency_iqr_ms: float | None
    batch_size: int
    threads: int
    split: str
    n_samples: int
    agreement: float | None = None
    kl_divergence: float | None = None
    per_class_accuracy: tuple[float, ...] = ()
    confusion: tuple[tuple[int, ...], ...] = field(default=(), repr=False)

    def to_dict(self, full: bool = False) -> dict:
        d = asdict(self)
        if not full:
            d.pop("confusion")
            d.pop("per_class_accuracy")
        else:
            d["confusion"] = [list(r) for r in self.confusion]
            d["per_class_accuracy"] = list(self.per_class_accuracy)
        return d

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero_params / max(self.params_effective, 1)

    @property
    def params_effective(self) -> int:
        return self.params


def before_after(model: nn.Module, new: nn.Module, example: torch.Tensor | None, latency: bool = True) -> dict:
    """Parameters of a model and of its compressed copy, their MACs on `example` (one sample
    (1, ...); none without it) and, with `latency`, their paired latency
    (metrics.latency.paired_latency) at LATENCY_BATCH: latency_before_ms, latency_after_ms,
    latency_ratio (after / before) with its range over the rounds, latency_batch."""
    metrics = {"params_before": count_params(model), "params_after": count_params(new)}
    if example is not None:
        metrics.update({"macs_before": count_macs(model, example)[0], "macs_after": count_macs(new, example)[0]})
    if latency and example is not None:
        p = paired_latency(model, new, latency_batch(example, LATENCY_BATCH))
        metrics.update({"latency_before_ms": p.original_ms, "latency_after_ms": p.compressed_ms,
                        "latency_ratio": p.ratio, "latency_ratio_low": p.ratio_low,
                        "latency_ratio_high": p.ratio_high, "latency_batch": LATENCY_BATCH})
    return metrics


def evaluate(model: nn.Module, data: Dataset, split: str | None = None, reference: nn.Module | None = None,
             latency: bool = True, batch_size: int = LATENCY_BATCH, repeats: int = 30,
             threads: int | None = None, macs: bool = True,
             reference_logits: torch.Tensor | None = None, device: str | None = None) -> EvalResult:
    """Evaluate a model on one split of a data set (default: its `eval_split`, the samples its
    numbers are scored on: the whole file for a user's file, the test split for the digits).

    Args:
        reference: a model to compare with (top-1 agreement, KL divergence), e.g. the original.
        latency: measure latency at `batch_size` (median of `repeats` runs after warm-up).
        macs: count MACs (the first count in a process pays ~1 s of torch imports; the app's
            first page skips it for its headline numbers and counts per layer afterwards).
        reference_logits: the reference's logits on this split, if already known (a slider
            move compares against the same original every time); used instead of `reference`.
        device: run on this device (a moved copy; see compression.core.devices). Default: wherever
            the model is.
    Returns:
        an EvalResult; `size_bytes` is the size of the model as actually serialised.
    """
    split = split or data.eval_split
    part = data.split(split)
    stored, model = model, on_device(model, device)  # sizes and counts from the CPU model
    logits = predict_logits(model, part.X)
    pred = logits.argmax(1)
    conf = confusion_matrix(pred, part.y, data.num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(conf.sum(1) > 0, np.diag(conf) / np.maximum(conf.sum(1), 1), np.nan)
    agree = kl = None
    if reference_logits is None and reference is not None:
        reference_logits = predict_logits(reference, part.X)
    if reference_logits is not None:
        agree, kl = agreement(logits, reference_logits)
    params = count_params(stored)
    size, how = serialized_size(stored)
    example = part.X[:1].to(model_device(model))
    n_macs = count_macs(model, example)[0] if macs else None
    lat = None
    if latency:
        lat = measure_latency(model, latency_batch(part.X, batch_size), repeats=repeats, threads=threads)
    return EvalResult(
        accuracy=(pred == part.y).float().mean().item(),
        top5=topk_accuracy(logits, part.y, 5) if data.num_classes > 5 else None,
        loss=F.cross_entropy(logits, part.y).item(),
        params=params, nonzero_params=count_nonzero_params(stored), fp32_bytes=params * 4,
        size_bytes=size, size_method=how, macs=n_macs,
        latency_ms=lat.median_ms if lat else None, latency_iqr_ms=lat.iqr_ms if lat else None,
        batch_size=batch_size, threads=lat.threads if lat else (threads or torch.get_num_threads()),
        split=split, n_samples=len(part), agreement=agree, kl_divergence=kl,
        per_class_accuracy=tuple(float(v) for v in per_class),
        confusion=tuple(tuple(int(v) for v in row) for row in conf),
    )


PLAUSIBILITY_SAMPLES = 4096


def _accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    return (predict_logits(model, X).argmax(1) == y).float().mean().item()


def plausibility_warning(model: nn.Module, data: Dataset, accuracy: float | None = None) -> str | None:
    """One line when a model's accuracy on its data looks like a mismatch, else None: close to
    chance, or far below what the same samples give under the other usual preprocessing (values
    as stored vs standardised). Scores up to PLAUSIBILITY_SAMPLES samples of the scored split."""
    part = data.scored
    X, y = part.X[:PLAUSIBILITY_SAMPLES], part.y[:PLAUSIBILITY_SAMPLES]
    accuracy = _accuracy(model, X, y) if accuracy is None else accuracy
    chance = 1.0 / max(data.num_classes, 1)
    raw = data.preprocess.invert(X.numpy())
    other = Preprocess("none") if data.preprocess.kind != "none" else \
        Preprocess("standardize").fitted(data.preprocess.invert(data.train.X.numpy()))
    try:
        other_acc = _accuracy(model, torch.from_numpy(other.apply(raw).astype(np.float32)), y)
    except Exception:  # a model that cannot run on the other values: no comparison
        other_acc = None
    flag = "standardize" if other.kind == "standardize" else "none"
    if other_acc is not None and other_acc >= accuracy + 0.1:
        what = other.label if flag == "standardize" else "the file's values as stored"
        return (f"accuracy {accuracy:.0%} here but {other_acc:.0%} with --preprocess {flag} ({what}): "
                "does this model expect that preprocessing?")
    if data.num_classes > 1 and accuracy <= chance + 0.15 * (1 - chance):
        return (f"accuracy {accuracy:.0%} is close to chance ({chance:.0%}): does this model expect "
                "other preprocessing or another label order?")
    return None


def compact_size(model: nn.Module) -> tuple[int, str]:
    """Bytes of the model written in the compact format, and how they were counted. Models the
    format cannot store fall back to a dense safetensors file, and say so."""
    try:
        return len(to_bytes(model)), COMPACT_HOW
    except CompressionError:
        try:
            return safetensors_size(model), ("safetensors (dense state dict; no compact form for this model), "
                                              "bytes written")
        except (TypeError, AttributeError, ValueError, RuntimeError):
            buf = io.BytesIO()
            torch.save(model.state_dict(), buf)
            return len(buf.getvalue()), "torch.save of the state dict (real int8 packed weights), bytes written"

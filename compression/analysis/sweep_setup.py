"""What a sensitivity sweep (and a proxy) works on: a private copy of the model, the layers it
compresses, and the samples it evaluates with how one point is scored.

`private_copy` leaves the caller's model untouched (masks made permanent on the copy, no grad,
in-place activations off); `eval_set` holds the split or a seeded subsample with bootstrap
resamples for confidence intervals; `score` turns logits into a row's accuracy and loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from compression.core.errors import ConfigError, UnsupportedLayerError
from compression.core.modules import WEIGHT_LAYERS, check_layer_names, copy_model, is_frozen_code, weight_layers
from compression.data.datasets import Dataset

BOOTSTRAP_SAMPLES = 1000


# ---- the private copy and the layers -------------------------------------------------------------

def private_copy(model: nn.Module) -> nn.Module:
    """A copy with masks folded, in eval mode, with no parameter requiring grad and in-place
    activations turned off (the same numbers, and cached activations stay intact)."""
    m = copy_model(model, fold=True).eval()
    for module in m.modules():
        if isinstance(getattr(module, "inplace", None), bool):
            module.inplace = False
    if not is_frozen_code(m):
        return m.requires_grad_(False)
    for p in m.parameters():  # a ScriptModule has no requires_grad_; its copied tensors may not be leaves
        if p.is_leaf:
            p.requires_grad_(False)
    return m


def sweep_layers(model: nn.Module, layers: Sequence[str] | None = None,
                 include_embedding: bool = False) -> dict[str, nn.Module]:
    """The layers a sweep compresses: `layers` if given (validated), else every Linear/Conv
    (depthwise included), plus Embedding layers only when `include_embedding`."""
    types = WEIGHT_LAYERS if include_embedding else tuple(t for t in WEIGHT_LAYERS if t is not nn.Embedding)
    found, _ = weight_layers(model, types)
    if layers is None:
        if not found:
            raise UnsupportedLayerError("The model has no Linear, Conv or Embedding layer to sweep.")
        return found
    check_layer_names(model, layers)
    bad = [n for n in layers if n not in found]
    if bad:
        raise ConfigError(f"Layer(s) {', '.join(bad)} cannot be swept; sweepable layers: {', '.join(found)}.")
    return {n: found[n] for n in layers}


# ---- the evaluation data -----------------------------------------------------------------------

@dataclass(frozen=True)
class EvalSet:
    """The samples a sweep evaluates, and the bootstrap resamples for confidence intervals."""

    X: torch.Tensor                   # (N, ...)
    y: torch.Tensor                   # (N,)
    batch_size: int
    resamples: torch.Tensor | None    # (B, N) indices, or None without confidence intervals

    def chunks(self) -> list[torch.Tensor]:
        return [self.X[i:i + self.batch_size] for i in range(0, len(self.y), self.batch_size)]


def eval_set(data: Dataset, split: str = "val", subsample: int | None = None, batch_size: int | None = None,
             seed: int = 0) -> EvalSet:
    """The split (or a seeded subsample of `subsample` samples, with bootstrap resamples)."""
    part = data.split(split)
    X, y, resamples = part.X, part.y, None
    if subsample is not None:
        if not isinstance(subsample, int) or subsample < 1:
            raise ConfigError(f"subsample must be a positive integer; got {subsample!r}.")
        gen = torch.Generator().manual_seed(seed)
        if subsample < len(y):
            idx = torch.randperm(len(y), generator=gen)[:subsample].sort().values
            X, y = X[idx], y[idx]
        resamples = torch.randint(0, len(y), (BOOTSTRAP_SAMPLES, len(y)), generator=gen)  # (B, N)
    if len(y) == 0:
        raise ConfigError(f"The {split} split is empty: nothing to evaluate a sweep on.")
    size = len(y) if batch_size is None else int(batch_size)
    if size < 1:
        raise ConfigError(f"batch_size must be a positive integer; got {batch_size!r}.")
    return EvalSet(X, y, size, resamples)


def score(logits: torch.Tensor, ev: EvalSet) -> dict[str, float]:
    """accuracy and loss of logits (N, classes), with acc_lo/acc_hi (95% bootstrap) if resampled."""
    correct = (logits.argmax(1) == ev.y).float()  # (N,)
    row = {"accuracy": correct.mean().item(), "loss": F.cross_entropy(logits, ev.y).item()}
    if ev.resamples is not None:
        boot = correct[ev.resamples].mean(1)  # (B,)
        row["acc_lo"] = torch.quantile(boot, 0.025).item()
        row["acc_hi"] = torch.quantile(boot, 0.975).item()
    return row


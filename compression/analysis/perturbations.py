"""What a sensitivity-sweep point does to a layer: the weight function (magnitude pruning,
fake quantization, or both) and the input function (fake-quantized activations).

A weight function maps (layer, weight, level) to the layer's new weight; an input function maps
(layer, input, level) to its new input (see `sweep_engine.WeightFn` and `InputFn`). Pruning zeroes
the round(sparsity * numel) smallest-magnitude entries (the stable order of `magnitude_mask`);
quantization is per output channel or per tensor, calibrated as `quantization.quantize` does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from compression.analysis.sweep_engine import InputFn, WeightFn
from compression.analysis.sweep_setup import private_copy
from compression.core.errors import ConfigError
from compression.core.quant import compute_qparams, fake_quantize
from compression.methods.pruning import magnitude_mask

FLOAT_BITS = 32          # a bit-width of 32 or more in grid_sweep means "not quantized"


def prune_weight(layer: str, weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The weight with its round(sparsity * numel) smallest-magnitude entries zeroed."""
    return weight * magnitude_mask(weight.abs(), float(sparsity)).to(weight.dtype)


def sorted_pruner() -> WeightFn:
    """prune_weight for a sweep, whose weights never change between its points: each layer's
    magnitudes are sorted once (same stable order as magnitude_mask), each level zeroes a prefix."""
    orders: dict[str, torch.Tensor] = {}

    def fn(layer: str, weight: torch.Tensor, sparsity: float) -> torch.Tensor:
        if layer not in orders:
            orders[layer] = torch.argsort(weight.detach().abs().flatten().float(), stable=True)
        k = int(round(float(sparsity) * weight.numel()))
        flat = weight.flatten().clone()  # logical order, whatever the layout
        flat[orders[layer][:k]] = 0
        return flat.reshape(weight.shape)
    return fn


@dataclass(frozen=True)
class QuantSpec:
    """How a sweep fake-quantizes a weight (per output channel or per tensor) or an input."""

    granularity: str = "channel"
    symmetric: bool = True
    calibration: str = "minmax"
    percentile: float | None = None

    def __post_init__(self):
        if self.granularity not in ("channel", "tensor"):
            raise ConfigError(f"granularity must be 'channel' or 'tensor'; got {self.granularity!r}.")
        if self.calibration not in ("minmax", "percentile", "mse"):
            raise ConfigError(f"calibration must be 'minmax', 'percentile' or 'mse'; got {self.calibration!r}.")

    def qparams(self, t: torch.Tensor, bits: int, axis: int | None, calibration: str | None = None):
        kw = {"percentile": self.percentile} if self.percentile is not None else {}
        return compute_qparams(t, int(bits), self.symmetric, axis, calibration=calibration or self.calibration, **kw)

    def weight(self, layer: str, weight: torch.Tensor, bits: int) -> torch.Tensor:
        axis = 0 if self.granularity == "channel" else None
        return fake_quantize(weight, self.qparams(weight, bits, axis))


def prune_then_quantize(spec: QuantSpec) -> WeightFn:
    """Weight function of grid points (sparsity, bits): magnitude-prune, then quantize the pruned
    weight and apply the mask again, so pruned entries stay exactly zero. bits >= 32: no quantization."""

    def fn(layer: str, weight: torch.Tensor, level: tuple[float, int]) -> torch.Tensor:
        sparsity, bits = level
        mask = magnitude_mask(weight.abs(), float(sparsity)).to(weight.dtype)  # same shape as weight
        pruned = weight * mask
        return pruned if bits >= FLOAT_BITS else spec.weight(layer, pruned, bits) * mask
    return fn


def activation_qparams(model: nn.Module, X: torch.Tensor, layers: Sequence[str], bits: Sequence[int],
                       spec: QuantSpec, batch_size: int = 64) -> dict[tuple[str, int], Any]:
    """Per-tensor QuantInfo of each layer's input at each bit-width from the input's min and max
    over X (N, ...) with the unmodified model, as quantization.quantize calibrates activations
    (min-max, `spec.symmetric`). Hooks live on a private copy only."""
    m = private_copy(model)
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in layers}

    def hook(name: str) -> Callable:
        def fn(mod: nn.Module, args: tuple) -> None:
            seen[name].append(torch.stack([args[0].min(), args[0].max()]))  # (2,)
        return fn

    handles = [m.get_submodule(n).register_forward_pre_hook(hook(n)) for n in layers]
    try:
        with torch.inference_mode():
            for i in range(0, X.shape[0], batch_size):
                m(X[i:i + batch_size])
    finally:
        for h in handles:
            h.remove()
    ranges = {n: torch.stack(v) for n, v in seen.items()}  # (batches, 2) per layer
    lo_hi = {n: torch.stack([r[:, 0].min(), r[:, 1].max()]) for n, r in ranges.items()}  # (2,)
    return {(n, int(b)): spec.qparams(lo_hi[n], b, None, calibration="minmax") for n in layers for b in bits}


def activation_fn(qparams: dict[tuple[str, int], Any]) -> InputFn:
    return lambda layer, x, bits: fake_quantize(x, qparams[(layer, int(bits))])


"""Low-rank factorisation: truncated SVD of Linear (and optionally Conv2d) layers, each replaced
by two smaller standard layers."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from compression.config import MethodConfig, Report, register_config, register_handler
from compression.data import Dataset
from compression.errors import ConfigError
from compression.evaluate import count_macs, count_params, measure_latency
from compression.layers import check_layer_names, set_module, weight_layers


@register_config
@dataclass(frozen=True)
class LowRankConfig(MethodConfig):
    """Keep rank = ceil(rank_ratio * full rank), or (with energy) the smallest rank keeping that
    fraction of the squared singular values. Default: rank_ratio 0.5."""

    kind: ClassVar[str] = "lowrank"
    rank_ratio: float | None = None
    energy: float | None = None
    include_conv: bool = False
    skip: tuple = ()

    def __post_init__(self):
        if self.rank_ratio is None and self.energy is None:
            object.__setattr__(self, "rank_ratio", 0.5)
        if self.rank_ratio is not None and self.energy is not None:
            raise ConfigError("Give exactly one of rank_ratio or energy.")
        value = self.rank_ratio if self.rank_ratio is not None else self.energy
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ConfigError(f"rank_ratio / energy must be in (0, 1]; got {value!r}.")
        object.__setattr__(self, "skip", tuple(str(s) for s in self.skip))


def _rank(S: torch.Tensor, cfg: LowRankConfig) -> int:
    if cfg.energy is not None:
        cum = torch.cumsum(S ** 2, 0) / (S ** 2).sum()
        return int((cum < cfg.energy - 1e-12).sum()) + 1
    return max(1, int(-(-cfg.rank_ratio * S.numel() // 1)))


def _factorise(layer: nn.Module, r: int, U, S, Vh) -> nn.Sequential:
    root = S[:r].sqrt()
    first_w = root[:, None] * Vh[:r]   # (r, in)
    second_w = U[:, :r] * root[None]   # (out, r)
    bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        first, second = nn.Linear(layer.in_features, r, bias=False), nn.Linear(r, layer.out_features, bias=bias)
        first.weight.data.copy_(first_w)
        second.weight.data.copy_(second_w)
    else:
        first = nn.Conv2d(layer.in_channels, r, layer.kernel_size, layer.stride, layer.padding, layer.dilation, bias=False)
        second = nn.Conv2d(r, layer.out_channels, 1, bias=bias)
        first.weight.data.copy_(first_w.reshape(r, *layer.weight.shape[1:]))
        second.weight.data.copy_(second_w[:, :, None, None])
    if bias:
        second.bias.data.copy_(layer.bias.detach())
    return nn.Sequential(first, second)


def _candidates(model: nn.Module, cfg: LowRankConfig) -> tuple[dict, list]:
    layers, skipped = weight_layers(model, types=(nn.Linear, nn.Conv2d), skip=cfg.skip)
    out = {}
    for name, layer in layers.items():
        if isinstance(layer, nn.Conv2d) and not cfg.include_conv:
            skipped.append((name, "Conv2d: factorise convolutions with include_conv"))
        elif isinstance(layer, nn.Conv2d) and layer.groups != 1:
            skipped.append((name, "grouped/depthwise Conv2d has no useful low-rank form"))
        else:
            out[name] = layer
    return out, skipped


def lowrank(model: nn.Module, cfg: LowRankConfig, data: Dataset | None = None,
            measure_latency: bool = True, **_) -> tuple[nn.Module, Report]:
    """Factorise a copy of `model`; layers whose factors would not be smaller are skipped."""
    check_layer_names(model, cfg.skip)
    new = copy.deepcopy(model)
    layers, skipped = _candidates(new, cfg)
    rows = []
    for name, layer in layers.items():
        W = layer.weight.detach().reshape(layer.weight.shape[0], -1)  # (out, in*k*k)
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        r = min(_rank(S, cfg), S.numel())
        before = W.numel()
        after = r * (W.shape[0] + W.shape[1])
        if after >= before:
            skipped.append((name, f"rank {r} of {S.numel()} would not have fewer parameters"))
            continue
        set_module(new, name, _factorise(layer, r, U, S, Vh))
        rows.append({"layer": name, "rank": r, "full_rank": S.numel(), "params_before": before,
                     "params_after": after, "energy_kept": float((S[:r] ** 2).sum() / (S ** 2).sum())})
    shape = tuple(data.input_shape) if data is not None else (1, 8, 8)
    metrics = _size_metrics(model, new, torch.zeros(1, *shape), measure_latency)
    return new.eval(), Report("lowrank", cfg.to_dict(), rows, skipped, metrics)


def _size_metrics(model: nn.Module, new: nn.Module, example: torch.Tensor, latency: bool) -> dict:
    metrics = {"params_before": count_params(model), "params_after": count_params(new),
               "macs_before": count_macs(model, example)[0], "macs_after": count_macs(new, example)[0]}
    if latency:
        batch = example.repeat(256, *([1] * (example.dim() - 1)))
        metrics["latency_before_ms"] = measure_latency(model, batch, repeats=20).median_ms
        metrics["latency_after_ms"] = measure_latency(new, batch, repeats=20).median_ms
        metrics["latency_batch"] = 256
    return metrics


register_handler(LowRankConfig)(lowrank)

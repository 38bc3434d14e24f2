"""Low-rank factorisation: truncated SVD of Linear (and optionally Conv2d) layers, each replaced
by two smaller standard layers.

A Linear W (out, in) ~ U_r S_r V_r^T becomes Sequential(Linear(in, r, bias=False), Linear(r, out));
a Conv2d is reshaped to (out, in*k*k) and becomes Sequential(Conv2d(in, r, k, stride, padding,
dilation, bias=False), Conv2d(r, out, 1)). sqrt(S_r) is split across both factors so that they
have similar scales. At full rank the factors reproduce the layer up to float rounding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from compression.core.errors import ConfigError
from compression.core.modules import check_layer_names, copy_model, refuse_frozen_code, set_module, weight_layers
from compression.core.registry import MethodConfig, Result, layer_patterns, register_config, register_handler
from compression.data.datasets import Dataset
from compression.metrics.evaluate import before_after

SVD = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@register_config
@dataclass(frozen=True)
class LowRankConfig(MethodConfig):
    """Keep rank = ceil(rank_ratio * full rank), or (with energy) the smallest rank keeping that
    fraction of the squared singular values. Give one of the two; default: rank_ratio 0.5.

    Args:
        include_conv: also factorise (non-grouped) Conv2d layers.
        include, exclude: layer names or patterns factorised (empty include: all) and left as they are.
    """

    kind: ClassVar[str] = "lowrank"
    renamed: ClassVar[dict[str, str]] = {"skip": "exclude"}
    rank_ratio: float | None = None
    energy: float | None = None
    include_conv: bool = False
    include: tuple = ()
    exclude: tuple = ()

    def __post_init__(self):
        if self.rank_ratio is None and self.energy is None:
            object.__setattr__(self, "rank_ratio", 0.5)
        if self.rank_ratio is not None and self.energy is not None:
            raise ConfigError("Give exactly one of rank_ratio or energy, not both.")
        value = self.rank_ratio if self.rank_ratio is not None else self.energy
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ConfigError(f"rank_ratio / energy must be a number in (0, 1]; got {value!r}.")
        if not isinstance(self.include_conv, bool):
            raise ConfigError(f"include_conv must be true or false; got {self.include_conv!r}.")
        object.__setattr__(self, "include", layer_patterns(self.include, "include"))
        object.__setattr__(self, "exclude", layer_patterns(self.exclude, "exclude"))


def choose_rank(S: torch.Tensor, cfg: LowRankConfig) -> int:
    """The rank to keep for singular values S (descending), between 1 and len(S)."""
    if cfg.energy is not None:
        cum = torch.cumsum(S.double() ** 2, 0) / (S.double() ** 2).sum().clamp_min(1e-300)
        r = int((cum < cfg.energy - 1e-12).sum()) + 1
    else:
        r = math.ceil(round(cfg.rank_ratio * S.numel(), 6))  # round first: 0.3 * 10 is 3.0000000000000004
    return max(1, min(r, S.numel()))


def layer_svd(layer: nn.Linear | nn.Conv2d) -> SVD:
    """U (out, k), S (k,), Vh (k, in*kh*kw) of the layer's weight as a 2-D matrix."""
    W = layer.weight.detach().reshape(layer.weight.shape[0], -1)  # (out, in*kh*kw)
    return torch.linalg.svd(W, full_matrices=False)


def factorise(layer: nn.Linear | nn.Conv2d, rank: int, svd: SVD | None = None) -> nn.Sequential:
    """Two standard layers computing the rank-`rank` truncated SVD of `layer` (same bias)."""
    U, S, Vh = svd if svd is not None else layer_svd(layer)
    root = S[:rank].sqrt()
    first_w = root[:, None] * Vh[:rank]     # (r, in*kh*kw)
    second_w = U[:, :rank] * root[None]     # (out, r)
    has_bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        first = nn.Linear(layer.in_features, rank, bias=False)
        second = nn.Linear(rank, layer.out_features, bias=has_bias)
    else:
        first = nn.Conv2d(layer.in_channels, rank, layer.kernel_size, layer.stride, layer.padding,
                          layer.dilation, bias=False, padding_mode=layer.padding_mode)
        second = nn.Conv2d(rank, layer.out_channels, 1, bias=has_bias)
        first_w = first_w.reshape(rank, *layer.weight.shape[1:])  # (r, in, kh, kw)
        second_w = second_w[:, :, None, None]                     # (out, r, 1, 1)
    with torch.no_grad():
        first.weight.copy_(first_w)
        second.weight.copy_(second_w)
        if has_bias:
            second.bias.copy_(layer.bias.detach())
    return nn.Sequential(first, second).train(layer.training)


def _candidates(model: nn.Module, cfg: LowRankConfig) -> tuple[dict[str, nn.Module], list[tuple[str, str]]]:
    layers, skipped = weight_layers(model, types=(nn.Linear, nn.Conv2d), include=cfg.include, exclude=cfg.exclude)
    out = {}
    for name, layer in layers.items():
        if isinstance(layer, nn.Conv2d) and not cfg.include_conv:
            skipped.append((name, "Conv2d: turn on include_conv to factorise convolutions"))
        elif isinstance(layer, nn.Conv2d) and layer.groups != 1:
            skipped.append((name, f"grouped/depthwise Conv2d (groups={layer.groups}) has no useful low-rank form"))
        else:
            out[name] = layer
    return out, skipped


def lowrank(model: nn.Module, cfg: LowRankConfig, data: Dataset | None = None,
            measure_latency: bool = True, macs: bool = True, **_) -> tuple[nn.Module, Result]:
    """Factorise a copy of `model` (the input is not changed).

    A layer is skipped, with the reason, when its factors would not have fewer weights. MACs (unless
    not `macs`) and latency are measured on the first test sample of `data` (else zeros of the
    model's input shape).
    Returns:
        (new model in eval mode, Result with rows {layer, rank, full_rank, params_before,
        params_after, energy_kept} (weights only: the bias is unchanged) and metrics
        params_before/after, macs_before/after and, if measure_latency, the paired latency of
        metrics.evaluate.before_after at LATENCY_BATCH).
    """
    refuse_frozen_code(model, "Low-rank factorisation")
    check_layer_names(model, cfg.include + cfg.exclude)
    new = copy_model(model)
    layers, skipped = _candidates(new, cfg)
    rows = []
    for name, layer in layers.items():
        U, S, Vh = layer_svd(layer)
        r = choose_rank(S, cfg)
        out_dim, in_dim = U.shape[0], Vh.shape[1]
        before, after = out_dim * in_dim, r * (out_dim + in_dim)
        if after >= before:
            skipped.append((name, f"rank {r} of {S.numel()} would not have fewer parameters "
                                  f"({after:,} vs {before:,})"))
            continue
        set_module(new, name, factorise(layer, r, (U, S, Vh)))
        energy = float((S[:r].double() ** 2).sum() / (S.double() ** 2).sum().clamp_min(1e-300))
        rows.append({"layer": name, "rank": r, "full_rank": S.numel(), "params_before": before,
                     "params_after": after, "energy_kept": energy})
    example = _example(model, data) if macs or measure_latency else None
    metrics = before_after(model, new, example, measure_latency)
    return new.eval(), Result("lowrank", cfg.to_dict(), rows, skipped, metrics)


def _example(model: nn.Module, data: Dataset | None) -> torch.Tensor:
    """One input sample (1, C, H, W): the first test image, else zeros of the model's input shape."""
    if data is not None:
        return data.test.X[:1]
    arch = getattr(model, "zoo_arch", None) or {}
    side = arch.get("image_size", 8)
    return torch.zeros(1, arch.get("in_channels", 1), side, side)


register_handler(LowRankConfig)(lowrank)

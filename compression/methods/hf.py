"""Compression methods on transformers, registered in the one registry (`core.registry.compress`, which
takes a Model or its bare module). Each handler takes a module and a frozen config, and returns a new
module (the input is never changed) and a Result. Four are presets over the methods every model gets,
with what a text model needs (a head tied to the input embedding is left alone, embeddings are chosen
explicitly, parameter and non-zero counts instead of image MACs):

- hf_prune: methods.pruning.prune (magnitude) of Linear layers (embeddings only when asked);
- hf_quantize: methods.quantization.quantize of Linear and Embedding weights at 2-16 bits (simulated);
- hf_int8: methods.int8.quantize_int8 (real dynamic int8) of the chosen Linear layers;
- hf_lowrank: methods.lowrank.lowrank (truncated SVD) of Linear layers.

One is its own: hf_nm, N:M semi-structured pruning (e.g. 2:4: N non-zeros in every M weights along the
input dim). Structured pruning of heads and FFN neurons is in methods.heads_ffn. Masks are made permanent
before a model is returned. Configs round-trip to JSON through `config_from_dict`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.utils.prune as tprune
from torch import nn

from compression.core.errors import ConfigError, UnsupportedLayerError
from compression.core.modules import copy_model, count_params, fold_masks_
from compression.core.registry import (MethodConfig, Result, check_range, layer_patterns, register_config,
                                       register_handler)
from compression.methods.int8 import int8_layers, quantize_int8
from compression.methods.lowrank import LowRankConfig, lowrank
from compression.methods.pruning import PruneConfig, prune
from compression.methods.quantization import QuantConfig, quantize
from compression.models.model import embedding_names, linear_names, tied_heads

def count_nonzero(model: nn.Module) -> int:
    """Non-zero parameters, counting each shared tensor once and the packed weights (and biases,
    when present) of real int8 layers."""
    dense = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    for module in model.modules():
        if hasattr(module, "_packed_params") and callable(getattr(module, "weight", None)):
            bias = module.bias()
            dense += int(torch.count_nonzero(module.weight().int_repr()))
            dense += int(torch.count_nonzero(bias)) if bias is not None else 0
    return dense


def size_metrics(before: nn.Module, after: nn.Module) -> dict:
    return {"params_before": count_params(before), "params_after": count_params(after),
            "nonzero_before": count_nonzero(before), "nonzero_after": count_nonzero(after)}


# ---- unstructured and N:M pruning ---------------------------------------------------------------

@register_config
@dataclass(frozen=True)
class HFPruneConfig(MethodConfig):
    """Magnitude pruning of each Linear layer chosen by include / exclude to `sparsity`; embeddings
    (and a head tied to them) too when `embeddings`."""

    kind: ClassVar[str] = "hf_prune"
    sparsity: float = 0.5
    embeddings: bool = False
    include: tuple = ()
    exclude: tuple = ()

    def __post_init__(self):
        check_range("sparsity", self.sparsity, 0.0, 0.999)
        _check_selection(self)


def _check_selection(cfg: MethodConfig) -> None:
    object.__setattr__(cfg, "include", layer_patterns(cfg.include, "include"))
    object.__setattr__(cfg, "exclude", layer_patterns(cfg.exclude, "exclude"))


@register_handler(HFPruneConfig)
def prune_hf(model: nn.Module, cfg: HFPruneConfig, data=None) -> tuple[nn.Module, Result]:
    if cfg.embeddings:
        inner = PruneConfig(sparsity=cfg.sparsity, include=cfg.include, exclude=cfg.exclude,
                            overrides={n: cfg.sparsity for n in embedding_names(model)})
    else:
        inner = PruneConfig(sparsity=cfg.sparsity, include=cfg.include, exclude=cfg.exclude + tuple(tied_heads(model)))
    pruned, report = prune(model, inner)
    fold_masks_(pruned)
    report.method, report.config = cfg.kind, cfg.to_dict()
    report.metrics.update(size_metrics(model, pruned))
    return pruned.eval(), report


def nm_mask(weight: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Float mask of a (out, in) weight keeping the n largest |w| in each group of m consecutive
    inputs (in must be a multiple of m)."""
    out_f, in_f = weight.shape
    groups = weight.detach().abs().reshape(out_f, in_f // m, m)  # (out, in/m, m)
    keep = groups.topk(n, dim=-1).indices
    mask = torch.zeros_like(groups).scatter_(-1, keep, 1.0)
    return mask.reshape(out_f, in_f)


@register_config
@dataclass(frozen=True)
class NMConfig(MethodConfig):
    """N:M pruning of every Linear layer whose input size is a multiple of m."""

    kind: ClassVar[str] = "hf_nm"
    n: int = 2
    m: int = 4

    def __post_init__(self):
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (self.n, self.m))
        if not ints or not 0 < self.n < self.m <= 32:
            raise ConfigError(f"N:M needs integers 0 < n < m <= 32; got {self.n}:{self.m}.")


@register_handler(NMConfig)
def nm_prune_hf(model: nn.Module, cfg: NMConfig, data=None) -> tuple[nn.Module, Result]:
    new = copy_model(model)
    rows, skipped = [], [(n, "tied to the input embedding") for n in tied_heads(new)]
    for name in linear_names(new):
        layer = new.get_submodule(name)
        if layer.in_features % cfg.m:
            skipped.append((name, f"input size {layer.in_features} is not a multiple of {cfg.m}"))
            continue
        tprune.custom_from_mask(layer, "weight", nm_mask(layer.weight, cfg.n, cfg.m))
        rows.append({"layer": name, "pattern": f"{cfg.n}:{cfg.m}", "params": layer.weight.numel(),
                     "achieved": 1 - cfg.n / cfg.m})
    if not rows:
        raise UnsupportedLayerError(f"No Linear layer has an input size that is a multiple of {cfg.m}.")
    fold_masks_(new)
    metrics = {"sparsity_of_pruned_layers": 1 - cfg.n / cfg.m, **size_metrics(model, new)}
    return new.eval(), Result(cfg.kind, cfg.to_dict(), rows, skipped, metrics)


# ---- quantization: simulated at 2-16 bits, real int8 -------------------------------------------

@register_config
@dataclass(frozen=True)
class HFQuantConfig(MethodConfig):
    """Simulated (fake) quantization of the Linear weights chosen by include / exclude, and of
    Embedding weights with `embeddings`."""

    kind: ClassVar[str] = "hf_quantize"
    bits: int = 8
    granularity: str = "channel"
    embeddings: bool = True
    include: tuple = ()
    exclude: tuple = ()

    def __post_init__(self):
        QuantConfig(bits=self.bits, granularity=self.granularity)  # validates bits and granularity
        _check_selection(self)


@register_handler(HFQuantConfig)
def quantize_hf(model: nn.Module, cfg: HFQuantConfig, data=None) -> tuple[nn.Module, Result]:
    exclude = cfg.exclude + (() if cfg.embeddings else tuple(embedding_names(model) + tied_heads(model)))
    inner = QuantConfig(bits=cfg.bits, granularity=cfg.granularity, include=cfg.include, exclude=exclude)
    new, report = quantize(model, inner)
    report.method, report.config = cfg.kind, cfg.to_dict()
    report.metrics.update(size_metrics(model, new))
    return new.eval(), report


@register_config
@dataclass(frozen=True)
class Int8Config(MethodConfig):
    """Real int8 (PyTorch dynamic quantization kernels) of the Linear layers chosen by include /
    exclude (names or patterns; empty include: all); the others stay fp32."""

    kind: ClassVar[str] = "hf_int8"
    renamed: ClassVar[dict[str, str]] = {"keep": "exclude"}
    include: tuple = ()
    exclude: tuple = ()

    def __post_init__(self):
        _check_selection(self)


@register_handler(Int8Config)
def int8_hf(model: nn.Module, cfg: Int8Config, data=None) -> tuple[nn.Module, Result]:
    """methods.int8.quantize_int8 on the chosen Linear layers, with the parameter counts of a text model."""
    new, result = quantize_int8(model, include=cfg.include, exclude=cfg.exclude, measure=False)
    result.method, result.config = cfg.kind, cfg.to_dict()
    result.metrics.update(size_metrics(model, new))
    untied = [n for n in tied_heads(model) if n in int8_layers(new)]
    if untied:
        result.metrics["note"] = (f"{', '.join(untied)} shared its weight with the input embedding; its int8 copy is "
                                  "stored separately, so the stored parameter count grows by that matrix.")
    return new, result


# ---- low-rank -----------------------------------------------------------------------------------

@register_config
@dataclass(frozen=True)
class HFLowRankConfig(MethodConfig):
    """Replace each Linear W (out, in) by two layers of rank ceil(rank_ratio * min(out, in)), from
    its truncated SVD (compression.methods.lowrank); layers that would not shrink are skipped."""

    kind: ClassVar[str] = "hf_lowrank"
    rank_ratio: float = 0.5
    include: tuple = ()
    exclude: tuple = ()

    def __post_init__(self):
        check_range("rank_ratio", self.rank_ratio, 0.0, 1.0, lo_open=True)
        _check_selection(self)


@register_handler(HFLowRankConfig)
def lowrank_hf(model: nn.Module, cfg: HFLowRankConfig, data=None) -> tuple[nn.Module, Result]:
    """methods.lowrank.lowrank on the chosen Linear layers (default all), never a head tied to the input embedding."""
    inner = LowRankConfig(rank_ratio=cfg.rank_ratio, include=cfg.include or tuple(linear_names(model)),
                          exclude=cfg.exclude + tuple(tied_heads(model)))
    new, result = lowrank(model, inner, measure_latency=False, macs=False)  # a text model's cost: metrics.text
    result.method, result.config = cfg.kind, cfg.to_dict()
    result.metrics.update(size_metrics(model, new))
    return new.eval(), result

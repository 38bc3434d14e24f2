"""Compression methods on transformers, registered in the one registry (`core.registry.compress`, which
takes a Model or its bare module). Each handler takes a module and a frozen config, and returns a new
module (the input is never changed) and a Result:

- hf_prune: unstructured magnitude pruning of Linear layers (embeddings only when asked);
- hf_nm: N:M semi-structured pruning (e.g. 2:4: N non-zeros in every M weights along the input dim);
- hf_heads, hf_ffn: structured pruning of attention heads and FFN neurons (in hf_structured);
- hf_quantize: simulated quantization of Linear and Embedding weights at 2-16 bits;
- hf_int8: real int8 dynamic quantization of Linear layers (some kept in fp32 if named);
- hf_lowrank: truncated-SVD factorisation of Linear layers into two smaller ones.

Masks are made permanent (torch.nn.utils.prune.remove) before a model is returned, and structured
methods really remove rows and columns. Configs round-trip to JSON through `config_from_dict`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.utils.prune as tprune
from torch import nn

from compression.core.errors import ConfigError, UnsupportedLayerError
from compression.core.modules import (check_layer_names, copy_model, count_params, fold_masks_, not_selected,
                                      set_module)
from compression.core.quant import sqnr_db
from compression.core.registry import (MethodConfig, Result, check_range, layer_patterns, register_config,
                                       register_handler)
from compression.methods.int8 import REAL_INT8, int8_layers
from compression.methods.lowrank import LowRankConfig, choose_rank, factorise, layer_svd
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
    """Magnitude pruning of each Linear layer to `sparsity`; embeddings (and a head tied to them)
    too when `embeddings`."""

    kind: ClassVar[str] = "hf_prune"
    sparsity: float = 0.5
    embeddings: bool = False

    def __post_init__(self):
        check_range("sparsity", self.sparsity, 0.0, 0.999)


@register_handler(HFPruneConfig)
def prune_hf(model: nn.Module, cfg: HFPruneConfig, data=None) -> tuple[nn.Module, Result]:
    if cfg.embeddings:
        inner = PruneConfig(sparsity=cfg.sparsity, overrides={n: cfg.sparsity for n in embedding_names(model)})
    else:
        inner = PruneConfig(sparsity=cfg.sparsity, exclude=tuple(tied_heads(model)))
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
    """Simulated (fake) quantization of Linear weights, and of Embedding weights with `embeddings`."""

    kind: ClassVar[str] = "hf_quantize"
    bits: int = 8
    granularity: str = "channel"
    embeddings: bool = True

    def __post_init__(self):
        QuantConfig(bits=self.bits, granularity=self.granularity)  # validates bits and granularity


@register_handler(HFQuantConfig)
def quantize_hf(model: nn.Module, cfg: HFQuantConfig, data=None) -> tuple[nn.Module, Result]:
    exclude = () if cfg.embeddings else tuple(embedding_names(model) + tied_heads(model))
    new, report = quantize(model, QuantConfig(bits=cfg.bits, granularity=cfg.granularity, exclude=exclude))
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
        object.__setattr__(self, "include", layer_patterns(self.include, "include"))
        object.__setattr__(self, "exclude", layer_patterns(self.exclude, "exclude"))


def int8_copy(model: nn.Module, names: list[str]) -> nn.Module:
    """A copy of `model` with the named Linear layers turned into real dynamic int8 layers."""
    model = copy_model(model).eval()
    if not names:
        return model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, set(names), dtype=torch.qint8)


@register_handler(Int8Config)
def int8_hf(model: nn.Module, cfg: Int8Config, data=None) -> tuple[nn.Module, Result]:
    check_layer_names(model, cfg.include + cfg.exclude)
    linears = linear_names(model, tied=True)
    names = [n for n in linears if not not_selected(n, cfg.include, cfg.exclude)]
    if not names:
        raise UnsupportedLayerError("Nothing to quantize: every Linear layer is kept in fp32.")
    new = int8_copy(model, names)
    done = int8_layers(new)
    rows = [{"layer": n, "type": "Linear", "bits": 8, "kernel": "torch.ao.nn.quantized.dynamic.Linear",
             "sqnr_db": sqnr_db(model.get_submodule(n).weight, new.get_submodule(n).weight().dequantize())}
            for n in done]
    skipped = [(n, f"{not_selected(n, cfg.include, cfg.exclude)}: kept in fp32") for n in linears if n not in names]
    skipped += [(n, "Embedding: no dynamic int8 kernel; kept fp32") for n in embedding_names(model)]
    metrics = {"label": REAL_INT8, "simulated": False, "int8_layers": len(done), **size_metrics(model, new)}
    untied = [n for n in tied_heads(model) if n in done]
    if untied:
        metrics["note"] = (f"{', '.join(untied)} shared its weight with the input embedding; its int8 copy is "
                           "stored separately, so the stored parameter count grows by that matrix.")
    return new, Result(cfg.kind, cfg.to_dict(), rows, skipped, metrics)


# ---- low-rank -----------------------------------------------------------------------------------

@register_config
@dataclass(frozen=True)
class HFLowRankConfig(MethodConfig):
    """Replace each Linear W (out, in) by two layers of rank ceil(rank_ratio * min(out, in)), from
    its truncated SVD (compression.methods.lowrank); layers that would not shrink are skipped."""

    kind: ClassVar[str] = "hf_lowrank"
    rank_ratio: float = 0.5

    def __post_init__(self):
        check_range("rank_ratio", self.rank_ratio, 0.0, 1.0, lo_open=True)


@register_handler(HFLowRankConfig)
def lowrank_hf(model: nn.Module, cfg: HFLowRankConfig, data=None) -> tuple[nn.Module, Result]:
    new, inner = copy_model(model), LowRankConfig(rank_ratio=cfg.rank_ratio)
    rows, skipped = [], [(n, "tied to the input embedding") for n in tied_heads(new)]
    for name in linear_names(new):
        layer = new.get_submodule(name)
        svd = layer_svd(layer)
        rank, full = choose_rank(svd[1], inner), svd[1].numel()
        if rank * (layer.in_features + layer.out_features) >= layer.weight.numel():
            skipped.append((name, f"rank {rank} of {full} would not have fewer parameters"))
            continue
        set_module(new, name, factorise(layer, rank, svd).eval())
        rows.append({"layer": name, "rank": rank, "full_rank": full, "params_before": layer.weight.numel(),
                     "params_after": rank * (layer.in_features + layer.out_features)})
    return new.eval(), Result(cfg.kind, cfg.to_dict(), rows, skipped, size_metrics(model, new))

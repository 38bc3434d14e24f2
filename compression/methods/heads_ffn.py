"""Structured pruning of transformers: whole attention heads and FFN neurons are removed, so the
model really shrinks (fewer rows and columns in its Linear layers) and still runs.

- hf_heads: per block, the heads with the lowest L1 norm of their q/k/v rows and o-projection
  columns go; the attention module's head count is updated. (transformers 5 dropped the models'
  own `prune_heads`, so this works from each architecture's ArchSpec.)
- hf_ffn: per block, the FFN neurons with the lowest L1 norm of their input-layer row plus
  output-layer column go.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from compression.core.errors import UnsupportedLayerError
from compression.core.modules import copy_model, set_module
from compression.core.registry import MethodConfig, Result, check_range, method_label, register_config, register_handler
from compression.methods.hf import size_metrics
from compression.models.model import Model


def _shrink(layer: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping only `index` along the weight's dim 0 (outputs) or 1 (inputs)."""
    w = layer.weight.detach().index_select(dim, index)
    new = nn.Linear(w.shape[1], w.shape[0], bias=layer.bias is not None)
    with torch.no_grad():
        new.weight.copy_(w)
        if layer.bias is not None:
            new.bias.copy_(layer.bias.detach()[index] if dim == 0 else layer.bias.detach())
    return new


@register_config
@dataclass(frozen=True)
class HeadPruneConfig(MethodConfig):
    """Remove round(fraction * heads) attention heads of every block (at least one head stays)."""

    kind: ClassVar[str] = "hf_heads"
    fraction: float = 0.25

    def __post_init__(self):
        check_range("fraction", self.fraction, 0.0, 0.95)


def _linear(block: nn.Module, rel: str) -> nn.Linear:
    layer = block.get_submodule(rel)
    if not isinstance(layer, nn.Linear):
        raise UnsupportedLayerError(f"{rel} is a {type(layer).__name__}, not a plain Linear layer: prune heads and "
                                    "FFN neurons before quantizing or factorising the model.")
    return layer


def _head_parts(hf: Model, block: nn.Module, heads: int) -> list[torch.Tensor]:
    """The q, k and v weights' rows grouped by head: three (heads, head_dim * in) views."""
    spec = hf.spec
    if spec.qkv:
        w = _linear(block, spec.qkv).weight.detach()  # (3 * H * d, in)
        return list(w.reshape(3, heads, -1).unbind(0))
    return [_linear(block, rel).weight.detach().reshape(heads, -1) for rel in (spec.q, spec.k, spec.v)]


def head_importance(hf: Model, block: nn.Module, heads: int) -> torch.Tensor:
    """(heads,) L1 norm of each head's q/k/v rows and o-projection columns."""
    parts = _head_parts(hf, block, heads)
    o = _linear(block, hf.spec.o).weight.detach()  # (out, H * d)
    score = sum(p.abs().sum(1) for p in parts)
    return score + o.abs().reshape(o.shape[0], heads, -1).sum((0, 2))


def _prune_block_heads(hf: Model, model: nn.Module, prefix: str, keep: torch.Tensor, heads: int) -> None:
    spec, block = hf.spec, model.get_submodule(prefix)
    attn = block.get_submodule(spec.attention)
    d = block.get_submodule(spec.o).in_features // heads
    cols = (keep[:, None] * d + torch.arange(d)).flatten()  # kept indices within H * d
    if spec.qkv:
        rows = torch.cat([cols + i * heads * d for i in range(3)])
        set_module(block, spec.qkv, _shrink(block.get_submodule(spec.qkv), rows, 0))
    else:
        for rel in (spec.q, spec.k, spec.v):
            set_module(block, rel, _shrink(block.get_submodule(rel), cols, 0))
    set_module(block, spec.o, _shrink(block.get_submodule(spec.o), cols, 1))
    for attr in spec.head_attrs:
        setattr(attn, attr, len(keep))
    for attr in spec.size_attrs:
        setattr(attn, attr, len(keep) * d)


def _heads_of(hf: Model, model: nn.Module, prefix: str) -> int:
    attn = model.get_submodule(prefix).get_submodule(hf.spec.attention)
    return int(getattr(attn, hf.spec.head_attrs[0]))


@register_handler(HeadPruneConfig, needs_model=True)
def prune_heads_hf(hf: Model, cfg: HeadPruneConfig, data=None) -> tuple[Model, Result]:
    model = copy_model(hf.model)
    work = hf.replace(model, "work")
    rows, pruned_heads = [], {}
    for index, (prefix, block) in enumerate(work.blocks()):
        heads = _heads_of(hf, model, prefix)
        drop = min(int(round(cfg.fraction * heads)), heads - 1)
        score = head_importance(work, block, heads)
        keep = torch.sort(torch.argsort(score, descending=True, stable=True)[:heads - drop]).values
        removed = sorted(set(range(heads)) - set(keep.tolist()))
        if removed:
            _prune_block_heads(work, model, prefix, keep, heads)
        pruned_heads[index] = removed
        rows.append({"block": index, "heads_before": heads, "heads_after": len(keep), "removed": removed,
                     "importance": [round(float(s), 4) for s in score]})
    removed = {k: v for k, v in pruned_heads.items() if v}
    model.config.pruned_heads = {**(getattr(model.config, "pruned_heads", None) or {}), **removed}
    metrics = {"heads_removed": sum(len(v) for v in pruned_heads.values()), **size_metrics(hf.model, model)}
    return hf.replace(model.eval(), method_label(cfg)), Result(cfg.kind, cfg.to_dict(), rows, [], metrics)


@register_config
@dataclass(frozen=True)
class FFNPruneConfig(MethodConfig):
    """Remove round(fraction * width) FFN neurons of every block (lowest L1 of in-row + out-column)."""

    kind: ClassVar[str] = "hf_ffn"
    fraction: float = 0.25

    def __post_init__(self):
        check_range("fraction", self.fraction, 0.0, 0.95)


@register_handler(FFNPruneConfig, needs_model=True)
def prune_ffn_hf(hf: Model, cfg: FFNPruneConfig, data=None) -> tuple[Model, Result]:
    model = copy_model(hf.model)
    spec, rows = hf.spec, []
    for index, (prefix, block) in enumerate(hf.replace(model, "work").blocks()):
        fc_in, fc_out = _linear(block, spec.ffn_in), _linear(block, spec.ffn_out)
        width = fc_in.out_features
        score = fc_in.weight.detach().abs().sum(1) + fc_out.weight.detach().abs().sum(0)  # (width,)
        keep_n = max(1, width - int(round(cfg.fraction * width)))
        keep = torch.sort(torch.argsort(score, descending=True, stable=True)[:keep_n]).values
        set_module(block, spec.ffn_in, _shrink(fc_in, keep, 0))
        set_module(block, spec.ffn_out, _shrink(fc_out, keep, 1))
        rows.append({"block": index, "neurons_before": width, "neurons_after": keep_n})
    metrics = {"neurons_removed": sum(r["neurons_before"] - r["neurons_after"] for r in rows),
               **size_metrics(hf.model, model)}
    return hf.replace(model.eval(), method_label(cfg)), Result(cfg.kind, cfg.to_dict(), rows, [], metrics)

"""Pruning: unstructured (magnitude, random, first-order Taylor; per-layer or global) with
torch.nn.utils.prune masks, structured channel pruning through torch-pruning's DepGraph, and
recovery fine-tuning with the masks kept fixed."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
import torch.nn.utils.prune as tprune
from torch import nn

from compression.core.errors import ConfigError, UnsupportedLayerError
from compression.core.modules import (check_layer_names, copy_model, count_params, is_frozen_code, is_layer, layer_type,
                                      matches, refuse_frozen_code, weight_layers)
from compression.core.registry import (MethodConfig, Result, check_range, layer_patterns, name_pairs, register_config,
                                       register_handler)
from compression.data.datasets import Dataset
from compression.methods.training import TrainConfig, fit
from compression.metrics.evaluate import accuracy_and_loss, before_after

METHODS = ("magnitude", "random", "taylor")
SCOPES = ("layer", "global")


@register_config
@dataclass(frozen=True)
class PruneConfig(MethodConfig):
    """Unstructured pruning. include / exclude: layer names or patterns chosen (empty include:
    all) and left dense; overrides: per-layer sparsity."""

    kind: ClassVar[str] = "prune"
    renamed: ClassVar[dict[str, str]] = {"skip": "exclude"}
    method: str = "magnitude"
    sparsity: float = 0.5
    scope: str = "layer"
    include: tuple = ()
    exclude: tuple = ()
    overrides: tuple = ()
    calib_batches: int = 4
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}; got {self.method!r}.")
        if self.scope not in SCOPES:
            raise ConfigError(f"scope must be 'layer' or 'global'; got {self.scope!r}.")
        check_range("sparsity", self.sparsity, 0.0, 0.999)
        object.__setattr__(self, "overrides", name_pairs(self.overrides, float, "overrides", "{'fc1': 0.9}"))
        for name, s in self.overrides:
            check_range(f"sparsity of {name}", s, 0.0, 0.999)
        object.__setattr__(self, "include", layer_patterns(self.include, "include"))
        object.__setattr__(self, "exclude", layer_patterns(self.exclude, "exclude"))
        if not isinstance(self.calib_batches, int) or self.calib_batches < 1:
            raise ConfigError("calib_batches must be a positive integer.")


def magnitude_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Float mask of score's shape with exactly round(sparsity * numel) zeros at the smallest
    scores (ties broken by position, deterministically)."""
    n = score.numel()
    k = int(round(sparsity * n))
    flat = score.detach().flatten().float()
    mask = torch.ones(n, dtype=torch.float32, device=score.device)
    if k >= n:
        mask.zero_()
    elif k > 0:  # what a stable argsort's first k are, in O(n): all below the k-th value, then ties by position
        kth = flat.kthvalue(k).values
        below = flat < kth
        ties = (flat == kth).nonzero().flatten()[: k - int(below.sum())]
        mask[below] = 0.0
        mask[ties] = 0.0
    return mask.reshape(score.shape)


def _taylor_scores(model: nn.Module, layers: dict[str, nn.Module], data: Dataset, batches: int) -> dict:
    """|w * dL/dw| accumulated over `batches` training batches of 64 (first-order Taylor)."""
    scores = {n: torch.zeros_like(m.weight) for n, m in layers.items()}
    model = copy_model(model).train()
    copies = dict(model.named_modules())
    for i, (x, y) in enumerate(data.train.batches(64)):
        if i >= batches:
            break
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        for n in layers:
            w = copies[n].weight
            scores[n] += (w.detach() * w.grad).abs()
    return scores


def _scores(model: nn.Module, layers: dict[str, nn.Module], cfg: PruneConfig, data: Dataset | None) -> dict:
    if cfg.method == "magnitude":
        return {n: m.weight.detach().abs() for n, m in layers.items()}
    if cfg.method == "random":
        gen = torch.Generator().manual_seed(cfg.seed)
        return {n: torch.rand(m.weight.shape, generator=gen) for n, m in layers.items()}
    if data is None:
        raise ConfigError("Taylor pruning needs data: it scores weights with gradients on training batches.")
    return _taylor_scores(model, layers, data, cfg.calib_batches)


def _global_sparsities(scores: dict, names: list[str], sparsity: float) -> dict[str, float]:
    """One threshold over all `names`: the per-layer sparsity it implies."""
    if not names:
        return {}
    flat = torch.cat([scores[n].flatten() for n in names])
    k = int(round(sparsity * flat.numel()))
    if k == 0:
        return {n: 0.0 for n in names}
    threshold = torch.kthvalue(flat, k).values
    # count below the threshold per layer; the remainder of ties goes to layers in order
    below = {n: int((scores[n] < threshold).sum()) for n in names}
    ties = {n: int((scores[n] == threshold).sum()) for n in names}
    left = k - sum(below.values())
    out = {}
    for n in names:
        take = min(ties[n], max(left, 0))
        left -= take
        out[n] = (below[n] + take) / scores[n].numel()
    return out


def prunable_layers(model: nn.Module, cfg: PruneConfig) -> tuple[dict[str, nn.Module], list[tuple[str, str]]]:
    """Layers this config prunes (Embeddings only when named in overrides) and skipped ones."""
    check_layer_names(model, [n for n, _ in cfg.overrides] + list(cfg.include + cfg.exclude))
    layers, skipped = weight_layers(model, include=cfg.include, exclude=cfg.exclude)
    overridden = dict(cfg.overrides)
    for name in [n for n, m in layers.items() if is_layer(m, (nn.Embedding,)) and n not in overridden]:
        layers.pop(name)
        skipped.append((name, "Embedding is not pruned unless named in overrides"))
    return layers, skipped


def apply_mask_(layer: nn.Module, mask: torch.Tensor) -> None:
    """Zero `layer`'s weight where `mask` is 0. Eager and exported layers get a
    torch.nn.utils.prune mask (the masked weight is recomputed, with gradients, at each forward);
    a TorchScript layer, which takes no hooks, has its weight multiplied by the mask in place."""
    with torch.no_grad():
        if is_frozen_code(layer):
            layer.weight.mul_(mask.to(layer.weight.dtype))
        else:
            tprune.custom_from_mask(layer, "weight", mask)


def prune(model: nn.Module, cfg: PruneConfig, data: Dataset | None = None, **_) -> tuple[nn.Module, Result]:
    """Unstructured pruning of a copy of `model`; masks follow torch.nn.utils.prune."""
    model = copy_model(model)
    layers, skipped = prunable_layers(model, cfg)
    if not layers:
        raise UnsupportedLayerError("No prunable layer (Linear, Conv, Embedding) in this model.")
    overrides = dict(cfg.overrides)
    scores = _scores(model, layers, cfg, data)
    targets = {n: overrides.get(n, cfg.sparsity) for n in layers}
    if cfg.scope == "global":
        free = [n for n in layers if n not in overrides]
        targets.update(_global_sparsities(scores, free, cfg.sparsity))
    rows, zeros, total = [], 0, 0
    for name, layer in layers.items():
        mask = magnitude_mask(scores[name], targets[name])
        apply_mask_(layer, mask)
        n_zero = int((mask == 0).sum())
        zeros, total = zeros + n_zero, total + mask.numel()
        rows.append({"layer": name, "type": layer_type(layer), "params": mask.numel(),
                     "requested": overrides.get(name, cfg.sparsity), "achieved": n_zero / mask.numel()})
    metrics = {"sparsity": zeros / max(total, 1), "nonzero_params": count_params(model) - zeros,
               "params": count_params(model), "pruned_weights": total}
    return model, Result("prune", cfg.to_dict(), rows, skipped, metrics)


register_handler(PruneConfig)(prune)


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Measured fraction of zeros in each weight layer's effective weight."""
    layers, _ = weight_layers(model)
    return {n: (m.weight == 0).sum().item() / m.weight.numel() for n, m in layers.items()}


def finetune(model: nn.Module, data: Dataset, train_cfg: TrainConfig, teacher: nn.Module | None = None,
             callback=None, stop=None, device: str | None = None) -> tuple[nn.Module, Result]:
    """Recovery fine-tuning with masks fixed (only weight_orig trains; weight = orig * mask),
    on `device` if given (the tuned model comes back to the CPU). Refused on TorchScript: its
    zeros are written into the weights (no masks), so training would grow them back."""
    if is_frozen_code(model):
        raise UnsupportedLayerError("Fine-tuning a pruned TorchScript model would grow its zeros back (TorchScript "
                                    "keeps no pruning masks): export your model with torch.export (a .pt2 file) "
                                    "to fine-tune after pruning.")
    before, _ = accuracy_and_loss(model, data.val)
    tuned, history = fit(model, data, train_cfg, teacher=teacher, callback=callback, stop=stop, device=device)
    after, _ = accuracy_and_loss(tuned, data.val)
    metrics = {"accuracy_before": before, "accuracy_after": after, "history": history}
    return tuned, Result("finetune", {"kind": "finetune", "epochs": train_cfg.epochs}, metrics=metrics)


# ---- structured: whole channels, with dependent layers adjusted (torch-pruning DepGraph) ----

@register_config
@dataclass(frozen=True)
class ChannelPruneConfig(MethodConfig):
    """Remove a fraction of output channels / neurons of every layer but the classifier. include /
    exclude: layer names or patterns pruned (empty include: all) and left whole (a whole block when
    its name is excluded)."""

    kind: ClassVar[str] = "channel_prune"
    renamed: ClassVar[dict[str, str]] = {"ignore": "exclude"}
    sparsity: float = 0.5
    importance: str = "l1"
    include: tuple = ()
    exclude: tuple = ()
    round_to: int = 1
    calib_batches: int = 2

    def __post_init__(self):
        check_range("sparsity", self.sparsity, 0.0, 0.95)
        if self.importance not in ("l1", "taylor"):
            raise ConfigError(f"importance must be 'l1' or 'taylor'; got {self.importance!r}.")
        object.__setattr__(self, "include", layer_patterns(self.include, "include"))
        object.__setattr__(self, "exclude", layer_patterns(self.exclude, "exclude"))


def _classifier(model: nn.Module) -> nn.Module | None:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _out_channels(model: nn.Module) -> dict[str, int]:
    layers, _ = weight_layers(model, types=(nn.Linear, nn.Conv1d, nn.Conv2d))
    return {n: m.weight.shape[0] for n, m in layers.items()}


def channel_prune(model: nn.Module, cfg: ChannelPruneConfig, data: Dataset | None = None,
                  measure_latency: bool = True, **_) -> tuple[nn.Module, Result]:
    """Structured pruning of a copy: channels really removed, the model shrinks and still runs."""
    import torch_pruning as tp

    refuse_frozen_code(model, "Channel pruning")
    check_layer_names(model, cfg.include + cfg.exclude)
    shape = tuple(data.input_shape) if data is not None else (1, 8, 8)
    example = torch.zeros(1, *shape)
    pruned = copy_model(model).eval()
    names = dict(pruned.named_modules())
    ignored = [m for n, m in names.items() if n and matches(n, cfg.exclude)]  # torch-pruning skips their subtrees
    if cfg.include:
        layers, _ = weight_layers(pruned, types=(nn.Linear, nn.Conv1d, nn.Conv2d))
        ignored += [m for n, m in layers.items() if not matches(n, cfg.include)]
    ignored += [m for m in [_classifier(pruned)] if m is not None]
    if cfg.importance == "taylor":
        if data is None:
            raise ConfigError("Taylor channel importance needs data.")
        importance = tp.importance.TaylorImportance()
    else:
        importance = tp.importance.MagnitudeImportance(p=1)
    pruner = tp.pruner.MetaPruner(pruned, example, importance=importance, pruning_ratio=cfg.sparsity,
                                  ignored_layers=ignored, round_to=cfg.round_to)
    if cfg.importance == "taylor":
        for i, (x, y) in enumerate(data.train.batches(64)):
            if i >= cfg.calib_batches:
                break
            F.cross_entropy(pruned(x), y).backward()
    before = _out_channels(model)
    pruner.step()
    pruned.zero_grad(set_to_none=True)
    after = _out_channels(pruned)
    rows = [{"layer": n, "channels_before": before[n], "channels_after": after.get(n)} for n in before]
    metrics = before_after(model, pruned, example, measure_latency)
    return pruned.eval(), Result("channel_prune", cfg.to_dict(), rows, [], metrics)


register_handler(ChannelPruneConfig)(channel_prune)

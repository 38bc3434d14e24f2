"""Cheap guesses of layer sensitivity, and how well each ranks the layers as a sweep measured.

Proxies: weight statistics; the Hessian trace per layer by Hutchinson's estimator (as HAWQ-v2 and
PyHessian), with an Optimal-Brain-Damage saliency from the same Hessian-vector products; and the
layer's importance by captum (gradient x activation or conductance of its output). A proxy is
read "larger = more sensitive"; `rank_correlation` gives its Spearman correlation with the
measured sensitivity, so a good proxy scores near +1 (a good inverse proxy near -1).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from itertools import islice
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from compression.analysis.attribution import hooks_guard
from compression.data.datasets import Dataset
from compression.core.errors import ConfigError, UnsupportedLayerError
from compression.core.modules import get_module, weight_layers
from compression.analysis.sensitivity import private_copy, sweep_layers

IMPORTANCE_METHODS = ("gradxact", "conductance")
STAT_COLUMNS = ["layer", "type", "params", "mean_abs", "std", "kurtosis", "outlier_frac", "min", "max", "range"]


# ---- weight statistics -----------------------------------------------------------------------

def tensor_stats(w: torch.Tensor) -> dict[str, float]:
    """mean |w|, std, excess kurtosis, fraction beyond 3 std from the mean, min, max, range."""
    w = w.detach().double().flatten()  # (n,)
    mean, std = w.mean(), w.std(unbiased=False)
    z = (w - mean) / std if std > 0 else torch.zeros_like(w)
    return {"mean_abs": w.abs().mean().item(), "std": std.item(),
            "kurtosis": (z.pow(4).mean() - 3.0).item() if std > 0 else float("nan"),
            "outlier_frac": (z.abs() > 3).double().mean().item(),
            "min": w.min().item(), "max": w.max().item(), "range": (w.max() - w.min()).item()}


def weight_stats(model: nn.Module) -> pd.DataFrame:
    """One row per weight layer (Linear, Conv, Embedding): columns STAT_COLUMNS."""
    layers, _ = weight_layers(model)
    rows = [{"layer": n, "type": type(m).__name__, "params": m.weight.numel(), **tensor_stats(m.weight)}
            for n, m in layers.items()]
    return pd.DataFrame(rows, columns=STAT_COLUMNS)


# ---- Hessian (Hutchinson) --------------------------------------------------------------------

def _grad_model(model: nn.Module, names: Sequence[str]) -> tuple[nn.Module, list[torch.Tensor]]:
    """A private copy (eval, no in-place activations) whose only trainable tensors are the
    weights of `names`."""
    m = private_copy(model)
    params = [get_module(m, n).weight.requires_grad_(True) for n in names]
    return m, params


@dataclass(frozen=True, eq=False)
class HessianEstimate:
    """Hutchinson's estimate for one layer: the trace, the diagonal (shaped like the weight), the
    standard error of the trace and the Rademacher vectors drawn. Unpacks as (trace, diag)."""

    trace: float
    diag: torch.Tensor
    stderr: float
    n_vectors: int

    def __iter__(self) -> Iterator[float | torch.Tensor]:
        return iter((self.trace, self.diag))

    def __getitem__(self, i: int) -> float | torch.Tensor:
        return (self.trace, self.diag)[i]


def _layer_generator(seed: int, name: str) -> torch.Generator:
    """The layer's own stream of vectors: the same for a layer whichever other layers are asked."""
    state = np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _batch_loss(m: nn.Module, data: Dataset, split: str, batches: int, batch_size: int) -> torch.Tensor:
    """The mean over the first `batches` batches of the batch-mean cross-entropy: one graph."""
    losses = [F.cross_entropy(m(x), y) for x, y in islice(data.split(split).batches(batch_size), batches)]
    if not losses:
        raise ConfigError(f"The {split} split is empty: no batch for the Hessian.")
    return torch.stack(losses).mean()


def _layer_estimate(grad: torch.Tensor, param: torch.Tensor, gen: torch.Generator, n_max: int, n_min: int,
                    rtol: float) -> HessianEstimate:
    """Rademacher vectors v on this layer alone, Hv = d(grad . v)/d(param) (the layer's diagonal
    block of the Hessian), until the trace's standard error is within rtol of |trace| (after
    n_min vectors) or n_max vectors are drawn."""
    diag = torch.zeros_like(param, dtype=torch.float64)
    quad: list[float] = []                                        # v^T H v per vector
    while len(quad) < n_max:
        v = torch.randint(0, 2, param.shape, generator=gen).to(param.dtype) * 2 - 1   # +-1, like param
        if grad.requires_grad:
            (hv,) = torch.autograd.grad(grad, param, grad_outputs=v, retain_graph=True, allow_unused=True)
        else:                                                     # the gradient is constant here
            hv = None
        vhv = (v * hv).double() if hv is not None else torch.zeros_like(diag)
        diag += vhv
        quad.append(vhv.sum().item())
        if len(quad) >= n_min and rtol > 0 and _stderr(quad) <= rtol * abs(float(np.mean(quad))):
            break
    return HessianEstimate(float(np.mean(quad)), (diag / len(quad)).to(param.dtype), _stderr(quad), len(quad))


def _stderr(samples: Sequence[float]) -> float:
    return float(np.std(samples, ddof=1) / np.sqrt(len(samples))) if len(samples) > 1 else float("nan")


def hutchinson(model: nn.Module, data: Dataset, layers: Sequence[str] | None = None, n_samples: int = 256,
               batches: int = 2, batch_size: int = 128, seed: int = 0, split: str = "train",
               rtol: float = 0.05, min_samples: int = 16) -> dict[str, HessianEstimate]:
    """Per layer, Hutchinson's estimate (Bekas et al. 2007) of the Hessian of the mean cross-entropy
    over the first `batches` batches w.r.t. that layer's weight alone: tr(H) = E[v^T H v] and
    diag(H) = E[v * Hv] over Rademacher vectors v on that layer's weight, so no cross-layer term
    enters. Each layer draws vectors until the standard error of its trace is at most
    rtol * |trace| (checked from `min_samples` vectors on) or `n_samples` vectors are drawn;
    rtol=0 always draws `n_samples` (and is exactly unbiased; the stop leans slightly toward a
    larger |trace|). The stop watches the trace; the diagonal is noisier.
    Hessian-vector products by double backward through one graph. Seeded per (seed, layer name).

    Returns:
        {layer: HessianEstimate(trace, diag, stderr, n_vectors)}; it unpacks as (trace, diag).
    """
    if n_samples < 1 or batches < 1 or min_samples < 1:
        raise ConfigError("n_samples, batches and min_samples must be at least 1.")
    if not rtol >= 0:
        raise ConfigError(f"rtol must be >= 0; got {rtol}.")
    names = list(sweep_layers(model, layers, include_embedding=True))
    m, params = _grad_model(model, names)
    grads = torch.autograd.grad(_batch_loss(m, data, split, batches, batch_size), params, create_graph=True)
    n_min = min(max(min_samples, 2), n_samples)
    return {n: _layer_estimate(g, p, _layer_generator(seed, n), n_samples, n_min, rtol)
            for n, g, p in zip(names, grads, params)}


def hessian_trace(model: nn.Module, data: Dataset, n_samples: int = 256, batches: int = 2, seed: int = 0,
                  layers: Sequence[str] | None = None, batch_size: int = 128,
                  split: str = "train", rtol: float = 0.05) -> dict[str, float]:
    """Hutchinson estimate of the Hessian trace of the loss w.r.t. each layer's weight (HAWQ-v2):
    the `trace` of `hutchinson` (per-layer vectors, adaptive stop at rtol). Seeded."""
    est = hutchinson(model, data, layers, n_samples, batches, batch_size, seed, split, rtol)
    return {n: e.trace for n, e in est.items()}


# ---- captum importance -----------------------------------------------------------------------

def _layer_attribution(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: torch.Tensor,
                       method: str, n_steps: int) -> torch.Tensor:
    from captum.attr import LayerConductance, LayerGradientXActivation

    if method == "gradxact":
        return LayerGradientXActivation(model, layer).attribute(x, target=target)
    if method == "conductance":
        return LayerConductance(model, layer).attribute(x, target=target, n_steps=n_steps,
                                                        internal_batch_size=max(len(x), 1) * 4)
    raise ConfigError(f"Unknown importance method {method!r}; use one of {', '.join(IMPORTANCE_METHODS)}.")


def _channel_scores(attr: torch.Tensor) -> torch.Tensor:
    """|attribution summed over each output channel's positions|, averaged over samples: (C,).
    attr: (N, C) for Linear, (N, C, ...) for Conv."""
    per_channel = attr.flatten(2).sum(2) if attr.dim() > 2 else attr  # (N, C)
    return per_channel.abs().mean(0).detach()


def _samples(data: Dataset, split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    part = data.split(split)
    if len(part) == 0:
        raise ConfigError(f"The {split} split is empty: no samples for importance.")
    return part.X[:n], part.y[:n]


def channel_importance(model: nn.Module, data: Dataset, layer: str, method: str = "gradxact", n: int = 64,
                       split: str = "val", n_steps: int = 16) -> torch.Tensor:
    """Importance of each output channel of `layer` (C,): the first-order Taylor score
    |sum over positions of attribution| (Molchanov et al. 2017 for gradxact), mean over the
    first `n` samples of the split, for the true class. Runs on a private copy; no hook is left."""
    sweep_layers(model, [layer], include_embedding=True)
    m = private_copy(model)
    x, y = _samples(data, split, n)
    with hooks_guard(m):
        attr = _layer_attribution(m, get_module(m, layer), x, y, method, n_steps)
    return _channel_scores(attr)


def layer_importance(model: nn.Module, data: Dataset, method: str = "gradxact", n: int = 64,
                     layers: Sequence[str] | None = None, split: str = "val", n_steps: int = 16) -> dict[str, float]:
    """Per layer, the sum over output channels of `channel_importance` (captum
    LayerGradientXActivation or LayerConductance, absolute, averaged over samples)."""
    names = list(sweep_layers(model, layers))
    m = private_copy(model)
    x, y = _samples(data, split, n)
    out = {}
    with hooks_guard(m):
        for name in names:
            attr = _layer_attribution(m, get_module(m, name), x, y, method, n_steps)
            out[name] = _channel_scores(attr).sum().item()
    return out


# ---- against the sweep -------------------------------------------------------------------------

def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (ties get average ranks); NaN for fewer than 3 pairs without
    NaN or a constant side."""
    frame = pd.DataFrame({"a": np.asarray(a, float), "b": np.asarray(b, float)}).dropna()
    if len(frame) < 3:
        return float("nan")
    ra, rb = frame["a"].rank(), frame["b"].rank()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def measured_sensitivity(sweep: pd.DataFrame, level: float | None = None, value: str = "accuracy") -> pd.Series:
    """Per layer (in sweep order), how much the sweep hurt: the drop of accuracy (or rise of loss)
    from the baseline at `level`, or, without a level, the area under the drop curve divided by
    the span of levels (the mean drop over the swept range). Baseline: sweep.attrs, else the best
    value in the sweep."""
    if value not in ("accuracy", "loss"):
        raise ConfigError(f"value must be 'accuracy' or 'loss'; got {value!r}.")
    if "level" not in sweep.columns:
        raise ConfigError("The sweep has no 'level' column: use a prune or quantize sweep.")
    sign = 1.0 if value == "accuracy" else -1.0
    base = sweep.attrs.get(f"baseline_{value}")
    base = base if base is not None else (sweep[value].max() if value == "accuracy" else sweep[value].min())
    out = {}
    for layer, part in sweep.groupby("layer", sort=False):
        part = part.sort_values("level")
        drop = sign * (base - part[value].to_numpy(float))       # (levels,)
        levels = part["level"].to_numpy(float)
        if level is not None:
            hit = np.isclose(levels, level)
            if not hit.any():
                raise ConfigError(f"Level {level} is not in the sweep; levels: {sorted(set(levels))}.")
            out[layer] = float(drop[hit][0])
        elif len(levels) > 1 and levels[-1] > levels[0]:
            out[layer] = float(np.trapezoid(drop, levels) / (levels[-1] - levels[0]))
        else:
            out[layer] = float(drop.mean())
    return pd.Series(out, name="sensitivity")


def rank_correlation(proxy: dict[str, float], sweep: pd.DataFrame, level: float | None = None,
                     value: str = "accuracy") -> float:
    """Spearman correlation between a proxy's per-layer values and the measured sensitivity
    (`measured_sensitivity(sweep, level, value)`) over the layers present in both."""
    measured = measured_sensitivity(sweep, level, value)
    common = [n for n in measured.index if n in proxy]
    return spearman([proxy[n] for n in common], [measured[n] for n in common])


def proxy_table(model: nn.Module, data: Dataset, sweep: pd.DataFrame, level: float | None = None,
                hessian_samples: int = 256, importance_samples: int = 64,
                methods: Sequence[str] = IMPORTANCE_METHODS, seed: int = 0,
                hessian_rtol: float = 0.05) -> tuple[pd.DataFrame, dict[str, float]]:
    """Every proxy per swept layer beside the measured sensitivity, and each proxy's Spearman
    correlation with it. The Hessian trace comes with its standard error (`hutchinson`: at most
    `hessian_samples` vectors per layer, fewer once the error is within `hessian_rtol` of the
    trace); the error is no proxy and gets no correlation.

    Returns:
        (DataFrame: layer, sensitivity, params, mean_abs, std, kurtosis, outlier_frac, range,
        hessian_trace, hessian_trace_se, hessian_per_param, obd_saliency, and one column per
        importance method; {proxy column: Spearman rho}, hessian_trace_se left out).
    """
    names = [n for n in dict.fromkeys(sweep["layer"])]
    if not names:
        raise UnsupportedLayerError("The sweep has no rows: run it before computing proxies.")
    stats = weight_stats(model).set_index("layer").loc[names]
    table = pd.DataFrame({"layer": names, "sensitivity": measured_sensitivity(sweep, level).loc[names].to_numpy()})
    for col in ("params", "mean_abs", "std", "kurtosis", "outlier_frac", "range"):
        table[col] = stats[col].to_numpy()
    hess = hutchinson(model, data, names, n_samples=hessian_samples, seed=seed, rtol=hessian_rtol)
    weights = {n: get_module(model, n).weight.detach() for n in names}
    table["hessian_trace"] = [hess[n].trace for n in names]
    table["hessian_trace_se"] = [hess[n].stderr for n in names]
    table["hessian_per_param"] = [hess[n].trace / weights[n].numel() for n in names]
    table["obd_saliency"] = [0.5 * (hess[n].diag * weights[n].double().pow(2)).sum().item() for n in names]
    for method in methods:
        scores = layer_importance(model, data, method, n=importance_samples, layers=names)
        table[method] = [scores[n] for n in names]
    proxies = [c for c in table.columns if c not in ("layer", "sensitivity", "hessian_trace_se")]
    corr = {c: spearman(table[c], table["sensitivity"]) for c in proxies}
    return table, corr

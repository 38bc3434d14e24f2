"""Cheap guesses of layer sensitivity, and how well each ranks the layers as a sweep measured.

Proxies: weight statistics; the Hessian trace per layer by Hutchinson's estimator with an
Optimal-Brain-Damage saliency from the same Hessian-vector products (in `hessian`); and the
layer's importance by captum (gradient x activation or conductance of its output). A proxy is
read "larger = more sensitive"; `rank_correlation` gives its Spearman correlation with the
measured sensitivity, so a good proxy scores near +1 (a good inverse proxy near -1).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from torch import nn

from compression.analysis.attribution import hooks_guard
from compression.analysis.hessian import INTRA_OP_THREADS, HessianEstimate, Progress, hutchinson, intra_op_threads
from compression.analysis.sweep_setup import private_copy, sweep_layers
from compression.core.errors import ConfigError, UnsupportedLayerError
from compression.core.modules import get_module, weight_layers
from compression.data.datasets import Dataset
from compression.methods.training import StopFlag, is_stopped

IMPORTANCE_METHODS = ("gradxact", "conductance")
STAT_COLUMNS = ["layer", "type", "params", "mean_abs", "std", "kurtosis", "outlier_frac", "min", "max", "range"]
HESSIAN_COLUMNS = ("hessian_trace", "hessian_trace_se", "hessian_per_param", "obd_saliency")


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
                     layers: Sequence[str] | None = None, split: str = "val", n_steps: int = 16,
                     callback: Progress | None = None, stop: StopFlag = None) -> dict[str, float]:
    """Per layer, the sum over output channels of `channel_importance` (captum
    LayerGradientXActivation or LayerConductance, absolute, averaged over samples).
    callback(done, total, message) after each layer; when `stop` is set, the layers so far."""
    if method not in IMPORTANCE_METHODS:
        raise ConfigError(f"Unknown importance method {method!r}; use one of {', '.join(IMPORTANCE_METHODS)}.")
    names = list(sweep_layers(model, layers))
    m = private_copy(model)
    x, y = _samples(data, split, n)
    out = {}
    with hooks_guard(m):
        for i, name in enumerate(names):
            if is_stopped(stop):
                break
            attr = _layer_attribution(m, get_module(m, name), x, y, method, n_steps)
            out[name] = _channel_scores(attr).sum().item()
            if callback is not None:
                callback(i + 1, len(names), f"{method} importance of {name}")
    return out


# ---- against the sweep -------------------------------------------------------------------------

def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (`scipy.stats.spearmanr`: ties get average ranks) over the pairs
    without NaN; NaN for fewer than 3 such pairs or a constant side."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if len(x) < 3 or (x == x[0]).all() or (y == y[0]).all():
        return float("nan")
    return float(spearmanr(x, y).statistic)


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


def _shifted(callback: Progress | None, start: int, total: int) -> Progress | None:
    """A phase's callback(done, phase total, message) as callback(start + done, total, message)."""
    if callback is None:
        return None
    return lambda done, _, message: callback(start + done, total, message)


def proxy_table(model: nn.Module, data: Dataset, sweep: pd.DataFrame, level: float | None = None,
                hessian_samples: int = 256, importance_samples: int = 64,
                methods: Sequence[str] = IMPORTANCE_METHODS, seed: int = 0,
                hessian_rtol: float = 0.05, callback: Progress | None = None, stop: StopFlag = None,
                workers: int | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """Every proxy per swept layer beside the measured sensitivity, and each proxy's Spearman
    correlation with it. The Hessian trace comes with its standard error (`hutchinson`: at most
    `hessian_samples` vectors per layer, fewer once the error is within `hessian_rtol` of the
    trace, on `workers` threads that each take whole layers); the error is no proxy and gets no
    correlation. The importance passes run on INTRA_OP_THREADS intra-op threads.

    Args:
        callback: called as callback(done, total, message): one step per layer for the Hessian,
            then one per layer for each importance method (total = layers * (1 + len(methods))),
            with messages within a layer's Hessian as well.
        stop: a threading.Event or a callable. When set, the table comes back at once with what
            is finished: attrs['stopped'] is True, attrs['incomplete'] names the proxy columns not
            finished (NaN where missing, and NaN correlation, even for the layers that are done).

    Returns:
        (DataFrame: layer, sensitivity, params, mean_abs, std, kurtosis, outlier_frac, range,
        hessian_trace, hessian_trace_se, hessian_per_param, obd_saliency, and one column per
        importance method; attrs: stopped, incomplete, hessian_vectors {layer: n};
        {proxy column: Spearman rho}, hessian_trace_se left out).
    """
    names = [n for n in dict.fromkeys(sweep["layer"])]
    if not names:
        raise UnsupportedLayerError("The sweep has no rows: run it before computing proxies.")
    stats = weight_stats(model).set_index("layer").loc[names]
    table = pd.DataFrame({"layer": names, "sensitivity": measured_sensitivity(sweep, level).loc[names].to_numpy()})
    for col in ("params", "mean_abs", "std", "kurtosis", "outlier_frac", "range"):
        table[col] = stats[col].to_numpy()
    total = len(names) * (1 + len(methods))
    hess = hutchinson(model, data, names, n_samples=hessian_samples, seed=seed, rtol=hessian_rtol,
                      callback=_shifted(callback, 0, total), stop=stop, workers=workers)
    _hessian_columns(table, model, hess)
    incomplete = [] if len(hess) == len(names) else list(HESSIAN_COLUMNS)
    with intra_op_threads(INTRA_OP_THREADS):
        for i, method in enumerate(methods):
            scores = {} if incomplete else layer_importance(
                model, data, method, n=importance_samples, layers=names,
                callback=_shifted(callback, len(names) * (1 + i), total), stop=stop)
            table[method] = [scores.get(n, float("nan")) for n in names]
            incomplete += [] if len(scores) == len(names) else [method]
    table.attrs.update({"stopped": bool(incomplete), "incomplete": incomplete,
                        "hessian_vectors": {n: e.n_vectors for n, e in hess.items()}})
    proxies = [c for c in table.columns if c not in ("layer", "sensitivity", "hessian_trace_se")]
    corr = {c: float("nan") if c in incomplete else spearman(table[c], table["sensitivity"]) for c in proxies}
    return table, corr


def _hessian_columns(table: pd.DataFrame, model: nn.Module, hess: dict[str, HessianEstimate]) -> None:
    """The HESSIAN_COLUMNS of `table` from the estimates (NaN for a layer without one)."""
    nan = float("nan")
    weights = {n: get_module(model, n).weight.detach() for n in table["layer"]}
    table["hessian_trace"] = [hess[n].trace if n in hess else nan for n in weights]
    table["hessian_trace_se"] = [hess[n].stderr if n in hess else nan for n in weights]
    table["hessian_per_param"] = [hess[n].trace / w.numel() if n in hess else nan for n, w in weights.items()]
    table["obd_saliency"] = [0.5 * (hess[n].diag * w.double().pow(2)).sum().item() if n in hess else nan
                             for n, w in weights.items()]

"""Cheap guesses of layer sensitivity, and how well each ranks the layers as a sweep measured.

Proxies: weight statistics; the Hessian trace per layer by Hutchinson's estimator (as HAWQ-v2 and
PyHessian), with an Optimal-Brain-Damage saliency from the same Hessian-vector products; and the
layer's importance by captum (gradient x activation or conductance of its output). A proxy is
read "larger = more sensitive"; `rank_correlation` gives its Spearman correlation with the
measured sensitivity, so a good proxy scores near +1 (a good inverse proxy near -1).
"""
from __future__ import annotations

import threading
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from compression.analysis.attribution import hooks_guard
from compression.data.datasets import Dataset
from compression.core.errors import ConfigError, UnsupportedLayerError
from compression.core.modules import get_module, weight_layers
from compression.analysis.sensitivity import private_copy, sweep_layers
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


# ---- Hessian (Hutchinson) --------------------------------------------------------------------

Progress = Callable[[int, int, str], None]       # callback(done, total, message)
INTRA_OP_THREADS = 1
"""Intra-op threads per Hessian worker and for the importance passes. A Hessian-vector product of a
small network is hundreds of small kernels; two intra-op threads wait for each other after every
one, and on a shared CPU a descheduled thread stalls each kernel (the ResNet's proxies on two
threads of a two-core machine: 10 s idle, 270 s beside one busy process). `hutchinson` gets its
parallelism from workers that each take whole layers instead (6 s idle, 9 s beside it)."""
PROGRESS_EVERY = 8                                # vectors between progress messages within a layer


@contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to `n` inside the block (None: left as it is), then restored.
    The OpenMP count is the calling thread's own; MKL's (matrix products) is the process's."""
    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _fold_batchnorm_(m: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Fold each eval-mode BatchNorm that alone reads a convolution's output into that convolution,
    as torch.nn.utils.fusion does: W' = s * W with s = gamma / sqrt(running_var + eps) per output
    channel. The same function with fewer operations to differentiate twice; the Hessian in W
    follows from the one in W' exactly: H_W v = s * H_W'(s * v). Changes `m`'s submodules in place.

    Returns:
        (the folded fx GraphModule, {conv name: s shaped to broadcast over its weight}), or (m, {})
        when fx cannot trace `m` or nothing folds.
    """
    try:
        gm = fx.symbolic_trace(m)
    except Exception:  # fx raises many types on data-dependent control flow; TorchScript does not trace
        return m, {}
    mods = dict(gm.named_modules())
    calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    scales: dict[str, torch.Tensor] = {}
    for node in list(gm.graph.nodes):
        bn = mods.get(node.target) if node.op == "call_module" else None
        src = node.args[0] if bn is not None and node.args else None
        if not (isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.track_running_stats
                and bn.running_var is not None and isinstance(src, fx.Node) and src.op == "call_module"
                and len(src.users) == 1 and calls[src.target] == 1
                and type(mods[src.target]) in (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            continue
        conv = mods[src.target]
        gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
        scale = (gamma * torch.rsqrt(bn.running_var + bn.eps)).detach().to(conv.weight.dtype)  # (C_out,)
        parent, _, leaf = src.target.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, leaf, fuse_conv_bn_eval(conv, bn))
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
        scales[src.target] = scale.reshape(-1, *[1] * (conv.weight.dim() - 1))
    if not scales:
        return m, {}
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm, scales


def _grad_model(model: nn.Module, names: Sequence[str], x: torch.Tensor | None = None,
                fold: bool = True) -> tuple[nn.Module, list[torch.Tensor], dict[str, torch.Tensor]]:
    """A private copy (eval, no in-place activations) whose only trainable tensors are the
    weights of `names`, with BatchNorm folded into the convolutions before it (`_fold_batchnorm_`)
    when `fold` and the folded copy gives the same logits on `x` (to float rounding).

    Returns:
        (model, [weight per name], {name: BatchNorm scale s} for the folded layers among `names`).
    """
    m, scales = private_copy(model), {}
    if fold and x is not None:
        with torch.no_grad():
            ref = m(x)
            folded, scales = _fold_batchnorm_(m)
            if scales and (folded(x) - ref).abs().max() <= 1e-4 * (1 + ref.abs().max()):
                m = folded
            elif scales:  # folding changed m's submodules: start again from the model as given
                m, scales = private_copy(model), {}
    params = [get_module(m, n).weight.requires_grad_(True) for n in names]
    return m, params, {n: s for n, s in scales.items() if n in names}


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


@dataclass(frozen=True)
class _Budget:
    """How many Rademacher vectors a layer draws: at least n_min, at most n_max, stopping once the
    trace's standard error is within rtol of |trace| (rtol=0: always n_max)."""

    n_max: int
    n_min: int
    rtol: float


def _layer_generator(seed: int, name: str) -> torch.Generator:
    """The layer's own stream of vectors: the same for a layer whichever other layers are asked."""
    state = np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _loss_batches(data: Dataset, split: str, batches: int, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = list(islice(data.split(split).batches(batch_size), batches))
    if not out:
        raise ConfigError(f"The {split} split is empty: no batch for the Hessian.")
    return out


def _batch_loss(m: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The mean over the batches of the batch-mean cross-entropy: one graph."""
    return torch.stack([F.cross_entropy(m(x), y) for x, y in batches]).mean()


def _layer_estimate(grad: torch.Tensor, param: torch.Tensor, gen: torch.Generator, budget: _Budget,
                    scale: torch.Tensor | None = None, stop: StopFlag = None,
                    tick: Callable[[list[float]], None] | None = None) -> HessianEstimate | None:
    """Rademacher vectors v on this layer alone, Hv = d(grad . v)/d(param) (the layer's diagonal
    block of the Hessian), until `budget` says enough. With `scale` s, param is a folded weight
    s * W and Hv in W is s * H'(s * v). `tick(quadratic forms so far)` after each vector.
    Returns None when `stop` is set before the layer is done."""
    diag = torch.zeros_like(param, dtype=torch.float64)
    quad: list[float] = []                                        # v^T H v per vector
    while len(quad) < budget.n_max:
        if is_stopped(stop):
            return None
        v = torch.randint(0, 2, param.shape, generator=gen).to(param.dtype) * 2 - 1   # +-1, like param
        hv = None                                                 # None: the gradient is constant here
        if grad.requires_grad:
            u = v if scale is None else v * scale
            (hv,) = torch.autograd.grad(grad, param, grad_outputs=u, retain_graph=True, allow_unused=True)
            hv = hv if hv is None or scale is None else hv * scale
        vhv = (v * hv).double() if hv is not None else torch.zeros_like(diag)
        diag += vhv
        quad.append(vhv.sum().item())
        if tick is not None:
            tick(quad)
        if len(quad) >= budget.n_min and budget.rtol > 0 and _stderr(quad) <= budget.rtol * abs(float(np.mean(quad))):
            break
    return HessianEstimate(float(np.mean(quad)), (diag / len(quad)).to(param.dtype), _stderr(quad), len(quad))


def _stderr(samples: Sequence[float]) -> float:
    return float(np.std(samples, ddof=1) / np.sqrt(len(samples))) if len(samples) > 1 else float("nan")


class _LayerProgress:
    """Progress of the layers, whichever worker finishes them: callback(layers done, total, message)
    after each layer and every PROGRESS_EVERY vectors within one, one call at a time."""

    def __init__(self, callback: Progress | None, total: int):
        self.callback, self.total, self.finished, self.lock = callback, total, 0, threading.Lock()

    def say(self, message: str, finished: int = 0) -> None:
        with self.lock:
            self.finished += finished
            if self.callback is not None:
                self.callback(self.finished, self.total, message)

    def ticker(self, name: str) -> Callable[[list[float]], None] | None:
        if self.callback is None:
            return None

        def tick(quad: list[float]) -> None:
            if len(quad) % PROGRESS_EVERY == 0:
                self.say(f"Hessian of {name}: {len(quad)} vectors, trace {np.mean(quad):.4g} ± {_stderr(quad):.2g}")
        return tick

    def done(self, name: str, est: HessianEstimate) -> None:
        self.say(f"Hessian of {name}: trace {est.trace:.4g} ± {est.stderr:.2g} ({est.n_vectors} vectors)", 1)


def hutchinson(model: nn.Module, data: Dataset, layers: Sequence[str] | None = None, n_samples: int = 256,
               batches: int = 2, batch_size: int = 128, seed: int = 0, split: str = "train",
               rtol: float = 0.05, min_samples: int = 16, callback: Progress | None = None,
               stop: StopFlag = None, workers: int | None = None,
               fold_batchnorm: bool = True) -> dict[str, HessianEstimate]:
    """Per layer, Hutchinson's estimate (Bekas et al. 2007) of the Hessian of the mean cross-entropy
    over the first `batches` batches w.r.t. that layer's weight alone: tr(H) = E[v^T H v] and
    diag(H) = E[v * Hv] over Rademacher vectors v on that layer's weight, so no cross-layer term
    enters. Each layer draws vectors until the standard error of its trace is at most
    rtol * |trace| (checked from `min_samples` vectors on) or `n_samples` vectors are drawn;
    rtol=0 always draws `n_samples` (and is exactly unbiased; the stop leans slightly toward a
    larger |trace|). The stop watches the trace; the diagonal is noisier.
    Hessian-vector products by double backward through one graph, with eval-mode BatchNorm folded
    into the convolution before it (the same Hessian, fewer operations; `fold_batchnorm=False`
    keeps it). Seeded per (seed, layer name): the numbers do not depend on `workers`.

    Args:
        callback: called as callback(layers done, total layers, message) after each layer and
            every PROGRESS_EVERY vectors within one; from the worker threads, one call at a time.
        stop: a threading.Event or a callable; when set, the layers finished so far are returned.
        workers: layers estimated at once, each worker on INTRA_OP_THREADS intra-op threads
            (default: torch's intra-op thread count; 1 runs them in turn in the calling thread).

    Returns:
        {layer: HessianEstimate(trace, diag, stderr, n_vectors)} in layer order; it unpacks as
        (trace, diag).
    """
    if n_samples < 1 or batches < 1 or min_samples < 1:
        raise ConfigError("n_samples, batches and min_samples must be at least 1.")
    if not rtol >= 0:
        raise ConfigError(f"rtol must be >= 0; got {rtol}.")
    names = list(sweep_layers(model, layers, include_embedding=True))
    budget = _Budget(n_samples, min(max(min_samples, 2), n_samples), rtol)
    workers = max(1, min(len(names), workers or torch.get_num_threads()))
    with intra_op_threads(INTRA_OP_THREADS):
        loss_batches = _loss_batches(data, split, batches, batch_size)
        m, params, scales = _grad_model(model, names, loss_batches[0][0], fold_batchnorm)
        grads = torch.autograd.grad(_batch_loss(m, loss_batches), params, create_graph=True)
    progress = _LayerProgress(callback, len(names))

    def estimate(i: int) -> HessianEstimate | None:
        name = names[i]
        with intra_op_threads(INTRA_OP_THREADS):   # per thread: a worker starts with torch's setting
            est = _layer_estimate(grads[i], params[i], _layer_generator(seed, name), budget, scales.get(name),
                                  stop, progress.ticker(name))
        if est is not None:
            progress.done(name, est)
        return est

    if workers == 1:
        found = [estimate(i) for i in range(len(names))]
    else:  # autograd runs concurrent grad calls on one retained graph; each layer has its own vectors
        with ThreadPoolExecutor(workers, thread_name_prefix="hutchinson") as pool:
            found = list(pool.map(estimate, range(len(names))))
    return {n: e for n, e in zip(names, found) if e is not None}


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

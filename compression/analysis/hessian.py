"""The Hessian proxy: per layer, Hutchinson's estimate of the Hessian trace and diagonal of the loss
w.r.t. that layer's weight (as HAWQ-v2 and PyHessian), the basis of the Hessian trace and
Optimal-Brain-Damage columns of `proxies.proxy_table`.

Hessian-vector products by double backward through one graph, with eval-mode BatchNorm folded into
the convolution before it; each layer draws its own seeded Rademacher vectors until the trace's
standard error is small enough, on worker threads that each take whole layers.
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
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from compression.analysis.sweep_setup import private_copy, sweep_layers
from compression.core.errors import ConfigError
from compression.core.modules import get_module
from compression.data.datasets import Dataset
from compression.methods.training import StopFlag, is_stopped

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

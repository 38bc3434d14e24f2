"""Per-layer sensitivity sweeps: compress one layer at a time, at each level, and measure the model.

The numbers equal a naive loop's (`naive_prune_sweep`: deep copy per point, compress one layer,
evaluate the whole split, as Distiller does) but are computed without its waste: one private copy
of the model, weights applied and restored in place, `torch.inference_mode`, and only the part of
the network from the layer under test onwards recomputed (`sweep_engine.SweepEngine`; what a point
does to a layer is in `perturbations`, the copy and the evaluation data in `sweep_setup`). A model
fx cannot trace runs the full forward for every point (`DataFrame.attrs['reuse']` is False and
`attrs['reuse_note']` says why).

Every sweep returns a DataFrame with one row per (layer, level): columns layer, level, accuracy
(0-1) and loss (mean cross-entropy), plus acc_lo/acc_hi with `subsample`. `attrs` holds
baseline_accuracy, baseline_loss, split, n_samples, seconds, stopped, reuse, reuse_note and
channels_last (image CNNs are run in the channels-last layout, which is faster on CPU: accuracies
equal the naive loop's, losses agree to float rounding, ~1e-7).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Sequence

import pandas as pd
import torch
from torch import nn

from compression.analysis.perturbations import (FLOAT_BITS, QuantSpec, activation_fn, activation_qparams,
                                                prune_then_quantize, prune_weight, sorted_pruner)
from compression.analysis.sweep_engine import InputFn, SweepEngine, WeightFn
from compression.analysis.sweep_setup import EvalSet, eval_set, score, sweep_layers
from compression.core.errors import ConfigError
from compression.core.modules import copy_model, refuse_frozen_code
from compression.data.datasets import Dataset
from compression.methods.training import StopFlag, is_stopped

DEFAULT_LEVELS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(20))  # 0.0 .. 0.95
DEFAULT_BITS: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)

Callback = Callable[[int, int, dict], None]


# ---- running the points ----------------------------------------------------------------------

Point = tuple[str, Any, dict]   # (layer, level given to the weight/input functions, row columns)


def _frame(rows: list[dict], columns: list[str], attrs: dict) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=columns)
    df.attrs.update(attrs)
    return df


def _columns(keys: list[str], ev: EvalSet) -> list[str]:
    return ["layer", *keys, "accuracy", "loss"] + (["acc_lo", "acc_hi"] if ev.resamples is not None else [])


def run_points(engine: SweepEngine, points: list[Point], weight_fn: WeightFn | None, input_fn: InputFn,
               callback: Callback | None, stop: StopFlag, keys: list[str], split: str,
               kind: str, extra: dict | None = None) -> pd.DataFrame:
    """Evaluate each point with `engine`; stop early (keeping the rows so far) when `stop` is set."""
    start = time.perf_counter()
    rows: list[dict] = []
    stopped = False
    for i, (layer, level, cols) in enumerate(points):
        if is_stopped(stop):
            stopped = True
            break
        row = {"layer": layer, **cols, **engine.evaluate(layer, level, weight_fn, input_fn)}
        rows.append(row)
        if callback is not None:
            callback(i + 1, len(points), row)
    base = engine.baseline()
    return _frame(rows, _columns(keys, engine.ev), {
        "baseline_accuracy": base["accuracy"], "baseline_loss": base["loss"], "split": split,
        "n_samples": len(engine.ev.y), "seconds": time.perf_counter() - start, "stopped": stopped,
        "reuse": engine.reuse, "reuse_note": engine.note, "channels_last": engine.channels_last, "kind": kind,
        **(extra or {})})


def _points(layers: Iterable[str], levels: Sequence, key: str = "level") -> list[Point]:
    return [(n, lv, {key: lv}) for n in layers for lv in levels]


def _check_levels(levels: Sequence[float]) -> list[float]:
    levels = [float(v) for v in levels]
    if not levels or any(not 0.0 <= v < 1.0 for v in levels):
        raise ConfigError(f"Sparsity levels must be a non-empty list of numbers in [0, 1); got {levels!r}.")
    return levels


def check_bits(bits: Sequence[int]) -> list[int]:
    bits = [int(b) for b in bits]
    if not bits or any(not 2 <= b <= 16 for b in bits):
        raise ConfigError(f"Bit-widths must be a non-empty list of integers in [2, 16]; got {bits!r}.")
    return bits


# ---- public sweeps -------------------------------------------------------------------------------

def prune_sweep(model: nn.Module, data: Dataset, levels: Sequence[float] = DEFAULT_LEVELS,
                layers: Sequence[str] | None = None, split: str = "val", callback: Callback | None = None,
                stop: StopFlag = None, subsample: int | None = None, batch_size: int | None = None,
                include_embedding: bool = False, seed: int = 0, reuse: bool = True,
                device: str | None = None) -> pd.DataFrame:
    """Magnitude-prune one layer at a time at each sparsity level; rows (layer, level, accuracy, loss).

    Args:
        levels: sparsities in [0, 1), each the fraction of the layer's weights zeroed.
        callback: called as callback(done, total, row) after each point.
        stop: a threading.Event or a callable; when set, the rows so far are returned.
        subsample: evaluate a seeded subset of this many samples, adding 95% bootstrap
            confidence intervals of the accuracy (acc_lo, acc_hi).
        batch_size: evaluation batch (default: the whole split at once).
        reuse: False computes every point with the full forward (for benchmarks).
        device: where the private copy runs ('cpu', 'cuda'; see compression.core.devices).
    """
    levels = _check_levels(levels)
    names = list(sweep_layers(model, layers, include_embedding))
    engine = SweepEngine(model, eval_set(data, split, subsample, batch_size, seed), names, reuse, device)
    return run_points(engine, _points(names, levels), sorted_pruner(), None, callback, stop, ["level"], split,
                      "prune")


def quant_sweep(model: nn.Module, data: Dataset, bits: Sequence[int] = DEFAULT_BITS,
                layers: Sequence[str] | None = None, split: str = "val", granularity: str = "channel",
                symmetric: bool = True, calibration: str = "minmax", percentile: float | None = None,
                activations: bool = False, callback: Callback | None = None, stop: StopFlag = None,
                subsample: int | None = None, batch_size: int | None = None,
                include_embedding: bool = False, seed: int = 0, reuse: bool = True,
                calibration_samples: int = 256, device: str | None = None) -> pd.DataFrame:
    """Fake-quantize one layer's weight at a time at each bit-width; rows (layer, level=bits,
    accuracy, loss). With `activations`, that layer's input is fake-quantized too (per tensor,
    calibrated as quantization.quantize does: min-max of the input over the first
    `calibration_samples` training samples). Other args as prune_sweep."""
    bits = check_bits(bits)
    spec = QuantSpec(granularity, symmetric, calibration, percentile)
    names = list(sweep_layers(model, layers, include_embedding))
    input_fn = None
    if activations:
        refuse_frozen_code(model, "an activation quantization sweep")
        qp = activation_qparams(model, data.train.X[:calibration_samples], names, bits, spec)
        input_fn = activation_fn(qp)
    engine = SweepEngine(model, eval_set(data, split, subsample, batch_size, seed), names, reuse, device)
    return run_points(engine, _points(names, bits), spec.weight, input_fn, callback, stop, ["level"], split,
                      "quantize", {"granularity": granularity, "symmetric": symmetric, "calibration": calibration,
                                   "percentile": percentile, "activations": activations})


def grid_sweep(model: nn.Module, data: Dataset, layer: str, sparsities: Sequence[float] = (0.0, 0.5, 0.8, 0.9),
               bits: Sequence[int] = (2, 4, 8, FLOAT_BITS), split: str = "val", granularity: str = "channel",
               symmetric: bool = True, calibration: str = "minmax", callback: Callback | None = None,
               stop: StopFlag = None, batch_size: int | None = None, device: str | None = None) -> pd.DataFrame:
    """One layer over sparsity x bit-width: magnitude-prune, then quantize the surviving weights.
    Rows (layer, sparsity, bits, accuracy, loss); bits >= 32 means pruned only."""
    sparsities = _check_levels(sparsities)
    bits = [int(b) for b in bits]
    check_bits([b for b in bits if b < FLOAT_BITS] or [8])
    sweep_layers(model, [layer], include_embedding=True)
    spec = QuantSpec(granularity, symmetric, calibration)
    points = [(layer, (s, b), {"sparsity": s, "bits": b}) for s in sparsities for b in bits]
    engine = SweepEngine(model, eval_set(data, split, None, batch_size), [layer], device=device)
    return run_points(engine, points, prune_then_quantize(spec), None, callback, stop, ["sparsity", "bits"],
                      split, "grid")


# ---- the naive reference and the cost floor --------------------------------------------------

def naive_points(model: nn.Module, ev: EvalSet, points: list[Point], weight_fn: WeightFn | None,
                 input_fn: InputFn = None) -> list[dict]:
    """Distiller's loop: per point, deep copy the model, change one layer, evaluate the whole set
    under torch.no_grad. Slow on purpose: the reference the fast sweep must equal."""
    rows = []
    for layer, level, cols in points:
        m = copy_model(model, fold=True).eval()
        module = m.get_submodule(layer)
        with torch.no_grad():
            if weight_fn is not None:
                module.weight.copy_(weight_fn(layer, module.weight.detach().clone(), level))
        handle = None
        if input_fn is not None:
            handle = module.register_forward_pre_hook(
                lambda mod, args, layer=layer, level=level: (input_fn(layer, args[0], level), *args[1:]))
        with torch.no_grad():
            logits = torch.cat([m(x) for x in ev.chunks()]).float()  # (N, classes)
        if handle is not None:
            handle.remove()
        rows.append({"layer": layer, **cols, **score(logits, ev)})
    return rows


def naive_prune_sweep(model: nn.Module, data: Dataset, levels: Sequence[float] = DEFAULT_LEVELS,
                      layers: Sequence[str] | None = None, split: str = "val", subsample: int | None = None,
                      batch_size: int | None = None, include_embedding: bool = False,
                      seed: int = 0) -> pd.DataFrame:
    """prune_sweep computed the naive way (same rows, same columns)."""
    levels = _check_levels(levels)
    names = list(sweep_layers(model, layers, include_embedding))
    ev = eval_set(data, split, subsample, batch_size, seed)
    return _frame(naive_points(model, ev, _points(names, levels), prune_weight), _columns(["level"], ev), {})


def naive_quant_sweep(model: nn.Module, data: Dataset, bits: Sequence[int] = DEFAULT_BITS,
                      layers: Sequence[str] | None = None, split: str = "val", granularity: str = "channel",
                      symmetric: bool = True, calibration: str = "minmax", activations: bool = False,
                      batch_size: int | None = None, calibration_samples: int = 256) -> pd.DataFrame:
    """quant_sweep computed the naive way (same rows, same columns)."""
    bits = check_bits(bits)
    spec = QuantSpec(granularity, symmetric, calibration)
    names = list(sweep_layers(model, layers))
    input_fn = None
    if activations:
        input_fn = activation_fn(activation_qparams(model, data.train.X[:calibration_samples], names, bits, spec))
    ev = eval_set(data, split, None, batch_size)
    return _frame(naive_points(model, ev, _points(names, bits), spec.weight, input_fn), _columns(["level"], ev), {})


def _best_time(fn: Callable[[], Any], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def sweep_cost_floor(model: nn.Module, data: Dataset, layers: Sequence[str] | None = None, split: str = "val",
                     repeats: int = 5, batch_size: int | None = None,
                     include_embedding: bool = False) -> pd.DataFrame:
    """The least a sweep point can cost: per layer, the time (best of `repeats`, ms) to evaluate
    only the part of the network from that layer onwards on cached inputs (suffix_ms), beside a
    full forward (full_ms). A sweep of L levels cannot take less than L * suffix_ms.sum()."""
    names = list(sweep_layers(model, layers, include_embedding))
    engine = SweepEngine(model, eval_set(data, split, None, batch_size), names)
    rows = []
    with torch.inference_mode():
        full = _best_time(engine._full, repeats)
        for name in names:
            suffix = _best_time(lambda: engine._replay(name, None, None), repeats) if engine.reuse else full
            rows.append({"layer": name, "suffix_ms": suffix, "full_ms": full})
    return _frame(rows, ["layer", "suffix_ms", "full_ms"], {"reuse": engine.reuse, "reuse_note": engine.note})

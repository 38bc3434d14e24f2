"""Sensitivity sweeps: the fast sweep (compression.analysis.sensitivity) against the naive Distiller-style
loop (deep copy + compress one layer + full evaluation under no_grad), on the largest built-in CNN,
every prunable layer x 20 sparsity levels (and every bit-width for the quantization sweep) on the
val split. Checks the two give identical numbers (accuracies bit for bit, losses to 1e-6), and
reports the cost floor: the time to evaluate only the part of the network after each layer
(compression.analysis.sensitivity.sweep_cost_floor)."""
from __future__ import annotations

import argparse
import json
import statistics
from typing import Callable

import pandas as pd

from benchmarks.common import in_turns, print_table
from compression.data import datasets as data_mod
from compression.analysis import sensitivity
from compression.analysis.sweep_setup import sweep_layers
from compression.models import zoo

COLUMNS = ["layer", "level", "accuracy", "loss"]


def largest_cnn() -> str:
    """The built-in CNN (any model with a Conv2d) with the most parameters."""
    import torch.nn as nn

    best, best_n = "", -1
    for name in zoo.list_models():
        m = zoo.build(name)
        n = sum(p.numel() for p in m.parameters())
        if any(isinstance(x, nn.Conv2d) for x in m.modules()) and n > best_n:
            best, best_n = name, n
    return best


def levels_for(quick: bool, n_levels: int | None) -> list[float]:
    n = n_levels or (2 if quick else 20)
    return [round(0.95 * i / max(n - 1, 1), 4) for i in range(n)] if n != 20 else list(sensitivity.DEFAULT_LEVELS)


def _interleaved(fns: dict[str, Callable[[], pd.DataFrame]], repeats: int) -> tuple[dict[str, float], dict]:
    """Median seconds of each fn, run in turn `repeats` times (drift hits all alike)."""
    times, outs = in_turns(fns, repeats)
    return {k: statistics.median(v) for k, v in times.items()}, outs


LOSS_TOLERANCE = 1e-6


def max_loss_diff(a: pd.DataFrame, b: pd.DataFrame) -> float:
    return float((a["loss"].reset_index(drop=True) - b["loss"].reset_index(drop=True)).abs().max())


def identical(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Same rows and the same accuracy at every point, bit for bit; losses equal up to float
    rounding (LOSS_TOLERANCE: the channels-last layout sums in another order, ~1e-7 apart)."""
    a = a[COLUMNS].reset_index(drop=True)
    b = b[COLUMNS].reset_index(drop=True)
    same_points = a[["layer", "level", "accuracy"]].equals(b[["layer", "level", "accuracy"]])
    return bool(same_points and max_loss_diff(a, b) <= LOSS_TOLERANCE)


def run(quick: bool = False, model_name: str | None = None, n_levels: int | None = None,
        repeats: int | None = None) -> dict:
    name = model_name or largest_cnn()
    model = zoo.load_pretrained(name).eval()
    data = data_mod.load_digits()
    levels = levels_for(quick, n_levels)
    bits = list(sensitivity.DEFAULT_BITS)[-2:] if quick else list(sensitivity.DEFAULT_BITS)
    repeats = repeats or (1 if quick else 3)
    layers = list(sweep_layers(model))

    t, out = _interleaved({"naive": lambda: sensitivity.naive_prune_sweep(model, data, levels),
                           "ours": lambda: sensitivity.prune_sweep(model, data, levels)}, repeats)
    tq, outq = _interleaved({"naive": lambda: sensitivity.naive_quant_sweep(model, data, bits),
                             "ours": lambda: sensitivity.quant_sweep(model, data, bits)}, repeats)
    floor = sensitivity.sweep_cost_floor(model, data, repeats=1 if quick else 5)
    floor_s = float(floor["suffix_ms"].sum()) * len(levels) / 1e3
    full_s = float(floor["full_ms"].iloc[0]) * len(layers) * len(levels) / 1e3
    res = {"sweep_model": name, "sweep_layers": len(layers), "sweep_levels": len(levels),
           "sweep_points": len(layers) * len(levels), "sweep_val_samples": int(len(data.val.y)),
           "sweep_naive_s": t["naive"], "sweep_s": t["ours"], "sweep_speedup": t["naive"] / t["ours"],
           "sweep_identical": identical(out["naive"], out["ours"]),
           "sweep_max_loss_diff": max_loss_diff(out["naive"], out["ours"]),
           "sweep_channels_last": bool(out["ours"].attrs.get("channels_last", False)),
           "sweep_floor_s": floor_s, "sweep_full_forward_s": full_s,
           "sweep_over_floor": t["ours"] / floor_s,
           "quant_sweep_bits": bits, "quant_sweep_naive_s": tq["naive"], "quant_sweep_s": tq["ours"],
           "quant_sweep_speedup": tq["naive"] / tq["ours"],
           "quant_sweep_identical": identical(outq["naive"], outq["ours"]),
           "quant_sweep_max_loss_diff": max_loss_diff(outq["naive"], outq["ours"]),
           "sweep_reuse": bool(out["ours"].attrs.get("reuse", False))}
    print_table(f"sensitivity sweeps on {name} ({len(layers)} layers, {len(data.val.y)} val samples, "
                f"median of {repeats})",
                [{"sweep": f"prune x {len(levels)} levels", "naive_s": t["naive"], "ours_s": t["ours"],
                  "speedup": res["sweep_speedup"], "identical": res["sweep_identical"],
                  "floor_s": floor_s},
                 {"sweep": f"quant x {len(bits)} bit-widths", "naive_s": tq["naive"], "ours_s": tq["ours"],
                  "speedup": res["quant_sweep_speedup"], "identical": res["quant_sweep_identical"],
                  "floor_s": float(floor["suffix_ms"].sum()) * len(bits) / 1e3}])
    return res


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    out = run(args.quick, args.model)
    if args.json:
        print(json.dumps(out))

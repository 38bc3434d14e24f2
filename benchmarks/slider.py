"""One slider move: what pages/_common.py computes on a cache miss,
compression.evaluate.compress_and_evaluate(model, PruneConfig(sparsity=0.5), data, latency=True,
repeats=10), timed for every built-in model (median ms)."""
from __future__ import annotations

import argparse
import json
import statistics
import time

from benchmarks.common import print_table
from compression import data as data_mod
from compression import zoo
from compression.evaluate import compress_and_evaluate
from compression.pruning import PruneConfig

TARGET_MS = 100.0


def run(quick: bool = False, models: list[str] | None = None, repeats: int | None = None) -> dict:
    data = data_mod.load_digits()
    names = models or zoo.list_models()
    loaded = {n: zoo.load_pretrained(n).eval() for n in names}
    cfg = PruneConfig(sparsity=0.5)
    repeats = repeats or (1 if quick else 5)
    times: dict[str, list[float]] = {n: [] for n in names}
    for n in names:  # one warm-up each (first-call costs are not what a slider move pays)
        compress_and_evaluate(loaded[n], cfg, data, latency=True, repeats=10)
    for _ in range(repeats):  # interleaved over models
        for n in names:
            t0 = time.perf_counter()
            compress_and_evaluate(loaded[n], cfg, data, latency=True, repeats=10)
            times[n].append((time.perf_counter() - t0) * 1e3)
    slider = {n: statistics.median(v) for n, v in times.items()}
    print_table(f"slider move: prune 50% + evaluate (median of {repeats}, target <= {TARGET_MS:.0f} ms)",
                [{"model": n, "ms": ms, "meets": ms <= TARGET_MS} for n, ms in slider.items()])
    return {"slider_ms": slider}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = run(args.quick)
    if args.json:
        print(json.dumps(out))

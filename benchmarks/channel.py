"""Switching the Pruning page's method to channel: the library calls pages/pruning.py makes on a cache
miss (through ui/state.py and ui/cache.py), each model in a fresh process, so first-use costs
(torch-pruning's and the MAC counter's imports) are paid as the page pays them:

1. compress_and_evaluate(model, cfg, data, latency=False, reference_logits=...): the numbers drawn at once;
2. compressed_latency(model, cfg, data): the paired latency drawn after them;
3. sweep_configs(model, data, {s: cfg(s)}, "sparsity") over the page's 9 sparsities: the curve;
4. compress(model, cfg, data, measure_latency=False): the copy behind the histograms.

channel_switch_s is their sum. Beside it, channel_curve_untimed_s: the same curve with the method's
own timing off. sweep_configs calls compress without measure_latency=False, so channel_prune times
the dense and the pruned model (5 + 20 forwards each at batch 256) at every point of the curve, for
a report the curve throws away; channel_prune_s is one compression with the timing off."""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from benchmarks.common import print_table

LEVELS = [0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]   # pages/pruning.py's curve for the channel method
STEPS = ("result", "latency", "curve", "copy")


def _child(name: str) -> dict:
    """The page's calls on `name` (a fresh process), then the curve without the method's timing."""
    from compression.core.registry import compress
    from compression.data.datasets import load_digits
    from compression.methods.pruning import ChannelPruneConfig
    from compression.metrics.evaluate import accuracy_and_loss, predict_logits
    from compression.models import zoo
    from compression.workflows.curves import sweep_configs
    from compression.workflows.slider import compress_and_evaluate, compressed_latency

    data, model = load_digits(), zoo.load_pretrained(name).eval()
    ref = predict_logits(model, data.scored.X)   # cached per model by the page before any method runs
    cfg = ChannelPruneConfig(sparsity=0.5)
    configs = {s: ChannelPruneConfig(sparsity=s) for s in LEVELS}

    def untimed_curve() -> None:
        for c in configs.values():
            accuracy_and_loss(compress(model, c, data, measure_latency=False)[0], data.scored)

    steps = {"result": lambda: compress_and_evaluate(model, cfg, data, latency=False, reference_logits=ref),
             "latency": lambda: compressed_latency(model, cfg, data),
             "curve": lambda: sweep_configs(model, data, configs, "sparsity"),
             "copy": lambda: compress(model, cfg, data, measure_latency=False),
             "curve_untimed": untimed_curve,
             "prune": lambda: compress(model, cfg, data, measure_latency=False)}
    out = {}
    for key, fn in steps.items():
        t0 = time.perf_counter()
        fn()
        out[key] = time.perf_counter() - t0
    return out


def run(quick: bool = False, models: list[str] | None = None, repeats: int | None = None) -> dict:
    names = models or (["mlp"] if quick else ["mlp", "resnet"])
    repeats = repeats or (1 if quick else 3)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for _ in range(repeats):          # models take turns, each run in a fresh process
        for n in names:
            out = subprocess.run([sys.executable, "-m", "benchmarks.channel", "--child", n],
                                 capture_output=True, text=True, check=True)
            runs[n].append(json.loads(out.stdout.strip().splitlines()[-1]))

    def med(n: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[n])

    switch = {n: statistics.median(sum(r[k] for k in STEPS) for r in runs[n]) for n in names}
    res = {"channel_switch_s": switch,
           "channel_switch_steps_s": {n: {k: med(n, k) for k in STEPS} for n in names},
           "channel_curve_untimed_s": {n: med(n, "curve_untimed") for n in names},
           "channel_prune_s": {n: med(n, "prune") for n in names}, "channel_curve_levels": len(LEVELS)}
    print_table(f"switching Pruning to channel (fresh process each, median of {repeats})",
                [{"model": n, "switch_s": switch[n], **{f"{k}_s": med(n, k) for k in STEPS},
                  "curve_untimed_s": med(n, "curve_untimed"), "one prune_s": med(n, "prune")} for n in names])
    return res


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", metavar="MODEL")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child)))
    else:
        result = run(args.quick)
        if args.json:
            print(json.dumps(result))

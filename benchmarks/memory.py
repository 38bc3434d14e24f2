"""Memory of a sensitivity sweep: in a fresh subprocess, load the model and the data, read the
resident set size (baseline_mb), run prune_sweep, then read the peak (sweep_peak_mb).
model_mb is the parameter bytes / 2**20. Target: peak <= baseline + 2 x model. Beside it, each in
its own fresh process: the naive loop's peak (naive_sweep_extra_mb) and that of one evaluation of
the validation split (forward_extra_mb), the least any sweep that evaluates the model can add.

The peak is VmHWM from /proc/self/status, the high-water mark of this process's own memory map.
ru_maxrss (also reported, ru_maxrss_mb) is not usable in a child: Linux folds the RSS of the
forked copy of the parent into it at exec, so a child of a big parent reports the parent's size."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from benchmarks.common import print_table


def vm_hwm_mb() -> float:
    """Peak resident set size of this process's memory map (since exec), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _child(model_name: str, n_levels: int, mode: str = "ours") -> dict:
    from benchmarks.common import peak_rss_mb, rss_mb
    from benchmarks.sweep import levels_for
    from compression.data import datasets as data_mod
    from compression.analysis import sensitivity
    from compression.models import zoo
    from compression.metrics.evaluate import accuracy_and_loss

    model = zoo.load_pretrained(model_name).eval()
    data = data_mod.load_digits()
    baseline = rss_mb()
    if mode == "forward":
        accuracy_and_loss(model, data.val)
    else:
        sweep = sensitivity.prune_sweep if mode == "ours" else sensitivity.naive_prune_sweep
        sweep(model, data, levels_for(False, n_levels))
    model_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    return {"baseline_mb": baseline, "sweep_peak_mb": vm_hwm_mb(), "ru_maxrss_mb": peak_rss_mb(),
            "model_mb": model_mb}


def run(quick: bool = False, model_name: str | None = None, n_levels: int | None = None) -> dict:
    from benchmarks.sweep import largest_cnn

    name = model_name or largest_cnn()
    n = n_levels or (2 if quick else 20)
    def child(mode: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--child", name, str(n), mode],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    res = child("ours")
    naive, forward = child("naive"), child("forward")
    res["memory_model"] = name
    res["sweep_extra_mb"] = res["sweep_peak_mb"] - res["baseline_mb"]
    res["naive_sweep_extra_mb"] = naive["sweep_peak_mb"] - naive["baseline_mb"]
    res["forward_extra_mb"] = forward["sweep_peak_mb"] - forward["baseline_mb"]
    res["memory_target_mb"] = res["baseline_mb"] + 2 * res["model_mb"]
    print_table(f"sweep memory on {name} ({n} levels, each in a fresh process)",
                [{"baseline_mb": res["baseline_mb"], "peak_mb": res["sweep_peak_mb"],
                  "extra_mb": res["sweep_extra_mb"], "naive_extra_mb": res["naive_sweep_extra_mb"],
                  "one_eval_extra_mb": res["forward_extra_mb"], "model_mb": res["model_mb"],
                  "target_peak_mb": res["memory_target_mb"]}])
    return res


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "LEVELS", "MODE"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], int(args.child[1]), args.child[2])))
    else:
        out = run(args.quick)
        if args.json:
            print(json.dumps(out))

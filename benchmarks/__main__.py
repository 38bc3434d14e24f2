"""Run every benchmark: `python -m benchmarks --json [--quick]` prints one JSON object on stdout
(tables go to stderr). `--only sweep,slider` runs a subset."""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time

import torch

from benchmarks import browser, channel, memory, proxies, slider, speedups, startup, sweep, transformer

CHROMIUM = "/usr/bin/chromium"
ALL = ["sweep", "slider", "speedups", "memory", "startup", "browser", "transformer", "proxies", "channel"]


def run_startup(quick: bool) -> dict:
    if not shutil.which(CHROMIUM):
        print(f"start-up skipped: {CHROMIUM} not found", file=sys.stderr)
        return {"startup_s": None, "ref_startup_s": None, "startup_ratio": None}
    return startup.run(quick)


def run_browser(quick: bool) -> dict:
    if not shutil.which(CHROMIUM):
        print(f"browser timings skipped: {CHROMIUM} not found", file=sys.stderr)
        return {"new_tab_s": None, "ref_new_tab_s": None, "new_tab_ratio": None, "pruning_slider": []}
    return browser.run(quick)


def run_all(quick: bool = False, only: list[str] | None = None) -> dict:
    runners = {"sweep": sweep.run, "slider": slider.run, "speedups": speedups.run, "memory": memory.run,
               "startup": run_startup, "browser": run_browser, "transformer": transformer.run, "proxies": proxies.run,
               "channel": channel.run}
    out: dict = {"quick": quick, "machine": {"cpus": torch.get_num_threads(), "torch": torch.__version__,
                                             "python": platform.python_version(),
                                             "cuda": torch.cuda.is_available()}}
    t0 = time.perf_counter()
    for name in only or ALL:
        out.update(runners[name](quick))
    out["total_s"] = time.perf_counter() - t0
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="tiny budgets (seconds, for tests)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(ALL)}")
    args = parser.parse_args()
    result = run_all(args.quick, args.only.split(",") if args.only else None)
    if args.json:
        print(json.dumps(result))

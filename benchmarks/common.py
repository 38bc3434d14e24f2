"""Helpers shared by the benchmarks: timing, process memory, and table printing."""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from typing import Callable


def timed(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time in seconds of fn() over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rss_mb() -> float:
    """Current resident set size of this process in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_table(title: str, rows: list[dict]) -> None:
    """A plain fixed-width table on stderr (stdout is kept for --json)."""
    if not rows:
        return
    cols = list(rows[0])
    width = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    out = sys.stderr
    print(f"\n== {title}", file=out)
    print("  ".join(c.ljust(width[c]) for c in cols), file=out)
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(width[c]) for c in cols), file=out)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def main(run: Callable[[bool], dict]) -> None:
    """The command line of one benchmark: `python -m benchmarks.NAME [--quick] [--json]`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="tiny budgets (seconds, for tests)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args()
    out = run(args.quick)
    if args.json:
        print(json.dumps(out))


def in_turns(fns: dict[str, Callable[[], object]], repeats: int) -> tuple[dict[str, list[float]], dict]:
    """Seconds of each fn, run in turn `repeats` times (drift hits all alike), and each one's last output."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    outs = {}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            outs[k] = fn()
            times[k].append(time.perf_counter() - t0)
    return times, outs

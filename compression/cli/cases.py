"""`python -m compression cases [NAME] --json [--quick] [--seeds N] [--store PATH | --no-store]`:
re-run published compression results on the bundled digits (compression.workflows.cases)."""
from __future__ import annotations

import argparse
import json
import sys

import torch

from compression.cli.common import add_store_arg, command, store_from_args
from compression.io.records import record_case
from compression.workflows.cases import CASES, run_case, summary


def _setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", choices=CASES, default=None, help="one case (default: all)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="tiny budgets (seconds; for tests)")
    p.add_argument("--seeds", type=int, default=None, help="seeds for the seeded cases (default: 3)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the models are tiny, more threads only contend)")
    add_store_arg(p)
    p.add_argument("--no-store", action="store_true", help="do not record the runs in the experiment store")


@command("cases", "re-run published compression results on the bundled digits", _setup)
def cmd_cases(args: argparse.Namespace) -> dict:
    store = None if args.no_store else store_from_args(args, default=True)
    torch.set_num_threads(max(1, args.threads))
    out = {}
    for name in [args.name] if args.name else CASES:
        def progress(done: int, total: int, message: str, name: str = name) -> None:
            print(f"[{name}] {done}/{total} {message}", file=sys.stderr, flush=True)

        result = run_case(name, quick=args.quick, seeds=args.seeds, progress=progress)
        out[name] = summary(result)
        if store is not None:
            out[name]["run_id"] = record_case(result, store)
        if not args.json:
            print(f"{name}: {json.dumps(result.holds)} in {result.seconds:.1f} s")
            print(result.table().to_string(index=False))
    return out[args.name] if args.name else out

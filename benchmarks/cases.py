"""The case studies at full budget: `python -m benchmarks.cases [NAME] [--store PATH]` prints one
JSON object (the same as `python -m compression cases --json --no-store`). Minutes, not seconds:
never run by the unit tests, which run each case on its quick budget instead."""
from __future__ import annotations

import sys

from compression.cli import main
from compression.workflows import cases


def run(quick: bool = False) -> dict:
    """Every case as the command line reports it, keyed by name."""
    return {name: cases.summary(cases.run_case(name, quick=quick)) for name in cases.CASES}


if __name__ == "__main__":
    args = sys.argv[1:]
    raise SystemExit(main(["cases", "--json", *args, *([] if "--store" in args else ["--no-store"])]))

"""Command line: `python -m compression COMMAND ...`. Errors go to stderr as one line, exit 2.
Each command module registers its commands with `common.command`; importing them here builds the parser."""
from __future__ import annotations

import argparse
import json
import sys

from compression.cli import cases, methods, runs, sensitivity, transformers, zoo  # noqa: F401  (register commands)
from compression.cli.common import COMMANDS
from compression.core.errors import CompressionError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m compression", description="Compression Studio command line.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in list(COMMANDS.items()):
        p = sub.add_parser(name, help=fn.cli_help)
        if fn.cli_setup:
            fn.cli_setup(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = COMMANDS[args.command](args)
    except CompressionError as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    except (OSError, MemoryError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "json", False):
        print(json.dumps(result, default=_json_default))
    else:
        _print_human(result)
    return 0


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    return str(o)


def _print_human(result) -> None:
    rows = result if isinstance(result, list) else [result]
    for row in rows:
        if isinstance(row, dict):
            print("  ".join(f"{k}={_fmt(v)}" for k, v in row.items() if not isinstance(v, (list, dict))))
        else:
            print(row)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)

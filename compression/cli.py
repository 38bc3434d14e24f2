"""Command line: `python -m compression COMMAND ...`. Errors go to stderr as one line, exit 2."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from compression.errors import CompressionError

COMMANDS: dict[str, Callable[[argparse.Namespace], dict | list]] = {}


def command(name: str, help: str, setup: Callable[[argparse.ArgumentParser], None] | None = None):
    """Register `fn(args) -> JSON-able result` as a subcommand with its argument setup."""
    def wrap(fn):
        fn.cli_help, fn.cli_setup = help, setup
        COMMANDS[name] = fn
        return fn
    return wrap


def add_model_args(p: argparse.ArgumentParser, flag: str = "--model", required: bool = True) -> None:
    p.add_argument(flag, required=required, help="demo:NAME or a model file (TorchScript, .pt2, "
                   "state dict with --arch, or a compact file)")
    p.add_argument("--arch", default=None, help="demo:NAME architecture for a bare state dict")


def add_data_args(p: argparse.ArgumentParser, split: bool = True) -> None:
    """--data, --preprocess, --json and (unless the command has a --split of its own) --split."""
    p.add_argument("--data", default="digits", help="'digits' (default) or a .npz / .zip / .csv file")
    p.add_argument("--preprocess", default=None,
                   help="what is done to the data's values before the model sees them: none (a file's "
                        "default: values as stored), standardize (the digits' default: mean and std of the "
                        "training split), MEAN,STD (e.g. 0.5,0.25) or per channel M1,M2,M3/S1,S2,S3")
    if split:
        p.add_argument("--split", dest="eval_split", choices=["all", "test", "val", "train"], default=None,
                       help="the samples numbers are scored on: all (a file's default: the whole file) or "
                            "test (the digits' default: the seeded held-out 20%%)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="where to run: cpu (default) or cuda when PyTorch sees a GPU")


def load_inputs(args: argparse.Namespace, flag: str = "model"):
    """(LoadedModel, Dataset) from --model/--arch/--data."""
    from compression.data import load_data
    from compression.loading import load_model

    data = load_data(args.data, preprocess=getattr(args, "preprocess", None), split=getattr(args, "eval_split", None))
    return load_model(getattr(args, flag), arch=args.arch, data=data), data


def eval_row(model, data, reference=None, latency: bool = True, device: str | None = None) -> dict:
    from compression.evaluate import evaluate

    return evaluate(model, data, reference=reference, latency=latency, device=device).to_dict()


def data_row(model, data, accuracy: float, fitted: bool = False) -> dict:
    """What a JSON result says about the data: its preprocessing, the note when the scored samples
    include those a method `fitted` on (calibration, scores, fine-tuning) and the plausibility
    warning for `model` (the original), when there is one."""
    from compression.evaluate import PLAUSIBILITY_SAMPLES, plausibility_warning

    row = {"preprocess": data.preprocess.spec, "preprocess_label": data.preprocess.label}
    note = data.scoring_note() if fitted else None
    if note:
        row["note"] = note
    warning = plausibility_warning(model, data, accuracy if len(data.scored) <= PLAUSIBILITY_SAMPLES else None)
    if warning:
        row["warning"] = warning
    return row


def _setup_evaluate(p: argparse.ArgumentParser) -> None:
    from compression.cli_methods import _store_arg

    add_model_args(p)
    add_data_args(p)
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    add_device_arg(p)
    _store_arg(p)


@command("models", "list the built-in models", lambda p: p.add_argument("--json", action="store_true"))
def cmd_models(args: argparse.Namespace) -> list:
    from compression.zoo import zoo_summary

    return list(zoo_summary().values())


@command("evaluate", "evaluate a model on a data set", _setup_evaluate)
def cmd_evaluate(args: argparse.Namespace) -> dict:
    from compression.cli_methods import _record

    loaded, data = load_inputs(args)
    row = eval_row(loaded.model, data, latency=not args.no_latency, device=args.device)
    result = {"model": loaded.name, "model_kind": loaded.kind, "data": data.name, "device": args.device, **row,
              **data_row(loaded.model, data, row["accuracy"])}
    result.update(_record(args, "evaluate", f"{loaded.name}:{loaded.fingerprint}", data, {"kind": "evaluate"},
                          result, {}))
    return result


def _print_human(result) -> None:
    rows = result if isinstance(result, list) else [result]
    for row in rows:
        if isinstance(row, dict):
            print("  ".join(f"{k}={_fmt(v)}" for k, v in row.items() if not isinstance(v, (list, dict))))
        else:
            print(row)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


COMMAND_MODULES = ("compression.cli_methods", "compression.cli_sensitivity", "compression.cli_runs",
                   "compression.cli_transformers")


def _register_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:  # an optional command module not present
            if exc.name != name:
                raise


def build_parser() -> argparse.ArgumentParser:
    _register_commands()
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

"""What every command shares: the command registry, the model / data / device / store options,
loading the inputs, the JSON rows and recording a run in the experiment store."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from compression.core.errors import ConfigError
from compression.data.files import load_data
from compression.data.text import load_text_data
from compression.io.store import Store, default_store_path
from compression.metrics.evaluate import PLAUSIBILITY_SAMPLES, evaluate, plausibility_warning
from compression.models.loading import is_text_model, load_model

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
                   "state dict with --arch, or a compact file), or a Hugging Face model folder")
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


def load_inputs(args: argparse.Namespace, flag: str = "model", text: bool = False):
    """(Model, Dataset) from --model/--arch/--data; with `text`, a transformer (a Hugging Face folder
    or demo:encoder|classifier|decoder) and its TextData (--data: a .txt or .csv of texts; the bundled
    sample sentences by default). A command without `text` refuses a transformer with the way to go."""
    spec = getattr(args, flag)
    if is_text_model(spec):
        if not text:
            raise ConfigError(f"{spec} is a transformer: this command takes image and tabular models so far. "
                              f"Compress it with `python -m compression hf --folder {spec} --method METHOD`.")
        return load_model(spec), load_text_data(None if args.data in (None, "digits") else args.data)
    data = load_data(args.data, preprocess=getattr(args, "preprocess", None), split=getattr(args, "eval_split", None))
    return load_model(getattr(args, flag), arch=args.arch, data=data), data


def eval_row(model, data, reference=None, latency: bool = True, device: str | None = None) -> dict:
    return evaluate(model, data, reference=reference, latency=latency, device=device).to_dict()


def data_row(model, data, accuracy: float, fitted: bool = False) -> dict:
    """What a JSON result says about the data: its preprocessing, the note when the scored samples
    include those a method `fitted` on (calibration, scores, fine-tuning) and the plausibility
    warning for `model` (the original), when there is one."""
    row = {"preprocess": data.preprocess.spec, "preprocess_label": data.preprocess.label}
    note = data.scoring_note() if fitted else None
    if note:
        row["note"] = note
    warning = plausibility_warning(model, data, accuracy if len(data.scored) <= PLAUSIBILITY_SAMPLES else None)
    if warning:
        row["warning"] = warning
    return row


def add_store_arg(p: argparse.ArgumentParser) -> None:
    """Add `--store [PATH]`: the experiment store file (the default path if no PATH)."""
    p.add_argument("--store", nargs="?", const="", default=None, metavar="PATH",
                   help="the experiment store at PATH (without PATH: $COMPRESSION_STORE, "
                        "else ~/.local/share/compression-studio/runs.sqlite)")


def store_from_args(args: argparse.Namespace, default: bool = False) -> Store | None:
    """The Store that `--store` names; None when --store was not given (unless `default`,
    then the default store)."""
    value = getattr(args, "store", None)
    if value is None and not default:
        return None
    return Store(Path(value) if value else default_store_path())


def layer_selection(args: argparse.Namespace) -> dict:
    """{include, exclude} tuples from the comma-separated --include / --exclude."""
    return {key: tuple(s.strip() for s in (getattr(args, key, "") or "").split(",") if s.strip())
            for key in ("include", "exclude")}


def add_record_args(p: argparse.ArgumentParser) -> None:
    add_store_arg(p)
    p.add_argument("--no-store", action="store_true",
                   help="do not record this run (by default it is recorded in the experiment store: "
                        "--store PATH, else $COMPRESSION_STORE, else ~/.local/share/compression-studio/runs.sqlite)")


def record(args: argparse.Namespace, kind: str, model, data, config: dict, metrics: dict,
            artefacts: dict) -> dict:
    """Record the run in the experiment store unless --no-store (recording is the default: --store
    PATH, else $COMPRESSION_STORE, else the user's data folder). Returns {"run_id", "store"} to
    add to the command's result, or {} when nothing was recorded."""
    if getattr(args, "no_store", False):
        return {}
    store = store_from_args(args, default=True)
    run_id = store.record(kind, model, data, config, metrics, artefacts)
    return {"run_id": run_id, "store": str(store.path)}

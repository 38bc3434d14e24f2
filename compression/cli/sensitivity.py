"""CLI command `sensitivity`: compress one layer at a time over a range of levels.

    python -m compression sensitivity --model demo:resnet --kind prune --levels 0.5,0.9 --json

The JSON holds `rows` ({layer, level, accuracy, loss} per point), the baseline accuracy and loss
on the same split, and the timing; --csv PATH writes the rows as CSV too. On a transformer (a Hugging
Face folder, --data a .txt / .csv of texts) the rows are {layer, block, group, level, fidelity and the
task's metrics} over every Linear layer, with `by_group`: mean and worst fidelity per role and level."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from compression.analysis import sensitivity
from compression.analysis.hf import sensitivity_by_group, sensitivity_sweep
from compression.cli.common import add_data_args, add_device_arg, add_model_args, command, load_inputs
from compression.core.errors import ConfigError


def _setup(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_data_args(p, split=False)
    p.add_argument("--kind", choices=["prune", "quantize"], default="prune")
    p.add_argument("--levels", default=None,
                   help="comma-separated sparsities (prune; default 0,0.05,...,0.95) "
                        "or bit-widths (quantize; default 2-8)")
    p.add_argument("--layers", default=None, help="comma-separated layer names (default: every Linear/Conv layer)")
    p.add_argument("--split", choices=["train", "val", "test", "all"], default="val",
                   help="the samples each layer's sweep is scored on (default val)")
    p.add_argument("--granularity", choices=["tensor", "channel"], default="channel")
    p.add_argument("--activations", action="store_true", help="quantize: also quantize each layer's input")
    p.add_argument("--csv", default=None, help="also write the rows to this CSV file")
    add_device_arg(p)


def parse_levels(text: str | None, kind: str) -> list[float] | list[int] | None:
    """'0.5,0.9' -> [0.5, 0.9] (prune) or '4,8' -> [4, 8] (quantize); None stays None."""
    if text is None:
        return None
    cast = float if kind == "prune" else int
    try:
        return [cast(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--levels must be comma-separated {'numbers' if kind == 'prune' else 'integers'}; "
                          f"got {text!r}.") from None


TEXT_LEVELS = {"prune": [0.25, 0.5, 0.75, 0.9], "quantize": [2, 3, 4, 5, 6, 8]}


def _text_sweep(args: argparse.Namespace, loaded, data, levels, layers) -> dict:
    """The transformer sweep (analysis.hf.sensitivity_sweep): fidelity to the original on the texts."""
    unsupported = {"--activations": args.activations, "--granularity tensor": args.granularity != "channel",
                   f"--split {args.split}": args.split != "val", f"--device {args.device}": args.device != "cpu"}
    if any(unsupported.values()):
        raise ConfigError(f"Not on transformers yet: {', '.join(k for k, on in unsupported.items() if on)}. The "
                          "transformer sweep prunes by magnitude or quantizes weights per channel, on the CPU, "
                          "scored on every text given.")
    start = time.perf_counter()
    sweep = sensitivity_sweep(loaded, data, method=args.kind, levels=levels or TEXT_LEVELS[args.kind], layers=layers)
    seconds = time.perf_counter() - start
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        sweep.to_csv(args.csv, index=False)
    rows = [{**r, "block": None if pd.isna(r["block"]) else int(r["block"])} for r in sweep.to_dict("records")]
    return {"model": loaded.name, "data": data.name, "kind": args.kind, "task": loaded.task, "split": "all texts",
            "fidelity_metric": sweep.attrs["fidelity_metric"], "points": len(sweep), "seconds": round(seconds, 4),
            "rows": rows,
            "by_group": sensitivity_by_group(sweep).to_dict("records"),
            **({"csv": args.csv} if args.csv else {})}


@command("sensitivity", "per-layer sensitivity sweep (prune or quantize one layer at a time)", _setup)
def cmd_sensitivity(args: argparse.Namespace) -> dict:
    loaded, data = load_inputs(args, text=True)
    levels = parse_levels(args.levels, args.kind)
    layers = [n.strip() for n in args.layers.split(",") if n.strip()] if args.layers else None
    if loaded.is_text:
        return _text_sweep(args, loaded, data, levels, layers)
    start = time.perf_counter()
    if args.kind == "prune":
        kw = {"levels": levels} if levels is not None else {}
        sweep = sensitivity.prune_sweep(loaded.model, data, layers=layers, split=args.split, device=args.device, **kw)
    else:
        kw = {"bits": levels} if levels is not None else {}
        sweep = sensitivity.quant_sweep(loaded.model, data, layers=layers, split=args.split,
                                        granularity=args.granularity, activations=args.activations,
                                        device=args.device, **kw)
    seconds = time.perf_counter() - start
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        sweep.to_csv(args.csv, index=False)
    return {"model": loaded.name, "data": data.name, "kind": args.kind, "split": args.split,
            "baseline_accuracy": sweep.attrs["baseline_accuracy"], "baseline_loss": sweep.attrs["baseline_loss"],
            "n_samples": sweep.attrs["n_samples"], "points": len(sweep), "seconds": round(seconds, 4),
            "reuse": sweep.attrs["reuse"], "rows": sweep[["layer", "level", "accuracy", "loss"]].to_dict("records"),
            **({"csv": args.csv} if args.csv else {})}

"""`python -m compression train-zoo [NAME ...] [--epochs N] [--seed S]`: train the built-in models
(seeded) and write their weights to assets/NAME.safetensors and their numbers to assets/zoo.json."""
from __future__ import annotations

import argparse
import json
import time

import torch
from safetensors.torch import save_file

from compression.cli.common import command
from compression.methods.training import train_model
from compression.models.zoo import ASSETS, ZOO, parse_demo_name, weights_path


def _setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", default=list(ZOO), help="the built-in models to train (default: all)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")


@command("train-zoo", "train the built-in models and write their weights to assets/", _setup)
def cmd_train_zoo(args: argparse.Namespace) -> dict:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    summary_path = ASSETS / "zoo.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    for name in args.names:
        start = time.perf_counter()
        model, info = train_model(parse_demo_name(name), args.epochs, args.seed)
        ASSETS.mkdir(exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights_path(name)))
        summary[name] = info
        print(f"{name}: {info} in {time.perf_counter() - start:.1f}s", flush=True)
    summary_path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return {name: summary[name] for name in args.names}

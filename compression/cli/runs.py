"""CLI commands over the experiment store and recipes: `runs`, `report` and `run`.

    python -m compression runs --json
    python -m compression report --runs 3f2a9c1e,77b0d2aa --out report.html
    python -m compression run recipe.yaml --model demo:mlp --store --json

`add_store_arg` / `store_from_args` give any command a `--store [PATH]` option naming the
experiment store (PATH, or the default store when PATH is left out). `evaluate`, `prune`,
`quantize`, `lowrank` and `distill` record their run in the default store unless --store names
another or --no-store is given (cli.common.record); `run` records only with --store; `runs` and
`report` read the default store unless --store names another. Every recorded result says where
its run went: `run_id` and `store`.

`report` never writes over the store (or its -wal/-shm/-journal files, however the path is
spelt) and overwrites an existing --out / --csv file only when it is empty, a report / CSV of
ours, or with --force.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

from compression.cli.common import (add_data_args, add_model_args, add_store_arg, command, data_row, load_inputs,
                                    store_from_args)
from compression.core.errors import ConfigError
from compression.io.export import export_model
from compression.io.report import html_report, runs_csv
from compression.io.store import Store
from compression.metrics.summary import layer_table
from compression.workflows.recipes import load_recipe, recipe_run_config, run_recipe

REPORT_MARK = " · Compression Studio</p>"  # in the first lines of every `html_report` page
CSV_HEADER = "id,created,kind,status,model,"  # how every `runs_csv` table starts
HEAD_CHARS = 65_536  # enough to hold the report's title, CSS and meta line
STORE_SIDE_FILES = ("", "-wal", "-shm", "-journal")


def _split_ids(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def chosen_runs(store: Store, ids: list[str], kind: str | None = None, limit: int | None = None) -> list:
    """The runs named by id (or unique id prefix), in that order; all runs (newest first) if none."""
    if ids:
        return [store.get(i) for i in ids]
    return store.list(kind=kind, limit=limit)


def _setup_runs(p: argparse.ArgumentParser) -> None:
    add_store_arg(p)
    p.add_argument("--kind", default=None, help="only runs of this kind (prune, quantize, recipe, ...)")
    p.add_argument("--model", default=None, help="only runs of this model (name or fingerprint)")
    p.add_argument("--limit", type=int, default=None, help="at most this many runs, newest first")
    p.add_argument("--json", action="store_true", help="print a JSON list of runs")


def _note(notes: list[str]) -> None:
    """Print each note (a damaged run that was skipped) on stderr; stdout stays clean JSON."""
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


@command("runs", "list the runs recorded in the experiment store", _setup_runs)
def cmd_runs(args: argparse.Namespace) -> list:
    store = store_from_args(args, default=True)
    runs, notes = store.scan(kind=args.kind, model=args.model, limit=args.limit)
    _note(notes)
    return [run.to_dict() for run in runs]


def _setup_report(p: argparse.ArgumentParser) -> None:
    add_store_arg(p)
    p.add_argument("--runs", default=None, help="comma-separated run ids or id prefixes (default: all runs)")
    p.add_argument("--kind", default=None, help="without --runs: only runs of this kind")
    p.add_argument("--limit", type=int, default=None, help="without --runs: at most this many, newest first")
    p.add_argument("--out", required=True, help="the HTML file to write (never the store itself)")
    p.add_argument("--csv", default=None, help="also write the runs as CSV to this file")
    p.add_argument("--force", action="store_true",
                   help="overwrite an existing --out / --csv file even when it is not a report / CSV of ours")
    p.add_argument("--title", default="Compression Studio report")
    add_model_args(p, required=False)
    p.add_argument("--data", default="digits", help="data for the model summary's MAC counts")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _model_summary(args: argparse.Namespace):
    if not args.model:
        return None
    loaded, data = load_inputs(args)
    return layer_table(loaded.model, data.val.X[:1])


def _is_store_file(path: Path, store: Store) -> bool:
    """Whether `path` is the store or one of its side files, however spelt (relative, through a
    symbolic link, a hard link)."""
    for suffix in STORE_SIDE_FILES:
        side = store.path.with_name(store.path.name + suffix)
        if path.resolve() == side.resolve():
            return True
        try:
            if path.exists() and side.exists() and os.path.samefile(path, side):
                return True
        except OSError:
            continue
    return False


def _head(path: Path) -> str:
    with open(path, "rb") as f:
        return f.read(HEAD_CHARS).decode("utf-8", errors="replace")


def check_output(path: Path, store: Store, option: str, ours: Callable[[str], bool], force: bool) -> None:
    """ConfigError unless writing `path` (given as `option`) harms nothing: never the store, and an
    existing file only when it is empty, `ours(its first characters)`, or with `force`."""
    if _is_store_file(path, store):
        raise ConfigError(f"{option} {path} is the experiment store {store.path} itself; choose another file.")
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file path.")
    if force or not path.exists():
        return
    head = _head(path)
    if head and not ours(head):
        kind = "HTML report" if option == "--out" else "runs CSV"
        raise ConfigError(f"{option} {path} exists and is not a {kind} written by Compression Studio; "
                          "choose another file, or add --force to overwrite it.")


def _is_our_report(head: str) -> bool:
    return head.startswith("<!DOCTYPE html>") and REPORT_MARK in head


def _is_our_csv(head: str) -> bool:
    return head.startswith(CSV_HEADER)


def _check_outputs(args: argparse.Namespace, store: Store) -> tuple[Path, Path | None]:
    """The --out and --csv paths, after checking that writing them harms no file."""
    out, table = Path(args.out), Path(args.csv) if args.csv else None
    check_output(out, store, "--out", _is_our_report, args.force)
    if table is not None:
        check_output(table, store, "--csv", _is_our_csv, args.force)
        if table.resolve() == out.resolve():
            raise ConfigError(f"--csv {table} is the same file as --out; give two different files.")
    return out, table


@command("report", "write a self-contained HTML report (and CSV) of recorded runs", _setup_report)
def cmd_report(args: argparse.Namespace) -> dict:
    store = store_from_args(args, default=True)
    out, table = _check_outputs(args, store)
    ids = _split_ids(args.runs)
    runs, notes = (chosen_runs(store, ids), []) if ids else store.scan(kind=args.kind, limit=args.limit)
    _note(notes)
    page = html_report(runs, _model_summary(args), [], title=args.title)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    result = {"out": str(out), "bytes": out.stat().st_size, "runs": len(runs), "store": str(store.path)}
    if notes:
        result["skipped"] = notes
    if table is not None:
        table.parent.mkdir(parents=True, exist_ok=True)
        table.write_text(runs_csv(runs), encoding="utf-8")
        result["csv"] = str(table)
    return result


def _setup_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", metavar="RECIPE", help="a recipe file (YAML or JSON)")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--seed", type=int, default=0, help="step i runs with seed + i unless it names a seed")
    p.add_argument("--latency", action="store_true", help="also measure latency of the result")
    p.add_argument("--save", default=None, help="write the resulting model to this file")
    p.add_argument("--format", default="compact", help="format for --save: compact (default), "
                   "safetensors, torchscript, exported or onnx")
    add_store_arg(p)


def _recipe_source(text: str) -> Path | str:
    """A recipe file path, or inline YAML/JSON text (with a newline, or starting '{' or '[')."""
    if "\n" in text or text.lstrip().startswith(("{", "[")):
        return text
    if Path(text).is_file():
        return Path(text)
    raise ConfigError(f"No recipe file at {text!r}. Give a YAML or JSON recipe file.")


@command("run", "apply a recipe (a list of compression steps) to a model", _setup_run)
def cmd_run(args: argparse.Namespace) -> dict:
    recipe = load_recipe(_recipe_source(args.recipe))
    # the recipe's data options, unless the command line gives its own
    args.preprocess = args.preprocess or recipe.data.get("preprocess")
    args.eval_split = args.eval_split or recipe.data.get("split")
    loaded, data = load_inputs(args)
    model, reports, metrics = run_recipe(loaded.model, data, recipe, seed=args.seed, latency=args.latency)
    artefacts = {}
    if args.save:
        artefacts = export_model(model, args.format, args.save, data.val.X[:1]).to_dict()
    steps = [{"method": r.method, "config": r.config, "metrics": r.metrics, "simulated": r.simulated,
              "skipped": [{"layer": n, "reason": why} for n, why in r.skipped]} for r in reports]
    result = {"model": loaded.name, "data": data.name, "recipe": recipe.name, "seed": args.seed,
              **metrics, **data_row(loaded.model, data, metrics["accuracy"], fitted=True), "steps": steps}
    if artefacts:
        result["saved"] = artefacts
    store = store_from_args(args)
    if store is not None:
        recorded = {**metrics, "steps_metrics": [s["metrics"] for s in steps]}
        result["run_id"] = store.record("recipe", loaded, data, recipe_run_config(recipe, args.seed),
                                        recorded, artefacts)
        result["store"] = str(store.path)
    return result


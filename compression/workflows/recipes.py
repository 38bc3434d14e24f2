"""Recipes: an ordered list of compression steps, saved as YAML or JSON and replayed exactly.

A step is a method config dict as stored in runs (`{"kind": "prune", "sparsity": 0.5, ...}`, any
kind registered in compression.core.registry), or one of the recipe-only steps:

    {"kind": "finetune", "epochs": 3, "lr": 0.001, ...}           recover accuracy (training.fit)
    {"kind": "distill_from_original", "epochs": 3, "alpha": 0.9}  fine-tune with the model as it
                                                                   was before the recipe as teacher

Their fields are those of `training.TrainConfig` (finetune: epochs, lr, batch_size, seed,
weight_decay). A step without a seed gets `seed + step index` from `run_recipe`, so the same
recipe, model, data and seed give the same model and metrics. A `distill` step (DistillConfig)
likewise trains the model so far as the student of the original model.

    steps:
      - {kind: prune, method: magnitude, sparsity: 0.6}
      - {kind: finetune, epochs: 2}
      - {kind: quantize, bits: 8}
"""
from __future__ import annotations

import dataclasses
import json
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import yaml
from torch import nn

from compression import methods  # noqa: F401  (registers every method config)
from compression.core.errors import ConfigError, StoppedError
from compression.core.modules import copy_model, refresh_pruned_
from compression.core.registry import CONFIGS, Result, compress, config_from_dict
from compression.data.datasets import Dataset, check_split, parse_preprocess
from compression.methods.training import Progress, StopFlag, TrainConfig, fit, is_stopped
from compression.metrics.evaluate import evaluate

RECIPE_VERSION = 1
FINETUNE_FIELDS = ("epochs", "lr", "batch_size", "seed", "weight_decay")
DISTILL_FIELDS = FINETUNE_FIELDS + ("temperature", "alpha", "hard_labels")
TRAINING_STEPS = {"finetune": FINETUNE_FIELDS, "distill_from_original": DISTILL_FIELDS}
KEEPS_MASKS = ("prune", "finetune", "distill_from_original")  # other steps see masks folded in
_TYPES = {"int": int, "float": (int, float), "bool": bool}
RECIPE_MAX_BYTES = 1 << 20
RECIPE_MAX_DEPTH = 32  # a recipe needs 4 levels (recipe, steps, step, a list value)
RECIPE_MAX_NODES = 100_000  # values once every alias is expanded: no "billion laughs"
RECIPE_MAX_ALIASES = 100
_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlevel = 60, 60, 3


def _short(value: Any) -> str:
    """A repr of `value` cut short, never built whole (a value may be large)."""
    return _SHORT.repr(value)


def step_kinds() -> list[str]:
    """Every kind a recipe step may have: the registered methods and the training steps."""
    return sorted(CONFIGS) + list(TRAINING_STEPS)


@dataclass(frozen=True)
class Recipe:
    """An ordered, validated list of steps (plain dicts, each with a 'kind')."""

    steps: tuple[dict, ...]
    name: str = ""
    description: str = ""
    data: dict = field(default_factory=dict)  # optional {preprocess, split}: how the data reaches the model

    def __len__(self) -> int:
        return len(self.steps)

    def to_dict(self) -> dict[str, Any]:
        d = {"version": RECIPE_VERSION, "name": self.name, "description": self.description,
             "steps": [dict(s) for s in self.steps]}
        return {**d, "data": dict(self.data)} if self.data else d


def _data_options(value: Any) -> dict:
    """A recipe's optional `data` section, checked: {preprocess: none|standardize|MEAN,STD, split: all|test|...}."""
    if value is None:
        return {}
    if not isinstance(value, dict) or set(value) - {"preprocess", "split"}:
        raise ConfigError("A recipe's 'data' must be a mapping with 'preprocess' and/or 'split', "
                          "e.g. {preprocess: standardize, split: test}.")
    if "preprocess" in value:
        parse_preprocess(str(value["preprocess"]))
    if "split" in value:
        check_split(str(value["split"]))
    return {k: str(v) for k, v in value.items()}


def _step_error(index: int, kind: Any, message: str) -> ConfigError:
    exc = ConfigError(f"Recipe step {index + 1} ({_short(kind)}): {message[:400]}")
    exc.step_index = index  # 0-based, for a UI that highlights the step
    return exc


def train_config(step: dict, seed: int = 0) -> TrainConfig:
    """The TrainConfig of a finetune / distill_from_original step (unknown fields and wrong
    types raise ConfigError). A step without a seed uses `seed`."""
    allowed = TRAINING_STEPS[step["kind"]]
    fields = {k: v for k, v in step.items() if k != "kind"}
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(allowed)}.")
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for key, value in fields.items():
        want = _TYPES[str(types[key])]
        if isinstance(value, bool) and want is not bool or not isinstance(value, want):
            raise ConfigError(f"{key} must be of type {types[key]}; got {_short(value)}.")
    return TrainConfig(**{"seed": seed, **fields})


def validate_step(index: int, step: Any) -> dict:
    """A checked copy of one step: method configs normalised to their full `to_dict()`,
    training steps kept as written. Raises ConfigError naming the step (1-based)."""
    if not isinstance(step, dict) or not isinstance(step.get("kind"), str):
        raise _step_error(index, None, "a step must be a mapping with a 'kind' string, e.g. "
                                       "{kind: prune, sparsity: 0.5}.")
    kind = step["kind"]
    try:
        if kind in TRAINING_STEPS:
            train_config(step)
            return dict(step)
        if kind not in CONFIGS:
            raise ConfigError(f"unknown step kind; known kinds: {', '.join(step_kinds())}.")
        return config_from_dict(step).to_dict()
    except ConfigError as exc:
        raise _step_error(index, kind, str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise _step_error(index, kind, f"bad value ({str(exc)[:200]}).") from None


def recipe_from_data(data: Any) -> Recipe:
    """A validated Recipe from parsed YAML/JSON: a list of steps, or a mapping with 'steps'
    (and optional 'name', 'description', 'version', and 'data': {preprocess, split})."""
    if isinstance(data, Recipe):
        data = data.to_dict()
    if isinstance(data, list):
        data = {"steps": data}
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        raise ConfigError("A recipe must be a list of steps, or a mapping with a 'steps' list.")
    unknown = sorted(set(data) - {"version", "name", "description", "steps", "data"})
    if unknown:
        raise ConfigError(f"Unknown recipe field(s): {', '.join(unknown)}; "
                          "valid: version, name, description, steps, data.")
    version = data.get("version", RECIPE_VERSION)
    if not isinstance(version, int) or version > RECIPE_VERSION:
        raise ConfigError(f"Recipe version {_short(version)} is not supported "
                          f"(this version reads {RECIPE_VERSION}).")
    if not data["steps"]:
        raise ConfigError("A recipe needs at least one step.")
    steps = tuple(validate_step(i, s) for i, s in enumerate(data["steps"]))
    return Recipe(steps, str(data.get("name") or ""), str(data.get("description") or ""),
                  _data_options(data.get("data")))


def _names_file(text: str) -> bool:
    if "\n" in text or text.lstrip().startswith(("{", "[")):
        return False
    try:
        return Path(text).is_file()
    except OSError:  # e.g. a name too long to be a file
        return False


def _read_recipe_file(source: str | Path) -> str:
    """The text of a recipe file, refused unread when larger than RECIPE_MAX_BYTES."""
    try:
        size = Path(source).stat().st_size
        if size > RECIPE_MAX_BYTES:
            raise ConfigError(f"The recipe file {source} is {size:,} bytes, over the {RECIPE_MAX_BYTES:,} a "
                              "recipe may have: a recipe is a short list of steps.")
        return Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read the recipe file {source}: {str(exc)[:200]}.") from None


def _budget_error(what: str) -> ConfigError:
    return ConfigError(f"The recipe is refused unread: {what}. A recipe is a short list of steps; "
                       "write each step out instead.")


def _node_size(stack: list[list], sizes: dict[str, int], event: Any) -> int:
    """The expanded size of the node `event` ends (a scalar, an alias, or the innermost open
    collection, popped from `stack`); an anchored node's size is kept in `sizes`."""
    if isinstance(event, yaml.AliasEvent):
        return sizes.get(event.anchor, 1)
    if isinstance(event, yaml.ScalarEvent):
        anchor, size = event.anchor, 1
    else:
        anchor, inner = stack.pop()
        size = inner + 1
    if anchor:
        sizes[anchor] = size
    return size


def check_yaml_budget(text: str) -> None:
    """ConfigError when YAML/JSON text nests deeper than RECIPE_MAX_DEPTH, has more than
    RECIPE_MAX_ALIASES aliases, or expands (aliases counted at the size of what they name) to more
    than RECIPE_MAX_NODES values. Reads parser events only, so nothing is built or expanded."""
    stack: list[list] = [[None, 0]]  # per open collection: [its anchor, values inside it so far]
    sizes: dict[str, int] = {}  # expanded size per anchor
    aliases = 0
    for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # C: faster
        if isinstance(event, yaml.CollectionStartEvent):
            stack.append([event.anchor, 0])
            if len(stack) - 1 > RECIPE_MAX_DEPTH:
                raise _budget_error(f"it nests deeper than {RECIPE_MAX_DEPTH} levels")
            continue
        if not isinstance(event, (yaml.AliasEvent, yaml.ScalarEvent, yaml.CollectionEndEvent)):
            continue
        aliases += isinstance(event, yaml.AliasEvent)
        if aliases > RECIPE_MAX_ALIASES:
            raise _budget_error(f"it has more than {RECIPE_MAX_ALIASES} aliases (*name)")
        stack[-1][1] += _node_size(stack, sizes, event)
        if stack[-1][1] > RECIPE_MAX_NODES:
            raise _budget_error(f"its aliases expand to more than {RECIPE_MAX_NODES:,} values")


def parse_recipe_text(text: str) -> Any:
    """Parsed YAML or JSON (JSON is YAML too) of a recipe, within the size, depth and alias budgets.

    Raises:
        ConfigError: text too large, too deep, too many or too large aliases, or not YAML/JSON.
    """
    if len(text) > RECIPE_MAX_BYTES:
        raise ConfigError(f"The recipe text is {len(text):,} characters, over the {RECIPE_MAX_BYTES:,} "
                          "a recipe may have.")
    try:
        check_yaml_budget(text)
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"The recipe is not valid YAML or JSON: {first[:200]}.") from None
    except RecursionError:  # defensive: the depth check above stops nesting long before this
        raise _budget_error("it nests too deep") from None


def load_recipe(source: str | Path | dict | list | Recipe) -> Recipe:
    """A validated recipe from a file path, YAML or JSON text, or already-parsed data.

    Text is checked before it is parsed: at most RECIPE_MAX_BYTES, RECIPE_MAX_DEPTH levels and a
    few small aliases (a "billion laughs" document is refused without being expanded).

    Raises:
        ConfigError: unreadable or oversized file, bad YAML/JSON, text over a budget, or a bad step
            (the message names it).
    """
    if isinstance(source, (dict, list, Recipe)):
        return recipe_from_data(source)
    text = str(source)
    if isinstance(source, Path) or _names_file(text):
        text = _read_recipe_file(source)
    return recipe_from_data(parse_recipe_text(text))


def dumps_recipe(recipe: Recipe, fmt: str = "yaml") -> str:
    """The recipe as YAML (default) or JSON text; `load_recipe` reads either back."""
    if fmt == "json":
        return json.dumps(recipe.to_dict(), indent=2) + "\n"
    if fmt != "yaml":
        raise ConfigError(f"Unknown recipe format {fmt!r}: use 'yaml' or 'json'.")
    import yaml

    return yaml.safe_dump(recipe.to_dict(), sort_keys=False, default_flow_style=None)


def save_recipe(recipe: Recipe, path: str | Path) -> Path:
    """Write the recipe: JSON for a .json path, YAML otherwise. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps_recipe(recipe, "json" if path.suffix.lower() == ".json" else "yaml"), encoding="utf-8")
    return path


@dataclass
class RecipeProgress:
    """One progress event of `run_recipe`: the step (0-based) and the fraction of the recipe done."""

    step: int
    steps: int
    kind: str
    fraction: float
    message: str
    training: Progress | None = field(default=None, repr=False)


def _train_step(model: nn.Module, original: nn.Module, data: Dataset, step: dict, seed: int,
                on_progress: Callable[[Progress], None], stop: StopFlag) -> tuple[nn.Module, Result]:
    cfg = train_config(step, seed)
    teacher = original if step["kind"] == "distill_from_original" else None
    trained, history = fit(model, data, cfg, teacher=teacher, callback=on_progress, stop=stop)
    best = max((row["val_accuracy"] for row in history), default=None)
    metrics = {"epochs_run": len(history), "best_val_accuracy": best, "history": history}
    return trained, Result(method=step["kind"], config=dict(step), metrics=metrics)


def apply_step(model: nn.Module, original: nn.Module, data: Dataset, step: dict, seed: int = 0,
               on_progress: Callable[[Progress], None] | None = None,
               stop: StopFlag = None) -> tuple[nn.Module, Result]:
    """Apply one validated step to (a copy of) `model`; `original` is the model before the recipe.
    Pruning masks stay through further pruning and training (pruned weights stay zero); any
    other step gets them folded into the weights first (it would otherwise change weights that
    the mask's pre-hook recomputes from weight_orig on the next forward)."""
    torch.manual_seed(seed)
    if step["kind"] not in KEEPS_MASKS:
        model = copy_model(model, fold=True)
    if step["kind"] in TRAINING_STEPS:
        return _train_step(model, original, data, step, seed, on_progress or (lambda p: None), stop)
    if step["kind"] == "distill":  # the model so far is the student, the original its teacher
        return compress(original, config_from_dict(step), data, student=model, callback=on_progress, stop=stop)
    return compress(model, config_from_dict(step), data)


def run_recipe(model: nn.Module, data: Dataset, recipe: Recipe | str | Path | dict | list, seed: int = 0,
               callback: Callable[[RecipeProgress], None] | None = None, stop: StopFlag = None,
               latency: bool = False) -> tuple[nn.Module, list[Result], dict]:
    """Apply the steps in order to a copy of `model` (never changed) and evaluate the result
    against it on the test split.

    Args:
        seed: step i runs with torch.manual_seed(seed + i) and, unless it names one, that seed.
        stop: checked between steps and inside training steps; the steps finished so far are kept.
        latency: also measure latency (off by default: it is the one metric a replay cannot repeat).
    Returns:
        (compressed model, one Result per step done, final metrics: `evaluate(...).to_dict()` plus
        steps, steps_done and stopped: whether the stop flag cut the recipe or a step short).
    Raises:
        StoppedError: stopped before the first step finished.
    """
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    n, reports = len(recipe), []
    current = copy_model(model)
    for i, step in enumerate(recipe.steps):
        if is_stopped(stop):
            break
        kind = step["kind"]

        def on_progress(p: Progress, i: int = i, kind: str = kind) -> None:
            if callback:
                callback(RecipeProgress(i, n, kind, (i + p.fraction) / n, f"step {i + 1}/{n} {kind}: "
                                        f"epoch {p.epoch + 1}/{p.epochs}", p))

        if callback:
            callback(RecipeProgress(i, n, kind, i / n, f"step {i + 1}/{n}: {kind}"))
        current, report = apply_step(current, model, data, step, seed + i, on_progress, stop)
        refresh_pruned_(current)
        reports.append(report)
    if not reports:
        raise StoppedError("The recipe was stopped before its first step finished.")
    metrics = evaluate(current, data, reference=model, latency=latency).to_dict()
    metrics.update(steps=n, steps_done=len(reports), stopped=len(reports) < n or is_stopped(stop))
    if callback:
        callback(RecipeProgress(n - 1, n, "evaluate", 1.0, "done"))
    return current, reports, metrics


def recipe_run_config(recipe: Recipe, seed: int = 0) -> dict:
    """The config a recipe run is recorded with (kind 'recipe'): enough to replay it."""
    return {"kind": "recipe", "recipe": recipe.to_dict(), "seed": seed}


def replay_run(run: Any, model: nn.Module, data: Dataset, **kwargs) -> tuple[nn.Module, list[Result], dict]:
    """Run a recorded recipe run again (a store Run or its dict) on `model` and `data`."""
    config = run.config if hasattr(run, "config") else run["config"]
    if not isinstance(config, dict) or "recipe" not in config:
        raise ConfigError("This run is not a recipe run: it has no recorded recipe to replay.")
    return run_recipe(model, data, load_recipe(config["recipe"]), seed=int(config.get("seed", 0)), **kwargs)


def _run_fields(run: Any) -> tuple[str, dict, tuple[str, int]]:
    """(kind, config, sort key by creation) of a store Run or its dict."""
    if isinstance(run, dict):
        order = (str(run.get("created", "")), int(run.get("seq", 0) or 0))
        return str(run.get("kind", "")), run.get("config") or {}, order
    return run.kind, run.config or {}, (run.created, run.seq)


def recipe_from_runs(runs: Iterable[Any], name: str = "", description: str = "") -> Recipe:
    """The recipe of what a user did: the compression and training runs among `runs` (store
    Runs or their dicts), oldest first; a recipe run contributes its steps. Evaluations, sweeps
    and other runs that change no model are left out.

    Raises:
        ConfigError: none of the runs is a step, or a run's config is not a valid step.
    """
    steps: list[dict] = []
    for kind, config, _ in sorted((_run_fields(r) for r in runs), key=lambda f: f[2]):
        if kind == "recipe" and isinstance(config.get("recipe"), dict):
            steps.extend(config["recipe"].get("steps", []))
        elif kind in CONFIGS or kind in TRAINING_STEPS:
            steps.append({**config, "kind": config.get("kind", kind)})
    if not steps:
        raise ConfigError("None of the chosen runs changed the model (compression, fine-tuning or a "
                          "recipe), so there is no recipe to export.")
    return recipe_from_data({"name": name, "description": description, "steps": steps})

"""Recipes: YAML/JSON round trip, validation naming the bad step, replay reproducing the recorded
metrics exactly, progress and stop, recipe_from_runs, and the `run` CLI command."""
from __future__ import annotations

import json
import threading

import pytest
import torch

from compression import methods as method_modules
from compression.cli import main
from compression.core.errors import ConfigError, StoppedError
from compression.core.modules import effective_weights
from compression.io.store import Store
from compression.models import zoo
from compression.workflows.recipes import (Recipe, dumps_recipe, load_recipe, recipe_from_runs, recipe_run_config,
                                           replay_run, run_recipe, save_recipe)

TRAINING = [{"kind": "finetune", "epochs": 1, "lr": 0.001},
            {"kind": "distill_from_original", "epochs": 1, "alpha": 0.5, "temperature": 2.0}]
REPRODUCED = ("accuracy", "loss", "params", "nonzero_params", "size_bytes", "agreement", "kl_divergence", "macs")


@pytest.fixture
def methods():
    """Every method registered: importing compression.methods does it."""
    return method_modules


@pytest.fixture
def method_steps(methods):
    return [{"kind": "prune", "sparsity": 0.5}, {"kind": "finetune", "epochs": 1},
            {"kind": "quantize", "bits": 4}]


def small_model(data) -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.build("student", num_classes=data.num_classes).eval()


def test_yaml_and_json_round_trip(tmp_path):
    recipe = load_recipe({"name": "demo", "steps": TRAINING})
    for suffix in (".yaml", ".json"):
        path = save_recipe(recipe, tmp_path / f"r{suffix}")
        assert load_recipe(path) == recipe == load_recipe(str(path))
    assert json.loads(dumps_recipe(recipe, "json"))["steps"] == TRAINING
    text = "steps:\n  - {kind: finetune, epochs: 1, lr: 0.001}\n"
    assert load_recipe(text).steps == (TRAINING[0],)
    assert load_recipe(json.dumps(TRAINING)).steps == tuple(TRAINING)  # a bare JSON list of steps


def test_method_steps_are_normalised(method_steps, tmp_path):
    recipe = load_recipe(method_steps)
    assert recipe.steps[0]["kind"] == "prune" and recipe.steps[0]["sparsity"] == 0.5
    assert len(recipe.steps[0]) > 2  # every field of the config, defaults included
    assert load_recipe(save_recipe(recipe, tmp_path / "r.yml")) == recipe


@pytest.mark.parametrize("steps, index, message", [
    ([TRAINING[0], {"kind": "shrink"}], 1, "unknown step kind"),
    ([{"kind": "finetune", "epochs": "3"}], 0, "epochs must be of type int"),
    ([{"kind": "finetune", "epochs": True}], 0, "epochs must be of type int"),
    ([TRAINING[0], TRAINING[1], {"kind": "finetune", "lr": -1.0}], 2, "lr must be a number"),
    ([{"kind": "finetune", "alpha": 0.5}], 0, "unknown field"),
    ([TRAINING[0], ["finetune"]], 1, "must be a mapping"),
])
def test_bad_steps_name_their_index(steps, index, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_recipe({"steps": steps})
    assert f"Recipe step {index + 1} " in str(info.value) and info.value.step_index == index


def test_bad_method_step_names_its_index(methods):
    with pytest.raises(ConfigError, match=r"Recipe step 2 \('prune'\)") as info:
        load_recipe([TRAINING[0], {"kind": "prune", "sparsity": 1.5}])
    assert info.value.step_index == 1
    with pytest.raises(ConfigError, match="Recipe step 1 .*Unknown field"):
        load_recipe([{"kind": "quantize", "bitz": 4}])


@pytest.mark.parametrize("source, message", [
    ("steps: [unclosed", "not valid YAML"), ("steps: []", "at least one step"), ("42", "list of steps"),
    ({"steps": TRAINING, "colour": "red"}, "Unknown recipe field"), ({"version": 9, "steps": TRAINING}, "version 9"),
])
def test_bad_recipes(source, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe(source)


def test_replay_reproduces_recorded_metrics(digits, tmp_path):
    model = small_model(digits)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recipe = load_recipe(TRAINING)
    out, reports, metrics = run_recipe(model, digits, recipe, seed=3)
    assert [r.method for r in reports] == ["finetune", "distill_from_original"]
    assert metrics["steps_done"] == 2 and metrics["stopped"] is False
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input untouched
    store = Store(tmp_path / "runs.sqlite")
    run_id = store.record("recipe", ("student", "fp"), digits, recipe_run_config(recipe, 3), metrics)
    _, _, again = replay_run(store.get(run_id), small_model(digits), digits)
    recorded = store.get(run_id).metrics
    assert {k: again[k] for k in REPRODUCED} == {k: recorded[k] for k in REPRODUCED}
    _, _, other_seed = run_recipe(small_model(digits), digits, recipe, seed=4)
    assert other_seed["loss"] != metrics["loss"]


def test_replay_with_methods(method_steps, digits):
    recipe = load_recipe(method_steps)
    model = zoo.load_pretrained("mlp")
    first = run_recipe(model, digits, recipe, seed=0)
    second = run_recipe(zoo.load_pretrained("mlp"), digits, recipe, seed=0)
    assert [r.method for r in first[1]][1] == "finetune" and len(first[1]) == 3
    assert {k: first[2][k] for k in REPRODUCED} == {k: second[2][k] for k in REPRODUCED}
    assert first[2]["nonzero_params"] < 0.6 * first[2]["params"]
    weight = effective_weights(first[0])["fc1.weight"]  # (300, 64)
    assert float((weight == 0).float().mean()) >= 0.5  # pruned, fine-tuned with masks fixed ...
    assert max(len(torch.unique(row)) for row in weight) <= 16  # ... then really on a 4-bit grid


def test_every_method_kind_in_one_recipe(methods, digits):
    steps = [{"kind": "channel_prune", "sparsity": 0.25}, {"kind": "lowrank", "rank_ratio": 0.5},
             {"kind": "distill", "epochs": 1}, {"kind": "prune", "sparsity": 0.3}, {"kind": "quantize", "bits": 8}]
    model = zoo.load_pretrained("lenet5")
    out, reports, metrics = run_recipe(model, digits, steps, callback=lambda e: None)
    assert [r.config["kind"] for r in reports] == [s["kind"] for s in steps]
    assert metrics["params"] < 0.8 * sum(p.numel() for p in model.parameters())
    assert metrics["accuracy"] > 0.8 and metrics["agreement"] > 0.8


def test_progress_and_stop(digits):
    events = []
    recipe = load_recipe(TRAINING)
    run_recipe(small_model(digits), digits, recipe, callback=events.append)
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert {e.kind for e in events} >= {"finetune", "distill_from_original"}
    stop = threading.Event()
    stop.set()
    with pytest.raises(StoppedError):
        run_recipe(small_model(digits), digits, recipe, stop=stop)
    stop.clear()

    def stop_after_first(event) -> None:
        if event.step == 1:
            stop.set()

    _, reports, metrics = run_recipe(small_model(digits), digits, recipe, callback=stop_after_first, stop=stop)
    assert metrics["stopped"] is True and metrics["steps_done"] == len(reports) == 2
    assert reports[1].metrics["epochs_run"] == 0  # the second step saw the flag at once


def test_recipe_from_runs(tmp_path):
    store = Store(tmp_path / "runs.sqlite")
    store.record("evaluate", "m", "d", {}, {"accuracy": 0.9})
    store.record("finetune", "m", "d", {"kind": "finetune", "epochs": 2}, {})
    store.record("sensitivity", "m", "d", {"levels": [0.5]}, {})
    store.record("recipe", "m", "d", recipe_run_config(load_recipe([TRAINING[1]])), {})
    recipe = recipe_from_runs(store.list(), name="mine")  # list() is newest first
    assert recipe.steps == ({"kind": "finetune", "epochs": 2}, TRAINING[1]) and recipe.name == "mine"
    assert recipe_from_runs([r.to_dict() for r in store.list()]) == Recipe(recipe.steps)
    with pytest.raises(ConfigError, match="no recipe to export"):
        recipe_from_runs(store.list(kind="evaluate"))


def test_cli_run_records_and_replays(tmp_path, capsys):
    path = save_recipe(load_recipe(TRAINING), tmp_path / "recipe.yaml")
    store = tmp_path / "runs.sqlite"
    argv = ["run", str(path), "--model", "demo:student", "--store", str(store), "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(argv + ["--save", str(tmp_path / "out.pt2"), "--format", "exported"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert first["accuracy"] == second["accuracy"] and first["loss"] == second["loss"]
    assert [s["method"] for s in first["steps"]] == ["finetune", "distill_from_original"]
    assert (tmp_path / "out.pt2").stat().st_size == second["saved"]["size_bytes"]
    runs = Store(store).list()
    assert [r.id for r in runs] == [second["run_id"], first["run_id"]] and runs[0].kind == "recipe"
    assert runs[0].artefacts["format"] == "exported" and runs[1].config["recipe"]["steps"] == TRAINING
    assert main(["run", str(tmp_path / "missing.yaml"), "--model", "demo:student"]) == 2
    assert "No recipe file" in capsys.readouterr().err

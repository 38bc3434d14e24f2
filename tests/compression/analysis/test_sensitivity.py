"""Sensitivity sweeps: the fast sweep equals the naive deep-copy loop exactly, leaves the caller's
model untouched, stops on its flag, and the CLI prints its rows."""
from __future__ import annotations

import json
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

from compression.methods import pruning
from compression.methods import quantization
from compression.analysis import sensitivity as S
from compression.analysis.attribution import module_hooks
from compression.analysis.perturbations import FLOAT_BITS, QuantSpec, prune_then_quantize
from compression.analysis.sweep_setup import sweep_layers
from compression.cli import main
from compression.core.errors import ConfigError
from compression.metrics.evaluate import accuracy_and_loss

LEVELS = (0.0, 0.3, 0.6, 0.9, 0.95)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_untouched(model: nn.Module, before: dict[str, torch.Tensor], grads: dict[str, bool]) -> None:
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert module_hooks(model) == {}
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads


def assert_same(fast, slow) -> None:
    assert list(fast.columns) == list(slow.columns)
    assert fast[["layer", "level"]].equals(slow[["layer", "level"]])
    assert (fast["accuracy"] == slow["accuracy"]).all()
    assert (fast["loss"] - slow["loss"]).abs().max() <= 1e-6


@pytest.mark.parametrize("name", ["resnet", "mlp", "teacher"])
def test_prune_sweep_equals_naive_loop(digits, pretrained, name):
    model = pretrained(name)
    fast = S.prune_sweep(model, digits, S.DEFAULT_LEVELS if name == "mlp" else LEVELS)
    slow = S.naive_prune_sweep(model, digits, S.DEFAULT_LEVELS if name == "mlp" else LEVELS)
    assert fast.attrs["reuse"] is True
    assert_same(fast, slow)
    layers = list(sweep_layers(model))
    assert fast["layer"].unique().tolist() == layers
    assert len(fast) == len(layers) * (20 if name == "mlp" else len(LEVELS))
    at_zero = fast[fast["level"] == 0.0]
    assert (at_zero["accuracy"] == fast.attrs["baseline_accuracy"]).all()
    assert fast[fast["level"] == 0.95]["accuracy"].min() < fast.attrs["baseline_accuracy"]


def test_quant_sweep_equals_naive_loop(digits, pretrained):
    model = pretrained("resnet")
    for activations in (False, True):
        fast = S.quant_sweep(model, digits, (2, 4, 8), activations=activations)
        slow = S.naive_quant_sweep(model, digits, (2, 4, 8), activations=activations)
        assert_same(fast, slow)
        assert fast.attrs["kind"] == "quantize"
    low, high = fast[fast["level"] == 2]["accuracy"].mean(), fast[fast["level"] == 8]["accuracy"].mean()
    assert low < high <= fast.attrs["baseline_accuracy"] + 0.01


def test_sweep_rows_equal_the_library_methods(digits, pretrained):
    """One point of each sweep against pruning.prune / quantization.quantize on that layer alone."""
    model = pretrained("resnet")
    layers = list(sweep_layers(model))
    prune_row = S.prune_sweep(model, digits, (0.7,), layers=["layers.1.conv1"]).iloc[0]
    pruned, _ = pruning.prune(model, pruning.PruneConfig(sparsity=0.0, overrides={"layers.1.conv1": 0.7}))
    assert (prune_row["accuracy"], prune_row["loss"]) == pytest.approx(accuracy_and_loss(pruned, digits.val), abs=1e-6)
    quant_row = S.quant_sweep(model, digits, (3,), layers=["fc"], activations=True).iloc[0]
    cfg = quantization.QuantConfig(bits=3, activations=True, overrides={n: 3 if n == "fc" else 32 for n in layers})
    quantized, _ = quantization.quantize(model, cfg, digits)
    for n in layers:   # the method quantizes every layer's input: keep only fc's
        if n != "fc":
            quantized.get_submodule(n)._forward_pre_hooks.clear()
    assert (quant_row["accuracy"], quant_row["loss"]) == pytest.approx(accuracy_and_loss(quantized, digits.val),
                                                                       abs=1e-6)


def test_sweep_leaves_the_model_untouched(digits, pretrained):
    model = pretrained("resnet").train()
    before, grads = snapshot(model), {n: p.requires_grad for n, p in model.named_parameters()}
    S.prune_sweep(model, digits, (0.0, 0.9), layers=["stem.0", "fc"])
    S.quant_sweep(model, digits, (2,), layers=["layers.0.conv1"], activations=True)
    assert_untouched(model, before, grads)
    assert model.training and all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))


def test_sweep_of_a_pruned_model_keeps_its_masks(digits, pretrained):
    model = pretrained("mlp")
    torch_prune.l1_unstructured(model.fc1, "weight", amount=0.5)
    before, grads = snapshot(model), {n: p.requires_grad for n, p in model.named_parameters()}
    hooks = module_hooks(model)
    assert_same(S.prune_sweep(model, digits, (0.0, 0.8)), S.naive_prune_sweep(model, digits, (0.0, 0.8)))
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before) and module_hooks(model) == hooks


def test_stop_flag_and_callback(digits, pretrained):
    model, stop, seen = pretrained("lenet5"), threading.Event(), []

    def callback(done: int, total: int, row: dict) -> None:
        seen.append((done, total, row["layer"], row["level"]))
        if done == 3:
            stop.set()

    sweep = S.prune_sweep(model, digits, LEVELS, callback=callback, stop=stop)
    assert len(sweep) == 3 and sweep.attrs["stopped"] is True
    assert seen == [(i + 1, 5 * len(LEVELS), "conv1", lv) for i, lv in enumerate(LEVELS[:3])]
    assert len(S.prune_sweep(model, digits, LEVELS, stop=lambda: True)) == 0
    full = S.prune_sweep(model, digits, LEVELS[:2])
    assert full.attrs["stopped"] is False and len(full) == 10


class Branchy(nn.Module):
    """Data-dependent control flow (fx cannot trace it) and an in-place add."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(x.flatten(1)))  # (B, 32)
        if h.sum() > 0:
            h = h * 1.0
        return self.fc2(h)


class InPlace(nn.Module):
    """Traceable, but with an in-place residual add (so cached values could be overwritten)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x.flatten(1))  # (B, 64)
        h = h.add_(self.fc2(h))
        return self.out(F.relu(h))


@pytest.mark.parametrize("cls", [Branchy, InPlace])
def test_untraceable_models_fall_back_to_the_full_forward(digits, cls):
    torch.manual_seed(0)
    model = cls().eval()
    fast = S.prune_sweep(model, digits, (0.0, 0.5, 0.9))
    assert fast.attrs["reuse"] is False and fast.attrs["reuse_note"]
    assert_same(fast, S.naive_prune_sweep(model, digits, (0.0, 0.5, 0.9)))


def test_subsample_with_bootstrap_intervals(digits, pretrained):
    sweep = S.prune_sweep(pretrained("mlp"), digits, (0.5, 0.95), subsample=200, seed=1)
    assert sweep.attrs["n_samples"] == 200
    assert list(sweep.columns) == ["layer", "level", "accuracy", "loss", "acc_lo", "acc_hi"]
    assert (sweep["acc_lo"] <= sweep["accuracy"]).all() and (sweep["accuracy"] <= sweep["acc_hi"]).all()
    assert (sweep["acc_hi"] - sweep["acc_lo"]).max() > 0
    assert_same(sweep, S.naive_prune_sweep(pretrained("mlp"), digits, (0.5, 0.95), subsample=200, seed=1))


def test_grid_sweep(digits, pretrained):
    model = pretrained("lenet5")
    grid = S.grid_sweep(model, digits, "fcs.0", sparsities=(0.0, 0.5, 0.9), bits=(2, 8, FLOAT_BITS))
    assert list(grid.columns) == ["layer", "sparsity", "bits", "accuracy", "loss"] and len(grid) == 9
    pruned_only = grid[grid["bits"] == FLOAT_BITS].set_index("sparsity")["accuracy"]
    single = S.prune_sweep(model, digits, (0.0, 0.5, 0.9), layers=["fcs.0"]).set_index("level")["accuracy"]
    assert pruned_only.to_dict() == single.to_dict()
    w = model.fcs[0].weight.detach()
    q = prune_then_quantize(QuantSpec())("fcs.0", w, (0.9, 2))
    assert int((q == 0).sum()) >= round(0.9 * w.numel())
    assert len(torch.unique(q[q != 0].abs().flatten())) <= 2 * w.shape[0]   # 2 bits: few values per row


def test_bad_arguments(digits, pretrained):
    model = pretrained("mlp")
    with pytest.raises(ConfigError):
        S.prune_sweep(model, digits, (0.5, 1.0))
    with pytest.raises(ConfigError):
        S.quant_sweep(model, digits, (1, 8))
    with pytest.raises(ConfigError):
        S.prune_sweep(model, digits, (0.5,), layers=["nope"])


def test_cost_floor(digits, pretrained):
    floor = S.sweep_cost_floor(pretrained("resnet"), digits, repeats=2)
    assert list(floor.columns) == ["layer", "suffix_ms", "full_ms"] and len(floor) == 10
    assert (floor["suffix_ms"] > 0).all()
    assert floor["suffix_ms"].iloc[-1] < floor["full_ms"].iloc[0]   # the classifier alone is cheaper


def test_cli_json(digits, capsys, tmp_path):
    csv = tmp_path / "rows.csv"
    assert main(["sensitivity", "--model", "demo:mlp", "--kind", "prune", "--levels", "0,0.9", "--json",
                 "--csv", str(csv)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"rows", "baseline_accuracy", "baseline_loss", "seconds", "kind"} <= set(out)
    assert len(out["rows"]) == 6 and set(out["rows"][0]) == {"layer", "level", "accuracy", "loss"}
    assert out["rows"][0]["accuracy"] == out["baseline_accuracy"]
    assert csv.read_text().splitlines()[0] == "layer,level,accuracy,loss"
    assert main(["sensitivity", "--model", "demo:mlp", "--kind", "quantize", "--levels", "4,8", "--json"]) == 0
    assert [r["level"] for r in json.loads(capsys.readouterr().out)["rows"]] == [4, 8] * 3
    assert main(["sensitivity", "--model", "demo:mlp", "--levels", "a,b"]) == 2

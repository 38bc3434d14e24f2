"""Pruning: achieved sparsity, scopes, the original untouched, structural shrinking, recovery."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from compression.core.errors import ConfigError
from compression.core.modules import count_params, fold_masks_
from compression.core.registry import config_from_dict
from compression.methods.pruning import (channel_prune, ChannelPruneConfig, finetune, layer_sparsity, magnitude_mask,
                                         prune, PruneConfig)
from compression.methods.training import TrainConfig
from compression.metrics.evaluate import accuracy_and_loss
from compression.metrics.latency import LATENCY_BATCH
from compression.models import zoo


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("method", ["magnitude", "random", "taylor"])
def test_layer_scope_achieves_request_on_every_builtin(any_builtin, digits, method):
    name, model = any_builtin
    before = _state(model)
    pruned, report = prune(model, PruneConfig(method=method, sparsity=0.6), digits)
    for row in report.layers:
        assert abs(row["achieved"] - 0.6) * row["params"] <= 1.0  # within one weight
    measured = layer_sparsity(pruned)
    assert all(abs(measured[r["layer"]] - r["achieved"]) < 1e-9 for r in report.layers)
    assert _same(before, model.state_dict()) and _hooks(model) == 0
    assert pruned(digits.test.X[:4]).shape == (4, 10)


def test_global_scope_is_one_threshold(pretrained):
    pruned, report = prune(pretrained("mlp"), PruneConfig(sparsity=0.8, scope="global"))
    achieved = [r["achieved"] for r in report.layers]
    assert report.metrics["sparsity"] == pytest.approx(0.8, abs=1e-4)
    assert max(achieved) - min(achieved) > 0.05  # layers end at different sparsities
    kept = torch.cat([(m.weight_orig * m.weight_mask).flatten() for m in pruned.modules() if hasattr(m, "weight_mask")])
    nonzero = kept[kept != 0].abs()
    removed = torch.cat([(m.weight_orig * (1 - m.weight_mask)).flatten() for m in pruned.modules()
                         if hasattr(m, "weight_mask")]).abs()
    assert removed.max() <= nonzero.min()


def test_random_is_seeded_and_taylor_differs(pretrained, digits):
    m = pretrained("student")
    a, _ = prune(m, PruneConfig(method="random", sparsity=0.5, seed=1))
    b, _ = prune(m, PruneConfig(method="random", sparsity=0.5, seed=1))
    assert torch.equal(a.fc1.weight_mask if hasattr(a, "fc1") else a.fcs[0].weight_mask, b.fcs[0].weight_mask)
    t, _ = prune(m, PruneConfig(method="taylor", sparsity=0.5), digits)
    g, _ = prune(m, PruneConfig(method="magnitude", sparsity=0.5))
    assert not torch.equal(t.fcs[0].weight_mask, g.fcs[0].weight_mask)


def test_overrides_and_skip(pretrained):
    cfg = PruneConfig(sparsity=0.5, overrides={"fc1": 0.9}, exclude=("fc3",))
    pruned, report = prune(pretrained("mlp"), cfg)
    rows = {r["layer"]: r for r in report.layers}
    assert rows["fc1"]["achieved"] == pytest.approx(0.9, abs=1e-4) and "fc3" not in rows
    assert ("fc3", "in the exclude list") in report.skipped and not hasattr(pruned.fc3, "weight_mask")


@pytest.mark.parametrize("kwargs", [{"sparsity": 1.0}, {"sparsity": -0.1}, {"method": "nope"},
                                    {"scope": "row"}, {"overrides": {"fc1": 2.0}}])
def test_bad_configs(kwargs):
    with pytest.raises(ConfigError):
        PruneConfig(**kwargs)


def test_unknown_layer_names(pretrained):
    with pytest.raises(ConfigError, match="Unknown layer"):
        prune(pretrained("mlp"), PruneConfig(overrides={"nope": 0.5}))


def test_json_round_trip():
    cfg = PruneConfig(method="taylor", sparsity=0.3, scope="global", overrides={"fc1": 0.5}, exclude=("fc3",))
    assert config_from_dict(cfg.to_dict()) == cfg
    assert config_from_dict(ChannelPruneConfig(0.4).to_dict()) == ChannelPruneConfig(0.4)


def test_magnitude_mask_exact_count():
    mask = magnitude_mask(torch.ones(7, 3), 0.5)  # all ties
    assert int((mask == 0).sum()) == round(0.5 * 21)


def test_fold_masks_(pretrained):
    pruned, _ = prune(pretrained("mlp"), PruneConfig(sparsity=0.9))
    fold_masks_(pruned)
    assert not any(k.endswith("_mask") for k in pruned.state_dict())
    assert layer_sparsity(pruned)["fc1"] == pytest.approx(0.9, abs=1e-4)


@pytest.mark.parametrize("name", zoo.list_models())
def test_channel_pruning_really_removes_channels(pretrained, digits, name):
    model = pretrained(name)
    before = _state(model)
    small, report = channel_prune(model, ChannelPruneConfig(sparsity=0.5), digits, measure_latency=False)
    assert count_params(small) < count_params(model)
    rows = report.layers[:-1]  # the classifier keeps its outputs
    assert all(r["channels_after"] < r["channels_before"] for r in rows)
    assert small(digits.test.X[:5]).shape == (5, 10)
    assert _same(before, model.state_dict())


LATENCY_KEYS = {"latency_before_ms", "latency_after_ms", "latency_ratio", "latency_ratio_low", "latency_ratio_high",
                "latency_batch"}


@pytest.mark.parametrize("importance", ["l1", "taylor"])
def test_channel_pruning_without_timing_times_nothing_and_prunes_the_same(pretrained, digits, monkeypatch,
                                                                          importance):
    """What a curve of many sparsities needs (workflows.curves.sweep_configs compresses once per
    point): measure_latency=False runs no latency measurement at all, and gives the same model and
    report as a timed run but for the latency keys, which a timed run keeps."""
    import compression.metrics.latency as latency_module

    model, cfg = pretrained("mlp"), ChannelPruneConfig(sparsity=0.5, importance=importance)
    timed, timed_report = channel_prune(model, cfg, digits, measure_latency=True)
    assert LATENCY_KEYS <= set(timed_report.metrics) and timed_report.metrics["latency_batch"] == LATENCY_BATCH

    def no_timing(*_, **__):
        raise AssertionError("timed although measure_latency=False")

    monkeypatch.setattr(latency_module, "measure_latency", no_timing)
    small, report = channel_prune(model, cfg, digits, measure_latency=False)
    assert _same(small.state_dict(), timed.state_dict()) and report.layers == timed_report.layers
    assert report.metrics == {k: v for k, v in timed_report.metrics.items() if k not in LATENCY_KEYS}


def test_finetune_keeps_sparsity_and_recovers(pretrained, digits):
    pruned, _ = prune(pretrained("mlp"), PruneConfig(sparsity=0.9))
    before = layer_sparsity(pruned)
    tuned, report = finetune(pruned, digits, TrainConfig(epochs=2, lr=1e-3))
    assert layer_sparsity(tuned) == before
    assert report.metrics["accuracy_after"] >= report.metrics["accuracy_before"]
    assert accuracy_and_loss(tuned, digits.val)[0] == pytest.approx(report.metrics["accuracy_after"])


@pytest.mark.parametrize("decimals", [None, 1])
@pytest.mark.parametrize("sparsity", [0.0, 0.01, 0.5, 0.93, 0.999, 1.0])
def test_magnitude_mask_equals_a_stable_sort(decimals, sparsity):
    gen = torch.Generator().manual_seed(0)
    score = torch.randn(300, 70, generator=gen).abs()
    score = score.round(decimals=decimals) if decimals else score  # many ties
    k = int(round(sparsity * score.numel()))
    expected = torch.ones(score.numel())
    expected[torch.argsort(score.flatten(), stable=True)[:k]] = 0.0
    assert torch.equal(magnitude_mask(score, sparsity), expected.reshape(score.shape))

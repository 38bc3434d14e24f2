"""One layer-selection vocabulary for every method: include / exclude names or patterns, plus
per-layer overrides; configs stored under the old field names still load."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from compression.core.errors import ConfigError
from compression.core.modules import matches, not_selected, weight_layers
from compression.core.registry import CONFIGS, config_from_dict
from compression.methods.hf import Int8Config
from compression.methods.int8 import quantize_int8
from compression.methods.lowrank import LowRankConfig, lowrank
from compression.methods.pruning import ChannelPruneConfig, PruneConfig, channel_prune, prune
from compression.methods.quantization import QuantConfig, quantize
from tests.compression.cli.clitools import run_cli

SELECTING = ["prune", "channel_prune", "quantize", "lowrank", "hf_int8", "hf_prune", "hf_quantize", "hf_lowrank"]


def test_patterns_and_reasons():
    assert matches("layers.1.conv1", ["layers.*.conv1"]) and not matches("layers.1.conv2", ["layers.*.conv1"])
    assert not_selected("fc1", include=("fc[12]",)) is None
    assert not_selected("fc3", include=("fc[12]",)) == "not in the include list"
    assert not_selected("fc1", include=("fc*",), exclude=("fc1",)) == "in the exclude list"


@pytest.mark.parametrize("kind", SELECTING)
def test_every_selecting_method_spells_it_the_same(kind):
    fields = {f.name for f in dataclasses.fields(CONFIGS[kind])}
    assert {"include", "exclude"} <= fields and not fields & {"skip", "ignore", "keep", "layer_bits"}


@pytest.mark.parametrize("old, new", [
    ({"kind": "prune", "skip": ["fc3"]}, PruneConfig(exclude=("fc3",))),
    ({"kind": "quantize", "bits": 4, "layer_bits": {"fc1": 8}, "skip": ["fc3"]},
     QuantConfig(bits=4, overrides={"fc1": 8}, exclude=("fc3",))),
    ({"kind": "lowrank", "skip": ["fc3"]}, LowRankConfig(exclude=("fc3",))),
    ({"kind": "channel_prune", "ignore": ["conv1"]}, ChannelPruneConfig(exclude=("conv1",))),
    ({"kind": "hf_int8", "keep": ["lm_head"]}, Int8Config(exclude=("lm_head",))),
])
def test_configs_stored_under_old_names_still_load(old, new):
    assert config_from_dict(old) == new and config_from_dict(new.to_dict()) == new


def test_a_bare_string_or_a_pattern_matching_nothing_is_refused(pretrained):
    with pytest.raises(ConfigError, match="list of layer names or patterns"):
        PruneConfig(include="fc1")
    with pytest.raises(ConfigError, match="Unknown layer"):
        prune(pretrained("mlp"), PruneConfig(exclude=("conv*",)))


def test_include_pattern_prunes_only_the_matching_layers(pretrained):
    model = pretrained("resnet")
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    pruned, report = prune(model, PruneConfig(sparsity=0.5, include=("layers.*.conv1",)))
    done = {r["layer"] for r in report.layers}
    assert done == {n for n in weight_layers(model)[0] if matches(n, ["layers.*.conv1"])} and len(done) >= 2
    assert dict(report.skipped)["fc"] == "not in the include list"
    weights = dict(pruned.named_modules())
    for name in done:
        assert float((weights[name].weight == 0).float().mean()) == pytest.approx(0.5, abs=0.01)
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())  # the baseline is untouched


def test_quantize_and_lowrank_exclude_by_pattern(pretrained):
    model = pretrained("mlp")
    _, q = quantize(model, QuantConfig(bits=4, exclude=("fc[23]",)))
    assert [r["layer"] for r in q.layers] == ["fc1"] and dict(q.skipped)["fc3"] == "in the exclude list"
    _, lr = lowrank(model, LowRankConfig(rank_ratio=0.2, include=("fc1",)), measure_latency=False)
    assert [r["layer"] for r in lr.layers] == ["fc1"]


def test_real_int8_keeps_excluded_layers_fp32(pretrained):
    q, report = quantize_int8(pretrained("mlp"), exclude=("fc3",), measure=False)
    assert [r["layer"] for r in report.layers] == ["fc1", "fc2"] and isinstance(q.fc3, torch.nn.Linear)
    assert report.config == {"kind": "int8", "include": [], "exclude": ["fc3"]}


def test_channel_pruning_leaves_excluded_blocks_whole(pretrained, digits):
    model = pretrained("resnet")
    pruned, report = channel_prune(model, ChannelPruneConfig(sparsity=0.5, exclude=("layers.1",)), digits,
                                   measure_latency=False)
    after = {r["layer"]: (r["channels_before"], r["channels_after"]) for r in report.layers}
    assert after["layers.1.conv1"][0] == after["layers.1.conv1"][1]
    assert any(a < b for b, a in after.values())
    assert pruned(digits.val.X[:2]).shape == (2, 10)


@pytest.mark.parametrize("argv, done", [
    (["prune", "--sparsity", "0.5", "--exclude", "fc3"], ["fc1", "fc2"]),
    (["quantize", "--bits", "4", "--include", "fc[12]"], ["fc1", "fc2"]),
    (["quantize", "--int8", "--exclude", "fc1,fc2"], ["fc3"]),
    (["lowrank", "--rank-ratio", "0.2", "--include", "fc2"], ["fc2"]),
])
def test_the_cli_takes_the_same_vocabulary(capsys, argv, done):
    code, out, _ = run_cli(capsys, *argv, "--model", "demo:mlp", "--no-latency", "--no-store", "--json")
    assert code == 0 and [r["layer"] for r in json.loads(out)["layers"]] == done


def test_the_cli_refuses_a_pattern_matching_nothing_in_one_line(capsys):
    code, _, err = run_cli(capsys, "prune", "--model", "demo:mlp", "--sparsity", "0.5", "--exclude", "conv*")
    assert code == 2 and "Unknown layer" in err and len(err.strip().splitlines()) == 1

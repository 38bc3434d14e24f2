"""The numbers a real int8 model reports: MACs counted on int8 kernels, paired latency with its
spread, and one name per size (issue 15, items 1 and 4)."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from compression.core.errors import ConfigError
from compression.core.modules import count_params
from compression.methods.int8 import int8_layers, quantize_int8
from compression.metrics.evaluate import count_macs
from compression.models import zoo
from tests.compression.cli.clitools import run_cli

DIGIT = (1, 1, 8, 8)  # batch 1 of the digits input
# by hand from the layer shapes at 8x8 (3x3 convs, padding 1; LeNet-5 pools after conv2)
HAND_MACS = {
    "mlp": {"fc1": 64 * 300, "fc2": 300 * 100, "fc3": 100 * 10},  # 50,200, all on int8 kernels
    "lenet5": {"conv1": 6 * 8 * 8 * 1 * 9, "conv2": 16 * 8 * 8 * 6 * 9,
               "fcs.0": 256 * 120, "fcs.1": 120 * 84, "fcs.2": 84 * 10},  # 100,392
}
LATENCY_KEYS = {"fp32_latency_ms", "int8_latency_ms", "speedup", "speedup_min", "speedup_max", "speedup_iqr",
                "latency_rounds", "latency_batch", "input_shape"}


def _linear_macs(model: nn.Module) -> dict[str, int]:
    """The independent reference: in_features * out_features of each fp32 Linear (one sample row)."""
    return {n: m.in_features * m.out_features for n, m in model.named_modules() if isinstance(m, nn.Linear)}


@pytest.mark.parametrize("name", sorted(HAND_MACS))
def test_hand_checked_macs(name, pretrained):
    q, _ = quantize_int8(pretrained(name), measure=False)
    total, per_module = count_macs(q, torch.zeros(DIGIT))
    assert total == sum(HAND_MACS[name].values()) == {"mlp": 50_200, "lenet5": 100_392}[name]
    assert {n: per_module[n] for n in HAND_MACS[name]} == HAND_MACS[name]


def test_int8_macs_equal_fp32_for_every_builtin(any_builtin):
    name, model = any_builtin
    x = torch.zeros(DIGIT)
    q, _ = quantize_int8(model, measure=False)
    fp32_total, fp32_per_module = count_macs(model, x)
    int8_total, _ = count_macs(q, x)
    assert int8_total == fp32_total > 0, name
    on_int8, by_module = count_macs(q, x, kernels="int8")
    linears = _linear_macs(model)
    assert on_int8 == sum(linears.values()) > 0 and set(linears) == set(int8_layers(q))
    assert {n: by_module[n] for n in linears} == linears == {n: fp32_per_module[n] for n in linears}
    assert count_macs(model, x, kernels="int8") == (0, {})  # nothing of the fp32 model runs on int8 kernels
    assert count_macs(q, torch.zeros(3, *DIGIT[1:]))[0] == 3 * fp32_total  # batch included, like the counter


def test_count_macs_refuses_unknown_kernels(pretrained):
    with pytest.raises(ValueError, match="kernels"):
        count_macs(pretrained("mlp"), torch.zeros(DIGIT), kernels="fp16")


def test_report_sizes_have_one_name_each(pretrained):
    _, report = quantize_int8(pretrained("resnet"), measure=False)
    m = report.metrics
    assert {"fp32_bytes", "int8_bytes"}.isdisjoint(m) and not LATENCY_KEYS & set(m)
    assert m["fp32_file_bytes"] > 0 and m["int8_file_bytes"] > 0 and "torch.save" in m["bytes_how"]
    assert m["size_ratio"] == m["int8_file_bytes"] / m["fp32_file_bytes"]


def test_speedup_is_paired_over_rounds(pretrained):
    _, report = quantize_int8(pretrained("mlp"), batch_size=8, rounds=3)
    m = report.metrics
    assert LATENCY_KEYS <= set(m) and m["latency_rounds"] == 3 and m["latency_batch"] == 8
    assert m["fp32_latency_ms"] > 0 and m["int8_latency_ms"] > 0
    assert m["speedup"] == pytest.approx(m["fp32_latency_ms"] / m["int8_latency_ms"])
    # a ratio of medians lies within the per-round ratios
    assert m["speedup_min"] * (1 - 1e-9) <= m["speedup"] <= m["speedup_max"] * (1 + 1e-9)
    assert 0 <= m["speedup_iqr"] <= m["speedup_max"] - m["speedup_min"] + 1e-12
    with pytest.raises(ConfigError, match="rounds"):
        quantize_int8(pretrained("mlp"), batch_size=8, rounds=0)


def test_cli_int8_json_keys_distinct_and_consistent(capsys):
    code, out, _ = run_cli(capsys, "quantize", "--model", "demo:student", "--int8", "--json", "--no-store")
    r = json.loads(out)
    assert code == 0 and r["macs"] == r["baseline"]["macs"] == 96_192
    assert r["int8_macs"] == 128 * 96 + 96 * 10 and r["int8_macs_by_layer"] == {"fcs.0": 128 * 96, "fcs.1": 96 * 10}
    assert r["int8_macs_share"] == r["int8_macs"] / r["macs"]
    q, _ = quantize_int8(zoo.load_pretrained("student"), measure=False)
    assert r["fp32_bytes"] == 4 * r["params"] == 4 * count_params(q)  # the evaluation's: parameters x 4
    assert r["size_ratio"] == r["int8_file_bytes"] / r["fp32_file_bytes"] and "int8_bytes" not in r
    assert LATENCY_KEYS <= set(r) and r["latency_rounds"] >= 2
    assert r["speedup"] == pytest.approx(r["fp32_latency_ms"] / r["int8_latency_ms"])
    assert r["speedup_min"] * (1 - 1e-9) <= r["speedup"] <= r["speedup_max"] * (1 + 1e-9)


def test_no_int8_report_key_is_hidden_by_the_evaluation(capsys):
    """One name per quantity: every key of the real-int8 report reaches the CLI result unchanged."""
    _, report = quantize_int8(zoo.load_pretrained("mlp"), measure=False)
    code, out, _ = run_cli(capsys, "quantize", "--model", "demo:mlp", "--int8", "--json", "--no-latency", "--no-store")
    result = json.loads(out)
    assert code == 0 and all(result[k] == v for k, v in report.metrics.items() if not isinstance(v, float)), result

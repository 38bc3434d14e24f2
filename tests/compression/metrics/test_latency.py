"""Paired latency: the noise decision on synthetic ratios, the pairing itself with a controlled
clock, and one batch size for every latency a result carries (slider, channel pruning, int8)."""
from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import compression.metrics.latency as latency_mod
from compression.figures.compress import sim_vs_real_figure
from compression.methods.int8 import quantize_int8
from compression.methods.pruning import ChannelPruneConfig, PruneConfig
from compression.methods.quantization import QuantConfig
from compression.metrics.evaluate import evaluate
from compression.metrics.latency import (LATENCY_BATCH, Latency, PairedLatency, no_measurable_change, paired_latency,
                                         ratio_text, setting_text)
from compression.models import zoo
from compression.workflows.slider import SIMULATED_SPEED, compressed_latency, real_int8, speed_note


@pytest.mark.parametrize("ratios", [
    [0.98, 1.03, 1.00],   # the range includes 1.0
    [0.97, 0.96, 0.965],  # consistent, but within 5% of 1
    [0.30, 0.90, 0.60],   # all below 1, but the rounds disagree by more than the change they claim
    [0.02, 1.40, 0.95],   # the swing
    [],
])
def test_noise_is_no_measurable_change(ratios):
    assert no_measurable_change(ratios)


@pytest.mark.parametrize("ratios", [[0.60, 0.62, 0.65], [1.40, 1.50, 1.45], [0.38]])
def test_a_consistent_change_is_measurable(ratios):
    assert not no_measurable_change(ratios)


def test_the_floor_and_the_ratio_can_be_given():
    assert not no_measurable_change([0.96, 0.965], min_change=0.01)
    assert no_measurable_change([0.6, 0.62], ratio=0.99)  # the ratio of medians decides, the range bounds it


def _fake_clock(monkeypatch, times: dict[str, list[float]]):
    """measure_latency replaced: each model (by its `tag`) returns its next preset median; calls
    are logged in order."""
    calls, queues = [], {k: iter(v) for k, v in times.items()}

    def fake(model, example, repeats=30, **_):
        calls.append(model.tag)
        return Latency(next(queues[model.tag]), 0.01, 0.0, repeats, int(example.shape[0]), 2, "cpu")

    monkeypatch.setattr(latency_mod, "measure_latency", fake)
    return calls


def _tagged(tag: str) -> nn.Module:
    model = nn.Linear(4, 2)
    model.tag = tag
    return model


def test_rounds_alternate_and_give_per_round_ratios(monkeypatch):
    calls = _fake_clock(monkeypatch, {"a": [2.0, 2.2, 1.8], "b": [1.0, 1.0, 1.0]})
    p = paired_latency(_tagged("a"), _tagged("b"), torch.zeros(16, 4), rounds=3, repeats=4)
    assert calls == ["a", "b", "b", "a", "a", "b"]  # who goes first alternates
    assert p.original_ms == 2.0 and p.compressed_ms == 1.0 and p.ratio == 0.5
    assert p.ratios == pytest.approx((1 / 2.0, 1 / 2.2, 1 / 1.8))
    assert p.measurable and ratio_text(p) == "0.50x original (0.45x-0.56x)"
    assert setting_text(p) == "batch 16, 2 threads, cpu, 3 paired rounds"
    assert PairedLatency.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match="rounds"):
        paired_latency(_tagged("a"), _tagged("b"), torch.zeros(1, 4), rounds=0)


def test_noisy_rounds_read_no_measurable_change(monkeypatch):
    _fake_clock(monkeypatch, {"a": [1.0, 1.0, 1.0], "b": [0.98, 1.03, 1.0]})
    p = paired_latency(_tagged("a"), _tagged("b"), torch.zeros(2, 4), rounds=3)
    assert not p.measurable and ratio_text(p) == "no measurable change (0.98x-1.03x)"
    assert p.to_dict()["latency_measurable"] is False


def _constant_clock(monkeypatch, target):
    """Every measurement returns 1 ms; the batch sizes it was asked for are logged."""
    batches = []

    def fake(model, example, repeats=30, **_):
        batches.append(int(example.shape[0]))
        return Latency(1.0, 0.0, 1.0, repeats, int(example.shape[0]), 2, "cpu")

    monkeypatch.setattr(target, "measure_latency", fake)
    return batches


def test_one_batch_size_everywhere(monkeypatch, digits):
    assert inspect.signature(evaluate).parameters["batch_size"].default == LATENCY_BATCH
    assert inspect.signature(compressed_latency).parameters["batch_size"].default == LATENCY_BATCH
    assert inspect.signature(quantize_int8).parameters["batch_size"].default == LATENCY_BATCH
    method_batches = _constant_clock(monkeypatch, latency_mod)
    _, report = quantize_int8(zoo.load_pretrained("mlp"), rounds=2)  # the CLI's int8 timing
    assert report.metrics["latency_batch"] == LATENCY_BATCH and set(method_batches) == {LATENCY_BATCH}


def test_real_int8_is_one_paired_measurement_at_the_common_batch(monkeypatch, digits):
    batches = _constant_clock(monkeypatch, latency_mod)
    result = real_int8(zoo.load_pretrained("mlp"), digits)
    m, r = result["metrics"], result["report"]["metrics"]
    assert set(batches) == {LATENCY_BATCH} and len(batches) == 2 * m["latency_rounds"]
    assert m["batch_size"] == r["latency_batch"] == LATENCY_BATCH  # headline, chart and report agree
    assert m["latency_ms"] == r["int8_latency_ms"] and m["baseline_latency_ms"] == r["fp32_latency_ms"]
    assert r["speedup"] == pytest.approx(1 / m["latency_ratio"]) and not result["report"]["simulated"]


def test_channel_pruning_reports_the_paired_measurement(monkeypatch, digits):
    batches = _constant_clock(monkeypatch, latency_mod)
    lat = compressed_latency(zoo.load_pretrained("mlp"), ChannelPruneConfig(sparsity=0.5), digits, repeats=2)
    r = lat["report"]
    assert set(batches) == {LATENCY_BATCH} and len(batches) == 2 * lat["latency_rounds"]  # no timing of its own
    assert (r["latency_before_ms"], r["latency_after_ms"], r["latency_batch"]) == (
        lat["baseline_latency_ms"], lat["latency_ms"], lat["batch_size"])
    assert r["params_after"] < r["params_before"]


def test_what_cannot_change_speed_says_so():
    assert speed_note({"method": "quantize", "simulated": True}) == SIMULATED_SPEED
    assert "unstructured" in speed_note({"method": "prune", "simulated": False})
    assert speed_note({"method": "channel_prune", "simulated": False}) is None
    assert speed_note({"method": "int8", "simulated": False}) is None
    from compression.core.registry import compress

    for cfg in (QuantConfig(bits=4), PruneConfig(sparsity=0.5)):
        _, report = compress(zoo.load_pretrained("mlp"), cfg, None)
        assert speed_note(report.to_dict()) is not None


def test_simulated_latency_is_never_drawn():
    base = {"accuracy": 0.9, "size_bytes": 4096, "latency_ms": 9.0}
    simulated = {"accuracy": 0.8, "size_bytes": 1024, "latency_ms": 0.9}  # a '10x faster' fp32 timing
    real = {"accuracy": 0.85, "size_bytes": 2048, "latency_ms": 1.5, "baseline_latency_ms": 2.0, "batch_size": 64}
    fig = sim_vs_real_figure(base, simulated, real, SIMULATED_SPEED)
    latency = {t.name: t.y[0] for t in fig.data if t.xaxis == "x3"}
    assert latency == {"fp32 baseline": 2.0, "simulated (fake quantization)": None, "real int8 kernels": 1.5}
    assert "batch 64" in fig.layout.annotations[2].text  # the subplot title
    assert any("no speed change expected" in a.text for a in fig.layout.annotations)
    unpaired = sim_vs_real_figure(base, simulated, {**real, "baseline_latency_ms": None})
    assert all(t.y[0] is None for t in unpaired.data if t.xaxis == "x3")  # no unpaired bars


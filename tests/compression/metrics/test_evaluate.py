"""Evaluation against hand-checked small cases."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
import torch.nn.utils.prune
from torch import nn

from compression.data.datasets import Dataset, Split
from compression.metrics.evaluate import (agreement, confusion_matrix, count_macs, count_nonzero_params, evaluate,
                                          topk_accuracy)
from compression.metrics.latency import measure_latency


class _Fixed(nn.Module):
    """Returns preset logits for inputs 0..N-1 (the input holds the row index)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.register_buffer("table", logits)
        self.dummy = nn.Linear(1, 1)

    def forward(self, x):
        return self.table[x[:, 0].long()]


def _dataset(y: list[int], classes: int) -> Dataset:
    X = torch.arange(len(y), dtype=torch.float32)[:, None]
    split = Split(X, torch.tensor(y))
    return Dataset("hand", split, split, split, classes, tuple(map(str, range(classes))), "x")


def test_hand_checked_accuracy_loss_confusion():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
    data = _dataset([0, 1, 0, 2], 3)  # third sample is wrong: predicted 1, true 0
    r = evaluate(_Fixed(logits), data, latency=False)
    assert r.accuracy == pytest.approx(0.75)
    p_right = math.exp(2) / (math.exp(2) + 2)
    p_wrong = 1 / (math.exp(2) + 2)
    assert r.loss == pytest.approx(-(3 * math.log(p_right) + math.log(p_wrong)) / 4, rel=1e-5)
    assert r.confusion == ((1, 1, 0), (0, 1, 0), (0, 0, 1))
    assert r.per_class_accuracy == pytest.approx((0.5, 1.0, 1.0))
    assert r.top5 is None  # only 3 classes
    assert r.params == 2 and r.fp32_bytes == 8


def test_topk_and_confusion_helpers():
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.02, 0.08]])
    y = torch.tensor([2, 1])
    assert topk_accuracy(logits, y, 1) == 0.0
    assert topk_accuracy(logits, y, 2) == 0.5
    assert confusion_matrix(torch.tensor([1, 0]), y, 3).tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0]]


def test_agreement_and_kl():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    agree, kl = agreement(a, a)
    assert agree == 1.0 and kl == pytest.approx(0.0, abs=1e-7)
    b = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    agree, kl = agreement(b, a)
    p, q = torch.softmax(a, 1), torch.softmax(b, 1)
    assert agree == 0.5
    assert kl == pytest.approx(float((p * (p / q).log()).sum(1).mean()), rel=1e-5)


def test_macs_counted_by_flop_counter():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    total, per_module = count_macs(model, torch.zeros(1, 1, 8, 8))
    conv = 4 * 8 * 8 * 9       # outputs x kernel
    assert total == conv + 256 * 10
    assert per_module["0"] == conv and per_module["2"] == 2560


def test_nonzero_counts_masks():
    model = nn.Linear(4, 4)
    torch.nn.utils.prune.l1_unstructured(model, "weight", amount=0.5)
    assert count_nonzero_params(model) == 8 + int(torch.count_nonzero(model.bias))


def test_latency_is_measured():
    lat = measure_latency(nn.Linear(64, 64), torch.zeros(8, 64), repeats=7, warmup=2)
    assert lat.repeats >= 7 and lat.median_ms > 0 and lat.iqr_ms >= 0 and lat.batch_size == 8
    assert lat.blocks >= 1 and lat.repeats % lat.blocks == 0 and lat.min_ms <= lat.median_ms


class _Sleeper(nn.Module):
    def forward(self, x):
        time.sleep(0.02)
        return x


def test_latency_blocks_cover_about_repeats_runs_of_a_slow_model():
    lat = measure_latency(_Sleeper(), torch.zeros(2, 3), repeats=5, warmup=1, threads=1)
    assert lat.median_ms >= 20 and lat.min_ms >= 20 and lat.threads == 1
    assert 3 <= lat.blocks <= 6 and lat.repeats == lat.blocks  # a 20 ms run is a block of its own


def test_evaluate_builtin_with_reference(digits, pretrained):
    model = pretrained("lenet5")
    r = evaluate(model, digits, reference=pretrained("lenet5"), repeats=5)
    assert r.accuracy >= 0.97
    assert r.agreement == 1.0 and r.kl_divergence == pytest.approx(0.0, abs=1e-6)
    assert r.top5 >= r.accuracy
    assert r.size_bytes > 0 and r.macs > 0 and r.latency_ms > 0
    d = r.to_dict()
    for key in ("accuracy", "loss", "params", "nonzero_params", "fp32_bytes", "size_bytes", "macs",
                "latency_ms", "batch_size"):
        assert key in d
    assert sum(sum(row) for row in r.confusion) == len(digits.test)
    assert np.isclose(sum(np.diag(r.confusion)) / len(digits.test), r.accuracy)


@pytest.mark.parametrize("value", ["0.5", None, [0.5], float("nan"), True])
def test_check_range_refuses_non_numbers_with_config_error(value):
    from compression.core.registry import check_range
    from compression.core.errors import ConfigError

    with pytest.raises(ConfigError, match="must be a number"):
        check_range("sparsity", value, 0.0, 1.0)


def test_slider_move_times_nothing_and_latency_comes_after(digits):
    from compression.models import zoo
    from compression.metrics.evaluate import predict_logits
    from compression.workflows.slider import compress_and_evaluate, compressed_latency
    from compression.methods.pruning import ChannelPruneConfig

    model = zoo.load_pretrained("resnet").eval()
    cfg = ChannelPruneConfig(sparsity=0.5)
    fast = compress_and_evaluate(model, cfg, digits, latency=False,
                                 reference_logits=predict_logits(model, digits.test.X))
    slow = compress_and_evaluate(model, cfg, digits, latency=False)
    assert fast["metrics"]["latency_ms"] is None and "latency_after_ms" not in fast["report"]["metrics"]
    assert fast["metrics"]["agreement"] == slow["metrics"]["agreement"]
    assert fast["metrics"]["kl_divergence"] == slow["metrics"]["kl_divergence"]
    lat = compressed_latency(model, cfg, digits, repeats=2, batch_size=8)
    assert lat["latency_ms"] > 0 and lat["baseline_latency_ms"] > 0 and lat["batch_size"] == 8
    assert lat["report"]["latency_after_ms"] > 0

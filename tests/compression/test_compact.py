"""The compact format: exact round trips, real savings, and damaged files refused."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from compression import compact, zoo
from compression.errors import CompressionError, ModelLoadError
from compression.loading import load_model
from compression.lowrank import LowRankConfig, lowrank
from compression.pruning import ChannelPruneConfig, PruneConfig, channel_prune, make_permanent, prune
from compression.quantization import QuantConfig, quantize


def _round_trip(model: nn.Module) -> nn.Module:
    return compact.load_compact(compact.to_bytes(model))


def _same_outputs(a: nn.Module, b: nn.Module, x: torch.Tensor) -> bool:
    with torch.inference_mode():
        return torch.equal(a.eval()(x), b.eval()(x))


def test_round_trip_every_builtin(any_builtin, digits):
    _, model = any_builtin
    assert _same_outputs(model, _round_trip(model), digits.test.X[:32])


def test_pruned_file_is_much_smaller(pretrained, digits):
    teacher = pretrained("teacher")
    dense, _ = compact.compact_size(teacher)
    pruned, _ = prune(teacher, PruneConfig(sparsity=0.9))
    small, how = compact.compact_size(pruned)
    assert dense / small > 5 and "compact format" in how
    assert _same_outputs(pruned, _round_trip(pruned), digits.test.X[:32])


def test_quantized_codes_pack_to_bits(pretrained, digits):
    model = pretrained("teacher")
    q4, _ = quantize(model, QuantConfig(bits=4))
    dense, _ = compact.compact_size(model)
    size, _ = compact.compact_size(q4)
    assert dense / size > 6  # 4-bit codes: ~8x on weights
    back = _round_trip(q4)
    assert _same_outputs(q4, back, digits.test.X[:32])
    assert back.fcs[0].weight_qinfo.bits == 4


def test_pruned_then_quantized_composes(pretrained, digits):
    model = make_permanent(prune(pretrained("teacher"), PruneConfig(sparsity=0.9))[0])
    both, _ = quantize(model, QuantConfig(bits=4))
    assert compact.compact_size(both)[0] < compact.compact_size(model)[0] / 2
    assert _same_outputs(both, _round_trip(both), digits.test.X[:32])


def test_activation_quant_survives(pretrained, digits):
    q, _ = quantize(pretrained("mlp"), QuantConfig(bits=6, activations=True), digits)
    assert _same_outputs(q, _round_trip(q), digits.test.X[:32])


def test_structural_changes_round_trip(pretrained, digits):
    for model in (channel_prune(pretrained("resnet"), ChannelPruneConfig(0.5), digits, measure_latency=False)[0],
                  lowrank(pretrained("mlp"), LowRankConfig(rank_ratio=0.2), digits, measure_latency=False)[0]):
        assert _same_outputs(model, _round_trip(model), digits.test.X[:32])


def test_loader_recognises_by_content(tmp_path, pretrained, digits):
    path = tmp_path / "model.anything"
    model = prune(pretrained("lenet5"), PruneConfig(sparsity=0.5))[0]
    compact.save_compact(model, path)
    assert compact.is_compact(path) and not compact.is_compact(b"PK\x03\x04")
    loaded = load_model(path, data=digits)
    assert loaded.kind == "compact" and _same_outputs(model, loaded.model, digits.test.X[:8])


def test_damaged_files_are_refused(pretrained):
    data = compact.to_bytes(pretrained("mlp"))
    for bad in (data[: len(data) // 2], data[:20], compact.MAGIC + b"garbage" * 10):
        with pytest.raises(ModelLoadError):
            compact.load_compact(bad)


def test_models_without_builtin_architecture():
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(CompressionError, match="built-in architecture"):
        compact.to_bytes(plain)
    size, how = compact.compact_size(plain)
    assert size > 64 * 10 * 4 and "safetensors" in how

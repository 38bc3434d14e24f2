"""Quantization: against PyTorch's reference fake-quant, bits honoured, originals untouched, QAT, int8."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from compression.config import config_from_dict
from compression.errors import ConfigError
from compression.evaluate import accuracy_and_loss, agreement, predict_logits
from compression.quantization import (QuantConfig, compute_qparams, fake_quantize, has_act_quant,
                                      int8_layers, qat_finetune, quantize, quantize_int8, sqnr_db)
from compression.training import TrainConfig


def test_8bit_per_channel_matches_torch_reference():
    w = torch.randn(16, 32) * torch.linspace(0.1, 3, 16)[:, None]
    info = compute_qparams(w, 8, symmetric=True, axis=0)
    ref = torch.fake_quantize_per_channel_affine(w, info.scale, info.zero_point.int(), 0, -128, 127)
    assert torch.allclose(fake_quantize(w, info), ref, atol=1e-6)


def test_8bit_per_tensor_asymmetric_matches_torch_reference():
    w = torch.randn(64, 9) + 0.5
    info = compute_qparams(w, 8, symmetric=False)
    ref = torch.fake_quantize_per_tensor_affine(w, float(info.scale), int(info.zero_point), 0, 255)
    assert torch.allclose(fake_quantize(w, info), ref, atol=1e-6)


def test_sqnr_grows_about_6db_per_bit():
    w = torch.randn(256, 256)
    db = [sqnr_db(w, fake_quantize(w, compute_qparams(w, b, axis=0))) for b in (4, 6, 8)]
    assert 10 < db[1] - db[0] < 14 and 10 < db[2] - db[1] < 14


def test_mse_clipping_beats_minmax_on_heavy_tails():
    w = torch.distributions.StudentT(2.0).sample((64, 256))
    err = {c: (fake_quantize(w, compute_qparams(w, 3, axis=0, calibration=c)) - w).pow(2).mean()
           for c in ("minmax", "mse")}
    assert err["mse"] < err["minmax"]


def test_weights_on_the_grid_and_codes_exact(pretrained):
    q, report = quantize(pretrained("lenet5"), QuantConfig(bits=3))
    for layer in (q.conv1, q.conv2, q.fcs[0]):
        w = layer.weight.detach()
        for row in w.reshape(w.shape[0], -1):
            assert row.unique().numel() <= 2 ** 3
        info = layer.weight_qinfo
        assert torch.equal(info.dequantize(info.codes(w)), w)
    assert report.simulated and report.metrics["label"].startswith("simulated")


def test_mixed_precision_and_skip(pretrained):
    q, report = quantize(pretrained("mlp"), QuantConfig(bits=4, layer_bits={"fc1": 8, "fc2": 32}, skip=("fc3",)))
    bits = {r["layer"]: r["bits"] for r in report.layers}
    assert bits == {"fc1": 8}
    assert not hasattr(q.fc2, "weight_qinfo") and not hasattr(q.fc3, "weight_qinfo")


def test_activation_quantization_is_calibrated(pretrained, digits):
    model = pretrained("mlp")
    q, _ = quantize(model, QuantConfig(bits=8, activations=True), digits)
    assert has_act_quant(q.fc1) and float(q.fc1.act_scale) > 0 and "fc1.act_scale" in q.state_dict()
    assert accuracy_and_loss(q, digits.test)[0] > 0.95
    with pytest.raises(ConfigError, match="needs data"):
        quantize(model, QuantConfig(activations=True))


def test_original_untouched_on_every_builtin(any_builtin, digits):
    _, model = any_builtin
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q, _ = quantize(model, QuantConfig(bits=4, activations=True), digits)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_pre_hooks for m in model.modules())
    assert q(digits.test.X[:3]).shape == (3, 10)


@pytest.mark.parametrize("kwargs", [{"bits": 1}, {"bits": 17}, {"bits": 4.5}, {"granularity": "row"},
                                    {"calibration": "x"}, {"layer_bits": {"fc1": 40}}])
def test_bad_configs(kwargs):
    with pytest.raises(ConfigError):
        QuantConfig(**kwargs)


def test_unknown_layer_and_json_round_trip(pretrained):
    with pytest.raises(ConfigError, match="Unknown layer"):
        quantize(pretrained("mlp"), QuantConfig(layer_bits={"nope": 4}))
    cfg = QuantConfig(bits=4, granularity="tensor", symmetric=False, layer_bits={"fc1": 8}, calibration="mse")
    assert config_from_dict(cfg.to_dict()) == cfg


def test_qat_beats_ptq_at_low_bits(pretrained, digits):
    cfg = QuantConfig(bits=2, granularity="channel")
    _, report = qat_finetune(pretrained("mlp"), digits, cfg, TrainConfig(epochs=2, lr=1e-3))
    assert report.metrics["accuracy_after"] > report.metrics["accuracy_before"] + 0.05


def test_real_int8_is_int8(pretrained, digits):
    model = pretrained("mlp")
    q, report = quantize_int8(model, measure=False)
    assert int8_layers(q) == ["fc1", "fc2", "fc3"]
    assert q.fc1.weight().dtype == torch.qint8
    agree, _ = agreement(predict_logits(q, digits.test.X), predict_logits(model, digits.test.X))
    assert agree >= 0.95
    assert report.metrics["int8_bytes"] < report.metrics["fp32_bytes"] and not report.simulated
    _, conv_report = quantize_int8(pretrained("lenet5"), measure=False)
    assert any("kept fp32" in reason for _, reason in conv_report.skipped)

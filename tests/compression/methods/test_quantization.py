"""Quantization: against PyTorch's reference fake-quant, bits honoured, codes exact, originals
untouched, activation calibration, QAT over PTQ, and real int8 that is really int8."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils import prune as torch_prune

from compression.core.errors import ConfigError
from compression.core.modules import count_params
from compression.core.quant import (attach_act_quant, compute_qparams, fake_quantize, has_act_quant, remove_act_quant,
                                    sqnr_db)
from compression.core.registry import compress, config_from_dict, config_from_json
from compression.methods.int8 import int8_layers, quantize_int8
from compression.methods.quantization import QuantConfig, qat_finetune, quantize
from compression.methods.training import TrainConfig
from compression.metrics.evaluate import accuracy_and_loss, agreement, count_nonzero_params, predict_logits


def _ulps(a: torch.Tensor, b: torch.Tensor) -> int:
    """Largest distance in units in the last place between two float32 tensors."""
    ia, ib = a.contiguous().view(torch.int32).long(), b.contiguous().view(torch.int32).long()
    ia = torch.where(ia < 0, -(2 ** 31) - ia, ia)  # sign-magnitude to a monotone integer line
    ib = torch.where(ib < 0, -(2 ** 31) - ib, ib)
    return int((ia - ib).abs().max())


@pytest.mark.parametrize("symmetric", [True, False])
def test_8bit_per_channel_matches_torch_reference(symmetric):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 8, 3, 3, generator=g) * torch.linspace(0.1, 3, 16)[:, None, None, None] + 0.2
    info = compute_qparams(w, 8, symmetric=symmetric, axis=0)
    assert info.scale.shape == (16,) and (info.qmin, info.qmax) == ((-128, 127) if symmetric else (0, 255))
    ref = torch.fake_quantize_per_channel_affine(w, info.scale, info.zero_point.int(), 0, info.qmin, info.qmax)
    assert _ulps(fake_quantize(w, info), ref) <= 1


@pytest.mark.parametrize("symmetric", [True, False])
def test_8bit_per_tensor_matches_torch_reference(symmetric):
    w = torch.randn(64, 9, generator=torch.Generator().manual_seed(1)) + 0.5
    info = compute_qparams(w, 8, symmetric=symmetric)
    assert info.scale.shape == () and info.axis is None
    ref = torch.fake_quantize_per_tensor_affine(w, float(info.scale), int(info.zero_point), info.qmin, info.qmax)
    assert _ulps(fake_quantize(w, info), ref) <= 1


def test_sqnr_grows_about_6db_per_bit():
    w = torch.randn(256, 256, generator=torch.Generator().manual_seed(2))
    db = [sqnr_db(w, fake_quantize(w, compute_qparams(w, b, axis=0))) for b in (4, 6, 8, 10)]
    steps = [(b - a) / 2 for a, b in zip(db, db[1:])]
    assert all(5.0 < s < 7.0 for s in steps), steps
    assert sqnr_db(w, w) == float("inf")


def test_mse_and_percentile_clipping_on_heavy_tails():
    torch.manual_seed(0)
    w = torch.distributions.StudentT(2.0).sample((64, 256))  # heavy-tailed rows
    err = {c: (fake_quantize(w, compute_qparams(w, 3, axis=0, calibration=c)) - w).pow(2).mean()
           for c in ("minmax", "percentile", "mse")}
    assert err["mse"] < 0.9 * err["minmax"]
    clipped = compute_qparams(w, 3, axis=0, calibration="percentile", percentile=99.0)
    assert (clipped.scale < compute_qparams(w, 3, axis=0).scale).all()


@pytest.mark.parametrize("kwargs", [{"bits": 1}, {"bits": 17}, {"calibration": "kl"}, {"axis": 2}])
def test_compute_qparams_rejects_bad_arguments(kwargs):
    with pytest.raises(ConfigError):
        compute_qparams(torch.randn(4, 4), **{"bits": 8, **kwargs})


def test_weights_on_the_grid_and_codes_exact(pretrained):
    model = pretrained("lenet5")
    for granularity in ("channel", "tensor"):
        q, report = quantize(model, QuantConfig(bits=3, granularity=granularity, symmetric=False))
        for layer in (q.conv1, q.conv2, *q.fcs):
            w, info = layer.weight.detach(), layer.weight_qinfo
            assert info.bits == 3 and info.axis == (0 if granularity == "channel" else None)
            for row in w.reshape(w.shape[0], -1):
                assert row.unique().numel() <= 2 ** 3
            codes = info.codes(w)
            assert codes.min() >= info.qmin and codes.max() <= info.qmax
            assert torch.equal(info.dequantize(codes), w)
        assert torch.equal(q.conv1.bias, model.conv1.bias)  # biases stay fp32
        assert report.simulated and report.metrics["simulated"] and report.metrics["label"].startswith("simulated")
        assert set(report.metrics["sqnr_db"]) == {r["layer"] for r in report.layers}
        assert {"layer", "type", "bits", "granularity", "sqnr_db", "act_bits"} <= set(report.layers[0])


def test_grouped_depthwise_conv1d_embedding_and_tied_weights():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 8)
            self.conv = nn.Conv1d(8, 8, 3, padding=1, groups=8)   # depthwise
            self.grouped = nn.Conv1d(8, 16, 1, groups=2)
            self.head = nn.Linear(16, 20)
            self.out = nn.Linear(8, 20, bias=False)
            self.out.weight = self.emb.weight                    # tied

        def forward(self, idx):
            x = self.emb(idx).transpose(1, 2)                    # (B, 8, T)
            x = self.grouped(self.conv(x)).mean(2)               # (B, 16)
            return self.head(x) + self.out(self.emb(idx).mean(1))

    torch.manual_seed(0)
    model = Tiny()
    q, report = quantize(model, QuantConfig(bits=4))
    assert {r["layer"] for r in report.layers} == {"emb", "conv", "grouped", "head", "out"}
    for layer in (q.emb, q.conv, q.grouped, q.head, q.out):
        w, info = layer.weight.detach(), layer.weight_qinfo
        assert torch.equal(info.dequantize(info.codes(w)), w)
        assert all(r.unique().numel() <= 16 for r in w.reshape(w.shape[0], -1))
    assert q.out.weight is q.emb.weight and q.out.weight_qinfo is q.emb.weight_qinfo
    assert q(torch.randint(0, 20, (2, 5))).shape == (2, 20)


def test_mixed_precision_and_skip(pretrained):
    cfg = QuantConfig(bits=4, overrides={"fc1": 8, "fc2": 32}, exclude=("fc3",))
    model = pretrained("mlp")
    q, report = quantize(model, cfg)
    assert {r["layer"]: r["bits"] for r in report.layers} == {"fc1": 8}
    assert q.fc1.weight_qinfo.bits == 8
    assert not hasattr(q.fc2, "weight_qinfo") and not hasattr(q.fc3, "weight_qinfo")
    assert torch.equal(q.fc2.weight, model.fc2.weight) and torch.equal(q.fc3.weight, model.fc3.weight)
    assert dict(report.skipped) == {"fc2": "kept fp32 by its override", "fc3": "in the exclude list"}
    q0, report0 = quantize(model, QuantConfig(bits=4, overrides={"fc1": 0, "fc3": 2}))
    assert {r["layer"]: r["bits"] for r in report0.layers} == {"fc2": 4, "fc3": 2}
    assert report0.metrics["mean_weight_bits"] == pytest.approx((4 * 300 * 100 + 2 * 1000) / (30000 + 1000))


def _input_range(model, layer, data, batches):
    seen = []
    handle = layer.register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    with torch.no_grad():
        model(data.train.X[:64 * batches])
    handle.remove()
    return torch.cat([s.reshape(-1) for s in seen])


def test_activation_quantization_is_calibrated(pretrained, digits):
    model = pretrained("mlp")
    q, report = quantize(model, QuantConfig(bits=8, activations=True, calib_batches=2), digits)
    x = _input_range(model, model.fc2, digits, 2)    # fc2's input: non-negative after ReLU
    assert has_act_quant(q.fc1) and has_act_quant(q.fc2) and "fc2.act_scale" in q.state_dict()
    assert float(q.fc2.act_scale) == pytest.approx(float(x.max()) / 127.5, rel=1e-6)
    assert q.fc2.act_bits == 8 and q.fc2.act_symmetric and all(r["act_bits"] == 8 for r in report.layers)
    assert accuracy_and_loss(q, digits.test)[0] > 0.95
    low = quantize(model, QuantConfig(bits=8, act_bits=3, activations=True, calibration="mse"), digits)[0]
    assert low.fc2.act_bits == 3 and float(low.fc2.act_scale) < float(x.max()) / 3.5  # clipped
    seen = []
    low.fc2.register_forward_hook(lambda _m, a, _o: seen.append(a[0]))
    low(digits.test.X[:16])
    assert seen[0].unique().numel() <= 2 ** 3
    with pytest.raises(ConfigError, match="needs data"):
        quantize(model, QuantConfig(activations=True))


def test_act_quant_state_reattaches_and_removes(pretrained, digits):
    q, _ = quantize(pretrained("lenet5"), QuantConfig(bits=6, activations=True), digits)
    fresh = pretrained("lenet5")
    for name, m in q.named_modules():
        if has_act_quant(m):
            attach_act_quant(fresh.get_submodule(name), m.act_bits, m.act_symmetric, torch.ones(()), torch.zeros(()))
    fresh.load_state_dict(q.state_dict())
    x = digits.test.X[:32]
    with torch.no_grad():
        assert torch.equal(fresh(x), q(x)) and not torch.equal(fresh(x), pretrained("lenet5")(x))
    remove_act_quant(fresh.conv1)
    assert not has_act_quant(fresh.conv1) and "conv1.act_scale" not in fresh.state_dict()
    assert all(not list(m.children()) for m in (q.conv1, q.conv2, *q.fcs))  # still leaf modules


def test_original_untouched_on_every_builtin(any_builtin, digits):
    name, model = any_builtin
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q, report = compress(model, QuantConfig(bits=4, activations=True), digits)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_pre_hooks and not hasattr(m, "weight_qinfo") for m in model.modules())
    assert len(report.layers) == len(report.metrics["sqnr_db"]) > 0
    assert all(has_act_quant(q.get_submodule(r["layer"])) for r in report.layers)
    assert q(digits.test.X[:3]).shape == (3, 10)
    acc8 = accuracy_and_loss(quantize(model, QuantConfig(bits=8))[0], digits.test)[0]
    assert acc8 >= accuracy_and_loss(model, digits.test)[0] - 0.02, name


def test_pruned_model_keeps_its_zeros(pretrained):
    model = pretrained("mlp")
    torch_prune.l1_unstructured(model.fc1, "weight", amount=0.5)
    for symmetric in (True, False):
        q, _ = quantize(model, QuantConfig(bits=4, symmetric=symmetric))
        assert "weight_orig" not in dict(q.fc1.named_parameters())  # mask folded in the copy
        assert (q.fc1.weight[model.fc1.weight_mask == 0] == 0).all()
    assert hasattr(model.fc1, "weight_orig")  # the caller's masks stay


@pytest.mark.parametrize("kwargs", [{"bits": 1}, {"bits": 17}, {"bits": 4.5}, {"bits": True}, {"act_bits": 1},
                                    {"granularity": "row"}, {"calibration": "x"}, {"symmetric": "yes"},
                                    {"percentile": 50}, {"percentile": 100.5}, {"percentile": "high"},
                                    {"overrides": {"fc1": 40}}, {"overrides": {"fc1": 1}}, {"overrides": 3},
                                    {"overrides": {"fc1": 4.5}}, {"calib_batches": 0}, {"calib_batches": 1.5}])
def test_bad_configs(kwargs):
    with pytest.raises(ConfigError):
        QuantConfig(**kwargs)


def test_unknown_layer_and_json_round_trip(pretrained):
    with pytest.raises(ConfigError, match="Unknown layer"):
        quantize(pretrained("mlp"), QuantConfig(overrides={"nope": 4}))
    with pytest.raises(ConfigError, match="Unknown layer"):
        quantize(pretrained("mlp"), QuantConfig(exclude=["nope"]))
    cfg = QuantConfig(bits=4, granularity="tensor", symmetric=False, activations=True, act_bits=6,
                      calibration="percentile", percentile=99.9, overrides={"fc2": 8, "fc1": 0},
                      exclude=["fc3"], calib_batches=2)
    assert cfg.overrides == (("fc1", 0), ("fc2", 8)) and cfg.exclude == ("fc3",)
    assert config_from_dict(cfg.to_dict()) == cfg == config_from_json(cfg.to_json())
    assert hash(cfg) == hash(config_from_json(cfg.to_json()))


def test_qat_beats_ptq_at_low_bits(pretrained, digits):
    model = pretrained("mlp")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = QuantConfig(bits=2, granularity="channel")
    q, report = qat_finetune(model, digits, cfg, TrainConfig(epochs=2, lr=1e-3))
    m = report.metrics
    assert m["accuracy_after"] > m["accuracy_before"] + 0.05
    assert m["accuracy_after"] == pytest.approx(accuracy_and_loss(q, digits.val)[0])
    assert report.simulated and report.method == "qat" and len(m["history"]) == 2
    for layer in (q.fc1, q.fc2, q.fc3):
        assert not parametrize.is_parametrized(layer) and not list(layer.children())
        info = layer.weight_qinfo
        assert info.bits == 2 and torch.equal(info.dequantize(info.codes(layer.weight)), layer.weight.detach())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_qat_with_activations_and_teacher(pretrained, digits):
    cfg = QuantConfig(bits=4, activations=True, act_bits=4, calib_batches=1)
    q, report = qat_finetune(pretrained("student"), digits, cfg, TrainConfig(epochs=1), teacher=pretrained("teacher"))
    assert has_act_quant(q.conv2) and q.conv2.act_bits == 4 and report.metrics["distilled"]
    assert report.metrics["accuracy_after"] >= report.metrics["accuracy_before"] - 0.01


def test_real_int8_is_int8(pretrained, digits):
    from torch.ao.nn.quantized.dynamic import Linear as DynLinear

    model = pretrained("mlp")
    q, report = quantize_int8(model, measure=False)
    assert int8_layers(q) == ["fc1", "fc2", "fc3"] and isinstance(q.fc1, DynLinear)
    assert q.fc1.weight().dtype == torch.qint8 and q.fc1.weight().is_quantized
    agree, _ = agreement(predict_logits(q, digits.test.X), predict_logits(model, digits.test.X))
    assert agree >= 0.95
    m = report.metrics
    assert m["int8_file_bytes"] < 0.5 * m["fp32_file_bytes"] and not report.simulated and m["label"].startswith("real int8")
    assert all(r["sqnr_db"] > 30 for r in report.layers)
    assert type(model.fc1) is nn.Linear  # the original is not converted
    conv_q, conv_report = quantize_int8(pretrained("lenet5"), measure=True, batch_size=8)
    assert {n for n, _ in conv_report.skipped} == {"conv1", "conv2"}
    assert all("kept fp32" in reason for _, reason in conv_report.skipped)
    assert int8_layers(conv_q) == ["fcs.0", "fcs.1", "fcs.2"]
    assert conv_report.metrics["speedup"] == pytest.approx(
        conv_report.metrics["fp32_latency_ms"] / conv_report.metrics["int8_latency_ms"])


def test_real_int8_counts_layers_without_bias():
    model = nn.Sequential(nn.Linear(8, 16, bias=False), nn.ReLU(), nn.Linear(16, 4))
    q, _ = quantize_int8(model, measure=False)
    nonzero = count_nonzero_params(q)
    assert count_params(q) == 8 * 16 + 16 * 4 + 4 and 0 < nonzero <= count_params(q)

"""Attributions of a model with quantized inputs: the activation fake-quant is a straight-through
estimator (gradient 1 inside the clamp range, 0 outside, as torch.fake_quantize_per_tensor_affine),
its forward values are bit-identical to the former integer-cast computation, and captum's maps
(and the Explain page) work on such a model."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compression.analysis import attribution as A
from compression.models import zoo
from compression.core.quant import QuantInfo
from compression.methods.quantization import QuantConfig, quantize
from compression.core.quant import act_fake_quant_hook, has_act_quant

CONFIGS = [QuantConfig(bits=8, activations=True),
           QuantConfig(bits=4, activations=True, symmetric=False, calibration="percentile", percentile=99.0)]


def reference_act_hook(module: nn.Module, inputs: tuple) -> tuple:
    """The activation fake-quant as it was before the straight-through estimator (values only)."""
    x, scale, zp = inputs[0], module.act_scale, module.act_zero_point
    bits = module.act_bits
    qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if module.act_symmetric else (0, 2 ** bits - 1)
    inv = 1.0 / scale
    codes = torch.clamp(torch.round(x * inv) + zp, qmin, qmax).to(torch.int32)
    return (((codes.float() - zp) * scale).to(x.dtype), *inputs[1:])


def with_reference_hooks(model: nn.Module) -> nn.Module:
    """A deep copy whose activation hooks are the reference computation."""
    ref = copy.deepcopy(model)
    for module in ref.modules():
        for key, hook in list(module._forward_pre_hooks.items()):
            if hook is act_fake_quant_hook:
                module._forward_pre_hooks[key] = reference_act_hook
    return ref


def act_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if has_act_quant(m)]


def act_info(layer: nn.Module) -> QuantInfo:
    return QuantInfo(layer.act_bits, layer.act_scale, layer.act_zero_point, None, layer.act_symmetric)


@pytest.fixture(scope="module")
def quantized_lenet(digits):
    float_model = zoo.load_pretrained("lenet5")
    q, _ = quantize(float_model, QuantConfig(bits=8, activations=True), digits)
    return float_model, q


@pytest.mark.parametrize("cfg", CONFIGS, ids=["int8", "int4-asym-percentile"])
def test_forward_bit_identical_to_reference(any_builtin, digits, cfg):
    name, model = any_builtin
    q, _ = quantize(model, cfg, digits)
    assert act_layers(q), name
    ref = with_reference_hooks(q).eval()
    q.eval()
    x = digits.test.X[:32]
    with torch.no_grad():
        want = ref(x)
        assert (q(x) - want).abs().max() == 0
    xg = x.clone().requires_grad_(True)                          # the straight-through path runs
    got = q(xg)
    assert got.requires_grad and (got.detach() - want).abs().max() == 0


@pytest.mark.parametrize("bits,symmetric", [(8, True), (8, False), (4, True), (3, False)])
def test_hook_matches_torch_fake_quantize(bits, symmetric):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 8, 8, generator=gen) * 3                # (B, C, H, W), some values clipped
    scale, zp = torch.tensor(0.05), torch.tensor(0.0 if symmetric else 2 ** (bits - 1) - 3.0)
    layer = nn.Identity()
    layer.register_buffer("act_scale", scale)
    layer.register_buffer("act_zero_point", zp)
    layer.act_bits, layer.act_symmetric = bits, symmetric
    info = act_info(layer)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (ours,) = act_fake_quant_hook(layer, (xa,))
    theirs = torch.fake_quantize_per_tensor_affine(xb, float(scale), int(zp), info.qmin, info.qmax)
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=0)
    up = torch.randn(x.shape, generator=gen)
    ours.backward(up)
    theirs.backward(up)
    assert torch.equal(xa.grad, xb.grad)
    inside = info.in_range(x)
    assert inside.any() and (~inside).any()
    assert torch.equal(xa.grad, torch.where(inside, up, 0.0))


@pytest.mark.parametrize("cfg", CONFIGS, ids=["int8", "int4-asym-percentile"])
def test_input_gradient_is_upstream_gradient_masked_to_the_clamp_range(digits, cfg):
    q, _ = quantize(zoo.load_pretrained("lenet5"), cfg, digits)
    q.eval()
    first = q.conv1
    assert has_act_quant(first)
    seen = {}

    def keep_quantized_input(_module, inputs):                   # runs after the fake-quant hook
        inputs[0].retain_grad()
        seen["xq"] = inputs[0]

    x = (digits.test.X[:16] * 1.5).requires_grad_(True)          # (16, 1, 8, 8), some inputs clipped
    handle = first.register_forward_pre_hook(keep_quantized_input)
    try:
        out = q(x)
    finally:
        handle.remove()
    target = out.detach().argmax(1)
    out.gather(1, target[:, None]).sum().backward()
    inside = act_info(first).in_range(x)
    assert inside.any() and (~inside).any()
    upstream = seen["xq"].grad
    assert upstream.abs().sum() > 0
    assert torch.equal(x.grad, torch.where(inside, upstream, 0.0))


@pytest.mark.parametrize("method", A.METHODS)
def test_attributions_of_a_model_with_quantized_inputs(digits, quantized_lenet, method):
    float_model, q = quantized_lenet
    hooks = A.module_hooks(q)
    x = digits.test.X[:4]
    attr = A.input_attributions(q, x, method=method)
    assert attr.shape == x.shape and torch.isfinite(attr).all() and attr.abs().sum() > 0
    assert A.module_hooks(q) == hooks and len(act_layers(q)) == 5   # the quantizers stay, nothing added
    res = A.compare_attributions(float_model, q, x, method)
    assert torch.isfinite(res["compressed"]).all()
    assert (res["similarity"] > 0.8).all()                        # 8-bit: nearly the float model's map


def test_saliency_of_quantized_model_is_its_absolute_input_gradient(digits, quantized_lenet):
    _, q = quantized_lenet
    x = digits.test.X[:4]
    target = A.predicted_class(q, x)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(q.eval()(xg).gather(1, target[:, None]).sum(), xg)
    assert torch.equal(A.input_attributions(q, x, target, "saliency"), grad.abs())

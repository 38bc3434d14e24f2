"""Attributions: captum's maps against hand-computed gradients, integrated-gradients completeness,
similarity of identical and changed models, and no hook left on any module."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from compression.analysis import attribution as A
from compression.core.errors import ConfigError


def no_hooks(model: nn.Module) -> bool:
    """As captum's test_hook_removal: no forward, backward or forward-pre hook on any module."""
    return all(len(m._forward_hooks) == len(m._backward_hooks) == len(m._forward_pre_hooks) == 0
               for m in model.modules())


def test_saliency_is_the_absolute_input_gradient(digits, pretrained):
    model = pretrained("lenet5")
    x = digits.test.X[:4]                                          # (4, 1, 8, 8)
    target = model(x).argmax(1)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(xg).gather(1, target[:, None]).sum(), xg)
    sal = A.input_attributions(model, x, method="saliency")
    assert sal.shape == x.shape and torch.allclose(sal, grad.abs(), atol=1e-6)
    assert no_hooks(model)


def test_integrated_gradients_completeness(digits, pretrained):
    model = pretrained("mlp")
    x = digits.test.X[:3]
    target = torch.tensor([0, 1, 2])
    ig = A.input_attributions(model, x, target, "integrated_gradients", n_steps=128)
    with torch.no_grad():
        gap = (model(x) - model(torch.zeros_like(x))).gather(1, target[:, None]).squeeze(1)  # (3,)
    assert torch.allclose(ig.flatten(1).sum(1), gap, rtol=0.02, atol=0.02)


def test_compare_identical_and_pruned_models(digits, pretrained):
    original, compressed = pretrained("resnet"), pretrained("resnet")
    state = {k: v.clone() for k, v in original.state_dict().items()}
    x = digits.test.X[:4]
    same = A.compare_attributions(original, compressed, x, "saliency")
    assert set(same) == {"original", "compressed", "similarity", "spearman", "target"}
    assert torch.allclose(same["similarity"], torch.ones(4), atol=1e-5)
    assert torch.allclose(same["spearman"], torch.ones(4), atol=1e-5)
    with torch.no_grad():
        w = compressed.layers[1].conv1.weight
        w.mul_(w.abs() > w.abs().flatten().quantile(0.9))          # keep the largest 10%
    diff = A.compare_attributions(original, compressed, x, "integrated_gradients")
    assert diff["original"].shape == x.shape and diff["similarity"].shape == (4,)
    assert (diff["similarity"] < 0.999).all() and (diff["similarity"] > 0).all()
    assert torch.equal(diff["target"], original(x).argmax(1))
    assert no_hooks(original) and no_hooks(compressed)
    assert all(torch.equal(v, state[k]) for k, v in original.state_dict().items())


def test_hooks_guard_removes_only_new_hooks_even_on_error():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU()).train()
    keep = model[0].register_forward_hook(lambda *a: None)
    with pytest.raises(RuntimeError):
        with A.hooks_guard(model):
            assert not model.training
            model[0].register_forward_pre_hook(lambda *a: None)
            model[1].register_full_backward_hook(lambda *a: None)
            model[1].register_forward_hook(lambda *a, **k: None, with_kwargs=True)
            raise RuntimeError("boom")
    assert model.training
    assert A.module_hooks(model) == {"0": 1} and keep.id in model[0]._forward_hooks
    assert not model[1]._forward_hooks_with_kwargs


def test_similarity_by_hand_and_bad_method(pretrained, digits):
    a = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    b = torch.tensor([[-2.0, 4.0, 6.0, 0.0]])                      # same |map| up to scale
    sim = A.map_similarity(a, b)
    assert sim["similarity"].item() == pytest.approx(1.0) and sim["spearman"].item() == pytest.approx(1.0)
    c = torch.tensor([[3.0, 2.0, 1.0, 0.5]])
    assert A.map_similarity(a, c)["spearman"].item() == pytest.approx(0.2)
    assert math.isnan(A.map_similarity(a, torch.ones(1, 4))["spearman"].item())
    with pytest.raises(ConfigError):
        A.input_attributions(pretrained("mlp"), digits.test.X[:1], method="nope")

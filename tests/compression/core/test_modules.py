"""The one copy helper and the one fold helper (core.modules)."""
from __future__ import annotations

import torch
import torch.nn.utils.prune as prune
from torch import nn

from compression.core.modules import copy_model, fold_masks_


def _pruned_and_trained() -> nn.Module:
    """A pruned net after one optimiser step: its `weight` is a stale, non-leaf tensor."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2)).train()
    prune.l1_unstructured(net[0], "weight", amount=0.4)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    net(torch.randn(4, 6)).sum().backward()
    opt.step()
    return net


def test_copy_model_survives_pruned_training_and_keeps_masks_and_mode():
    net = _pruned_and_trained()
    stale = net[0].weight.detach().clone()
    current = net[0].weight_orig.detach() * net[0].weight_mask
    assert not net[0].weight.is_leaf and not torch.equal(stale, current)
    out = copy_model(net)
    assert prune.is_pruned(out) and out.training
    assert torch.equal(out[0].weight, current) and out[0].weight.grad_fn is None
    assert torch.equal(net[0].weight.detach(), stale)   # the input is not touched
    out[0].weight_orig.data.zero_()
    assert net[0].weight_orig.abs().sum() > 0


def test_copy_model_fold_gives_plain_weights_equal_to_the_pruned_ones():
    net = _pruned_and_trained()
    out = copy_model(net, fold=True)
    assert not prune.is_pruned(out) and prune.is_pruned(net)
    assert torch.equal(out[0].weight, net[0].weight_orig.detach() * net[0].weight_mask)
    assert set(out.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert fold_masks_(net) is net and not prune.is_pruned(net)

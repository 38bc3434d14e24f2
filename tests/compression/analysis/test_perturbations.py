"""What a sweep point does to a layer: the sorted pruner zeroes exactly what magnitude pruning zeroes."""
from __future__ import annotations

import torch

from compression.analysis.perturbations import prune_weight, sorted_pruner


def test_sorted_pruner_zeroes_what_prune_weight_zeroes():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(16, 8, 3, 3, generator=gen).round(decimals=1)  # many ties
    weight = weight.contiguous(memory_format=torch.channels_last)
    fn = sorted_pruner()
    for level in (0.0, 0.1, 0.5, 0.93, 0.99):
        fast, slow = fn("conv", weight, level), prune_weight("conv", weight, level)
        assert torch.equal(fast == 0, slow == 0) and torch.equal(fast, slow)

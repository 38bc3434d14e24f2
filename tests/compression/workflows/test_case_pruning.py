"""Han et al.'s iterative pruning loop works on a copy: the input model keeps its weights and has no masks."""
from __future__ import annotations

import torch

from compression.methods.training import TrainConfig
from compression.models import zoo
from compression.workflows.case_pruning import iterative_prune


def test_iterative_prune_leaves_the_input_model_alone(digits):
    model = zoo.load_pretrained("mlp")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned, rows = iterative_prune(model, digits, 0.9, 2, TrainConfig(epochs=1))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert set(model.state_dict()) == set(before)                    # no masks left on the original
    w = pruned.fc2.weight
    assert (w == 0).float().mean().item() > 0.85 and len(rows) == 2

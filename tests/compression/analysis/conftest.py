"""Fixtures shared by the Hessian and proxy tests: a tiny seeded model and its data."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from compression.data.datasets import make_dataset


@pytest.fixture(scope="module")
def tiny():
    """A tiny tanh MLP (6-5-3) and 60 seeded samples of 6 features."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 6)).astype(np.float32)
    data = make_dataset("tiny6", X, rng.integers(0, 3, 100), num_classes=3)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).eval(), data

"""Shared fixtures: the bundled data, built-in models, and tiny seeded models and inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from compression.models import zoo
from compression.data.datasets import load_digits, make_dataset

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _private_store(tmp_path, monkeypatch):
    """Runs recorded by the code under test go to a per-test store, never the user's."""
    monkeypatch.setenv("COMPRESSION_STORE", str(tmp_path / "runs.sqlite"))


@pytest.fixture(scope="session")
def digits():
    return load_digits()


@pytest.fixture(scope="session")
def tiny_data():
    """A small seeded 4-class data set of 1x8x8 images (fast to train on)."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 30)
    X = rng.normal(size=(120, 1, 8, 8)).astype(np.float32) + y[:, None, None, None]
    return make_dataset("tiny", X, y, num_classes=4)


@pytest.fixture(params=zoo.list_models())
def any_builtin(request):
    """Each built-in model with its bundled weights (a fresh object per test)."""
    return request.param, zoo.load_pretrained(request.param)


@pytest.fixture
def pretrained():
    """Factory: pretrained('mlp') -> a fresh built-in model with bundled weights."""
    return zoo.load_pretrained

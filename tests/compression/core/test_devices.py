"""Device choice: CPU always, CUDA only when present; inputs never moved; results on the CPU."""
from __future__ import annotations

import pytest
import torch

from compression.core import devices
from compression.models import zoo
from compression.core.errors import ConfigError
from compression.metrics.evaluate import evaluate
from compression.workflows.slider import compress_and_evaluate
from compression.methods.pruning import PruneConfig
from compression.analysis.sensitivity import prune_sweep

NO_GPU = not torch.cuda.is_available()


def test_cpu_is_always_offered_and_cuda_only_with_a_gpu():
    found = devices.available_devices()
    assert found[0] == "cpu" and ("cuda" in found) == torch.cuda.is_available()
    assert devices.resolve(None) == torch.device("cpu") == devices.resolve("cpu")


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:3", "tpu", ""])
def test_unavailable_device_is_a_config_error(name, digits):
    with pytest.raises(ConfigError, match="not available"):
        devices.resolve(name)
    with pytest.raises(ConfigError, match="not available"):
        evaluate(zoo.load_pretrained("mlp"), digits, latency=False, device=name)


def test_on_device_never_moves_the_input():
    model = zoo.load_pretrained("mlp")
    assert devices.on_device(model, None) is model and devices.on_device(model, "cpu") is model
    assert devices.model_device(torch.nn.ReLU()) == torch.device("cpu")


def test_explicit_cpu_gives_the_same_numbers(digits):
    model = zoo.load_pretrained("lenet5")
    a = evaluate(model, digits, latency=False, device="cpu")
    b = evaluate(model, digits, latency=False)
    assert a.accuracy == b.accuracy and a.loss == b.loss
    cfg = PruneConfig(sparsity=0.5)
    x = compress_and_evaluate(model, cfg, digits, latency=False, device="cpu")["metrics"]
    y = compress_and_evaluate(model, cfg, digits, latency=False)["metrics"]
    assert x["accuracy"] == y["accuracy"] and x["size_bytes"] == y["size_bytes"]
    s1 = prune_sweep(model, digits, levels=[0.0, 0.8], device="cpu")
    s2 = prune_sweep(model, digits, levels=[0.0, 0.8])
    assert s1[["layer", "level", "accuracy", "loss"]].equals(s2[["layer", "level", "accuracy", "loss"]])


@pytest.mark.skipif(NO_GPU, reason="needs a GPU")
def test_cuda_matches_cpu(digits):  # runs where a GPU is present
    model = zoo.load_pretrained("resnet")
    cpu = compress_and_evaluate(model, PruneConfig(sparsity=0.5), digits, latency=True)["metrics"]
    gpu = compress_and_evaluate(model, PruneConfig(sparsity=0.5), digits, latency=True, device="cuda")["metrics"]
    assert abs(cpu["accuracy"] - gpu["accuracy"]) <= 2 / digits.sizes()["test"] and gpu["latency_ms"] > 0
    sweep = prune_sweep(model, digits, levels=[0.0, 0.9], device="cuda")
    ref = prune_sweep(model, digits, levels=[0.0, 0.9])
    assert (sweep["accuracy"] - ref["accuracy"]).abs().max() <= 2 / digits.sizes()["val"]
    assert next(model.parameters()).device.type == "cpu"  # the input stayed where it was

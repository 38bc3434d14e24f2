"""The one model type: every origin loads as a Model that lists its layers with their groups."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from compression.core.errors import ConfigError
from compression.models.hf import load_hf_folder
from compression.models.hf_demo import make_demo_folder
from compression.models.loading import load_model
from compression.models.model import Model


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Model:
    return load_hf_folder(make_demo_folder(tmp_path_factory.mktemp("hf") / "enc", "encoder", layers=2))


def test_builtin_and_file_models_are_models_with_plain_layers(tmp_path):
    demo = load_model("demo:lenet5")
    path = tmp_path / "mlp.pt"
    torch.jit.save(torch.jit.script(load_model("demo:mlp").model), path)
    scripted = load_model(path)
    for model, origin in ((demo, "demo"), (scripted, "torchscript")):
        assert isinstance(model, Model) and model.origin == origin and model.task == "classifier"
        assert not model.is_text and model.layers()
        assert {layer.role for layer in model.layers()} == {"layer"}
        assert all(layer.block is None for layer in model.layers())
    assert [layer.type for layer in demo.layers()][:1] == ["Conv2d"]
    with pytest.raises(ConfigError, match="not a transformer"):
        demo.model_type


def test_a_transformer_lists_its_layers_by_block_and_role(encoder):
    assert encoder.is_text and encoder.origin == "hf" and encoder.task == "encoder"
    layers = {layer.name: layer for layer in encoder.layers()}
    roles = {(layer.block, layer.role) for layer in layers.values()}
    for block in (0, 1):
        assert {(block, r) for r in ("attention.q", "attention.k", "attention.v", "attention.o",
                                     "ffn.in", "ffn.out")} <= roles
    assert any(layer.role == "embedding" and layer.type == "Embedding" for layer in layers.values())
    assert len(encoder.blocks()) == 2
    for name, (block, role) in encoder.block_roles().items():
        assert (layers[name].block, layers[name].role) == (block, role)


def test_replace_keeps_what_the_model_is_and_never_changes_the_original(encoder):
    smaller = torch.nn.Sequential()
    after = encoder.replace(smaller, "pruned")
    assert after.model is smaller and encoder.model is not smaller
    assert (after.task, after.tokenizer, after.origin) == (encoder.task, encoder.tokenizer, "hf")
    assert after.name.endswith("→ pruned") and after.fingerprint == f"{encoder.fingerprint}|pruned"
    assert after.summary["params"] == 0 and encoder.summary["params"] > 0
    assert encoder.replace(smaller, "kept", origin="compressed").origin == "compressed"
    with pytest.raises(dataclasses.FrozenInstanceError):
        encoder.name = "other"

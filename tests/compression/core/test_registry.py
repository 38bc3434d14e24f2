"""The one method registry: every method, image or transformer, is applied by core.registry.compress
to a bare module or to a Model, and never changes its input."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compression.core.errors import ConfigError
from compression.core.registry import CONFIGS, HANDLERS, compress, config_from_dict, method_label
from compression.methods.heads_ffn import HeadPruneConfig
from compression.methods.hf import HFLowRankConfig, HFPruneConfig, NMConfig
from compression.methods.pruning import PruneConfig
from compression.models.model import Model


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8)).eval()


def test_every_kind_is_in_one_registry_with_a_handler():
    for kind in ("prune", "quantize", "lowrank", "hf_prune", "hf_nm", "hf_quantize", "hf_int8", "hf_lowrank",
                 "hf_heads", "hf_ffn"):
        assert kind in CONFIGS and CONFIGS[kind] in HANDLERS
        cfg = CONFIGS[kind]()
        assert config_from_dict(cfg.to_dict()) == cfg


def test_a_bare_module_comes_back_as_a_module_and_is_not_changed():
    net = _net()
    before = copy.deepcopy(net.state_dict())
    out, report = compress(net, NMConfig(n=2, m=4))
    assert isinstance(out, nn.Module) and report.metrics["sparsity_of_pruned_layers"] == 0.5
    assert float((out[0].weight == 0).float().mean()) == 0.5
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize("cfg", [HFPruneConfig(sparsity=0.5), PruneConfig(sparsity=0.5), HFLowRankConfig(0.25)])
def test_a_model_comes_back_as_a_model_labelled_with_the_method(cfg):
    wrapped = Model(_net(), "test", "net", "fp")
    before = copy.deepcopy(wrapped.model.state_dict())
    out, report = compress(wrapped, cfg)
    assert isinstance(out, Model) and out.model is not wrapped.model
    assert out.name == f"net → {method_label(cfg)}" and out.fingerprint == f"fp|{method_label(cfg)}"
    assert out.model(torch.randn(3, 16)).shape == (3, 8)
    assert all(torch.equal(before[k], v) for k, v in wrapped.model.state_dict().items())


def test_structured_transformer_methods_refuse_a_bare_module():
    with pytest.raises(ConfigError, match="hf_heads needs a transformer"):
        compress(_net(), HeadPruneConfig())

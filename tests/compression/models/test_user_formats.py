"""A user's own architecture (GroupNorm, GELU/SiLU, batch norm; inputs in [0, 1]) saved as
TorchScript and as a torch.export program: weight-level methods work on both, structural ones
run on the program and are refused with the reason on TorchScript."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compression.core.errors import UnsupportedLayerError
from compression.core.modules import weight_layers
from compression.models.loading import load_model
from compression.methods.lowrank import LowRankConfig, lowrank
from compression.methods.pruning import ChannelPruneConfig, PruneConfig, channel_prune, prune
from compression.methods.quantization import QuantConfig, quantize


class UserNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.gn = nn.Conv2d(1, 8, 3, padding=1), nn.GroupNorm(2, 8)
        self.c2, self.bn = nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.fc, self.out = nn.Linear(16 * 4 * 4, 32), nn.Linear(32, 10)

    def forward(self, x):
        h = F.silu(self.bn(self.c2(F.gelu(self.gn(self.c1(x))))))
        return self.out(F.gelu(self.fc(F.avg_pool2d(h, 2).flatten(1))))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch.manual_seed(0)
    net = UserNet().eval()
    x = torch.rand(6, 1, 8, 8)
    d = tmp_path_factory.mktemp("user")
    torch.jit.save(torch.jit.script(net), d / "net.pt")
    ep = torch.export.export(net, (x,), dynamic_shapes={"x": {0: torch.export.Dim("b", min=1, max=4096)}})
    torch.export.save(ep, d / "net.pt2")
    return net, x, d


@pytest.mark.parametrize("name", ["net.pt", "net.pt2"])
def test_loaded_model_is_exact_and_its_layers_are_found(files, name):
    net, x, d = files
    model = load_model(d / name).model
    assert torch.allclose(model(x), net(x), atol=1e-6)
    layers, skipped = weight_layers(model)
    assert list(layers) == ["c1", "c2", "fc", "out"]
    assert {n for n, _ in skipped} == {"gn", "bn"}


@pytest.mark.parametrize("name", ["net.pt", "net.pt2"])
def test_weight_level_methods_on_user_formats(files, name):
    net, x, d = files
    model = load_model(d / name).model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned, report = prune(model, PruneConfig(sparsity=0.9))
    assert report.metrics["sparsity"] == pytest.approx(0.9, abs=0.01)
    assert not torch.allclose(pruned(x), net(x), atol=1e-3)
    q16, _ = quantize(model, QuantConfig(bits=16))
    assert (q16(x).argmax(1) == net(x).argmax(1)).all()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the original is untouched


def test_structural_methods_on_export_and_refused_on_torchscript(files):
    _, x, d = files
    program = load_model(d / "net.pt2").model
    small, _ = lowrank(program, LowRankConfig(), measure_latency=False)
    assert small(x).shape == (6, 10)
    ts = load_model(d / "net.pt").model
    for method, cfg in ((channel_prune, ChannelPruneConfig()), (lowrank, LowRankConfig())):
        with pytest.raises(UnsupportedLayerError, match="torch.export"):
            method(ts, cfg, measure_latency=False)
    with pytest.raises(UnsupportedLayerError, match="torch.export"):
        quantize(ts, QuantConfig(bits=8, activations=True), data=object())

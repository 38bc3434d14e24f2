"""The demo zoo: small built-in models for the bundled digits data, and the script that trains them.

`python -m compression train-zoo` trains every model (seeded) and writes its weights to
assets/NAME.safetensors and a summary to assets/zoo.json. The app never trains at start-up.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from compression.core.errors import ModelLoadError

ASSETS = Path(__file__).resolve().parents[2] / "assets"


class MLP(nn.Module):
    """LeNet-300-100 style multi-layer perceptron."""

    def __init__(self, in_channels: int = 1, image_size: int = 8, num_classes: int = 10,
                 hidden: tuple[int, int] = (300, 100)):
        super().__init__()
        self.fc1 = nn.Linear(in_channels * image_size * image_size, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.fc3 = nn.Linear(hidden[1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (B, C*H*W)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class SmallCNN(nn.Module):
    """Two 3x3 conv + max-pool stages and two Linear layers (LeNet-5 style)."""

    def __init__(self, in_channels: int = 1, image_size: int = 8, num_classes: int = 10,
                 channels: tuple[int, int] = (6, 16), hidden: tuple[int, ...] = (120, 84),
                 pool_first: bool = True):
        super().__init__()
        self.pool_first = pool_first
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 3, padding=1)
        flat = channels[1] * (image_size // (4 if pool_first else 2)) ** 2
        dims = (flat, *hidden, num_classes)
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))                    # (B, C1, H, W)
        if self.pool_first:
            x = F.max_pool2d(x, 2)                   # (B, C1, H/2, W/2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)   # (B, C2, H/4 or H/2, ...)
        x = x.flatten(1)
        last = len(self.fcs) - 1
        for i, fc in enumerate(self.fcs):
            x = fc(x)
            if i < last:
                x = F.relu(x)
        return x


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class MobileNetish(nn.Module):
    """MobileNet-v1 style: a stem, then depthwise-separable blocks (depthwise 3x3 + pointwise 1x1),
    each conv followed by batch norm and ReLU, then global average pooling and a classifier."""

    def __init__(self, in_channels: int = 1, image_size: int = 8, num_classes: int = 10,
                 widths: tuple[int, ...] = (32, 64, 128, 128, 256), strides: tuple[int, ...] = (1, 2, 1, 2)):
        super().__init__()
        layers = [conv_bn(in_channels, widths[0])]
        for cin, cout, s in zip(widths[:-1], widths[1:], strides):
            layers += [conv_bn(cin, cin, 3, s, groups=cin), conv_bn(cin, cout, 1)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)            # (B, C, h, w)
        return self.classifier(x.mean((2, 3)))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetish(nn.Module):
    """A small ResNet: a conv stem and three basic blocks (the last two downsample)."""

    def __init__(self, in_channels: int = 1, image_size: int = 8, num_classes: int = 10,
                 widths: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        self.stem = conv_bn(in_channels, widths[0])
        blocks = [BasicBlock(widths[0], widths[0])]
        blocks += [BasicBlock(a, b, 2) for a, b in zip(widths[:-1], widths[1:])]
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))   # (B, C, h, w)
        return self.fc(x.mean((2, 3)))


@dataclass(frozen=True)
class ZooEntry:
    name: str
    title: str
    builder: Callable[..., nn.Module]
    kwargs: dict
    description: str
    epochs: int = 40


ZOO: dict[str, ZooEntry] = {e.name: e for e in [
    ZooEntry("mlp", "MLP 300-100", MLP, {},
             "LeNet-300-100 style MLP: three Linear layers (64-300-100-10).", epochs=120),
    ZooEntry("lenet5", "LeNet-5 CNN", SmallCNN, {"pool_first": False},
             "LeNet-5 style CNN: two 3x3 convs (6 and 16 channels), a max-pool, then Linear 120-84-10.",
             epochs=120),
    ZooEntry("mobilenet", "MobileNet-style CNN", MobileNetish, {},
             "Depthwise-separable convolutions with batch norm (MobileNet-v1 style)."),
    ZooEntry("resnet", "Residual CNN", ResNetish, {},
             "A small ResNet: conv stem and three basic residual blocks with batch norm."),
    ZooEntry("teacher", "Teacher (wide CNN)", SmallCNN,
             {"channels": (64, 128), "hidden": (256,)},
             "A wide CNN used as the distillation teacher."),
    ZooEntry("student", "Student (small CNN)", SmallCNN,
             {"channels": (16, 32), "hidden": (96,)},
             "A small CNN with about a tenth of the teacher's parameters."),
]}


def list_models() -> list[str]:
    return list(ZOO)


def parse_demo_name(spec: str) -> str:
    """'demo:mlp' or 'mlp' -> 'mlp'; raise ModelLoadError for an unknown name."""
    name = spec.split(":", 1)[1] if spec.startswith("demo:") else spec
    if name not in ZOO:
        raise ModelLoadError(f"Unknown built-in model {name!r}. Choose one of: {', '.join(ZOO)}.")
    return name


def build(name: str, in_channels: int = 1, image_size: int = 8, num_classes: int = 10) -> nn.Module:
    """A freshly initialised built-in architecture (random weights)."""
    entry = ZOO[parse_demo_name(name)]
    model = entry.builder(in_channels=in_channels, image_size=image_size,
                          num_classes=num_classes, **entry.kwargs)
    # Where the architecture came from: copies keep it, the compact format stores it.
    model.zoo_arch = {"name": entry.name, "in_channels": in_channels, "image_size": image_size,
                      "num_classes": num_classes}
    return model


def weights_path(name: str) -> Path:
    return ASSETS / f"{parse_demo_name(name)}.safetensors"


def load_pretrained(name: str) -> nn.Module:
    """A built-in model with its bundled digits weights, in eval mode. A new object each call."""
    from safetensors.torch import load_file

    path = weights_path(name)
    if not path.exists():
        raise ModelLoadError(f"Weights for {name!r} are missing at {path}; run `python -m compression train-zoo`.")
    model = build(name)
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def zoo_summary() -> dict[str, dict]:
    """The recorded parameters and test accuracy of each model (assets/zoo.json)."""
    path = ASSETS / "zoo.json"
    recorded = json.loads(path.read_text()) if path.exists() else {}
    out = {}
    for name, entry in ZOO.items():
        out[name] = {"name": name, "title": entry.title, "description": entry.description,
                     **recorded.get(name, {})}
    return out

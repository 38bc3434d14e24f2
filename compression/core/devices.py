"""Where the heavy work runs: CPU, or CUDA when this machine has it.

Models stay on the CPU where they are shared (the app's demo weights, a session's base model);
work that should run elsewhere moves a copy (`on_device`), and evaluation, training, latency and
sweeps move each batch to the device of the model they run (`model_device`). Results (logits,
metrics) come back to the CPU."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from compression.core.errors import ConfigError
from compression.core.modules import copy_model

CPU = "cpu"


def available_devices() -> list[str]:
    """'cpu', then 'cuda' (and 'cuda:1', ... with several GPUs) when PyTorch sees a GPU."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [CPU] + (["cuda"] + [f"cuda:{i}" for i in range(1, n)] if n else [])


def resolve(device: str | torch.device | None) -> torch.device:
    """A torch.device for a name from `available_devices` (None: the CPU); ConfigError otherwise."""
    if device is None:
        return torch.device(CPU)
    name = str(device)
    if name not in available_devices():
        raise ConfigError(f"Device {name!r} is not available on this machine; choose one of "
                          f"{', '.join(available_devices())}.")
    return torch.device(name)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (the CPU for a model with neither)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device(CPU)


def on_device(model: nn.Module, device: str | torch.device | None) -> nn.Module:
    """`model` itself when it is already on `device` (None: leave it where it is), else a copy
    moved there: the input model is never moved (Module.to works in place)."""
    if device is None:
        return model
    target = resolve(device)
    if model_device(model) == target:
        return model
    return copy_model(model).to(target)


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo, or None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None

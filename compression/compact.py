"""Compact serialisation (placeholder until the compact format lands): dense safetensors."""
from __future__ import annotations

from torch import nn


def compact_size(model: nn.Module) -> tuple[int, str]:
    from compression.evaluate import safetensors_size

    return safetensors_size(model), "safetensors (dense fp32 state dict), bytes written"

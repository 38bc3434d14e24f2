"""Quick curves for the method pages: accuracy against sparsity, bit-width or rank ratio (one
compression + evaluation per point, on a private copy each; the model is never changed)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from compression.core.modules import is_frozen_code, weight_layers
from compression.core.quant import compute_qparams
from compression.core.registry import MethodConfig, compress
from compression.data.datasets import Dataset
from compression.metrics.evaluate import accuracy_and_loss


def sweep_configs(model: nn.Module, data: Dataset, configs: dict[float, MethodConfig], x: str,
                  split: str | None = None) -> pd.DataFrame:
    """Accuracy and loss of `model` compressed by each config, as rows {x, accuracy, loss}."""
    rows = []
    for value, cfg in configs.items():
        compressed, _ = compress(model, cfg, data, measure_latency=False)  # a curve point: no timing
        acc, loss = accuracy_and_loss(compressed, data.split(split or data.eval_split))
        rows.append({x: value, "accuracy": acc, "loss": loss})
    return pd.DataFrame(rows).sort_values(x, ignore_index=True)


def weight_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    """Each weight layer's effective weights as a flat numpy array."""
    layers, _ = weight_layers(model)
    return {n: m.weight.detach().float().flatten().numpy() for n, m in layers.items()}


def layer_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """The input each weight layer receives for a calibration batch `x` (hooks removed after).
    Empty for TorchScript, whose modules take no hooks."""
    if is_frozen_code(model):
        return {}
    layers, _ = weight_layers(model)
    seen: dict[str, np.ndarray] = {}
    handles = [m.register_forward_pre_hook(lambda _m, inp, n=n: seen.__setitem__(n, inp[0].detach().flatten().numpy()))
               for n, m in layers.items()]
    try:
        with torch.inference_mode():
            try:
                model.eval()
            except NotImplementedError:  # a torch.export module cannot switch modes: it runs as exported
                pass
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def quant_grid(values: np.ndarray, bits: int, calibration: str,
               symmetric: bool = True) -> tuple[np.ndarray, float, float]:
    """Levels (dequantized values of every code) and clipping range of a per-tensor quantizer.

    The clipping range is where the quantizer starts to clip: half a step beyond the end levels.
    A value inside it rounds to its nearest level (an error of at most half a step); only a value
    beyond it is clamped to an end level and moves further. Min-max calibration puts the range's
    ends at the calibrated min and max (PyTorch's symmetric scale max|x| / (2^(bits-1) - 1/2)
    puts max|x| exactly half a step above the top level), so it clips none of its own values.

    Returns:
        (levels (2^bits,) ascending, low, high).
    """
    info = compute_qparams(torch.from_numpy(np.ascontiguousarray(values)), bits, symmetric, None, calibration)
    codes = torch.arange(info.qmin, info.qmax + 1)
    levels = info.dequantize(codes).double().numpy()
    half = float(info.scale) / 2
    return levels, float(levels[0]) - half, float(levels[-1]) + half

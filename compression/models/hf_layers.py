"""A transformer's layer table (one row per Linear and Embedding, with its block and role from
`Model.group_of`) and the weights a layer computes with, for the pages."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from compression.core.modules import count_params
from compression.models.model import Model, tied_heads


def hf_layer_table(hf: Model) -> pd.DataFrame:
    """One row per Linear and Embedding layer: name, type, block, group, weight shape, params,
    non-zero params and share of the model's parameters (a tied head counts once, as 'tied')."""
    model, roles = hf.model, hf.block_roles()
    tied, seen = set(tied_heads(model)), set()
    total = count_params(model)
    rows = []
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if callable(weight) and hasattr(module, "_packed_params"):  # a real int8 layer: packed weights
            rows.append(_row(hf, name, module, weight(), roles, total, "int8"))
            continue
        if not isinstance(module, (nn.Linear, nn.Embedding)):
            continue
        note = "tied to the embedding" if name in tied or id(weight) in seen else ""
        seen.add(id(weight))
        rows.append(_row(hf, name, module, weight, roles, total, note))
    return pd.DataFrame(rows, columns=["layer", "type", "block", "group", "shape", "params", "nonzero",
                                       "params_share", "note"])


def _row(hf: Model, name: str, module: nn.Module, weight, roles: dict, total: int, note: str) -> dict:
    w = weight.int_repr() if getattr(weight, "is_quantized", False) else weight.detach()
    bias = getattr(module, "bias", None)
    bias = bias() if callable(bias) else bias
    params = w.numel() + (bias.numel() if bias is not None else 0)
    block, group = roles.get(name, hf.group_of(name))
    counted = 0 if note.startswith("tied") else params
    return {"layer": name, "type": type(module).__name__, "block": block, "group": group,
            "shape": "x".join(map(str, w.shape)), "params": params,
            "nonzero": int(torch.count_nonzero(w)) + (int(torch.count_nonzero(bias)) if bias is not None else 0),
            "params_share": counted / max(total, 1), "note": note}


def weight_values(model: nn.Module, name: str) -> np.ndarray | None:
    """The weights a layer computes with, flattened, as float32 numpy (int8 layers dequantized);
    None when the model has no such layer with a weight (e.g. replaced by low-rank factors)."""
    try:
        weight = model.get_submodule(name).weight
    except AttributeError:
        return None
    weight = weight() if callable(weight) else weight
    weight = weight.dequantize() if getattr(weight, "is_quantized", False) else weight
    return np.asarray(weight.detach().float().flatten().numpy(), dtype=np.float32)

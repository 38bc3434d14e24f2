"""The layers of a transformer, by role: which Linear is an attention q/k/v/o projection or an
FFN input/output layer of which block, which are embeddings, which output head is tied to them."""
from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from compression.metrics.evaluate import count_params
from compression.models.hf import HFModel

GROUPS = ("attention.q", "attention.k", "attention.v", "attention.qkv", "attention.o", "ffn.in", "ffn.out")


def base_prefix(model: nn.Module) -> str:
    """Qualified name of the base model inside a model with a head ('' for a bare base model)."""
    base = getattr(model, "base_model", model)
    return next(n for n, m in model.named_modules() if m is base)


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def blocks(hf: HFModel) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of each transformer block, in order."""
    path = _join(base_prefix(hf.model), hf.spec.blocks)
    container = hf.model.get_submodule(path)
    return [(_join(path, str(i)), block) for i, block in enumerate(container)]


def block_roles(hf: HFModel) -> dict[str, tuple[int, str]]:
    """{qualified Linear name: (block index, group)} for the attention and FFN projections."""
    spec = hf.spec
    roles = {"attention.q": spec.q, "attention.k": spec.k, "attention.v": spec.v, "attention.qkv": spec.qkv,
             "attention.o": spec.o, "ffn.in": spec.ffn_in, "ffn.out": spec.ffn_out}
    out = {}
    for index, (prefix, _) in enumerate(blocks(hf)):
        for group, rel in roles.items():
            if rel:
                out[_join(prefix, rel)] = (index, group)
    return out


def embedding_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Embedding)]


def tied_heads(model: nn.Module) -> list[str]:
    """Linear layers whose weight is an embedding's weight (GPT-2's lm_head): changing one changes both."""
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and id(m.weight) in embedding_weights]


def linear_names(model: nn.Module, tied: bool = False) -> list[str]:
    """Every nn.Linear, in definition order; heads tied to the embeddings only with `tied`."""
    skip = set() if tied else set(tied_heads(model))
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in skip]


def group_of(hf: HFModel, name: str) -> tuple[int | None, str]:
    """(block index or None, group) of a layer: its block role, or 'embedding' / 'head' / 'other'."""
    roles = block_roles(hf)
    if name in roles:
        return roles[name]
    module = hf.model.get_submodule(name)
    if isinstance(module, nn.Embedding):
        return None, "embedding"
    return None, "head" if name in tied_heads(hf.model) or not name.startswith(base_prefix(hf.model)) else "other"


def hf_layer_table(hf: HFModel) -> pd.DataFrame:
    """One row per Linear and Embedding layer: name, type, block, group, weight shape, params,
    non-zero params and share of the model's parameters (a tied head counts once, as 'tied')."""
    model, roles = hf.model, block_roles(hf)
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


def _row(hf: HFModel, name: str, module: nn.Module, weight, roles: dict, total: int, note: str) -> dict:
    w = weight.int_repr() if getattr(weight, "is_quantized", False) else weight.detach()
    bias = getattr(module, "bias", None)
    bias = bias() if callable(bias) else bias
    params = w.numel() + (bias.numel() if bias is not None else 0)
    block, group = roles.get(name, group_of(hf, name))
    counted = 0 if note.startswith("tied") else params
    return {"layer": name, "type": type(module).__name__, "block": block, "group": group,
            "shape": "x".join(map(str, w.shape)), "params": params,
            "nonzero": int(torch.count_nonzero(w)) + (int(torch.count_nonzero(bias)) if bias is not None else 0),
            "params_share": counted / max(total, 1), "note": note}


def weight_values(model: nn.Module, name: str) -> "np.ndarray | None":
    """The weights a layer computes with, flattened, as float32 numpy (int8 layers dequantized);
    None when the model has no such layer with a weight (e.g. replaced by low-rank factors)."""
    import numpy as np

    try:
        weight = model.get_submodule(name).weight
    except AttributeError:
        return None
    weight = weight() if callable(weight) else weight
    weight = weight.dequantize() if getattr(weight, "is_quantized", False) else weight
    return np.asarray(weight.detach().float().flatten().numpy(), dtype=np.float32)

"""Model summaries: the per-layer table shown on the Model page and by the CLI."""
from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from compression.metrics.evaluate import count_macs
from compression.core.modules import effective_weights
from compression.core.modules import is_frozen_code, layer_type


def layer_table(model: nn.Module, example: torch.Tensor) -> pd.DataFrame:
    """One row per leaf module with parameters: name, type (a TorchScript module's original type),
    weight shape, params, non-zero params, MACs for one sample, and each layer's share of the total
    params and MACs. A TorchScript model's per-layer MACs are unknown (<NA>): its modules take no
    hooks, so the counter sees only the total (in `attrs["total_macs"]`)."""
    total, macs_by_module = count_macs(model, example[:1])
    per_layer = not is_frozen_code(model)
    weights = effective_weights(model)
    rows = []
    for name, module in model.named_modules():
        if list(module.children()) or not name:
            continue
        own = {k.split(".")[-1]: v for k, v in weights.items() if k.rsplit(".", 1)[0] == name}
        params = sum(v.numel() for k, v in own.items() if k in ("weight", "bias"))
        if params == 0:
            continue
        weight = own.get("weight")
        rows.append({
            "layer": name, "type": layer_type(module),
            "shape": "x".join(map(str, weight.shape)) if weight is not None else "",
            "params": params,
            "nonzero": sum(int(torch.count_nonzero(v)) for k, v in own.items() if k in ("weight", "bias")),
            "macs": macs_by_module.get(name, 0) if per_layer else None,
        })
    df = pd.DataFrame(rows, columns=["layer", "type", "shape", "params", "nonzero", "macs"])
    df["macs"] = df["macs"].astype("Int64")
    df["params_share"] = df["params"] / max(df["params"].sum(), 1)
    df["macs_share"] = df["macs"] / max(df["macs"].sum(), 1)
    df.attrs["total_macs"] = total  # the whole forward's count, also where per-layer MACs are unknown
    return df


def size_change(before: int, after: int, tolerance: float = 0.005) -> str:
    """'2.0x smaller', '1.3x larger' or 'same size' (within `tolerance`): a size delta that never
    calls a bigger file smaller."""
    ratio = before / max(after, 1)
    if ratio > 1 + tolerance:
        return f"{ratio:.1f}x smaller"
    if ratio < 1 - tolerance:
        return f"{1 / ratio:.1f}x larger"
    return "same size"


def chance_note(accuracy: float, num_classes: int, baseline: float, margin: float = 0.05) -> str | None:
    """A one-line warning when a compressed model scores at chance (within `margin` of 1/classes)
    while its baseline did clearly better; None otherwise."""
    chance = 1.0 / max(num_classes, 1)
    if accuracy <= chance + margin and baseline > chance + 4 * margin:
        return (f"Accuracy {accuracy:.1%} is at chance ({chance:.0%} for {num_classes} classes): this setting "
                "destroys what the model learned. Lower it, or fine-tune afterwards.")
    return None


def ranking_note(scores: pd.Series, layers_swept: int) -> str | None:
    """Why a sensitivity ranking cannot name a most and a least sensitive layer, or None when it
    can: fewer than two layers measured (a stopped sweep) or every layer tied."""
    if len(scores) < 2:
        return (f"Only {len(scores)} of {layers_swept} layers measured before the stop: a ranking needs at "
                "least two. Run the sweep again to the end.")
    if float(scores.max() - scores.min()) < 1e-9:
        return "Every layer measured the same drop: no layer is more sensitive than another at these levels."
    return None


def distillation_note(distilled: float, alone: float | None, epochs: int) -> str | None:
    """A hint when the distilled student loses to the same student trained on the labels alone."""
    if alone is None or distilled >= alone:
        return None
    return (f"The distilled student ({distilled:.1%}) is below the student trained alone ({alone:.1%}) after "
            f"{epochs} epoch{'s' if epochs != 1 else ''}: matching the teacher's soft targets usually needs more "
            "epochs than fitting the labels (try 10-20), or a lower temperature.")


def int8_size_note(fp32_bytes: int, int8_bytes: int, int8_layers: int, layers: int) -> str | None:
    """Why a real int8 model is not smaller, or None when it is: few layers on int8 kernels, and a
    packed int8 layer carries its scales and the fp32 rest of the model beside it."""
    if int8_bytes < fp32_bytes:
        return None
    return (f"Not smaller: only {int8_layers} of {layers} weight layers run on int8 kernels (PyTorch's dynamic "
            "int8 covers Linear layers only), and the file holds each packed layer's scales and "
            "serialisation beside the fp32 rest, so it is "
            f"{size_change(fp32_bytes, int8_bytes)} than the fp32 model.")

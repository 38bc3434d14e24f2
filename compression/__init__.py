"""Compression Studio's library: models, data, evaluation and compression methods. No UI here.

The public API, for a script or a notebook (the app and the CLI use the same functions):

    import compression as cs
    model = cs.load_model("demo:resnet")            # any format: built-in, TorchScript, torch.export,
    data = cs.load_data("digits")                   #   state dict, compact, a Hugging Face folder
    small, result = cs.compress(model, cs.PruneConfig(sparsity=0.5), data)
    cs.evaluate(small, data, reference=model)       # the task's numbers, compared with the original

A transformer takes texts: `cs.load_text_data("texts.txt")`. Every config is a frozen dataclass
that round-trips through `cs.config_from_dict(cfg.to_dict())`. Names load on first use, so
`import compression` stays cheap (the CLI's child processes import single modules).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "compression.models.loading",
    "Model": "compression.models.model",
    "load_data": "compression.data.files",
    "Dataset": "compression.data.datasets",
    "load_text_data": "compression.data.text",
    "TextData": "compression.data.text",
    "evaluate": ("compression.metrics.task", "evaluate_model"),
    "compress": "compression.core.registry",
    "Result": "compression.core.registry",
    "MethodConfig": "compression.core.registry",
    "config_from_dict": "compression.core.registry",
    "CompressionError": "compression.core.errors",
    "PruneConfig": "compression.methods.pruning",
    "ChannelPruneConfig": "compression.methods.pruning",
    "QuantConfig": "compression.methods.quantization",
    "Int8Config": "compression.methods.hf",
    "NMConfig": "compression.methods.hf",
    "LowRankConfig": "compression.methods.lowrank",
    "DistillConfig": "compression.methods.distillation",
    "HeadPruneConfig": "compression.methods.heads_ffn",
    "FFNPruneConfig": "compression.methods.heads_ffn",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562); every method registers with it."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'compression' has no attribute {name!r}")
    module, attr = _EXPORTS[name] if isinstance(_EXPORTS[name], tuple) else (_EXPORTS[name], name)
    importlib.import_module("compression.methods")  # registers every method's config and handler
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

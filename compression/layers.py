"""Finding the layers a method can work on, with the reason for each layer it skips."""
from __future__ import annotations

from torch import nn

from compression.errors import ConfigError

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)
NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)


def weight_layers(model: nn.Module, types: tuple[type, ...] = WEIGHT_LAYERS,
                  skip: tuple[str, ...] = ()) -> tuple[dict[str, nn.Module], list[tuple[str, str]]]:
    """Leaf modules with a `weight` that a method can compress, in forward-definition order.

    Returns:
        (layers by qualified name, skipped [(name, reason)]). Leaf modules that hold parameters
        but are not of `types` are listed as skipped with their type, never silently dropped.
    """
    layers, skipped = {}, []
    for name, module in model.named_modules():
        if list(module.children()):
            continue
        has_params = any(True for _ in module.parameters(recurse=False))
        if name in skip:
            skipped.append((name, "in the skip list"))
        elif isinstance(module, types):
            layers[name] = module
        elif isinstance(module, NORM_LAYERS):
            skipped.append((name, f"{type(module).__name__} is folded with its layer, not compressed"))
        elif has_params:
            skipped.append((name, f"{type(module).__name__} is not a supported layer type"))
    return layers, skipped


def check_layer_names(model: nn.Module, names, what: str = "layer") -> None:
    """Raise ConfigError listing any name that is not a module of the model."""
    known = dict(model.named_modules())
    bad = [n for n in names if n not in known]
    if bad:
        valid = [n for n, m in known.items() if n and not list(m.children())]
        raise ConfigError(f"Unknown {what} name(s): {', '.join(bad)}. Layers of this model: {', '.join(valid)}.")


def get_module(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name) if name else model


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted `name` with `new`."""
    parent_name, _, child = name.rpartition(".")
    setattr(get_module(model, parent_name), child, new)

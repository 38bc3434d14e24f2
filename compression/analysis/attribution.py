"""Input attributions with captum, and how far compression changed a model's explanations.

One captum algorithm, one interface: `Algo(model).attribute(x, target=...)`. Every function here
runs inside `hooks_guard`, which removes any module hook added while it runs (captum's own
`test_hook_removal.py` checks the same: no forward, forward-pre or backward hook is left)."""
from __future__ import annotations

import contextlib
from typing import Iterator

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from compression.core.errors import ConfigError
from compression.core.modules import set_training

METHODS: tuple[str, ...] = ("integrated_gradients", "saliency")
HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
# dicts keyed by the same handle ids as the ones above (flags of hooks registered with kwargs etc.)
HOOK_FLAG_DICTS = ("_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")


def module_hooks(model: nn.Module) -> dict[str, int]:
    """Number of forward, forward-pre and backward hooks per module name (non-zero ones only)."""
    counts = {}
    for name, module in model.named_modules():
        n = sum(len(getattr(module, d, {})) for d in HOOK_DICTS)
        if n:
            counts[name] = n
    return counts


@contextlib.contextmanager
def hooks_guard(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block on `model` in eval mode; afterwards (even after an error) remove every module
    hook the block added and restore the train flag. Hooks that were there before are kept."""
    before = {id(m): {d: set(getattr(m, d, {})) for d in HOOK_DICTS} for m in model.modules()}
    was_training = model.training
    set_training(model, False)
    try:
        yield model
    finally:
        set_training(model, was_training)
        for module in model.modules():
            old = before.get(id(module), {})
            for d in HOOK_DICTS:
                hooks = getattr(module, d, None)
                for key in [k for k in (hooks or {}) if k not in old.get(d, set())]:
                    del hooks[key]
                    for flags in HOOK_FLAG_DICTS:
                        getattr(module, flags, {}).pop(key, None)


def predicted_class(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """argmax of the model's logits (B,) for inputs x (B, ...), in eval mode."""
    with hooks_guard(model), torch.no_grad():
        return model(x).argmax(1)


def input_attributions(model: nn.Module, x: torch.Tensor, target: torch.Tensor | int | None = None,
                       method: str = "integrated_gradients", n_steps: int = 32,
                       baseline: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Attribution of each input element to the `target` logit, same shape as x (B, ...).

    Args:
        target: class per sample (B,) or one class; default: the model's own prediction.
        method: 'integrated_gradients' (signed; from `baseline`, default all zeros = the data
            mean after normalisation, in `n_steps` steps) or 'saliency' (|gradient|).
    """
    from captum.attr import IntegratedGradients, Saliency

    if method not in METHODS:
        raise ConfigError(f"Unknown attribution method {method!r}; use one of {', '.join(METHODS)}.")
    if target is None:
        target = predicted_class(model, x)
    x = x.detach().clone().requires_grad_(True)
    with hooks_guard(model):
        if method == "saliency":
            attr = Saliency(model).attribute(x, target=target)
        else:
            attr = IntegratedGradients(model).attribute(x, baselines=baseline, target=target, n_steps=n_steps)
    return attr.detach()


def ranks(t: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean rank) along the last dimension of (B, D)."""
    frame = pd.DataFrame(t.double().T.numpy())
    return torch.from_numpy(frame.rank(axis=0).to_numpy().T.copy())  # (B, D)


def pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row of a (B, D) with the same row of b; NaN for a constant row."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    denom = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(denom > 0, (a * b).sum(1) / denom.clamp_min(1e-300), torch.full_like(denom, float("nan")))


def map_similarity(a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per sample: cosine similarity of the flattened absolute maps (0..1) and Spearman rank
    correlation of the absolute values (-1..1). a, b: (B, ...)."""
    fa, fb = a.detach().abs().flatten(1).double(), b.detach().abs().flatten(1).double()  # (B, D)
    cosine = F.cosine_similarity(fa, fb, dim=1, eps=1e-30)
    return {"similarity": cosine.float(), "spearman": pearson_rows(ranks(fa), ranks(fb)).float()}


def compare_attributions(original: nn.Module, compressed: nn.Module, x: torch.Tensor,
                         method: str = "integrated_gradients", target: torch.Tensor | int | None = None,
                         n_steps: int = 32) -> dict[str, torch.Tensor]:
    """Attribution maps of both models on x (B, ...) for the same target (default: the original
    model's prediction) and their similarity per sample.

    Returns:
        {'original': (B, ...), 'compressed': (B, ...), 'similarity': (B,) cosine of the
        absolute maps, 'spearman': (B,) rank correlation, 'target': (B,)}.
    """
    if target is None:
        target = predicted_class(original, x)
    target = torch.as_tensor(target).expand(x.shape[0]) if torch.as_tensor(target).dim() == 0 else target
    a = input_attributions(original, x, target, method, n_steps)
    b = input_attributions(compressed, x, target, method, n_steps)
    return {"original": a, "compressed": b, **map_similarity(a, b), "target": torch.as_tensor(target)}

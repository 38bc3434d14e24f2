"""Finding the layers a method can work on, with the reason for each layer it skips.

Every method chooses layers the same way: `include` and `exclude` lists of layer names or fnmatch
patterns ('layers.*.conv1'; an empty include means every layer), plus per-layer `overrides` of
the method's level where it has one (sparsity, bits)."""
from __future__ import annotations

import copy
from fnmatch import fnmatchcase

import torch
from torch import nn
from torch.nn.utils import prune

from compression.core.errors import ConfigError, UnsupportedLayerError

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)
NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


def count_params(model: nn.Module) -> int:
    """Parameters, counting the packed int8 weights (and biases) of real int8 layers too."""
    total = sum(p.numel() for p in model.parameters())
    for module in model.modules():
        if hasattr(module, "_packed_params") and callable(getattr(module, "weight", None)):
            total += module.weight().numel() + (module.bias().numel() if module.bias() is not None else 0)
    return total


def is_frozen_code(module: nn.Module) -> bool:
    """True for TorchScript modules: their weights can be changed in place, but their code (and
    so their structure, hooks and forward) cannot."""
    return isinstance(module, torch.jit.ScriptModule)


def layer_type(module: nn.Module) -> str:
    """The layer's type name: for a TorchScript submodule the type it was scripted from
    ('Linear', not 'RecursiveScriptModule')."""
    if is_frozen_code(module):
        return getattr(module, "original_name", type(module).__name__)
    return type(module).__name__


def is_layer(module: nn.Module, types: tuple[type, ...]) -> bool:
    """isinstance(module, types), or a TorchScript submodule scripted from one of `types`."""
    if isinstance(module, types):
        return True
    return is_frozen_code(module) and layer_type(module) in {t.__name__ for t in types}


def frozen_code_reason(model: nn.Module, what: str) -> str | None:
    """Why `what` cannot change this model, or None when it can (the model is not TorchScript)."""
    if not any(is_frozen_code(m) for m in model.modules()):
        return None
    return (f"{what} changes the model's structure or forward, which TorchScript code keeps frozen: "
            "export your model with torch.export (torch.export.save, a .pt2 file) to enable it, "
            "or use a weight-level method (pruning, N:M, simulated weight quantization).")


def refuse_frozen_code(model: nn.Module, what: str) -> None:
    """Raise UnsupportedLayerError up front when `model` is TorchScript and `what` needs to change
    its structure or forward."""
    reason = frozen_code_reason(model, what)
    if reason:
        raise UnsupportedLayerError(reason)


def matches(name: str, patterns) -> bool:
    """True when `name` is one of `patterns` or matches one of them (fnmatch: *, ?, [...])."""
    return any(name == p or fnmatchcase(name, p) for p in patterns)


def not_selected(name: str, include=(), exclude=()) -> str | None:
    """Why the layer is left out by an include / exclude selection, or None when it is chosen."""
    if include and not matches(name, include):
        return "not in the include list"
    if matches(name, exclude):
        return "in the exclude list"
    return None


def weight_layers(model: nn.Module, types: tuple[type, ...] = WEIGHT_LAYERS, include: tuple[str, ...] = (),
                  exclude: tuple[str, ...] = ()) -> tuple[dict[str, nn.Module], list[tuple[str, str]]]:
    """Leaf modules with a `weight` that a method can compress, in forward-definition order:
    modules of `types`, TorchScript submodules scripted from them, and (for torch.export
    programs) the modules that loading lifted out of the graph's convolution and linear ops.
    `include` / `exclude` choose among them (see `not_selected`).

    Returns:
        (layers by qualified name, skipped [(name, reason)]). Leaf modules that hold parameters
        but are not of `types` are listed as skipped with their type, never silently dropped.
    """
    layers, skipped = {}, []
    for name, module in model.named_modules():
        if list(module.children()):
            continue
        has_params = any(True for _ in module.parameters(recurse=False))
        left_out = not_selected(name, include, exclude) if has_params else None
        if left_out:
            skipped.append((name, left_out))
        elif is_layer(module, types):
            layers[name] = module
        elif is_layer(module, NORM_LAYERS):
            skipped.append((name, f"{layer_type(module)} is a normalisation layer: kept fp32, not compressed"))
        elif has_params:
            skipped.append((name, f"{layer_type(module)} is not a supported layer type"))
    return layers, skipped


def check_layer_names(model: nn.Module, names, what: str = "layer") -> None:
    """Raise ConfigError listing any name that is not a module of the model, or any pattern that
    matches none of its modules."""
    known = dict(model.named_modules())
    bad = [n for n in names if n not in known and not any(fnmatchcase(k, n) for k in known if k)]
    if bad:
        valid = [n for n, m in known.items() if n and not list(m.children())]
        raise ConfigError(f"Unknown {what} name(s): {', '.join(bad)}. Layers of this model: {', '.join(valid)}.")


def get_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule at dotted `name` ('' is the model), TorchScript modules included (they have
    no get_submodule)."""
    if not is_frozen_code(model):
        return model.get_submodule(name) if name else model
    module = model
    for part in name.split(".") if name else ():
        module = getattr(module, part)
    return module


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted `name` with `new`."""
    parent_name, _, child = name.rpartition(".")
    setattr(get_module(model, parent_name), child, new)


# ---- torch.export programs: the graph's layer ops as real modules -----------------------------

def _attr(node) -> str | None:
    """The target of a get_attr node (a parameter or buffer path), else None."""
    return node.target if getattr(node, "op", None) == "get_attr" else None


def _linear(args, kwargs, rank):
    w = args[1]
    return nn.Linear(w.shape[1], w.shape[0], bias=len(args) > 2 and args[2] is not None, device="meta")


def _conv(cls):
    def build(args, kwargs, rank):
        w = args[1]
        dims = 1 if cls is nn.Conv1d else 2
        rest = list(args[3:]) + [None] * 4
        stride, padding, dilation, groups = (rest[0] or [1] * dims, rest[1] if rest[1] is not None else 0,
                                             rest[2] or [1] * dims, rest[3] or 1)
        padding = padding if isinstance(padding, str) else tuple(padding) if isinstance(padding, (list, tuple)) else padding
        return cls(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=tuple(stride), padding=padding,
                   dilation=tuple(dilation), groups=groups, bias=len(args) > 2 and args[2] is not None, device="meta")
    return build


def _batch_norm(args, kwargs, rank):
    if len(args) < 8 or args[5] is not False or rank not in (2, 3, 4):
        return None  # training-mode batch norm, or an input rank nn.BatchNorm does not take
    cls = nn.BatchNorm2d if rank == 4 else nn.BatchNorm1d
    return cls(args[1].shape[0], eps=args[7], momentum=args[6], device="meta").eval()


def _layer_norm(args, kwargs, rank):
    eps = args[4] if len(args) > 4 else 1e-5
    return nn.LayerNorm(tuple(args[1]), eps=eps, elementwise_affine=True,
                        bias=len(args) > 3 and args[3] is not None, device="meta")


def _group_norm(args, kwargs, rank):
    eps = args[4] if len(args) > 4 else 1e-5
    return nn.GroupNorm(args[1], args[2].shape[0], eps=eps, device="meta")


def _embedding(args, kwargs, rank):
    if any(a not in (None, False, -1) for a in args[2:]):
        return None  # padding_idx, scale_grad_by_freq or sparse: keep the op as it is
    return nn.Embedding(*args[0].shape, device="meta")


# aten op -> (builder, index of the data input, {argument index: module attribute})
_LIFTABLE = {
    torch.ops.aten.linear.default: (_linear, 0, {1: "weight", 2: "bias"}),
    torch.ops.aten.conv1d.default: (_conv(nn.Conv1d), 0, {1: "weight", 2: "bias"}),
    torch.ops.aten.conv2d.default: (_conv(nn.Conv2d), 0, {1: "weight", 2: "bias"}),
    torch.ops.aten.conv1d.padding: (_conv(nn.Conv1d), 0, {1: "weight", 2: "bias"}),
    torch.ops.aten.conv2d.padding: (_conv(nn.Conv2d), 0, {1: "weight", 2: "bias"}),
    torch.ops.aten.batch_norm.default: (_batch_norm, 0, {1: "weight", 2: "bias", 3: "running_mean",
                                                         4: "running_var"}),
    torch.ops.aten.layer_norm.default: (_layer_norm, 0, {2: "weight", 3: "bias"}),
    torch.ops.aten.group_norm.default: (_group_norm, 0, {2: "weight", 3: "bias"}),
    torch.ops.aten.embedding.default: (_embedding, 1, {0: "weight"}),
}


def _lift_one(gm, node, uses: dict[str, int]) -> str | None:
    """Replace one layer op by a call of a real module owning its parameters; the module's
    name, or None when the op's parameters are not one module's own (shared, top-level, mixed)."""
    build, data_index, slots = _LIFTABLE[node.target]
    args = list(node.args)
    targets = {slot: _attr(args[i]) for i, slot in slots.items() if i < len(args) and args[i] is not None}
    if "weight" not in targets or any(t is None for t in targets.values()):
        return None
    owner = targets["weight"].rpartition(".")[0]
    if not owner or any(t != f"{owner}.{slot}" or uses[t] != 1 for slot, t in targets.items()):
        return None
    container = gm.get_submodule(owner)
    if list(container.children()) or type(container) is not nn.Module:
        return None
    own = dict(container.named_parameters(recurse=False)) | dict(container.named_buffers(recurse=False))
    if set(own) - set(targets) - {"num_batches_tracked"}:
        return None  # the container holds tensors this op does not read
    values = [a.meta.get("val") if isinstance(a, torch.fx.Node) else a for a in args]
    x_val = values[data_index]
    module = build(values, node.kwargs, x_val.dim() if isinstance(x_val, torch.Tensor) else None)
    if module is None or node.kwargs:
        return None
    for slot in targets:
        tensor = own[slot]
        if isinstance(tensor, nn.Parameter):
            setattr(module, slot, tensor)
        else:
            module.register_buffer(slot, tensor)
    if "num_batches_tracked" in own:
        module.register_buffer("num_batches_tracked", own["num_batches_tracked"])
    elif hasattr(module, "num_batches_tracked"):
        module.num_batches_tracked = None
    if any(t.is_meta for t in module.parameters()) or any(t.is_meta for t in module.buffers()):
        return None
    set_module(gm, owner, module)
    with gm.graph.inserting_before(node):
        call = gm.graph.call_module(owner, (args[data_index],))
    call.meta = dict(node.meta)
    node.replace_all_uses_with(call)
    gm.graph.erase_node(node)
    return owner


def lift_graph_layers(gm: nn.Module) -> list[str]:
    """In place: turn a torch.export program's (``ExportedProgram.module()``) linear, convolution,
    batch/layer/group norm and embedding ops into calls of real nn.Linear, nn.Conv1d/2d,
    nn.BatchNorm1d/2d, nn.LayerNorm, nn.GroupNorm and nn.Embedding modules that own the same
    parameter objects, so every method (masks, hooks, module swaps, torch-pruning) finds them by
    name. The computation is unchanged: each module runs the same functional op. Returns the
    names of the lifted modules; an op whose parameters are shared or not one module's own stays."""
    if not isinstance(gm, torch.fx.GraphModule):
        return []
    uses: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            uses[node.target] = uses.get(node.target, 0) + len(node.users)
    lifted = [name for node in list(gm.graph.nodes)
              if node.op == "call_function" and node.target in _LIFTABLE
              for name in [_lift_one(gm, node, uses)] if name]
    for node in list(gm.graph.nodes):
        if node.op == "get_attr" and not node.users:
            gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()
    return lifted


def set_training(model: nn.Module, training: bool) -> None:
    """model.train(training), tolerating modules that refuse it (torch.export programs are
    fixed in the mode they were exported in)."""
    try:
        model.train(training)
    except (NotImplementedError, RuntimeError):
        pass


def effective_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors the model computes with: pruning masks applied (weight_orig * weight_mask)."""
    state = model.state_dict()
    out = {}
    for key, value in state.items():
        if key.endswith("_mask"):
            continue
        if key.endswith("_orig"):
            base = key[: -len("_orig")]
            out[base] = value * state[base + "_mask"]
        else:
            out[key] = value
    return out


def fold_masks_(model: nn.Module) -> nn.Module:
    """The one fold helper: make every torch.nn.utils.prune reparametrisation permanent, in place
    (weight = weight_orig * weight_mask becomes a plain parameter)."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
    return model


def refresh_pruned_(model: nn.Module) -> nn.Module:
    """Recompute every pruned weight (weight_orig * weight_mask) without autograd history, in place.
    After training, torch.nn.utils.prune leaves there a value from before the last optimiser step,
    as a non-leaf tensor; these are the values the pre-hook computes on the next forward."""
    with torch.no_grad():
        for module in model.modules():
            for hook in module._forward_pre_hooks.values():
                if isinstance(hook, prune.BasePruningMethod):
                    setattr(module, hook._tensor_name, hook.apply_mask(module))
    return model


def copy_model(model: nn.Module, fold: bool = False) -> nn.Module:
    """The one copy helper: a deep copy, in the same train/eval mode, that pruned modules survive
    (their derived `weight`, a non-leaf tensor copy.deepcopy refuses, is recomputed in the copy);
    with `fold`, every pruning mask folded into its weight. The input is never changed."""
    memo: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    copied = refresh_pruned_(copy.deepcopy(model, memo))
    return fold_masks_(copied) if fold else copied
"""Why a layer is fragile or robust under compression, in words, from facts about the layer:
its number of weights and share of the model, its position (the first layer sees the raw input,
the last makes the decision), its shape (how many inputs each output sums; depthwise filters),
the batch norm after it, and whether a residual shortcut gives the signal a bypass around it.

These are rules of thumb that explain a measured sweep, never a substitute for it: each fact
leans one way (+1 fragile, -1 robust, 0 neither) and `why_sensitive` lists the facts that agree
with what was measured first."""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.fx as fx
from torch import nn

from compression.core.errors import ConfigError
from compression.core.modules import NORM_LAYERS, check_layer_names, get_module, is_layer, layer_type, weight_layers

Kind = Literal["prune", "quantize"]
SMALL_LAYER_WEIGHTS = 1_000    # fewer weights than this: little redundancy
SMALL_SHARE, LARGE_SHARE = 0.01, 0.30
FEW_INPUTS, MANY_INPUTS = 16, 256  # inputs summed per output: each weight matters / errors average out
_ADDS = {operator.add, operator.iadd, torch.add}
_SHORTCUT_NAMES = ("shortcut", "downsample", "skip", "residual")


@dataclass(frozen=True)
class LayerFact:
    """One fact about a layer and the way it leans: +1 tends to make the layer fragile, -1 robust."""

    topic: str      # "size", "position", "shape", "norm" or "shortcut"
    text: str
    leaning: int


# ---- the graph: forward order, the batch norm after a layer, residual bypasses -------------------

def _graph(model: nn.Module) -> fx.Graph | None:
    """The model's fx graph (structure only: nothing is run), or None when fx cannot trace it."""
    try:
        return fx.symbolic_trace(model).graph
    except Exception:  # TorchScript, data-dependent control flow: fx raises many types
        return None


def _calls(graph: fx.Graph, name: str) -> list[fx.Node]:
    return [n for n in graph.nodes if n.op == "call_module" and n.target == name]


def forward_order(model: nn.Module, graph: fx.Graph | None = None) -> list[str]:
    """The model's weight layers in the order the forward calls them (definition order when the
    model cannot be traced)."""
    layers, _ = weight_layers(model)
    if graph is None:
        return list(layers)
    called = [n.target for n in graph.nodes if n.op == "call_module" and n.target in layers]
    return list(dict.fromkeys(called)) + [n for n in layers if n not in called]


def _data_nodes(graph: fx.Graph) -> set[fx.Node]:
    """Nodes whose value depends on the model's input (not constants or parameters alone)."""
    data: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op == "placeholder" or any(a in data for a in node.all_input_nodes):
            data.add(node)
    return data


def _residual_adds(graph: fx.Graph) -> list[fx.Node]:
    """Additions of two input-dependent values: where a residual shortcut joins its block."""
    data = _data_nodes(graph)
    adds = [n for n in graph.nodes if (n.op == "call_function" and n.target in _ADDS)
            or (n.op == "call_method" and n.target in ("add", "add_"))]
    return [n for n in adds if sum(a in data for a in n.all_input_nodes) >= 2]


def _after(node: fx.Node) -> set[fx.Node]:
    """Every node whose value depends on `node`."""
    seen, todo = set(), list(node.users)
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(n.users)
    return seen


def bypassed(model: nn.Module, name: str, graph: fx.Graph | None = None) -> bool | None:
    """True when a residual addition after layer `name` also adds a value that does not pass
    through it (the signal has a path around it); False when the model has residual additions but
    none bypasses this layer; None when the model has none, or cannot be traced."""
    graph = graph if graph is not None else _graph(model)
    if graph is None:
        return None
    adds, calls, data = _residual_adds(graph), _calls(graph, name), _data_nodes(graph)
    if not adds or not calls:
        return None
    after = _after(calls[0])
    return any(a not in after and a is not calls[0] for add in adds if add in after
               for a in add.all_input_nodes if a in data)


def _next_norm(model: nn.Module, name: str, graph: fx.Graph | None) -> nn.Module | None:
    """The normalisation layer that reads this layer's output directly, if any."""
    if graph is not None:
        for call in _calls(graph, name):
            for user in call.users:
                if user.op == "call_module" and is_layer(get_module(model, user.target), NORM_LAYERS):
                    return get_module(model, user.target)
        return None
    leaves = [n for n, m in model.named_modules() if not list(m.children())]
    following = leaves[leaves.index(name) + 1:leaves.index(name) + 2] if name in leaves else []
    return next((get_module(model, n) for n in following if is_layer(get_module(model, n), NORM_LAYERS)), None)


# ---- the facts ------------------------------------------------------------------------------------

def _pct(share: float) -> str:
    return f"{share:.2%}" if share < 0.01 else f"{share:.1%}"


def _size_fact(model: nn.Module, module: nn.Module, kind: Kind) -> LayerFact:
    weight = module.weight.detach()
    n_w = weight.numel()
    n_b = module.bias.numel() if getattr(module, "bias", None) is not None else 0
    total = sum(p.numel() for p in model.parameters())
    share = (n_w + n_b) / max(total, 1)
    zeros = int((weight == 0).sum())
    text = (f"it has {n_w:,} weights" + (f" and {n_b:,} biases" if n_b else "")
            + (f" ({zeros:,} of them already zero)" if zeros else "")
            + f": {_pct(share)} of the model's {total:,} parameters")
    if n_w < SMALL_LAYER_WEIGHTS or share < SMALL_SHARE:
        tail = (f", so pruning 90% leaves only {max(round(n_w * 0.1), 1):,} of them" if kind == "prune" else
                ", so there is little redundancy to absorb the rounding")
        return LayerFact("size", text + tail, +1)
    if share >= LARGE_SHARE:
        return LayerFact("size", text + ": much of that capacity is redundant", -1)
    return LayerFact("size", text, 0)


def _input_words(module: nn.Module) -> str:
    weight = module.weight
    if isinstance(module, nn.Embedding) or layer_type(module) == "Embedding":
        return "it turns the raw token ids into vectors"
    if weight.dim() > 2:
        cin = weight.shape[1] * getattr(module, "groups", 1)
        return f"it sees the raw pixels ({cin} input channel{'s' if cin != 1 else ''})"
    return f"it reads the raw input ({weight.shape[1]} values: the flattened pixels, for an image model)"


def _position_fact(module: nn.Module, name: str, order: list[str]) -> LayerFact:
    index, count = order.index(name), len(order)
    parts = []
    if index == 0:
        parts.append(f"it is the first layer: {_input_words(module)}, and every later layer builds on what it "
                     "extracts")
    if index == count - 1:
        shape = module.weight.shape
        scores = f"turning {shape[1]} features into the {shape[0]} class scores" if len(shape) == 2 else \
            "producing the class scores"
        parts.append(f"it is the last layer: it makes the decision, {scores}, so its errors land on the logits "
                     "directly")
    if parts:
        return LayerFact("position", "; ".join(parts), +1)
    return LayerFact("position", f"it is layer {index + 1} of {count} in forward order", 0)


def _fan_in_leaning(fan_in: int) -> tuple[str, int]:
    if fan_in <= FEW_INPUTS:
        return f" only {fan_in} inputs, so each weight is a large part of its output", +1
    if fan_in >= MANY_INPUTS:
        return f" {fan_in:,} inputs, so one weight's error averages out over many", -1
    return f" {fan_in:,} inputs", 0


def _shape_fact(module: nn.Module) -> LayerFact:
    weight = module.weight
    if isinstance(module, nn.Embedding) or layer_type(module) == "Embedding":
        return LayerFact("shape", f"an embedding table of {weight.shape[0]:,} x {weight.shape[1]}: each token's "
                                  "vector is looked up, not summed with others", 0)
    if weight.dim() == 2:
        words, leaning = _fan_in_leaning(weight.shape[1])
        return LayerFact("shape", f"a Linear {weight.shape[1]}→{weight.shape[0]} layer: each output sums{words}",
                         leaning)
    out, per_group, *kernel = weight.shape          # (C_out, C_in / groups, kH, kW)
    groups, size = getattr(module, "groups", 1), "×".join(str(k) for k in kernel)
    fan_in = per_group * math.prod(kernel)
    if groups > 1 and per_group == 1:
        return LayerFact("shape", f"a depthwise {size} conv: each of its {out} channels has only {fan_in} weights "
                                  f"and sees only its own input channel, so one bad weight is 1/{fan_in} of that "
                                  "channel's filter", +1)
    words, leaning = _fan_in_leaning(fan_in)
    if all(k == 1 for k in kernel):
        what = f"a pointwise 1×1 conv mixing {per_group * groups} channels into {out}"
    else:
        what = f"a {size} conv, {per_group * groups}→{out} channels" + (f" in {groups} groups" if groups > 1 else "")
    return LayerFact("shape", f"{what}: each output sums{words}", leaning)


def _norm_fact(norm: nn.Module, kind: Kind) -> LayerFact | None:
    if not isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d)) or norm.running_var is None:
        return None
    gain = torch.ones_like(norm.running_var) if norm.weight is None else norm.weight.detach()
    gain = (gain / torch.sqrt(norm.running_var + norm.eps)).abs()   # (C,) what folding multiplies each channel by
    lo, hi = gain.min().item(), gain.max().item()
    text = f"batch norm follows it (kept fp32) and scales its channels by {lo:.2g}× to {hi:.2g}×"
    if kind == "prune" and hi > 4 * max(lo, 1e-12):
        return LayerFact("norm", text + ": magnitude pruning ranks the raw weights, so a small weight in a strongly "
                                        "scaled channel matters more than its size says", +1)
    return LayerFact("norm", text, 0)


def _shortcut_fact(model: nn.Module, name: str, graph: fx.Graph | None) -> LayerFact | None:
    bypass = bypassed(model, name, graph)
    if bypass is None:
        return None
    if not bypass:
        return LayerFact("shortcut", "no residual shortcut runs around it: the whole signal passes through it", +1)
    if any(word in part for part in name.lower().split(".") for word in _SHORTCUT_NAMES):
        return LayerFact("shortcut", "it is a residual block's shortcut projection: the block's main branch runs "
                                     "beside it, so the signal has another path", -1)
    return LayerFact("shortcut", "a residual shortcut runs around its block: the signal has a bypass, so damage "
                                 "here is partly routed around", -1)


def layer_facts(model: nn.Module, name: str, kind: Kind = "prune") -> list[LayerFact]:
    """The facts about layer `name` that bear on its sensitivity to `kind` ("prune" or "quantize").
    Nothing is run: the model is only inspected (and traced with torch.fx where it can be).

    Raises:
        ConfigError: `name` is not a Linear, Conv or Embedding layer of the model.
    """
    check_layer_names(model, [name])
    graph = _graph(model)
    order = forward_order(model, graph)
    if name not in order:
        raise ConfigError(f"{name} is not a Linear, Conv or Embedding layer; layers: {', '.join(order)}.")
    module = get_module(model, name)
    facts = [_size_fact(model, module, kind), _position_fact(module, name, order), _shape_fact(module)]
    norm = _next_norm(model, name, graph)
    facts += [f for f in (_norm_fact(norm, kind) if norm is not None else None,
                          _shortcut_fact(model, name, graph)) if f is not None]
    return facts


def _bullets(facts: list[LayerFact]) -> str:
    return "\n".join(f"- {f.text}" for f in facts)


def why_sensitive(model: nn.Module, name: str, measured: Literal["most", "least"] | None = None,
                  kind: Kind = "prune") -> str:
    """Markdown: why layer `name` is fragile or robust, from `layer_facts`. With `measured` ("most"
    or "least" sensitive, as a sweep found), the facts that agree with it come first, then those
    that pull the other way; without it, all facts.

    Example: why_sensitive(resnet, "stem.0", "most") -> "**stem.0** (Conv2d) was measured the most
    sensitive layer. What makes it fragile:\\n- it has 144 weights: 0.19% of ...\\n- it is the first
    layer: it sees the raw pixels ..."
    """
    facts = layer_facts(model, name, kind)
    fragile = [f for f in facts if f.leaning > 0]
    robust = [f for f in facts if f.leaning < 0]
    neutral = [f for f in facts if f.leaning == 0]
    title = f"**{name}** ({layer_type(get_module(model, name))})"
    if measured is None:
        return f"{title}:\n{_bullets(fragile + robust + neutral)}"
    first, second = (fragile, robust) if measured == "most" else (robust, fragile)
    first_words, second_words = (("What makes it fragile", "In its favour") if measured == "most"
                                 else ("What makes it robust", "Against that"))
    lines = [f"{title} was measured the {measured} sensitive layer."]
    if first:
        lines.append(f"{first_words}:\n{_bullets(first)}")
    else:
        lines.append(f"{first_words}: nothing in its size, place or shape says so; trust the sweep over these "
                     "rules of thumb.")
    if second:
        lines.append(f"{second_words}:\n{_bullets(second)}")
    if neutral:
        lines.append(f"Also:\n{_bullets(neutral)}")
    return "\n\n".join(lines)

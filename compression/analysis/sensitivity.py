"""Per-layer sensitivity sweeps: compress one layer at a time, at each level, and measure the model.

The numbers equal a naive loop's (`naive_prune_sweep`: deep copy per point, compress one layer,
evaluate the whole split, as Distiller does) but are computed without its waste: one private copy
of the model, weights applied and restored in place, `torch.inference_mode`, and only the part of
the network from the layer under test onwards recomputed. The model is traced once with
`torch.fx`, run once on the split caching the values that feed each layer's part of the graph,
and for each layer a small graph of the nodes from that layer's call onwards is replayed on the
cached values. A model fx cannot trace runs the full forward for every point
(`DataFrame.attrs['reuse']` is False and `attrs['reuse_note']` says why).

Every sweep returns a DataFrame with one row per (layer, level): columns layer, level, accuracy
(0-1) and loss (mean cross-entropy), plus acc_lo/acc_hi with `subsample`. `attrs` holds
baseline_accuracy, baseline_loss, split, n_samples, seconds, stopped, reuse, reuse_note and
channels_last (image CNNs are run in the channels-last layout, which is faster on CPU: accuracies
equal the naive loop's, losses agree to float rounding, ~1e-7).
"""
from __future__ import annotations

import copy
import operator
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import pandas as pd
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from compression.data.datasets import Dataset
from compression.core.devices import resolve
from compression.core.errors import ConfigError, UnsupportedLayerError
from compression.core.modules import (WEIGHT_LAYERS, check_layer_names, get_module, is_frozen_code, refuse_frozen_code,
                                weight_layers)
from compression.methods.training import StopFlag, is_stopped

DEFAULT_LEVELS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(20))  # 0.0 .. 0.95
DEFAULT_BITS: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
FLOAT_BITS = 32          # a bit-width of 32 or more in grid_sweep means "not quantized"
BOOTSTRAP_SAMPLES = 1000

Callback = Callable[[int, int, dict], None]
WeightFn = Callable[[str, torch.Tensor, Any], torch.Tensor]        # (layer, weight, level) -> new weight
InputFn = Callable[[str, torch.Tensor, Any], torch.Tensor] | None  # (layer, input, level) -> new input
_INPLACE_OPERATORS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
                      operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor,
                      operator.ilshift, operator.irshift, operator.imatmul, operator.setitem}


# ---- the private copy and the evaluation data ----------------------------------------------------

def plain_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with any torch.nn.utils.prune masks made permanent."""
    from torch.nn.utils import prune

    # a pruned layer's `weight` is computed (weight_orig * weight_mask) and, when computed with
    # grad, is not a graph leaf that deepcopy accepts: copy a detached value in its place
    memo = {id(v): v.detach().clone() for module in model.modules() for v in vars(module).values()
            if isinstance(v, torch.Tensor) and not v.is_leaf}
    m = copy.deepcopy(model, memo)
    for module in m.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
    return m.eval()


def private_copy(model: nn.Module) -> nn.Module:
    """plain_copy with no parameter requiring grad and in-place activations turned off (the same
    numbers, and cached activations stay intact)."""
    m = plain_copy(model)
    for module in m.modules():
        if isinstance(getattr(module, "inplace", None), bool):
            module.inplace = False
    if not is_frozen_code(m):
        return m.requires_grad_(False)
    for p in m.parameters():  # a ScriptModule has no requires_grad_; its copied tensors may not be leaves
        if p.is_leaf:
            p.requires_grad_(False)
    return m


def sweep_layers(model: nn.Module, layers: Sequence[str] | None = None,
                 include_embedding: bool = False) -> dict[str, nn.Module]:
    """The layers a sweep compresses: `layers` if given (validated), else every Linear/Conv
    (depthwise included), plus Embedding layers only when `include_embedding`."""
    types = WEIGHT_LAYERS if include_embedding else tuple(t for t in WEIGHT_LAYERS if t is not nn.Embedding)
    found, _ = weight_layers(model, types)
    if layers is None:
        if not found:
            raise UnsupportedLayerError("The model has no Linear, Conv or Embedding layer to sweep.")
        return found
    check_layer_names(model, layers)
    bad = [n for n in layers if n not in found]
    if bad:
        raise ConfigError(f"Layer(s) {', '.join(bad)} cannot be swept; sweepable layers: {', '.join(found)}.")
    return {n: found[n] for n in layers}


@dataclass(frozen=True)
class EvalSet:
    """The samples a sweep evaluates, and the bootstrap resamples for confidence intervals."""

    X: torch.Tensor                   # (N, ...)
    y: torch.Tensor                   # (N,)
    batch_size: int
    resamples: torch.Tensor | None    # (B, N) indices, or None without confidence intervals

    def chunks(self) -> list[torch.Tensor]:
        return [self.X[i:i + self.batch_size] for i in range(0, len(self.y), self.batch_size)]


def eval_set(data: Dataset, split: str = "val", subsample: int | None = None, batch_size: int | None = None,
             seed: int = 0) -> EvalSet:
    """The split (or a seeded subsample of `subsample` samples, with bootstrap resamples)."""
    part = data.split(split)
    X, y, resamples = part.X, part.y, None
    if subsample is not None:
        if not isinstance(subsample, int) or subsample < 1:
            raise ConfigError(f"subsample must be a positive integer; got {subsample!r}.")
        gen = torch.Generator().manual_seed(seed)
        if subsample < len(y):
            idx = torch.randperm(len(y), generator=gen)[:subsample].sort().values
            X, y = X[idx], y[idx]
        resamples = torch.randint(0, len(y), (BOOTSTRAP_SAMPLES, len(y)), generator=gen)  # (B, N)
    if len(y) == 0:
        raise ConfigError(f"The {split} split is empty: nothing to evaluate a sweep on.")
    size = len(y) if batch_size is None else int(batch_size)
    if size < 1:
        raise ConfigError(f"batch_size must be a positive integer; got {batch_size!r}.")
    return EvalSet(X, y, size, resamples)


def score(logits: torch.Tensor, ev: EvalSet) -> dict[str, float]:
    """accuracy and loss of logits (N, classes), with acc_lo/acc_hi (95% bootstrap) if resampled."""
    correct = (logits.argmax(1) == ev.y).float()  # (N,)
    row = {"accuracy": correct.mean().item(), "loss": F.cross_entropy(logits, ev.y).item()}
    if ev.resamples is not None:
        boot = correct[ev.resamples].mean(1)  # (B,)
        row["acc_lo"] = torch.quantile(boot, 0.025).item()
        row["acc_hi"] = torch.quantile(boot, 0.975).item()
    return row


# ---- the graph: trace once, cache, replay the suffix ------------------------------------------

def _mutates_inputs(node: fx.Node, gm: fx.GraphModule) -> bool:
    if node.kwargs.get("inplace") is True:
        return True
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        return node.target in _INPLACE_OPERATORS or (name.endswith("_") and not name.startswith("_"))
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.startswith("_")
    if node.op == "call_module":
        return getattr(gm.get_submodule(node.target), "inplace", False) is True
    return False


def trace(model: nn.Module) -> tuple[fx.GraphModule | None, str]:
    """(GraphModule sharing the model's submodules, '') or (None, why the suffix cannot be reused)."""
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types on data-dependent control flow
        return None, f"torch.fx could not trace the model ({type(exc).__name__}); every point runs the full forward"
    if any(_mutates_inputs(n, gm) for n in gm.graph.nodes):
        return None, "the traced graph has in-place operations; every point runs the full forward"
    return gm, ""


def _first_use(gm: fx.GraphModule, layer: str) -> int | None:
    """Index of the first node that calls `layer` or reads one of its attributes."""
    for i, node in enumerate(gm.graph.nodes):
        if node.op == "call_module" and node.target == layer:
            return i
        if node.op == "get_attr" and str(node.target).startswith(layer + "."):
            return i
    return None


@dataclass
class Suffix:
    """The nodes from a layer's first use onwards as a module of the cached values they read.
    With `split_input`, the layer's own input is a separate last argument, so it can be changed
    (quantized) without changing what other nodes read."""

    module: Callable[..., torch.Tensor]
    boundary: list[fx.Node]
    layer_input: fx.Node | None


def build_suffix(gm: fx.GraphModule, layer: str) -> Suffix:
    nodes = list(gm.graph.nodes)
    start = _first_use(gm, layer)
    start = start if start is not None else next(i for i, n in enumerate(nodes) if n.op != "placeholder")
    later = nodes[start:]
    later_set = set(later)
    boundary: list[fx.Node] = []
    for node in later:
        boundary += [a for a in node.all_input_nodes if a not in later_set and a not in boundary]
    first = nodes[start]
    calls = sum(1 for n in later if n.op == "call_module" and n.target == layer)
    split_input = first.op == "call_module" and first.target == layer and calls == 1 and bool(first.args) \
        and isinstance(first.args[0], fx.Node)
    graph = fx.Graph()
    env = {b: graph.placeholder(f"cached_{i}") for i, b in enumerate(boundary)}
    layer_in = graph.placeholder("layer_input") if split_input else None
    for node in later:
        if node is first and split_input:
            env[node] = graph.node_copy(node, lambda a: layer_in if a is first.args[0] else env[a])
        else:
            env[node] = graph.node_copy(node, lambda a: env[a])
            if _relu_in_place_is_safe(node, later_set):
                env[node].kwargs = {**env[node].kwargs, "inplace": True}
    return Suffix(fx.GraphModule(gm, graph), boundary, first.args[0] if split_input else None)


def _relu_in_place_is_safe(node: fx.Node, later: set[fx.Node]) -> bool:
    """A functional ReLU may overwrite its input inside a suffix when that input is computed in
    the suffix (never a cached value) and nothing else reads it: the same numbers, one allocation
    and one pass fewer."""
    if node.op != "call_function" or node.target is not F.relu or len(node.args) != 1:
        return False
    source = node.args[0]
    return isinstance(source, fx.Node) and source in later and source.op != "placeholder" and len(source.users) == 1


class _Recorder(fx.Interpreter):
    """Runs the graph freeing each value after its last use, keeping only the `keep` nodes'."""

    def __init__(self, gm: fx.GraphModule, keep: set[fx.Node]):
        super().__init__(gm, garbage_collect_values=True)
        self.keep, self.kept = keep, {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if n in self.keep:
            self.kept[n] = out
        return out


class SweepEngine:
    """One private copy of the model, its traced graph and the cached values feeding each layer.

    `evaluate(layer, level, weight_fn, input_fn)` sets the layer's weight to weight_fn(...) in
    place, recomputes only the layer's suffix (the full forward when fx could not trace the
    model), scores it and restores the weight bit-exactly. A point that leaves the weight as it
    is (sparsity 0) is the baseline and is not recomputed."""

    def __init__(self, model: nn.Module, ev: EvalSet, layers: Iterable[str], reuse: bool = True,
                 device: str | None = None, channels_last: bool = True):
        self.device = resolve(device)
        self.model, self.ev = private_copy(model).to(self.device), ev
        # image CNNs run faster with channels-last tensors (oneDNN's preferred layout); the
        # numbers stay those of the default layout: same accuracy, losses equal to ~1e-7
        self.channels_last = channels_last and ev.X.dim() == 4 and any(
            isinstance(m, nn.Conv2d) for m in self.model.modules())
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.layers = list(layers)
        self.originals = {n: get_module(self.model, n).weight.detach().clone() for n in self.layers}
        self.gm, self.note = trace(self.model) if reuse else (None, "reuse turned off")
        self.suffixes: dict[str, Suffix] = {}
        self.caches: list[dict[fx.Node, torch.Tensor]] = []
        with torch.inference_mode():
            self.base_logits = self._cache() if self.gm is not None else self._full()  # (N, classes)

    @property
    def reuse(self) -> bool:
        return self.gm is not None

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _cache(self) -> torch.Tensor:
        self.suffixes = {n: build_suffix(self.gm, n) for n in self.layers}
        keep = {b for s in self.suffixes.values() for b in s.boundary}
        outs = []
        for x in self.ev.chunks():
            interp = _Recorder(self.gm, keep)
            outs.append(interp.run(self._input(x)))
            self.caches.append(interp.kept)
        return torch.cat(outs).float().cpu()

    def _full(self, layer: str | None = None, input_fn: InputFn = None, level: Any = None) -> torch.Tensor:
        handle = None
        if layer is not None and input_fn is not None:
            hook = lambda mod, args: (input_fn(layer, args[0], level), *args[1:])  # noqa: E731
            handle = get_module(self.model, layer).register_forward_pre_hook(hook)
        try:
            return torch.cat([self.model(self._input(x)) for x in self.ev.chunks()]).float().cpu()
        finally:
            if handle is not None:
                handle.remove()

    def _replay(self, layer: str, input_fn: InputFn, level: Any) -> torch.Tensor:
        suffix = self.suffixes[layer]
        outs = []
        for cache in self.caches:
            args = [cache[b] for b in suffix.boundary]
            if suffix.layer_input is not None:
                x = cache[suffix.layer_input]
                args.append(input_fn(layer, x, level) if input_fn is not None else x)
            outs.append(suffix.module(*args))
        return torch.cat(outs).float().cpu()

    def evaluate(self, layer: str, level: Any, weight_fn: WeightFn | None, input_fn: InputFn = None) -> dict:
        """Score the model with only `layer` changed; the weight is restored afterwards."""
        weight = get_module(self.model, layer).weight
        original = self.originals[layer]
        with torch.inference_mode():
            new = weight_fn(layer, original, level) if weight_fn is not None else original
            if input_fn is None and torch.equal(new, original):   # e.g. sparsity 0: the baseline itself
                return score(self.base_logits, self.ev)
            try:
                weight.copy_(new)
                suffix = self.suffixes.get(layer)
                if suffix is None or (input_fn is not None and suffix.layer_input is None):
                    logits = self._full(layer, input_fn, level)
                else:
                    logits = self._replay(layer, input_fn, level)
            finally:
                weight.copy_(original)
        return score(logits, self.ev)

    def baseline(self) -> dict:
        return score(self.base_logits, self.ev)


# ---- what a point does to a layer ----------------------------------------------------------------

def prune_weight(layer: str, weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The weight with its round(sparsity * numel) smallest-magnitude entries zeroed."""
    from compression.methods.pruning import magnitude_mask

    return weight * magnitude_mask(weight.abs(), float(sparsity)).to(weight.dtype)


def sorted_pruner() -> WeightFn:
    """prune_weight for a sweep, whose weights never change between its points: each layer's
    magnitudes are sorted once (same stable order as magnitude_mask), each level zeroes a prefix."""
    orders: dict[str, torch.Tensor] = {}

    def fn(layer: str, weight: torch.Tensor, sparsity: float) -> torch.Tensor:
        if layer not in orders:
            orders[layer] = torch.argsort(weight.detach().abs().flatten().float(), stable=True)
        k = int(round(float(sparsity) * weight.numel()))
        flat = weight.flatten().clone()  # logical order, whatever the layout
        flat[orders[layer][:k]] = 0
        return flat.reshape(weight.shape)
    return fn


@dataclass(frozen=True)
class QuantSpec:
    """How a sweep fake-quantizes a weight (per output channel or per tensor) or an input."""

    granularity: str = "channel"
    symmetric: bool = True
    calibration: str = "minmax"
    percentile: float | None = None

    def __post_init__(self):
        if self.granularity not in ("channel", "tensor"):
            raise ConfigError(f"granularity must be 'channel' or 'tensor'; got {self.granularity!r}.")
        if self.calibration not in ("minmax", "percentile", "mse"):
            raise ConfigError(f"calibration must be 'minmax', 'percentile' or 'mse'; got {self.calibration!r}.")

    def qparams(self, t: torch.Tensor, bits: int, axis: int | None, calibration: str | None = None):
        from compression.core.quant import compute_qparams

        kw = {"percentile": self.percentile} if self.percentile is not None else {}
        return compute_qparams(t, int(bits), self.symmetric, axis, calibration=calibration or self.calibration, **kw)

    def weight(self, layer: str, weight: torch.Tensor, bits: int) -> torch.Tensor:
        from compression.core.quant import fake_quantize

        axis = 0 if self.granularity == "channel" else None
        return fake_quantize(weight, self.qparams(weight, bits, axis))


def prune_then_quantize(spec: QuantSpec) -> WeightFn:
    """Weight function of grid points (sparsity, bits): magnitude-prune, then quantize the pruned
    weight and apply the mask again, so pruned entries stay exactly zero. bits >= 32: no quantization."""
    from compression.methods.pruning import magnitude_mask

    def fn(layer: str, weight: torch.Tensor, level: tuple[float, int]) -> torch.Tensor:
        sparsity, bits = level
        mask = magnitude_mask(weight.abs(), float(sparsity)).to(weight.dtype)  # same shape as weight
        pruned = weight * mask
        return pruned if bits >= FLOAT_BITS else spec.weight(layer, pruned, bits) * mask
    return fn


def activation_qparams(model: nn.Module, X: torch.Tensor, layers: Sequence[str], bits: Sequence[int],
                       spec: QuantSpec, batch_size: int = 64) -> dict[tuple[str, int], Any]:
    """Per-tensor QuantInfo of each layer's input at each bit-width from the input's min and max
    over X (N, ...) with the unmodified model, as quantization.quantize calibrates activations
    (min-max, `spec.symmetric`). Hooks live on a private copy only."""
    m = private_copy(model)
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in layers}

    def hook(name: str) -> Callable:
        def fn(mod: nn.Module, args: tuple) -> None:
            seen[name].append(torch.stack([args[0].min(), args[0].max()]))  # (2,)
        return fn

    handles = [m.get_submodule(n).register_forward_pre_hook(hook(n)) for n in layers]
    try:
        with torch.inference_mode():
            for i in range(0, X.shape[0], batch_size):
                m(X[i:i + batch_size])
    finally:
        for h in handles:
            h.remove()
    ranges = {n: torch.stack(v) for n, v in seen.items()}  # (batches, 2) per layer
    lo_hi = {n: torch.stack([r[:, 0].min(), r[:, 1].max()]) for n, r in ranges.items()}  # (2,)
    return {(n, int(b)): spec.qparams(lo_hi[n], b, None, calibration="minmax") for n in layers for b in bits}


def activation_fn(qparams: dict[tuple[str, int], Any]) -> InputFn:
    from compression.core.quant import fake_quantize

    return lambda layer, x, bits: fake_quantize(x, qparams[(layer, int(bits))])


# ---- running the points ----------------------------------------------------------------------

Point = tuple[str, Any, dict]   # (layer, level given to the weight/input functions, row columns)


def _frame(rows: list[dict], columns: list[str], attrs: dict) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=columns)
    df.attrs.update(attrs)
    return df


def _columns(keys: list[str], ev: EvalSet) -> list[str]:
    return ["layer", *keys, "accuracy", "loss"] + (["acc_lo", "acc_hi"] if ev.resamples is not None else [])


def run_points(engine: SweepEngine, points: list[Point], weight_fn: WeightFn | None, input_fn: InputFn,
               callback: Callback | None, stop: StopFlag, keys: list[str], split: str,
               kind: str, extra: dict | None = None) -> pd.DataFrame:
    """Evaluate each point with `engine`; stop early (keeping the rows so far) when `stop` is set."""
    start = time.perf_counter()
    rows: list[dict] = []
    stopped = False
    for i, (layer, level, cols) in enumerate(points):
        if is_stopped(stop):
            stopped = True
            break
        row = {"layer": layer, **cols, **engine.evaluate(layer, level, weight_fn, input_fn)}
        rows.append(row)
        if callback is not None:
            callback(i + 1, len(points), row)
    base = engine.baseline()
    return _frame(rows, _columns(keys, engine.ev), {
        "baseline_accuracy": base["accuracy"], "baseline_loss": base["loss"], "split": split,
        "n_samples": len(engine.ev.y), "seconds": time.perf_counter() - start, "stopped": stopped,
        "reuse": engine.reuse, "reuse_note": engine.note, "channels_last": engine.channels_last, "kind": kind,
        **(extra or {})})


def _points(layers: Iterable[str], levels: Sequence, key: str = "level") -> list[Point]:
    return [(n, lv, {key: lv}) for n in layers for lv in levels]


def _check_levels(levels: Sequence[float]) -> list[float]:
    levels = [float(v) for v in levels]
    if not levels or any(not 0.0 <= v < 1.0 for v in levels):
        raise ConfigError(f"Sparsity levels must be a non-empty list of numbers in [0, 1); got {levels!r}.")
    return levels


def check_bits(bits: Sequence[int]) -> list[int]:
    bits = [int(b) for b in bits]
    if not bits or any(not 2 <= b <= 16 for b in bits):
        raise ConfigError(f"Bit-widths must be a non-empty list of integers in [2, 16]; got {bits!r}.")
    return bits


# ---- public sweeps -------------------------------------------------------------------------------

def prune_sweep(model: nn.Module, data: Dataset, levels: Sequence[float] = DEFAULT_LEVELS,
                layers: Sequence[str] | None = None, split: str = "val", callback: Callback | None = None,
                stop: StopFlag = None, subsample: int | None = None, batch_size: int | None = None,
                include_embedding: bool = False, seed: int = 0, reuse: bool = True,
                device: str | None = None) -> pd.DataFrame:
    """Magnitude-prune one layer at a time at each sparsity level; rows (layer, level, accuracy, loss).

    Args:
        levels: sparsities in [0, 1), each the fraction of the layer's weights zeroed.
        callback: called as callback(done, total, row) after each point.
        stop: a threading.Event or a callable; when set, the rows so far are returned.
        subsample: evaluate a seeded subset of this many samples, adding 95% bootstrap
            confidence intervals of the accuracy (acc_lo, acc_hi).
        batch_size: evaluation batch (default: the whole split at once).
        reuse: False computes every point with the full forward (for benchmarks).
        device: where the private copy runs ('cpu', 'cuda'; see compression.core.devices).
    """
    levels = _check_levels(levels)
    names = list(sweep_layers(model, layers, include_embedding))
    engine = SweepEngine(model, eval_set(data, split, subsample, batch_size, seed), names, reuse, device)
    return run_points(engine, _points(names, levels), sorted_pruner(), None, callback, stop, ["level"], split,
                      "prune")


def quant_sweep(model: nn.Module, data: Dataset, bits: Sequence[int] = DEFAULT_BITS,
                layers: Sequence[str] | None = None, split: str = "val", granularity: str = "channel",
                symmetric: bool = True, calibration: str = "minmax", percentile: float | None = None,
                activations: bool = False, callback: Callback | None = None, stop: StopFlag = None,
                subsample: int | None = None, batch_size: int | None = None,
                include_embedding: bool = False, seed: int = 0, reuse: bool = True,
                calibration_samples: int = 256, device: str | None = None) -> pd.DataFrame:
    """Fake-quantize one layer's weight at a time at each bit-width; rows (layer, level=bits,
    accuracy, loss). With `activations`, that layer's input is fake-quantized too (per tensor,
    calibrated as quantization.quantize does: min-max of the input over the first
    `calibration_samples` training samples). Other args as prune_sweep."""
    bits = check_bits(bits)
    spec = QuantSpec(granularity, symmetric, calibration, percentile)
    names = list(sweep_layers(model, layers, include_embedding))
    input_fn = None
    if activations:
        refuse_frozen_code(model, "an activation quantization sweep")
        qp = activation_qparams(model, data.train.X[:calibration_samples], names, bits, spec)
        input_fn = activation_fn(qp)
    engine = SweepEngine(model, eval_set(data, split, subsample, batch_size, seed), names, reuse, device)
    return run_points(engine, _points(names, bits), spec.weight, input_fn, callback, stop, ["level"], split,
                      "quantize", {"granularity": granularity, "symmetric": symmetric, "calibration": calibration,
                                   "percentile": percentile, "activations": activations})


def grid_sweep(model: nn.Module, data: Dataset, layer: str, sparsities: Sequence[float] = (0.0, 0.5, 0.8, 0.9),
               bits: Sequence[int] = (2, 4, 8, FLOAT_BITS), split: str = "val", granularity: str = "channel",
               symmetric: bool = True, calibration: str = "minmax", callback: Callback | None = None,
               stop: StopFlag = None, batch_size: int | None = None, device: str | None = None) -> pd.DataFrame:
    """One layer over sparsity x bit-width: magnitude-prune, then quantize the surviving weights.
    Rows (layer, sparsity, bits, accuracy, loss); bits >= 32 means pruned only."""
    sparsities = _check_levels(sparsities)
    bits = [int(b) for b in bits]
    check_bits([b for b in bits if b < FLOAT_BITS] or [8])
    sweep_layers(model, [layer], include_embedding=True)
    spec = QuantSpec(granularity, symmetric, calibration)
    points = [(layer, (s, b), {"sparsity": s, "bits": b}) for s in sparsities for b in bits]
    engine = SweepEngine(model, eval_set(data, split, None, batch_size), [layer], device=device)
    return run_points(engine, points, prune_then_quantize(spec), None, callback, stop, ["sparsity", "bits"],
                      split, "grid")


# ---- the naive reference and the cost floor --------------------------------------------------

def naive_points(model: nn.Module, ev: EvalSet, points: list[Point], weight_fn: WeightFn | None,
                 input_fn: InputFn = None) -> list[dict]:
    """Distiller's loop: per point, deep copy the model, change one layer, evaluate the whole set
    under torch.no_grad. Slow on purpose: the reference the fast sweep must equal."""
    rows = []
    for layer, level, cols in points:
        m = plain_copy(model)
        module = m.get_submodule(layer)
        with torch.no_grad():
            if weight_fn is not None:
                module.weight.copy_(weight_fn(layer, module.weight.detach().clone(), level))
        handle = None
        if input_fn is not None:
            handle = module.register_forward_pre_hook(
                lambda mod, args, layer=layer, level=level: (input_fn(layer, args[0], level), *args[1:]))
        with torch.no_grad():
            logits = torch.cat([m(x) for x in ev.chunks()]).float()  # (N, classes)
        if handle is not None:
            handle.remove()
        rows.append({"layer": layer, **cols, **score(logits, ev)})
    return rows


def naive_prune_sweep(model: nn.Module, data: Dataset, levels: Sequence[float] = DEFAULT_LEVELS,
                      layers: Sequence[str] | None = None, split: str = "val", subsample: int | None = None,
                      batch_size: int | None = None, include_embedding: bool = False,
                      seed: int = 0) -> pd.DataFrame:
    """prune_sweep computed the naive way (same rows, same columns)."""
    levels = _check_levels(levels)
    names = list(sweep_layers(model, layers, include_embedding))
    ev = eval_set(data, split, subsample, batch_size, seed)
    return _frame(naive_points(model, ev, _points(names, levels), prune_weight), _columns(["level"], ev), {})


def naive_quant_sweep(model: nn.Module, data: Dataset, bits: Sequence[int] = DEFAULT_BITS,
                      layers: Sequence[str] | None = None, split: str = "val", granularity: str = "channel",
                      symmetric: bool = True, calibration: str = "minmax", activations: bool = False,
                      batch_size: int | None = None, calibration_samples: int = 256) -> pd.DataFrame:
    """quant_sweep computed the naive way (same rows, same columns)."""
    bits = check_bits(bits)
    spec = QuantSpec(granularity, symmetric, calibration)
    names = list(sweep_layers(model, layers))
    input_fn = None
    if activations:
        input_fn = activation_fn(activation_qparams(model, data.train.X[:calibration_samples], names, bits, spec))
    ev = eval_set(data, split, None, batch_size)
    return _frame(naive_points(model, ev, _points(names, bits), spec.weight, input_fn), _columns(["level"], ev), {})


def _best_time(fn: Callable[[], Any], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def sweep_cost_floor(model: nn.Module, data: Dataset, layers: Sequence[str] | None = None, split: str = "val",
                     repeats: int = 5, batch_size: int | None = None,
                     include_embedding: bool = False) -> pd.DataFrame:
    """The least a sweep point can cost: per layer, the time (best of `repeats`, ms) to evaluate
    only the part of the network from that layer onwards on cached inputs (suffix_ms), beside a
    full forward (full_ms). A sweep of L levels cannot take less than L * suffix_ms.sum()."""
    names = list(sweep_layers(model, layers, include_embedding))
    engine = SweepEngine(model, eval_set(data, split, None, batch_size), names)
    rows = []
    with torch.inference_mode():
        full = _best_time(engine._full, repeats)
        for name in names:
            suffix = _best_time(lambda: engine._replay(name, None, None), repeats) if engine.reuse else full
            rows.append({"layer": name, "suffix_ms": suffix, "full_ms": full})
    return _frame(rows, ["layer", "suffix_ms", "full_ms"], {"reuse": engine.reuse, "reuse_note": engine.note})

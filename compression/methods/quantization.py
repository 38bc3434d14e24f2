"""Quantization: simulated (fake) quantization at 2-16 bits of weights and optionally activations,
with min-max, percentile or MSE-optimal clipping; quantization-aware fine-tuning with a
straight-through estimator; and real int8 through PyTorch's dynamic quantization kernels.

Every result says which it is: simulated results (Result.simulated=True) are labelled
"simulated (fake quantization)": weights are rounded to the integer grid and stored back as floats,
so the model computes in fp32 and shows the accuracy, not the speed, of the quantized model. Real
int8 results (Result.simulated=False) are labelled "real int8 (dynamic quantization kernels)".

Conventions read by the compact file format (compression.models.compact):
- a quantized weight stays a float tensor of dequantized values and its layer carries
  `weight_qinfo` (a compression.core.quant.QuantInfo) that recovers the integer codes exactly;
- a quantized layer input is a forward pre-hook (`act_fake_quant_hook`, a plain function) reading
  the buffers `act_scale`, `act_zero_point` and the attributes `act_bits`, `act_symmetric` of the
  layer itself, which stays a leaf module (`attach_act_quant` / `has_act_quant` / `remove_act_quant`).
Biases are never quantized: they stay fp32 (int8 kernels keep them in fp32 or int32 too).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn

from compression.core.errors import ConfigError, ModelDataMismatch, UnsupportedLayerError
from compression.core.modules import (check_layer_names, copy_model, is_layer, layer_type, refuse_frozen_code,
                                      weight_layers)
from compression.core.quant import (CALIBRATIONS, QuantInfo, attach_act_quant, check_bits, compute_qparams,
                                    fake_quantize, has_act_quant, info_from_rows, remove_act_quant, sqnr_db)
from compression.core.registry import (MethodConfig, Result, check_range, layer_patterns, name_pairs, register_config,
                                       register_handler)
from compression.data.datasets import Dataset
from compression.methods.training import StopFlag, TrainConfig, fit
from compression.metrics.evaluate import accuracy_and_loss

SIMULATED = "simulated (fake quantization)"
FP32_BITS = (0, 32)          # per-layer bits (overrides) that keep a layer in fp32
ACT_SAMPLE = 1 << 18         # activation values kept for percentile / MSE calibration
BIASES = "fp32 (biases are not quantized)"




# ---- config -----------------------------------------------------------------------------------

@register_config
@dataclass(frozen=True)
class QuantConfig(MethodConfig):
    """Simulated quantization of every weight layer (Linear, Conv1d/2d, Embedding).

    Args:
        bits: weight bit-width, 2..16.
        granularity: 'channel' (one scale per output channel) or 'tensor'.
        symmetric: signed codes with zero point 0; else unsigned codes with a zero point.
        activations: also quantize each quantized layer's input (per tensor, calibrated on data).
        act_bits: input bit-width; None = the layer's own weight bit-width.
        calibration: clipping of weights and inputs: 'minmax', 'percentile' or 'mse'.
        percentile: for 'percentile', in (50, 100].
        include, exclude: layer names or patterns quantized (empty include: all) and left in fp32.
        overrides: per-layer bit-widths (mixed precision), {name: bits} or ((name, bits), ...);
            0 or 32 keeps that layer (weight and input) in fp32.
        calib_batches: batches of 64 training samples used to calibrate the inputs.
    """

    kind: ClassVar[str] = "quantize"
    renamed: ClassVar[dict[str, str]] = {"skip": "exclude", "layer_bits": "overrides"}
    bits: int = 8
    granularity: str = "channel"
    symmetric: bool = True
    activations: bool = False
    act_bits: int | None = None
    calibration: str = "minmax"
    percentile: float = 99.99
    include: tuple = ()
    exclude: tuple = ()
    overrides: tuple = ()
    calib_batches: int = 4

    def __post_init__(self):
        check_bits("bits", self.bits)
        if self.act_bits is not None:
            check_bits("act_bits", self.act_bits)
        if self.granularity not in ("tensor", "channel"):
            raise ConfigError(f"granularity must be 'tensor' or 'channel'; got {self.granularity!r}.")
        for name in ("symmetric", "activations"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false; got {getattr(self, name)!r}.")
        if self.calibration not in CALIBRATIONS:
            raise ConfigError(f"calibration must be one of {', '.join(CALIBRATIONS)}; got {self.calibration!r}.")
        if isinstance(self.percentile, bool) or not isinstance(self.percentile, (int, float)):
            raise ConfigError(f"percentile must be a number in (50, 100]; got {self.percentile!r}.")
        check_range("percentile", self.percentile, 50, 100, lo_open=True)
        object.__setattr__(self, "overrides", name_pairs(self.overrides, _as_int, "overrides", "{'fc1': 4}"))
        for name, b in self.overrides:
            if b not in FP32_BITS:
                check_bits(f"overrides[{name!r}] (0 or 32 keeps fp32)", b)
        object.__setattr__(self, "include", layer_patterns(self.include, "include"))
        object.__setattr__(self, "exclude", layer_patterns(self.exclude, "exclude"))
        if isinstance(self.calib_batches, bool) or not isinstance(self.calib_batches, int) or self.calib_batches < 1:
            raise ConfigError(f"calib_batches must be a positive integer; got {self.calib_batches!r}.")

    def bits_of(self, layer: str) -> int:
        """The layer's weight bit-width; 32 when it stays fp32."""
        b = dict(self.overrides).get(layer, self.bits)
        return 32 if b in FP32_BITS else b


def _as_int(value) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(value)
    return int(value)


# ---- activation quantization (forward pre-hook on the layer itself) ---------------------------


class _InputStats:
    """Running min and max of one layer's input, plus (for percentile / MSE) a seeded sample of at
    most ACT_SAMPLE values per batch."""

    def __init__(self, keep: bool):
        self.lo, self.hi, self.keep, self.parts = float("inf"), float("-inf"), keep, []
        self.gen = torch.Generator().manual_seed(0)

    def __call__(self, _module: nn.Module, inputs: tuple) -> None:
        x = inputs[0].detach()
        if not x.is_floating_point() or x.numel() == 0:
            return
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
        if self.keep:
            self.parts.append(self._sample(x.float().reshape(-1)))

    def _sample(self, values: torch.Tensor) -> torch.Tensor:
        if values.numel() <= ACT_SAMPLE:
            return values.clone()
        return values[torch.randperm(values.numel(), generator=self.gen)[:ACT_SAMPLE]]

    def qparams(self, bits: int, symmetric: bool, calibration: str, percentile: float) -> QuantInfo | None:
        """Per-tensor parameters, or None when the layer never ran on a float input."""
        if self.lo > self.hi:
            return None
        lo, hi = torch.tensor([self.lo]), torch.tensor([self.hi])  # (1,)
        if not self.keep:
            return info_from_rows(lo[None], bits, symmetric, None, "minmax", percentile, lo, hi)
        flat = self._sample(torch.cat(self.parts))[None]            # (1, N)
        if calibration == "mse":  # search ratios of the true range, not of the sample's
            return info_from_rows(flat, bits, symmetric, None, "mse", percentile, lo, hi)
        return info_from_rows(flat, bits, symmetric, None, calibration, percentile)


def _calibrate_inputs(model: nn.Module, layers: dict[str, nn.Module], data: Dataset,
                      cfg: QuantConfig) -> dict[str, _InputStats]:
    """Statistics of the input of every layer that will be quantized, over the first
    cfg.calib_batches training batches of 64, with the fp32 model. The hooks are removed before
    returning, whatever happens."""
    stats = {n: _InputStats(keep=cfg.calibration != "minmax") for n in layers if cfg.bits_of(n) != 32}
    handles = [layers[n].register_forward_pre_hook(s) for n, s in stats.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for i, (x, _) in enumerate(data.train.batches(64)):
                if i >= cfg.calib_batches:
                    break
                model(x)
    except RuntimeError as exc:
        raise ModelDataMismatch(f"The model does not run on {data.name!r} samples of shape "
                                f"{tuple(data.train.X.shape[1:])} for calibration: {exc}") from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return stats


# ---- simulated quantization -------------------------------------------------------------------

def _quantize_weights_(layers: dict[str, nn.Module], cfg: QuantConfig) -> tuple[list[dict], list[tuple[str, str]]]:
    """Fake-quantize each layer's weight in place and attach weight_qinfo. A weight shared by two
    layers (tied) is quantized once and both layers carry its QuantInfo."""
    rows, kept, done = [], [], {}
    axis = 0 if cfg.granularity == "channel" else None
    for name, layer in layers.items():
        bits = cfg.bits_of(name)
        if bits == 32:
            kept.append((name, "kept fp32 by its override"))
            continue
        w = layer.weight
        if id(w) in done:
            info, db, first = done[id(w)]
            layer.weight_qinfo = info
            rows.append(_weight_row(name, layer, info.bits, cfg, db, tied_to=first))
            continue
        ref = w.detach().clone()
        info = compute_qparams(ref, bits, cfg.symmetric, axis, cfg.calibration, cfg.percentile)
        wq = fake_quantize(ref, info)
        with torch.no_grad():
            w.copy_(wq)
        layer.weight_qinfo = info
        db = sqnr_db(ref, wq)
        done[id(w)] = (info, db, name)
        rows.append(_weight_row(name, layer, bits, cfg, db))
    return rows, kept


def _weight_row(name: str, layer: nn.Module, bits: int, cfg: QuantConfig, db: float,
                tied_to: str | None = None) -> dict:
    row = {"layer": name, "type": layer_type(layer), "bits": bits, "granularity": cfg.granularity,
           "calibration": cfg.calibration, "params": layer.weight.numel(), "sqnr_db": db, "act_bits": None}
    if tied_to:
        row["tied_to"] = tied_to
    return row


def _quantize_inputs_(layers: dict[str, nn.Module], rows: list[dict], cfg: QuantConfig,
                      stats: dict[str, _InputStats]) -> None:
    """Attach input fake-quantization to each weight-quantized layer (not to Embedding: its
    inputs are integer indices) and fill the rows' act_bits."""
    for row in rows:
        name = row["layer"]
        layer = layers[name]
        if is_layer(layer, (nn.Embedding,)):
            continue
        bits = cfg.act_bits or row["bits"]
        info = stats[name].qparams(bits, cfg.symmetric, cfg.calibration, cfg.percentile)
        if info is None:
            continue
        attach_act_quant(layer, bits, cfg.symmetric, info.scale, info.zero_point)
        row["act_bits"] = bits


def prepare_copy(model: nn.Module) -> nn.Module:
    """A deep copy with pruning masks folded into the weights and no input quantization (a
    fresh quantization replaces an earlier one). The caller's model is not touched."""
    work = copy_model(model, fold=True)
    for module in work.modules():
        remove_act_quant(module)
    return work


def _metrics(rows: list[dict], cfg: QuantConfig) -> dict:
    sq = {r["layer"]: r["sqnr_db"] for r in rows}
    finite = [v for v in sq.values() if v != float("inf")]
    params = sum(r["params"] for r in rows if "tied_to" not in r)
    mean_bits = sum(r["bits"] * r["params"] for r in rows if "tied_to" not in r) / params if params else None
    act = sorted({r["act_bits"] for r in rows if r["act_bits"] is not None})
    return {"bits": cfg.bits, "act_bits": (act[0] if len(act) == 1 else act) if act else None,
            "mean_weight_bits": mean_bits, "quantized_layers": len(rows),
            "mean_sqnr_db": sum(finite) / len(finite) if finite else float("inf"), "sqnr_db": sq,
            "granularity": cfg.granularity, "calibration": cfg.calibration, "biases": BIASES,
            "label": SIMULATED, "simulated": True}


def quantize(model: nn.Module, cfg: QuantConfig, data: Dataset | None = None, **_) -> tuple[nn.Module, Result]:
    """Simulated quantization of a copy of `model`; the caller's model is not changed.

    Weights of every Linear / Conv1d / Conv2d (grouped and depthwise too) / Embedding layer are
    replaced by their fake-quantized values and carry `weight_qinfo`; biases stay fp32. With
    cfg.activations each quantized layer's input is fake-quantized per tensor by a forward
    pre-hook, calibrated on cfg.calib_batches training batches of `data` (required then).
    Returns:
        (model, Result) with simulated=True, rows {layer, type, bits, granularity, calibration,
        params, sqnr_db, act_bits} and metrics {bits, act_bits, mean_weight_bits, quantized_layers,
        mean_sqnr_db, sqnr_db: {layer: dB}, granularity, calibration, biases, label, simulated}.
    """
    check_layer_names(model, [n for n, _ in cfg.overrides] + list(cfg.include + cfg.exclude))
    if cfg.activations and data is None:
        raise ConfigError("Activation quantization needs data to calibrate the input ranges: pass a data set.")
    work = prepare_copy(model)
    return work, quantize_(work, cfg, data)


def quantize_(model: nn.Module, cfg: QuantConfig, data: Dataset | None = None) -> Result:
    """In place: as `quantize`, on `model` itself (pruning masks must be folded beforehand)."""
    if cfg.activations and data is None:
        raise ConfigError("Activation quantization needs data to calibrate the input ranges: pass a data set.")
    if cfg.activations:
        refuse_frozen_code(model, "Activation quantization")
    layers, skipped = weight_layers(model, include=cfg.include, exclude=cfg.exclude)
    if not layers:
        raise UnsupportedLayerError("No quantizable layer (Linear, Conv1d, Conv2d, Embedding) in this model.")
    stats = _calibrate_inputs(model, layers, data, cfg) if cfg.activations else {}
    rows, kept = _quantize_weights_(layers, cfg)
    if cfg.activations:
        _quantize_inputs_(layers, rows, cfg, stats)
    return Result("quantize", cfg.to_dict(), rows, skipped + kept, _metrics(rows, cfg), simulated=True)


register_handler(QuantConfig)(quantize)


# ---- quantization-aware fine-tuning -----------------------------------------------------------

class _FakeQuantSTE(nn.Module):
    """Parametrization used during QAT only: the forward sees the weight fake-quantized on a grid
    recomputed from the current weight; the rounding passes gradients straight through."""

    def __init__(self, bits: int, symmetric: bool, axis: int | None, calibration: str, percentile: float):
        super().__init__()
        self.bits, self.symmetric, self.axis, self.percentile = bits, symmetric, axis, percentile
        self.calibration = "minmax" if calibration == "mse" else calibration  # mse: applied once at the end

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            info = compute_qparams(w, self.bits, self.symmetric, self.axis, self.calibration, self.percentile)
            wq = fake_quantize(w, info)
        return w + (wq - w).detach()


def qat_finetune(model: nn.Module, data: Dataset, cfg: QuantConfig, train_cfg: TrainConfig,
                 teacher: nn.Module | None = None, callback=None, stop: StopFlag = None) -> tuple[nn.Module, Result]:
    """Quantization-aware fine-tuning of a copy of `model` (fp32 or already fake-quantized).

    Training sees fake-quantized weights (a temporary parametrization, grid from the current
    weight's min-max or percentile; 'mse' is searched once at the end) and, with cfg.activations,
    fake-quantized inputs at the post-training calibration, with straight-through gradients;
    `teacher` adds distillation (training.fit). The parametrizations are removed afterwards and
    the trained weights quantized per `cfg` (the input ranges kept from training).
    Returns:
        (model, Result) as `quantize`, method 'qat', plus metrics accuracy_before (post-training
        quantization at cfg) and accuracy_after (both on data.val), history, train_config.
    """
    from torch.nn.utils import parametrize

    refuse_frozen_code(model, "Quantization-aware training")
    ptq, _ = quantize(model, cfg, data)
    before, _ = accuracy_and_loss(ptq, data.val)
    work = prepare_copy(model)
    layers, _ = weight_layers(work, include=cfg.include, exclude=cfg.exclude)
    if cfg.activations:  # train against the post-training input grid
        for name, layer in layers.items():
            src = ptq.get_submodule(name)
            if has_act_quant(src):
                attach_act_quant(layer, src.act_bits, src.act_symmetric, src.act_scale, src.act_zero_point)
    axis = 0 if cfg.granularity == "channel" else None
    parametrized = []
    for name, layer in layers.items():
        bits = cfg.bits_of(name)
        if bits != 32 and not parametrize.is_parametrized(layer, "weight"):
            ste = _FakeQuantSTE(bits, cfg.symmetric, axis, cfg.calibration, cfg.percentile)
            parametrize.register_parametrization(layer, "weight", ste)
            parametrized.append(layer)
    try:
        trained, history = fit(work, data, train_cfg, teacher=teacher, callback=callback, stop=stop, private=False)
    finally:
        for layer in parametrized:
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
    rows, kept = _quantize_weights_(layers, cfg)
    for row in rows:
        layer = layers[row["layer"]]
        row["act_bits"] = layer.act_bits if has_act_quant(layer) else None
    _, skipped = weight_layers(trained, include=cfg.include, exclude=cfg.exclude)
    after, _ = accuracy_and_loss(trained.eval(), data.val)
    metrics = _metrics(rows, cfg)
    metrics.update({"accuracy_before": before, "accuracy_after": after, "accuracy_split": "val",
                    "history": history, "qat_epochs": len(history), "train_config": asdict(train_cfg),
                    "distilled": teacher is not None})
    return trained, Result("qat", cfg.to_dict(), rows, skipped + kept, metrics, simulated=True)





"""Quantization: simulated (fake) quantization at 2-16 bits of weights and optionally activations,
with min-max, percentile or MSE-optimal clipping; quantization-aware fine-tuning with a
straight-through estimator; and real int8 through PyTorch's dynamic quantization kernels.

Every result says which it is: simulated results are labelled "simulated (fake quantization)",
real int8 results "real int8 (dynamic quantization kernels)"."""
from __future__ import annotations

import copy
import io
import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from compression.config import MethodConfig, Report, name_pairs, register_config, register_handler
from compression.data import Dataset
from compression.errors import ConfigError, UnsupportedLayerError
from compression.evaluate import accuracy_and_loss, measure_latency
from compression.layers import check_layer_names, weight_layers
from compression.qinfo import QuantInfo
from compression.training import TrainConfig, fit

SIMULATED = "simulated (fake quantization)"
REAL_INT8 = "real int8 (dynamic quantization kernels)"
CALIBRATIONS = ("minmax", "percentile", "mse")


def _bounds(bits: int, symmetric: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2 ** bits - 1)


def _ranges(t: torch.Tensor, axis: int | None, calibration: str, percentile: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (rows along `axis`) or per-tensor min and max after clipping."""
    flat = t.detach().float().reshape(t.shape[axis], -1) if axis is not None else t.detach().float().reshape(1, -1)
    if calibration == "percentile" and flat.shape[1] > 1:
        q = torch.tensor([1 - percentile / 100, percentile / 100])
        lo_hi = torch.quantile(flat, q, dim=1)  # (2, C)
        return lo_hi[0], lo_hi[1]
    return flat.min(1).values, flat.max(1).values


def _qparams(lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    qmin, qmax = _bounds(bits, symmetric)
    lo, hi = torch.minimum(lo, torch.zeros_like(lo)), torch.maximum(hi, torch.zeros_like(hi))
    if symmetric:
        scale = torch.maximum(-lo, hi) / ((qmax - qmin) / 2)
        zero = torch.zeros_like(scale)
    else:
        scale = (hi - lo) / (qmax - qmin)
        zero = torch.clamp(torch.round(qmin - lo / torch.where(scale > 0, scale, 1.0)), qmin, qmax)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return scale, zero


def compute_qparams(t: torch.Tensor, bits: int, symmetric: bool = True, axis: int | None = None,
                    calibration: str = "minmax", percentile: float = 99.99) -> QuantInfo:
    """Affine quantization parameters of a tensor (per-tensor, or per-channel along `axis`)."""
    lo, hi = _ranges(t, axis, calibration, percentile)
    scale, zero = _qparams(lo, hi, bits, symmetric)
    if calibration == "mse":
        scale, zero = _mse_search(t, lo, hi, bits, symmetric, axis)
    if axis is None:
        scale, zero = scale.reshape(()), zero.reshape(())
    return QuantInfo(bits, scale, zero, axis, symmetric)


def _mse_search(t, lo, hi, bits, symmetric, axis, candidates: int = 50):
    """Clipping ratio in [0.3, 1] per channel minimising the quantization MSE (vectorised)."""
    flat = t.detach().float().reshape(t.shape[axis], -1) if axis is not None else t.detach().float().reshape(1, -1)
    qmin, qmax = _bounds(bits, symmetric)
    best_err = torch.full((flat.shape[0],), float("inf"))
    best_scale, best_zero = _qparams(lo, hi, bits, symmetric)
    for r in torch.linspace(0.3, 1.0, candidates):
        scale, zero = _qparams(lo * r, hi * r, bits, symmetric)
        q = torch.clamp(torch.round(flat / scale[:, None]) + zero[:, None], qmin, qmax)
        err = ((q - zero[:, None]) * scale[:, None] - flat).pow(2).mean(1)  # (C,)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale, best_zero = torch.where(better, scale, best_scale), torch.where(better, zero, best_zero)
    return best_scale, best_zero


def fake_quantize(t: torch.Tensor, info: QuantInfo) -> torch.Tensor:
    """Quantize and dequantize: the float values the quantized tensor stands for."""
    return info.dequantize(info.codes(t)).to(t.dtype)


def sqnr_db(ref: torch.Tensor, q: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when exact)."""
    noise = (ref.float() - q.float()).pow(2).sum()
    if noise == 0:
        return float("inf")
    return float(10 * torch.log10(ref.float().pow(2).sum() / noise))


@register_config
@dataclass(frozen=True)
class QuantConfig(MethodConfig):
    """Simulated quantization. layer_bits: per-layer bits (mixed precision; 32 keeps fp32)."""

    kind: ClassVar[str] = "quantize"
    bits: int = 8
    granularity: str = "channel"
    symmetric: bool = True
    activations: bool = False
    act_bits: int | None = None
    calibration: str = "minmax"
    percentile: float = 99.99
    layer_bits: tuple = ()
    skip: tuple = ()
    calib_batches: int = 4

    def __post_init__(self):
        _check_bits("bits", self.bits)
        if self.act_bits is not None:
            _check_bits("act_bits", self.act_bits)
        if self.granularity not in ("tensor", "channel"):
            raise ConfigError(f"granularity must be 'tensor' or 'channel'; got {self.granularity!r}.")
        if self.calibration not in CALIBRATIONS:
            raise ConfigError(f"calibration must be one of {', '.join(CALIBRATIONS)}; got {self.calibration!r}.")
        if not 50 < float(self.percentile) <= 100:
            raise ConfigError(f"percentile must be in (50, 100]; got {self.percentile!r}.")
        object.__setattr__(self, "layer_bits", name_pairs(self.layer_bits, int, "layer_bits", "{'fc1': 4}"))
        for name, b in self.layer_bits:
            if b != 32:
                _check_bits(f"bits of {name}", b)
        object.__setattr__(self, "skip", tuple(str(s) for s in self.skip))
        if not isinstance(self.calib_batches, int) or self.calib_batches < 1:
            raise ConfigError("calib_batches must be a positive integer.")


def _check_bits(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 16:
        raise ConfigError(f"{name} must be an integer from 2 to 16; got {value!r}.")


def act_fake_quant_hook(module: nn.Module, inputs: tuple) -> tuple:
    """Forward pre-hook: fake-quantize a layer's input with its act_scale / act_zero_point."""
    info = QuantInfo(module.act_bits, module.act_scale, module.act_zero_point, None, module.act_symmetric)
    return (fake_quantize(inputs[0], info), *inputs[1:])


def attach_act_quant(layer: nn.Module, bits: int, symmetric: bool, scale: torch.Tensor,
                     zero_point: torch.Tensor) -> None:
    """Quantize `layer`'s input at `bits` (buffers in the state dict, a plain pre-hook)."""
    for name, value in (("act_scale", scale), ("act_zero_point", zero_point)):
        if name in layer._buffers:
            layer._buffers[name] = value.detach().clone().reshape(())
        else:
            layer.register_buffer(name, value.detach().clone().reshape(()))
    layer.act_bits, layer.act_symmetric = int(bits), bool(symmetric)
    if not has_act_quant(layer):
        layer.register_forward_pre_hook(act_fake_quant_hook)


def has_act_quant(layer: nn.Module) -> bool:
    return any(h is act_fake_quant_hook for h in layer._forward_pre_hooks.values())


def _calibrate_inputs(model: nn.Module, layers: dict, data: Dataset, batches: int) -> dict[str, tuple]:
    """Min and max of every layer's input over calibration batches."""
    seen: dict[str, list] = {n: [float("inf"), float("-inf")] for n in layers}
    handles = []
    for name, layer in layers.items():
        def hook(_m, inputs, name=name):
            x = inputs[0].detach()
            seen[name][0], seen[name][1] = min(seen[name][0], float(x.min())), max(seen[name][1], float(x.max()))
        handles.append(layer.register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            for i, (x, _) in enumerate(data.train.batches(64)):
                if i >= batches:
                    break
                model(x)
    finally:
        for h in handles:
            h.remove()
    return {n: (torch.tensor(lo), torch.tensor(hi)) for n, (lo, hi) in seen.items()}


def _quantize_weights(layers: dict, cfg: QuantConfig) -> list[dict]:
    per_layer = dict(cfg.layer_bits)
    rows = []
    for name, layer in layers.items():
        bits = per_layer.get(name, cfg.bits)
        if bits == 32:
            continue
        w = layer.weight.detach().clone()
        axis = 0 if cfg.granularity == "channel" else None
        info = compute_qparams(w, bits, cfg.symmetric, axis, cfg.calibration, cfg.percentile)
        wq = fake_quantize(w, info)
        with torch.no_grad():
            layer.weight.copy_(wq)
        layer.weight_qinfo = info
        rows.append({"layer": name, "type": type(layer).__name__, "bits": bits,
                     "granularity": cfg.granularity, "sqnr_db": sqnr_db(w, wq)})
    return rows


def quantize(model: nn.Module, cfg: QuantConfig, data: Dataset | None = None, **_) -> tuple[nn.Module, Report]:
    """Simulated quantization of a copy of `model` (weights, optionally each layer's input)."""
    check_layer_names(model, [n for n, _ in cfg.layer_bits] + list(cfg.skip))
    if cfg.activations and data is None:
        raise ConfigError("Activation quantization needs data to calibrate the input ranges.")
    model = copy.deepcopy(model)
    layers, skipped = weight_layers(model, skip=cfg.skip)
    if not layers:
        raise UnsupportedLayerError("No quantizable layer (Linear, Conv, Embedding) in this model.")
    act_bits = cfg.act_bits or cfg.bits
    ranges = _calibrate_inputs(model, layers, data, cfg.calib_batches) if cfg.activations else {}
    rows = _quantize_weights(layers, cfg)
    for name, (lo, hi) in ranges.items():
        if isinstance(layers[name], nn.Embedding):
            continue  # integer indices: nothing to quantize
        scale, zero = _qparams(lo.reshape(1), hi.reshape(1), act_bits, cfg.symmetric)
        attach_act_quant(layers[name], act_bits, cfg.symmetric, scale, zero)
    for row in rows:
        row["act_bits"] = act_bits if row["layer"] in ranges else None
    sq = {r["layer"]: r["sqnr_db"] for r in rows}
    finite = [v for v in sq.values() if v != float("inf")]
    metrics = {"bits": cfg.bits, "act_bits": act_bits if cfg.activations else None,
               "mean_sqnr_db": sum(finite) / len(finite) if finite else float("inf"),
               "sqnr_db": sq, "label": SIMULATED, "simulated": True}
    return model, Report("quantize", cfg.to_dict(), rows, skipped, metrics, simulated=True)


register_handler(QuantConfig)(quantize)


class _STE(nn.Module):
    """Parametrization: forward uses fake-quantized weights, gradients pass straight through."""

    def __init__(self, bits: int, symmetric: bool, axis: int | None, calibration: str):
        super().__init__()
        self.bits, self.symmetric, self.axis, self.calibration = bits, symmetric, axis, calibration

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        info = compute_qparams(w, self.bits, self.symmetric, self.axis, "minmax")
        return w + (fake_quantize(w, info) - w).detach()


def qat_finetune(model: nn.Module, data: Dataset, cfg: QuantConfig, train_cfg: TrainConfig,
                 teacher: nn.Module | None = None, callback=None, stop=None) -> tuple[nn.Module, Report]:
    """Quantization-aware fine-tuning: train with fake-quantized weights (straight-through
    estimator), then quantize the result. Reports PTQ accuracy before and accuracy after."""
    from torch.nn.utils import parametrize

    ptq, _ = quantize(model, cfg, data)
    before, _ = accuracy_and_loss(ptq, data.val)
    work = copy.deepcopy(model)
    layers, _ = weight_layers(work, skip=cfg.skip)
    per_layer = dict(cfg.layer_bits)
    axis = 0 if cfg.granularity == "channel" else None
    for name, layer in layers.items():
        bits = per_layer.get(name, cfg.bits)
        if bits != 32:
            parametrize.register_parametrization(layer, "weight", _STE(bits, cfg.symmetric, axis, cfg.calibration))
    trained, history = fit(work, data, train_cfg, teacher=teacher, callback=callback, stop=stop, copy_model=False)
    for layer in layers.values():
        if parametrize.is_parametrized(layer, "weight"):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
    result, report = quantize(trained, cfg, data)
    after, _ = accuracy_and_loss(result, data.val)
    report.metrics.update({"accuracy_before": before, "accuracy_after": after, "history": history,
                           "qat_epochs": train_cfg.epochs})
    return result, report


def _state_bytes(model: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return len(buf.getvalue())


def quantize_int8(model: nn.Module, *, measure: bool = True, batch_size: int = 256,
                  input_shape: tuple[int, ...] | None = None) -> tuple[nn.Module, Report]:
    """Real int8: PyTorch's dynamic quantization of Linear layers (int8 weights, activations
    quantized on the fly by the kernels). Conv layers stay fp32 and are listed as skipped."""
    layers, skipped = weight_layers(model)
    linears = [n for n, m in layers.items() if isinstance(m, nn.Linear)]
    skipped += [(n, "no dynamic int8 kernel for this layer type on CPU; kept fp32")
                for n, m in layers.items() if not isinstance(m, nn.Linear)]
    if not linears:
        raise UnsupportedLayerError("Real int8 needs Linear layers (PyTorch's dynamic int8 kernels cover only those).")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)
    rows = [{"layer": n, "type": "Linear", "bits": 8, "kernel": "dynamic int8"} for n in linears]
    metrics = {"label": REAL_INT8, "simulated": False, "int8_layers": len(linears),
               "fp32_bytes": _state_bytes(model), "int8_bytes": _state_bytes(q),
               "bytes_how": "torch.save of the state dict, bytes written"}
    if measure:
        arch = getattr(model, "zoo_arch", None) or {}
        shape = input_shape or (arch.get("in_channels", 1), arch.get("image_size", 8), arch.get("image_size", 8))
        x = torch.randn(batch_size, *shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fp32 = measure_latency(model, x, repeats=20).median_ms
            int8 = measure_latency(q, x, repeats=20).median_ms
        metrics.update({"fp32_latency_ms": fp32, "int8_latency_ms": int8, "speedup": fp32 / int8,
                        "latency_batch": batch_size})
    return q, Report("int8", {"kind": "int8"}, rows, skipped, metrics, simulated=False)


def int8_layers(model: nn.Module) -> list[str]:
    """Names of real dynamic int8 Linear modules."""
    from torch.ao.nn.quantized.dynamic import Linear as DynLinear

    return [n for n, m in model.named_modules() if isinstance(m, DynLinear)]

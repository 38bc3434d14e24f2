"""How a (simulated) quantized weight is described, so the compact format can store integer codes.

Convention: a quantized layer keeps its `weight` as the dequantized float values (so it runs as a
normal layer) and carries `layer.weight_qinfo = QuantInfo(...)`, from which the integer codes
are recovered exactly: q = clamp(round(w * (1 / scale)) + zero_point, qmin, qmax).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from compression.core.errors import ConfigError
from compression.core.modules import is_frozen_code


@dataclass(frozen=True, eq=False)
class QuantInfo:
    """Affine quantization parameters of one tensor.

    Args:
        bits: 2..16.
        scale: float tensor, shape () per-tensor or (C,) per-channel along `axis`.
        zero_point: integer-valued float tensor, same shape as scale (0 when symmetric).
        axis: channel axis for per-channel, None for per-tensor.
        symmetric: symmetric (signed codes) or asymmetric (unsigned codes).
    """

    bits: int
    scale: torch.Tensor
    zero_point: torch.Tensor
    axis: int | None
    symmetric: bool

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.symmetric else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.symmetric else 2 ** self.bits - 1

    def _shape(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if self.axis is None:
            return t
        shape = [1] * like.dim()
        shape[self.axis] = -1
        return t.reshape(shape)

    def _grid(self, w: torch.Tensor) -> torch.Tensor:
        """round(w / scale) + zero_point before the clamp (float, same shape as w)."""
        scale, zp = self._shape(self.scale, w), self._shape(self.zero_point, w)
        inv = 1.0 / scale  # multiply by the reciprocal, as PyTorch's fake-quant kernels do
        return torch.round(w * inv) + zp

    def codes(self, w: torch.Tensor) -> torch.Tensor:
        """Integer codes (int32) of a float tensor under these parameters. The integer cast has no
        gradient: differentiate through compression.methods.quantization's straight-through estimator."""
        return torch.clamp(self._grid(w), self.qmin, self.qmax).to(torch.int32)

    def in_range(self, w: torch.Tensor) -> torch.Tensor:
        """Bool mask, same shape as w: True where w's code is not clipped to [qmin, qmax] (where
        torch.fake_quantize_per_tensor_affine passes the gradient through)."""
        grid = self._grid(w.detach())
        return (grid >= self.qmin) & (grid <= self.qmax)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        scale, zp = self._shape(self.scale, codes), self._shape(self.zero_point, codes)
        return (codes.float() - zp) * scale

    def to_dict(self) -> dict:
        return {"bits": self.bits, "axis": self.axis, "symmetric": self.symmetric,
                "scale": self.scale.tolist(), "zero_point": self.zero_point.tolist()}


CALIBRATIONS = ("minmax", "percentile", "mse")


MSE_CANDIDATES = 100         # clipping ratios searched in [MSE_LOWEST, 1]


MSE_LOWEST = 0.3


MSE_CHUNK = 1 << 20          # elements per vectorised block of the MSE search (~4 MiB)


def check_bits(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 16:
        raise ConfigError(f"{name} must be an integer from 2 to 16; got {value!r}.")


def _bounds(bits: int, symmetric: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2 ** bits - 1)


def _rows(t: torch.Tensor, axis: int | None) -> torch.Tensor:
    """(C, N) float32 view of `t`: one row per channel along `axis`, or a single row."""
    t = t.detach().float()
    if axis is None:
        return t.reshape(1, -1)
    return t.movedim(axis, 0).reshape(t.shape[axis], -1)


def _quantile(flat: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row quantile of (C, N), linear interpolation (torch.quantile without its size limit)."""
    if flat.numel() <= 1 << 24:
        return torch.quantile(flat, q, dim=1)
    pos = q * (flat.shape[1] - 1)
    lo_i, frac = int(pos), pos - int(pos)
    ranked = flat.sort(dim=1).values
    hi_i = min(lo_i + 1, flat.shape[1] - 1)
    return ranked[:, lo_i] + frac * (ranked[:, hi_i] - ranked[:, lo_i])


def _clip_range(flat: torch.Tensor, calibration: str, percentile: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (lo, hi), each (C,): min and max, or the percentile / (100 - percentile) points."""
    if calibration == "percentile" and flat.shape[1] > 1 and percentile < 100:
        return _quantile(flat, 1 - percentile / 100), _quantile(flat, percentile / 100)
    return flat.amin(1), flat.amax(1)


def _scale_zero(lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point (any shape) of the range [lo, hi] widened to contain 0, as PyTorch's
    observers compute them (symmetric: max|x| / ((qmax - qmin) / 2), zero point 0)."""
    qmin, qmax = _bounds(bits, symmetric)
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    if symmetric:
        scale = torch.maximum(-lo, hi) / ((qmax - qmin) / 2)
        zero = torch.zeros_like(scale)
    else:
        scale = (hi - lo) / (qmax - qmin)
        zero = torch.clamp(torch.round(qmin - lo / torch.where(scale > 0, scale, 1.0)), qmin, qmax)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # all-zero row: any scale is exact
    return scale, zero


def _mse_search(flat: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool,
                candidates: int = MSE_CANDIDATES) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of flat (C, N), the clipping ratio r in [MSE_LOWEST, 1] of [lo, hi] whose grid has the
    lowest quantization MSE; all rows and a block of ratios at once. Ratio 1 (min-max) is tried
    first and wins ties, so the result is never worse than min-max."""
    qmin, qmax = _bounds(bits, symmetric)
    ratios = torch.linspace(1.0, MSE_LOWEST, candidates, device=flat.device)  # (K,), min-max first
    best_err = torch.full((flat.shape[0],), float("inf"), device=flat.device)
    best_scale, best_zero = _scale_zero(lo, hi, bits, symmetric)    # (C,)
    block = max(1, MSE_CHUNK // max(flat.numel(), 1))
    for r in ratios.split(block):
        scale, zero = _scale_zero(lo * r[:, None], hi * r[:, None], bits, symmetric)  # (k, C)
        s, z = scale[..., None], zero[..., None]                                    # (k, C, 1)
        err = flat * (1.0 / s)                                                      # (k, C, N)
        err.round_().add_(z).clamp_(qmin, qmax).sub_(z).mul_(s).sub_(flat).pow_(2)
        err = err.mean(-1)                                                          # (k, C)
        k_err, k_idx = err.min(0)                                                   # (C,)
        better = k_err < best_err
        best_err = torch.where(better, k_err, best_err)
        pick = k_idx[None]
        best_scale = torch.where(better, scale.gather(0, pick)[0], best_scale)
        best_zero = torch.where(better, zero.gather(0, pick)[0], best_zero)
    return best_scale, best_zero


def info_from_rows(flat: torch.Tensor, bits: int, symmetric: bool, axis: int | None, calibration: str,
                    percentile: float, lo: torch.Tensor | None = None, hi: torch.Tensor | None = None) -> QuantInfo:
    if lo is None or hi is None:
        lo, hi = _clip_range(flat, calibration, percentile)
    if calibration == "mse":
        scale, zero = _mse_search(flat, lo, hi, bits, symmetric)
    else:
        scale, zero = _scale_zero(lo, hi, bits, symmetric)
    if axis is None:
        scale, zero = scale.reshape(()), zero.reshape(())
    return QuantInfo(bits, scale, zero, axis, symmetric)


def compute_qparams(t: torch.Tensor, bits: int, symmetric: bool = True, axis: int | None = None,
                    calibration: str = "minmax", percentile: float = 99.99) -> QuantInfo:
    """Affine quantization parameters of a tensor.

    Args:
        bits: 2..16. symmetric: signed codes with zero point 0, else unsigned codes.
        axis: None for one scale per tensor, else one per channel along `axis` (0 for weights).
        calibration: 'minmax' (no clipping), 'percentile' (clip at the `percentile` and
            100 - `percentile` points), 'mse' (clipping ratio in [0.3, 1] of the min-max range
            minimising the quantization MSE, searched over 100 ratios per channel).
    Returns:
        a QuantInfo; scale and zero point have shape () or (C,).
    """
    check_bits("bits", bits)
    if calibration not in CALIBRATIONS:
        raise ConfigError(f"calibration must be one of {', '.join(CALIBRATIONS)}; got {calibration!r}.")
    if axis is not None and not -t.dim() <= axis < t.dim():
        raise ConfigError(f"axis {axis} is out of range for a tensor of shape {tuple(t.shape)}.")
    if t.numel() == 0:
        raise ConfigError("Cannot compute quantization parameters of an empty tensor.")
    axis = axis % t.dim() if axis is not None else None
    return info_from_rows(_rows(t, axis), bits, symmetric, axis, calibration, percentile)


def fake_quantize(t: torch.Tensor, info: QuantInfo) -> torch.Tensor:
    """Quantize and dequantize: the float values the quantized tensor stands for (same dtype).
    Computed as PyTorch's fake-quant kernels do: (clamp(round(t * (1/s)) + z) - z) * s."""
    return info.dequantize(info.codes(t)).to(t.dtype)


def sqnr_db(ref: torch.Tensor, q: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio 10 log10(sum ref^2 / sum (ref - q)^2) in dB; inf when exact."""
    ref, q = ref.detach().float(), q.detach().float()
    noise = (ref - q).pow(2).sum()
    if noise == 0:
        return float("inf")
    return float(10 * torch.log10(ref.pow(2).sum() / noise))


def _fake_quantize_ste(x: torch.Tensor, info: QuantInfo) -> torch.Tensor:
    """fake_quantize(x, info), same values bit for bit, with the straight-through gradient of
    torch.fake_quantize_per_tensor_affine: 1 where x's code is inside [qmin, qmax], 0 where clipped."""
    xq = fake_quantize(x, info)
    if not (torch.is_grad_enabled() and x.requires_grad):
        return xq
    # the added term is exactly zero in value (xq is unchanged) and carries d/dx = mask
    return xq + torch.where(info.in_range(x), x - x.detach(), 0.0)


def act_fake_quant_hook(module: nn.Module, inputs: tuple) -> tuple:
    """Forward pre-hook: fake-quantize a layer's input with its act_scale / act_zero_point. The
    rounding is a straight-through estimator (in eval mode too, so attributions and input
    gradients work): the gradient passes where the input is inside the clamp range, 0 outside."""
    x = inputs[0]
    info = QuantInfo(module.act_bits, module.act_scale, module.act_zero_point, None, module.act_symmetric)
    return (_fake_quantize_ste(x, info), *inputs[1:])


def attach_act_quant(layer: nn.Module, bits: int, symmetric: bool, scale: torch.Tensor,
                     zero_point: torch.Tensor) -> None:
    """Quantize `layer`'s input per tensor at `bits`: buffers act_scale / act_zero_point (in the
    state dict), attributes act_bits / act_symmetric, and one act_fake_quant_hook. Idempotent."""
    check_bits("activation bits", int(bits))
    for name, value in (("act_scale", scale), ("act_zero_point", zero_point)):
        value = torch.as_tensor(value, dtype=torch.float32).detach().clone().reshape(())
        if name in layer._buffers:
            layer._buffers[name] = value
        else:
            layer.register_buffer(name, value)
    layer.act_bits, layer.act_symmetric = int(bits), bool(symmetric)
    if not has_act_quant(layer):
        layer.register_forward_pre_hook(act_fake_quant_hook)


def has_act_quant(layer: nn.Module) -> bool:
    if is_frozen_code(layer):  # TorchScript modules take no hooks
        return False
    return any(h is act_fake_quant_hook for h in layer._forward_pre_hooks.values())


def remove_act_quant(layer: nn.Module) -> None:
    """Undo attach_act_quant: the hook, the buffers and the attributes (nothing to undo on a
    TorchScript module, which never takes one)."""
    if is_frozen_code(layer):
        return
    for key, hook in list(layer._forward_pre_hooks.items()):
        if hook is act_fake_quant_hook:
            del layer._forward_pre_hooks[key]
    for name in ("act_scale", "act_zero_point"):
        layer._buffers.pop(name, None)
    for name in ("act_bits", "act_symmetric"):
        layer.__dict__.pop(name, None)

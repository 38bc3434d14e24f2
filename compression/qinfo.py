"""How a (simulated) quantized weight is described, so the compact format can store integer codes.

Convention: a quantized layer keeps its `weight` as the dequantized float values (so it runs as a
normal layer) and carries `layer.weight_qinfo = QuantInfo(...)`, from which the integer codes
are recovered exactly: q = clamp(round(w * (1 / scale)) + zero_point, qmin, qmax).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


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
        gradient: differentiate through compression.quantization's straight-through estimator."""
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

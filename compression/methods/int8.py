"""Real int8: PyTorch's dynamic quantization kernels for Linear layers (CPU), the int8 model's
size and its latency paired with the fp32 original. Results say they are real: REAL_INT8."""
from __future__ import annotations

import contextlib
import io
import statistics
import warnings
from typing import Iterator

import torch
from torch import nn
from compression.core.errors import ConfigError, UnsupportedLayerError
from compression.core.modules import check_layer_names, refuse_frozen_code, weight_layers
from compression.core.quant import sqnr_db
from compression.core.registry import Result
from compression.methods.quantization import prepare_copy
from compression.metrics.latency import LATENCY_BATCH, paired_latency

REAL_INT8 = "real int8 (dynamic quantization kernels)"


def _state_bytes(model: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return len(buf.getvalue())


@contextlib.contextmanager
def _quiet_deprecations() -> Iterator[None]:
    """Silence torch.ao.quantization's deprecation notices here only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*deprecated.*", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*deprecated.*", category=UserWarning)
        yield


def int8_copy(model: nn.Module, names: list[str]) -> nn.Module:
    """A copy of `model` (masks folded) with the named Linear layers turned into real dynamic int8
    layers: the bare swap, without quantize_int8's rows, sizes and timing (for sweeps)."""
    work = prepare_copy(model).eval()
    if not names:
        return work
    with _quiet_deprecations():
        return torch.ao.quantization.quantize_dynamic(work, set(names), dtype=torch.qint8, inplace=True)


def quantize_int8(model: nn.Module, *, include: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
                  measure: bool = True, batch_size: int = LATENCY_BATCH, input_shape: tuple[int, ...] | None = None,
                  rounds: int = 5) -> tuple[nn.Module, Result]:
    """Real int8 of a copy of `model`: torch.ao.quantization.quantize_dynamic on its Linear layers
    (int8 weights, inputs quantized on the fly by the int8 kernels, fp32 out). Conv and Embedding
    layers stay fp32 and are listed as skipped. Any simulated input quantization is dropped.

    Args:
        include, exclude: layer names or patterns turned int8 (empty include: all) and kept fp32.
        measure: time fp32 and int8 (metrics.latency.paired_latency) at `batch_size` (default
            LATENCY_BATCH, the batch every other latency is measured at) on a random input
            of `input_shape` (default: the model's zoo shape, else digits' (1, 8, 8)), paired:
            `rounds` alternating rounds, so both see the same machine state.
    Returns:
        (model, Result) with simulated=False, rows {layer, type, bits, kernel, sqnr_db} and metrics
        {label, simulated, int8_layers, fp32_file_bytes, int8_file_bytes, bytes_how, size_ratio
        (= int8_file_bytes / fp32_file_bytes)} plus, when measured, {fp32_latency_ms,
        int8_latency_ms (medians over the rounds of each round's median), speedup (their ratio),
        speedup_min, speedup_max, speedup_iqr (of the per-round ratios), latency_rounds,
        latency_batch, input_shape}.
    """
    refuse_frozen_code(model, "Real int8 (module swapping)")
    check_layer_names(model, tuple(include) + tuple(exclude))
    fp32 = prepare_copy(model).eval()
    layers, skipped = weight_layers(fp32, include=tuple(include), exclude=tuple(exclude))
    linears = [n for n, m in layers.items() if isinstance(m, nn.Linear)]
    skipped += [(n, f"{type(m).__name__}: PyTorch has no dynamic int8 kernel for it; kept fp32")
                for n, m in layers.items() if not isinstance(m, nn.Linear)]
    if not linears:
        chosen = " among the chosen layers (every Linear layer is excluded)" if layers or include or exclude else ""
        raise UnsupportedLayerError(f"Real int8 needs Linear layers{chosen}: PyTorch's dynamic int8 kernels cover "
                                    "only those.")
    with _quiet_deprecations():
        q = torch.ao.quantization.quantize_dynamic(fp32, set(linears), dtype=torch.qint8)  # copies fp32
        rows = [{"layer": n, "type": "Linear", "bits": 8, "kernel": "torch.ao.nn.quantized.dynamic.Linear",
                 "sqnr_db": sqnr_db(layers[n].weight, q.get_submodule(n).weight().dequantize())} for n in linears]
        fp32_file_bytes, int8_file_bytes = _state_bytes(fp32), _state_bytes(q)
        metrics = {"label": REAL_INT8, "simulated": False, "int8_layers": len(linears),
                   "fp32_file_bytes": fp32_file_bytes, "int8_file_bytes": int8_file_bytes,
                   "size_ratio": int8_file_bytes / fp32_file_bytes,
                   "bytes_how": "bytes written by torch.save(model.state_dict()) into memory (fp32 model "
                                "with pruning masks folded vs int8 model with packed weights)"}
        if measure:
            metrics.update(_int8_latency(fp32, q, batch_size, input_shape, rounds))
    config = {"kind": "int8", "include": list(include), "exclude": list(exclude)}
    return q, Result("int8", config, rows, skipped, metrics, simulated=False)


def _int8_latency(fp32: nn.Module, q: nn.Module, batch_size: int, input_shape: tuple[int, ...] | None,
                  rounds: int, repeats: int = 10) -> dict:
    """metrics.latency.paired_latency of fp32 and int8 (`rounds` alternating rounds), as speed-ups."""
    if rounds < 1:
        raise ConfigError(f"rounds must be at least 1, got {rounds}")
    arch = getattr(fp32, "zoo_arch", None) or {}
    size = arch.get("image_size", 8)
    shape = tuple(input_shape) if input_shape else (arch.get("in_channels", 1), size, size)
    x = torch.randn(batch_size, *shape, generator=torch.Generator().manual_seed(0))  # (B, C, H, W)
    p = paired_latency(fp32, q, x, rounds=rounds, repeats=repeats)
    speedups = [1 / r for r in p.ratios]  # per round: fp32 / int8
    q1, _, q3 = statistics.quantiles(speedups, n=4) if rounds > 1 else (speedups[0],) * 3
    return {"fp32_latency_ms": p.original_ms, "int8_latency_ms": p.compressed_ms, "speedup": 1 / p.ratio,
            "speedup_min": min(speedups), "speedup_max": max(speedups), "speedup_iqr": q3 - q1,
            "latency_rounds": rounds, "latency_batch": batch_size, "input_shape": list(shape)}


def int8_layers(model: nn.Module) -> list[str]:
    """Names of the real dynamic int8 Linear modules (torch.ao.nn.quantized.dynamic.Linear)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynLinear

    return [n for n, m in model.named_modules() if isinstance(m, DynLinear)]
